"""The local cluster's real node: containers run, Services and DNS answer, NetworkPolicies are enforced,
and pod traffic never leaves this machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from local_cluster.cluster import LocalCluster
from local_cluster.host import sysctl
from local_cluster.images import PROBE_IMAGE
from local_cluster.node import BRIDGE, GUARD_CHAIN, NODE_LINK, NODE_NAME
from tests.conftest import REPO, Kube
from tests.e2e.operator_process import wait_until
from tests.lab import lab_host

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module", autouse=True)
def local_only(kube: Kube) -> None:
    if kube.kubeconfig != REPO / ".cluster" / "kubeconfig":
        pytest.skip("the real node is part of the local cluster")


def probe_pod(name: str, labels: dict[str, str] | None = None) -> dict[str, object]:
    """A pod of the probe image that sleeps until deleted; commands run in it with ``kubectl exec``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "probe",
                    "image": PROBE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", f"echo probe {name} up; exec sleep 100000"],
                    "securityContext": {"runAsUser": 65534, "runAsNonRoot": True},
                }
            ],
        },
    }


def web_pod(name: str, labels: dict[str, str]) -> dict[str, object]:
    """A probe pod that also serves HTTP on 8080 (busybox httpd)."""
    pod = probe_pod(name, labels)
    container = pod["spec"]["containers"][0]  # type: ignore[index]
    container["command"] = ["sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && "
                            "exec httpd -f -p 8080 -h /tmp/www"]  # fmt: skip
    return pod


def apply(kube: Kube, namespace: str, *objects: dict[str, object]) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def ready(kube: Kube, namespace: str, *pods: str) -> None:
    kube.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=90s", *(f"pod/{p}" for p in pods)
    )


def connects(kube: Kube, namespace: str, pod: str, host: str, port: int) -> bool:
    """Whether ``pod`` opens a TCP connection to ``host:port`` within 3 seconds (busybox nc exits 0 once
    connected and its input ends)."""
    result = kube.kubectl(
        "exec", "-n", namespace, pod, "--", "sh", "-c", f"timeout 3 nc {host} {port} </dev/null",
        check=False, timeout=30,
    )  # fmt: skip
    return result.returncode == 0


def test_the_real_node_is_ready_with_the_pinned_kubelet_and_containerd(kube: Kube) -> None:
    node = json.loads(kube.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    info = node["status"]["nodeInfo"]
    pinned = (REPO / "cluster/tools/kube/go.mod").read_text().split("k8s.io/kubernetes ")[1].split()[0]
    assert info["kubeletVersion"] == pinned
    containerd = (REPO / "cluster/tools/containerd/go.mod").read_text()
    assert (
        info["containerRuntimeVersion"]
        == "containerd://" + containerd.split("github.com/containerd/containerd/v2 v")[1].split()[0]
    )
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    kwok = json.loads(kube.kubectl("get", "node", "kwok-node-0", "-o", "json").stdout)
    assert {t["key"] for t in kwok["spec"].get("taints", [])} == {"kwok.x-k8s.io/node"}


def test_a_pod_runs_logs_and_execs_and_reaches_a_service_by_its_dns_name(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, probe_pod("client"), web_pod("web", {"app": "web"}))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(kube, namespace, service)
    ready(kube, namespace, "client", "web")
    pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {NODE_NAME}
    assert "probe client up" in kube.kubectl("logs", "-n", namespace, "client").stdout
    assert kube.kubectl("exec", "-n", namespace, "client", "--", "id", "-u").stdout.strip() == "65534"
    url = f"http://web.{namespace}.svc.cluster.local/"

    # kube-proxy programs a new Service within a sync period.
    def fetch() -> str:
        command = ["timeout", "3", "wget", "-q", "-O", "-", url]
        return kube.kubectl("exec", "-n", namespace, "client", "--", *command, check=False).stdout.strip()

    assert wait_until(fetch, timeout=30, what=f"{url} from a pod") == "ok"


def test_network_policies_are_enforced_for_real(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, probe_pod("allowed", {"access": "yes"}), probe_pod("other"))
    apply(kube, namespace, web_pod("web", {"app": "web"}))
    ready(kube, namespace, "allowed", "other", "web")
    web_ip = kube.kubectl("get", "pod", "web", "-n", namespace, "-o", "jsonpath={.status.podIP}").stdout
    assert connects(kube, namespace, "other", web_ip, 8080)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-allowed"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"access": "yes"}}}], "ports": [{"port": 8080}]}
            ],
        },
    }
    apply(kube, namespace, policy)
    # kube-router applies a policy within a sync; the allowed pod must pass and the other must not.
    for _ in range(20):
        if not connects(kube, namespace, "other", web_ip, 8080):
            break
    assert not connects(kube, namespace, "other", web_ip, 8080)
    assert connects(kube, namespace, "allowed", web_ip, 8080)


def test_pods_reach_the_lab_range_and_nothing_else_outside_the_cluster(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, probe_pod("client"))
    ready(kube, namespace, "client")
    with lab_host() as inside, lab_host(network="10.250.252") as outside:
        assert connects(kube, namespace, "client", inside.address, inside.port)
        # The host at 10.250.252.2 is on this machine too, and the node could route there: only the pod
        # traffic guard stops the pod.
        local = subprocess.run(
            [
                "python3",
                "-c",
                f"import socket; socket.create_connection(('{outside.address}', {outside.port}), 2)",
            ],
            capture_output=True,
            check=False,
        )
        assert local.returncode == 0, local.stderr
        assert not connects(kube, namespace, "client", outside.address, outside.port)


def test_down_undoes_every_host_change_and_up_brings_the_node_back(kube: Kube) -> None:
    """Runs last in this module: stops the whole local cluster, checks the host, and boots it again."""
    cluster = LocalCluster(REPO / ".cluster")
    journal = json.loads(cluster.node.journal.path.read_text())
    restored_sysctls = dict(
        entry["undo"][-1].split("=", 1) for entry in journal if entry["undo"][:2] == ["sysctl", "-w"]
    )
    removed_paths = [entry["undo"][-1] for entry in journal if entry["undo"][:2] == ["rm", "-rf"]]
    assert restored_sysctls and cluster.node.dir.is_dir()
    cluster.down()
    try:
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert f" {BRIDGE}:" not in links and f" {NODE_LINK}@" not in links
        for table in ("filter", "nat", "mangle", "raw"):
            listing = ["iptables", "-t", table, "-S"]
            rules = subprocess.run(listing, capture_output=True, text=True, check=True).stdout
            assert "KUBE-" not in rules and GUARD_CHAIN not in rules, table
        for name, value in restored_sysctls.items():
            assert sysctl(name) == value, name
        assert not [path for path in removed_paths if Path(path).exists()]
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(cluster.state_dir) + "/" not in mounts
        leftovers = [
            proc.name
            for proc in Path("/proc").iterdir()
            if proc.name.isdigit() and _reads(proc / "cgroup").find("/kubepods") >= 0
        ]
        assert leftovers == []
    finally:
        cluster.up()
    assert kube.kubectl("get", "node", NODE_NAME, "-o", "name").stdout.strip() == f"node/{NODE_NAME}"


def _reads(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
