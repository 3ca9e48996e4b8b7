"""Real Flux on the local cluster (local_cluster.flux): its helm-controller installs, upgrades and uninstalls
charts/tenant from the Helm repository that the cluster serves, as the operator's Flux backend will have it
do. One HelmRelease goes through install (revision 1), a values change (2), a new chart version (3) and
deletion.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from local_cluster.flux import NAMESPACE, PROCESSES, REPOSITORY, Flux, FluxInfo
from tests.conftest import REPO, STATE, Kube
from tests.kstatus import kstatus

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "tenant"
HELM_RELEASE = "helmreleases.helm.toolkit.fluxcd.io"
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 120) -> T:
    """The first truthy result of ``check``; fails with the last one after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last saw {result!r}")
        time.sleep(0.5)
    return result


def content_version(chart: Path) -> str:
    """0.1.0+<12 hex of the chart's files>: a version per content, as the operator publishes charts."""
    digest = hashlib.sha256()
    for path in sorted(p for p in chart.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(chart)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"0.1.0+{digest.hexdigest()[:12]}"


def condition(obj: dict[str, Any], kind: str) -> str | None:
    for entry in obj.get("status", {}).get("conditions", []):
        if entry.get("type") == kind:
            return str(entry.get("status"))
    return None


@pytest.fixture(scope="module")
def flux(kube: Kube) -> Iterator[FluxInfo]:
    """Flux on the local cluster; stopped afterwards when this module started it."""
    if kube.kubeconfig.resolve() != (STATE / "kubeconfig").resolve():
        pytest.skip("Flux is started only on the local cluster, not on a KUBECONFIG cluster")
    runner = Flux(STATE)
    was_running = all(healthy for _pid, healthy in runner.status().values())
    info = runner.ensure()
    yield info
    if not was_running:
        runner.stop()


def test_flux_runs_with_its_crds_and_serves_our_repository(kube: Kube, flux: FluxInfo) -> None:
    runner = Flux(STATE)
    status = runner.status()
    assert set(status) == set(PROCESSES)
    assert all(pid and healthy for pid, healthy in status.values()), status
    for process, url in flux.health_urls.items():
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200, (process, url)
        assert flux.logs[process].is_file(), process
    crds = kube.kubectl("get", "crds", "-o", "name").stdout.split()
    flux_crds = sorted(name for name in crds if "toolkit.fluxcd.io" in name)
    assert len(flux_crds) == 7, flux_crds
    repository = json.loads(
        kube.kubectl(
            "get", "helmrepositories.source.toolkit.fluxcd.io", REPOSITORY, "-n", NAMESPACE, "-o", "json"
        ).stdout
    )
    assert repository["spec"]["url"] == flux.repository_url
    assert (flux.namespace, flux.repository) == (NAMESPACE, REPOSITORY)
    # Asked again, Flux is reused as it runs: the same processes, the same addresses.
    again = runner.ensure()
    assert again == flux
    assert runner.status() == status


class Release:
    """One HelmRelease of the tenant chart from our repository, and what Helm says of its release."""

    def __init__(self, kube: Kube, flux: FluxInfo, namespace: str, name: str) -> None:
        self.kube, self.flux, self.namespace, self.name = kube, flux, namespace, name

    def apply(self, version: str, values: dict[str, Any]) -> None:
        source = {"kind": "HelmRepository", "name": self.flux.repository, "namespace": self.flux.namespace}
        obj = {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "interval": "10m",
                "releaseName": self.name,
                "chart": {"spec": {"chart": "tenant", "version": version, "sourceRef": source}},
                "install": {"disableWait": True},
                "upgrade": {"disableWait": True},
                "values": values,
            },
        }
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def patch(self, spec: dict[str, Any]) -> None:
        self.kube.kubectl(
            "patch", HELM_RELEASE, self.name, "-n", self.namespace, "--type=merge",
            "-p", json.dumps({"spec": spec}),
        )  # fmt: skip

    def get(self) -> dict[str, Any] | None:
        result = self.kube.kubectl(
            "get", HELM_RELEASE, self.name, "-n", self.namespace, "-o", "json", check=False
        )
        return json.loads(result.stdout) if result.returncode == 0 else None

    def wait_reconciled(self, version: str, generation: int) -> dict[str, Any]:
        """The HelmRelease once ``generation`` is released with chart ``version`` and Ready: Ready alone stays
        True from the previous generation while an upgrade is pending."""

        def done() -> dict[str, Any] | None:
            obj = self.get()
            if obj is None:
                return None
            status = obj.get("status", {})
            reconciled = (
                obj["metadata"]["generation"] == generation
                and status.get("observedGeneration") == generation
                and condition(obj, "Ready") == "True"
                and status.get("lastAttemptedRevision") == version
            )
            return obj if reconciled else None

        return wait_for(
            done, f"HelmRelease {self.namespace}/{self.name} generation {generation} with {version}"
        )

    def helm_list(self) -> list[tuple[str, int, str, str]]:
        """(name, revision, status, chart) of each release in the namespace."""
        releases = json.loads(self.kube.helm("list", "-n", self.namespace, "-o", "json").stdout)
        return [(r["name"], int(r["revision"]), r["status"], r["chart"]) for r in releases]

    def helm_history(self) -> list[tuple[int, str, str]]:
        """(revision, status, chart) of each revision of the release."""
        history = json.loads(self.kube.helm("history", self.name, "-n", self.namespace, "-o", "json").stdout)
        return [(int(h["revision"]), h["status"], h["chart"]) for h in history]

    def kubectl_output(self, *args: str) -> str:
        return self.kube.kubectl(*args, "-n", self.namespace).stdout


