"""Helpers of the chart tests: render a chart with `helm template` and look at the documents.

Rendering needs only a helm binary: the local cluster's (.cluster/bin/helm), else `helm` on PATH.
(A module of its own, not conftest.py: tests/conftest.py is a `conftest` module too.)
"""

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
TENANT_CHART = CHARTS / "tenant"
OPERATOR_CHART = CHARTS / "tenant-operator"
SAMPLE_TENANT = REPO / "tests" / "fixtures" / "sample-tenant.yaml"
CRD_FILE = OPERATOR_CHART / "crds" / "tenants.neurallog.io.yaml"
TENANT_SCHEMA = TENANT_CHART / "values.schema.json"

Doc = dict[str, Any]


def find_tool(name: str) -> Path | None:
    """A binary of the local cluster's toolbox (.cluster/bin), else one on PATH."""
    local = REPO / ".cluster" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    return Path(found) if found else None


def sample_tenant() -> Doc:
    """The guide's example Tenant."""
    tenant: Doc = yaml.safe_load(SAMPLE_TENANT.read_text())
    return tenant


@dataclass(frozen=True)
class Manifests:
    """The documents of one rendering."""

    docs: list[Doc]

    def get(self, kind: str, name: str) -> Doc:
        """The one document of this kind and name."""
        found = [doc for doc in self.docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)} in {self.names()}"
        return found[0]

    def of_kind(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def names(self) -> set[tuple[str, str]]:
        """(kind, name) of every document."""
        return {(doc["kind"], doc["metadata"]["name"]) for doc in self.docs}

    def pod_templates(self) -> list[tuple[str, Doc]]:
        """(workload name, pod template) of every Deployment and StatefulSet."""
        return [
            (doc["metadata"]["name"], doc["spec"]["template"])
            for doc in self.docs
            if doc["kind"] in ("Deployment", "StatefulSet")
        ]

    def text(self) -> str:
        return yaml.safe_dump_all(self.docs)


class HelmFailedError(AssertionError):
    """helm exited non-zero; the message holds its stderr."""

    def __init__(self, args: Sequence[str], stderr: str) -> None:
        super().__init__(f"{' '.join(args)} failed:\n{stderr}")
        self.stderr = stderr


@dataclass(frozen=True)
class Helm:
    """Runs one helm binary."""

    binary: Path

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.binary), *map(str, args)]
        with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
            # A throwaway Helm home: no repositories or plugins of the user's leak into the tests.
            env = {**os.environ, "HELM_CACHE_HOME": home, "HELM_CONFIG_HOME": home, "HELM_DATA_HOME": home}
            result = subprocess.run(
                command, capture_output=True, text=True, env=env, check=False, timeout=300
            )
        if check and result.returncode != 0:
            raise HelmFailedError(command, result.stderr)
        return result

    def template(
        self,
        chart: Path,
        values: Doc | None = None,
        *,
        values_files: Sequence[Path] = (),
        release: str = "sample-tenant",
        namespace: str = "tenant-sample-tenant",
        extra: Sequence[str] = (),
    ) -> Manifests:
        """`helm template` of a chart with values files and then `values` (a dict), parsed."""
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values_file:
            yaml.safe_dump(values or {}, values_file)
            values_file.flush()
            args: list[str | Path] = [
                "template",
                release,
                chart,
                "--namespace",
                namespace,
                *[arg for path in values_files for arg in ("--values", str(path))],
                "--values",
                values_file.name,
                *extra,
            ]
            result = self.run(*args)
        return Manifests([doc for doc in yaml.safe_load_all(result.stdout) if doc])

    def template_error(self, chart: Path, values: Doc, **options: Any) -> str:
        """The stderr of a `helm template` that must fail."""
        try:
            self.template(chart, values, **options)
        except HelmFailedError as error:
            return error.stderr
        raise AssertionError(f"helm template of {chart.name} accepted {values}")


def unique_name(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
