"""The local cluster is a real control plane: scheduling, storage, RBAC, Pod Security, namespace deletion."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from local_cluster.cluster import COMPONENTS, KWOK_TAINT, ComponentExitedError, LocalCluster
from local_cluster.images import PROBE_IMAGE
from tests.conftest import REPO, Kube

pytestmark = pytest.mark.cluster


def _apply(kube: Kube, namespace: str, *objects: dict[str, object]) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def _pod_template(app: str) -> dict[str, object]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": app,
                    "image": PROBE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "100000"],
                }
            ],
        },
    }


def test_nodes_are_ready_and_the_server_reports_its_real_version(kube: Kube) -> None:
    nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert nodes, "the cluster has no node"
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)["serverVersion"]
    if kube.kubeconfig == REPO / ".cluster" / "kubeconfig":
        pinned = (REPO / "cluster/tools/kube/go.mod").read_text().split("k8s.io/kubernetes ")[1].split()[0]
        assert version["gitVersion"] == pinned
    assert version["major"] == "1" and int(version["minor"]) >= 30


def test_deployment_and_statefulset_become_ready_and_namespace_deletion_completes(
    kube: Kube, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": _pod_template("web"),
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": _pod_template("db"),
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }
    _apply(kube, namespace, deployment, statefulset)
    kube.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    kube.kubectl("rollout", "status", "-n", namespace, "statefulset/db", "--timeout=60s")
    ready = kube.kubectl(
        "get", "deployment", "web", "-n", namespace, "-o", "jsonpath={.status.readyReplicas}"
    )
    assert ready.stdout == "2"
    claim = kube.kubectl("get", "pvc", "data-db-0", "-n", namespace, "-o", "jsonpath={.status.phase}")
    assert claim.stdout == "Bound"

    started = time.monotonic()
    kube.kubectl("delete", "namespace", namespace, "--timeout=30s")
    elapsed = time.monotonic() - started
    gone = kube.kubectl("get", "namespace", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert elapsed < 30


def test_pods_that_tolerate_the_kwok_taint_run_by_the_hundred_on_the_kwok_node(
    kube: Kube, namespace: str
) -> None:
    """Scale work: pods that ask for the KWOK node (toleration and selector) run there, without containers."""
    if kube.kubeconfig != REPO / ".cluster" / "kubeconfig":
        pytest.skip("the KWOK node is the local cluster's")
    template = _pod_template("scale")
    template["spec"] = {  # type: ignore[index]
        "containers": [{"name": "scale", "image": "registry.invalid/scale:1"}],
        "nodeSelector": {"type": "kwok"},
        "tolerations": [{**KWOK_TAINT, "operator": "Equal"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "scale"},
        "spec": {"replicas": 100, "selector": {"matchLabels": {"app": "scale"}}, "template": template},
    }
    _apply(kube, namespace, deployment)
    kube.kubectl("rollout", "status", "-n", namespace, "deployment/scale", "--timeout=120s")
    nodes = kube.kubectl("get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].spec.nodeName}").stdout
    assert nodes.split() == ["kwok-node-0"] * 100


def test_image_tag_unpullable_stays_in_image_pull_back_off(kube: Kube, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "broken"},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:unpullable"}]},
    }
    _apply(kube, namespace, pod)
    deadline = time.monotonic() + 30
    reason = ""
    while time.monotonic() < deadline and reason != "ImagePullBackOff":
        status = json.loads(kube.kubectl("get", "pod", "broken", "-n", namespace, "-o", "json").stdout)[
            "status"
        ]
        waiting = [s["state"].get("waiting", {}) for s in status.get("containerStatuses", [])]
        reason = waiting[0].get("reason", "") if waiting else ""
        time.sleep(0.5)
    assert reason == "ImagePullBackOff"
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "False"


def test_rbac_denies_a_service_account_without_bindings(kube: Kube, namespace: str) -> None:
    kube.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    subject = f"--as=system:serviceaccount:{namespace}:nobody"
    denied = kube.kubectl("auth", "can-i", "list", "pods", "-n", namespace, subject, check=False)
    assert denied.stdout.strip() == "no"
    assert denied.returncode == 1
    account = f"--serviceaccount={namespace}:nobody"
    kube.kubectl("create", "rolebinding", "view", "--clusterrole=view", account, "-n", namespace)
    allowed = kube.kubectl("auth", "can-i", "list", "pods", "-n", namespace, subject, check=False)
    assert allowed.stdout.strip() == "yes"


def test_pod_security_restricted_refuses_a_privileged_pod(kube: Kube, namespace: str) -> None:
    kube.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {"name": "app", "image": "registry.invalid/app:1", "securityContext": {"privileged": True}}
            ]
        },
    }
    refused = kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr
    assert "privileged" in refused.stderr


def _processes_using(state: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(state).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path, kube: Kube) -> None:
    if kube.kubeconfig != REPO / ".cluster" / "kubeconfig":
        pytest.skip("a second local cluster is only booted where the local cluster is in use")
    # Without a real node: the session's cluster owns this machine's node address and links.
    cluster = LocalCluster(tmp_path / "state", real_node=False)
    try:
        cluster.up()
        pids = cluster.running()
        assert all(pids.values()), pids
        cluster.up()  # already up: nothing restarts
        assert cluster.running() == pids
        assert len(_processes_using(cluster.state_dir)) >= len(COMPONENTS)
    finally:
        cluster.down()
    assert _processes_using(cluster.state_dir) == []
    assert not any(cluster.running().values())


@pytest.mark.parametrize(
    ("component", "last_words", "boots"),
    [
        ("kwok", "fatal error: concurrent map writes\n\ngoroutine 41 [running]:\n", 2),
        ("kwok", "panic: something else\n", 1),
        ("etcd", "fatal error: concurrent map writes\n", 1),
    ],
)
def test_up_boots_again_only_when_kwok_died_of_its_start_up_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, component: str, last_words: str, boots: int
) -> None:
    cluster = LocalCluster(tmp_path / "state", real_node=False)
    for directory in (cluster.logs, cluster.run_dir):
        directory.mkdir(parents=True)
    (cluster.logs / f"{component}.log").write_text("started\n" * 5000 + last_words)
    pid_file = cluster.run_dir / f"{component}.pid"
    pid_file.write_text("4242")
    attempts: list[int] = []

    def boot() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ComponentExitedError(component, "the nodes", pid_file, cluster.logs)

    monkeypatch.setattr(cluster, "is_up", lambda: False)
    monkeypatch.setattr(cluster, "_boot", boot)
    if boots == 1:
        with pytest.raises(ComponentExitedError, match=f"{component} exited while waiting for the nodes"):
            cluster.up()
    else:
        cluster.up()
    assert len(attempts) == boots
