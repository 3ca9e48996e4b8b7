"""`make demo` on the local cluster: the guide's example Tenant ends Running, and `make demo-clean` removes
what the demo made (the Tenant, its namespace and release, the operator process, the operator chart)."""

import subprocess
import sys

import pytest

from local_cluster.cluster import LocalCluster
from tests.conftest import STATE, Kube

pytestmark = pytest.mark.cluster


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenant_operator.demo", "--state", str(STATE), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_demo_runs_the_guides_example_and_cleans_up(kube: Kube) -> None:
    if kube.kubeconfig != STATE / "kubeconfig":
        pytest.skip("the demo runs on the local cluster")
    shown = demo()
    try:
        assert shown.returncode == 0, shown.stdout + shown.stderr
        rows = [line.split() for line in shown.stdout.splitlines()]
        assert next(row[:3] for row in rows if row[:1] == ["sample-tenant"]) == [
            "sample-tenant",
            "Running",
            "tenant-sample-tenant",
        ]
        assert "phase=Running server=2/2 redis=1/1 ready=True" in shown.stdout
        for name in ("default-deny", "allow-dns", "server-to-redis", "allow-namespaces"):
            assert f"networkpolicy.networking.k8s.io/{name} " in shown.stdout
        assert "make demo-clean" in shown.stdout
        # The operator keeps running, as the chart's ServiceAccount, attached to the cluster.
        assert LocalCluster(STATE).pid("tenant-operator") is not None
        identity = kube.kubectl("auth", "whoami", "--kubeconfig", str(STATE / "tenant-operator.kubeconfig"))
        assert "system:serviceaccount:system:tenant-operator" in identity.stdout
    finally:
        cleaned = demo("--clean")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert kube.kubectl("get", "tenant", "sample-tenant", "--ignore-not-found").stdout == ""
    assert kube.kubectl("get", "namespace", "tenant-sample-tenant", "--ignore-not-found").stdout == ""
    assert LocalCluster(STATE).pid("tenant-operator") is None
    assert "tenant-operator" not in kube.helm("list", "-n", "system", "-q").stdout.split()
