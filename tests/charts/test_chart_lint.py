"""The charts pass `helm lint --strict` (Helm 4 and Helm 3) with every ci/*-values.yaml case and `ct lint`.
(Their READMEs are checked by test_chart_docs.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chart_support import OPERATOR_CHART, REPO, TENANT_CHART, Helm, find_tool

CASES = [
    pytest.param(chart, case, id=f"{chart.name}-{case.stem}")
    for chart in (TENANT_CHART, OPERATOR_CHART)
    for case in sorted((chart / "ci").glob("*-values.yaml"))
]


def test_every_chart_has_ci_cases() -> None:
    for chart in (TENANT_CHART, OPERATOR_CHART):
        assert len(list((chart / "ci").glob("*-values.yaml"))) >= 2, chart.name


@pytest.mark.parametrize(("chart", "case"), CASES)
def test_helm_lint_strict(helm_versions: list[Helm], chart: Path, case: Path) -> None:
    for helm in helm_versions:
        result = helm.run(
            "lint", "--strict", chart, "--values", case, "--namespace", "tenant-lint", check=False
        )
        assert result.returncode == 0, f"{helm.binary.name} lint:\n{result.stdout}\n{result.stderr}"


def test_ct_lint(helm: Helm) -> None:
    ct = find_tool("ct")
    if ct is None:
        pytest.skip("no ct binary: run `make cluster-up` (it builds .cluster/bin/ct) or put ct on PATH")
    # ct runs helm, yamllint and yamale from PATH: the tested helm and this virtualenv's tools come first.
    path = os.pathsep.join([str(helm.binary.parent), str(Path(sys.executable).parent), os.environ["PATH"]])
    result = subprocess.run(
        [str(ct), "lint", "--config", "ct.yaml", "--all"],
        cwd=REPO,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, f"ct lint:\n{result.stdout}\n{result.stderr}"
    for chart in ("tenant", "tenant-operator"):
        assert f"charts/{chart}" in result.stdout


def test_every_helm_assumes_the_kubernetes_version_of_its_release_build(
    helm_versions: list[Helm], tmp_path: Path
) -> None:
    """Without a cluster, Helm assumes the Kubernetes its client-go speaks, as its release builds do; a build
    without Helm's version link flags assumes 1.20 and refuses charts/tenant's kubeVersion."""
    chart = tmp_path / "kube-version"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: kube-version\nversion: 0.1.0\n")
    (chart / "templates" / "version.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: v\ndata:\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    for helm in helm_versions:
        rendered = helm.run("template", chart).stdout
        minor = int(rendered.split('kube: "v1.')[1].split(".")[0])
        assert minor >= 30, f"{helm.binary.name} assumes Kubernetes 1.{minor}"
        helm.run("template", "t", TENANT_CHART, "--namespace", "tenant-t")