def changed_chart(directory: Path) -> Path:
    """A copy of the tenant chart with other content: a marker ConfigMap naming the chart's version."""
    chart = directory / "tenant"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "flux-test-marker.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flux-test-marker\n"
        "data:\n  chart: {{ .Chart.Version | quote }}\n"
    )
    return chart


def test_a_helm_release_of_the_tenant_chart_installs_upgrades_and_uninstalls(
    kube: Kube, flux: FluxInfo, tmp_path: Path
) -> None:
    runner = Flux(STATE)
    changed = changed_chart(tmp_path)
    first, second = content_version(CHART), content_version(changed)
    assert first != second
    runner.publish(CHART, first)
    namespace = f"flux-test-{uuid.uuid4().hex[:8]}"
    metadata = {"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
    kube.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
    )
    release = Release(kube, flux, namespace, "fx")
    try:
        # Install: revision 1 of the first version.
        started = time.monotonic()
        release.apply(first, {"displayName": "Flux test"})
        obj = release.wait_reconciled(first, generation=1)
        print(f"installed in {time.monotonic() - started:.1f}s")
        assert kstatus(obj) == "Current"
        assert release.helm_list() == [("fx", 1, "deployed", f"tenant-{first}")]
        assert release.kubectl_output("get", "deployment", "neurallog-server", "-o", "name")

        # A values change: revision 2, still the first version.
        release.patch({"values": {"server": {"replicas": 2}}})
        release.wait_reconciled(first, generation=2)
        assert release.helm_list() == [("fx", 2, "deployed", f"tenant-{first}")]
        assert (
            release.kubectl_output("get", "deployment", "neurallog-server", "-o", "jsonpath={.spec.replicas}")
            == "2"
        )

        # A new chart version, published and pointed at: revision 3 runs its content.
        runner.publish(changed, second)
        release.patch({"chart": {"spec": {"version": second}}})
        obj = release.wait_reconciled(second, generation=3)
        assert kstatus(obj) == "Current"
        assert release.helm_history() == [
            (1, "superseded", f"tenant-{first}"),
            (2, "superseded", f"tenant-{first}"),
            (3, "deployed", f"tenant-{second}"),
        ]
        assert (
            release.kubectl_output("get", "configmap", "flux-test-marker", "-o", "jsonpath={.data.chart}")
            == second
        )
        chart_namespace, chart_name = obj["status"]["helmChart"].split("/")  # helm-controller's HelmChart
        helm_chart = ["helmcharts.source.toolkit.fluxcd.io", chart_name, "-n", chart_namespace]
        chart = json.loads(kube.kubectl("get", *helm_chart, "-o", "json").stdout)
        assert chart["status"]["artifact"]["revision"] == second

        # Deletion uninstalls the release (and drops the HelmChart), then the namespace goes.
        kube.kubectl("delete", HELM_RELEASE, "fx", "-n", namespace, "--wait=true", "--timeout=120s")
        assert release.helm_list() == []
        assert (
            kube.kubectl("get", "configmap", "flux-test-marker", "-n", namespace, check=False).returncode != 0
        )
        wait_for(
            lambda: kube.kubectl("get", *helm_chart, check=False).returncode != 0, "the HelmChart to go", 60
        )
        kube.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s")
        gone = kube.kubectl("get", "namespace", namespace, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout + gone.stderr
    finally:
        kube.kubectl(
            "delete", HELM_RELEASE, "fx", "-n", namespace, "--ignore-not-found", "--timeout=120s", check=False
        )
        kube.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)
        # The changed chart is this test's own; the first version (the chart as it is) may serve others.
        with contextlib.suppress(FileNotFoundError):
            runner.unpublish("tenant", second)
