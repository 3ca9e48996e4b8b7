"""`make demo` on the local cluster: the operator runs in its pod, from the image loaded into the real node;
the guide's example Tenant ends Running, its pods running on the real node; and `make demo-clean` leaves
nothing of what the demo made (the Tenant, its namespace and release, the operator chart and its pod)."""

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import STATE, Kube

pytestmark = pytest.mark.cluster

OPERATOR_PODS = "control-plane=controller-manager"
OPERATOR_IMAGE = "docker.io/neurallog/tenant-operator:latest"


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local_cluster.demo", "--state", str(STATE), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def get(kube: Kube, *args: str) -> Any:
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)


def real_nodes(kube: Kube) -> set[str]:
    """The nodes that run containers: all but those KWOK fakes."""
    return {
        node["metadata"]["name"]
        for node in get(kube, "nodes")["items"]
        if "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    }


def assert_running(pod: dict[str, Any], nodes: set[str]) -> None:
    name = pod["metadata"]["name"]
    assert pod["spec"].get("nodeName") in nodes, f"{name} is not on a real node"
    assert pod["status"]["phase"] == "Running", name
    for container in pod["status"]["containerStatuses"]:
        assert container["ready"] and "running" in container["state"], (name, container)


def test_demo_runs_the_operator_in_its_pod_and_the_guides_example_then_cleans_up(kube: Kube) -> None:
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
        assert "kubectl -n tenant-sample-tenant port-forward svc/neurallog-server 3030:3030" in shown.stdout
        assert f"kubectl logs -n system -l {OPERATOR_PODS}" in shown.stdout
        assert "make demo-clean" in shown.stdout
        nodes = real_nodes(kube)

        # The operator: the chart's one pod, running the image the node holds, never pulled.
        (operator,) = get(kube, "pods", "-n", "system", "-l", OPERATOR_PODS)["items"]
        assert_running(operator, nodes)
        (container,) = operator["spec"]["containers"]
        assert container["imagePullPolicy"] == "Never"
        assert operator["status"]["containerStatuses"][0]["image"] == OPERATOR_IMAGE
        # It is this pod that made the tenant: its container's log tells of it.
        logs = kube.kubectl("logs", "-n", "system", "-l", OPERATOR_PODS, "--tail=-1").stdout
        assert "sample-tenant" in logs

        # The tenant: its server and Redis pods run on the real node.
        pods = get(kube, "pods", "-n", "tenant-sample-tenant")["items"]
        apps = sorted(pod["metadata"]["labels"].get("app") for pod in pods)
        assert apps == ["neurallog-server", "neurallog-server", "redis"]
        for pod in pods:
            assert_running(pod, nodes)
    finally:
        cleaned = demo("--clean")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert kube.kubectl("get", "tenant", "sample-tenant", "--ignore-not-found").stdout == ""
    assert kube.kubectl("get", "namespace", "tenant-sample-tenant", "--ignore-not-found").stdout == ""
    assert "tenant-operator" not in kube.helm("list", "-n", "system", "-q").stdout.split()
    assert get(kube, "pods", "-n", "system", "-l", OPERATOR_PODS)["items"] == []
