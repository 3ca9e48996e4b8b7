"""A tenant on a tight budget rolls out for real. Installed through the post-renderer with a budget that holds
exactly its pods and the server's surge pod (the only budget the check accepts for them), a change of the
server's env rolls out on the real node: the quota admits the surge pod and the rollout completes. The same
tenant with a budget for its running pods only is refused by the check with the rollout's numbers; given
that budget anyway (the quota lowered behind Helm's back), the next rollout stalls on `exceeded quota`."""

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from postrender_helm import CHART, HELM4, POSTRENDERER, IsolatedHelm

from tenant_operator.namespace import namespace_labels
from tests.conftest import Kube

pytestmark = pytest.mark.cluster

# Small enough to run beside the other tests on the real node's two cores; requests and limits differ so
# that both are checked.
POD = {"cpu": {"request": "20m", "limit": "50m"}, "memory": {"request": "32Mi", "limit": "64Mi"}}
STORAGE = {"request": "1Gi", "limit": "1Gi"}
# One server and one Redis running: 2 x POD.
RUNNING = {"cpu": {"request": "40m", "limit": "100m"}, "memory": {"request": "64Mi", "limit": "128Mi"}}
# And the server's surge pod during a rollout (the chart's maxSurge 1): 3 x POD.
ROLLING_OUT = {"cpu": {"request": "60m", "limit": "150m"}, "memory": {"request": "96Mi", "limit": "192Mi"}}


def values(budget: dict[str, Any], rollout: str) -> dict[str, Any]:
    """One server and one Redis of the node's preloaded images; `rollout` is an env value of the server."""
    return {
        "displayName": "Rollout on a tight budget",
        "resources": budget | {"storage": STORAGE},
        "server": {
            "replicas": 1,
            "image": "docker.io/neurallog/server:latest",
            "resources": POD,
            "env": [{"name": "ROLLOUT", "value": rollout}],
        },
        "redis": {
            "replicas": 1,
            "image": "docker.io/library/redis:7-alpine",
            "resources": POD,
            "storage": STORAGE["limit"],
            "config": {"maxmemory": "16mb"},
        },
    }


class Tenant(NamedTuple):
    helm: IsolatedHelm
    release: str
    namespace: str
    home: Path

    def install(self, spec: dict[str, Any], *, check: bool = True) -> tuple[int, str]:
        """`helm upgrade --install --wait` of charts/tenant through the post-renderer: (status, stderr)."""
        values_file = self.home / f"values-{uuid.uuid4().hex[:8]}.yaml"
        values_file.write_text(yaml.safe_dump(spec))
        result = self.helm.run(
            "upgrade",
            "--install",
            self.release,
            str(CHART),
            "-n",
            self.namespace,
            "-f",
            str(values_file),
            "--post-renderer",
            POSTRENDERER,
            "--wait",
            "--timeout",
            "4m",
            check=check,
        )
        return result.returncode, result.stderr


@pytest.fixture
def tenant(kube: Kube, tmp_path: Path) -> Iterator[Tenant]:
    """A release and its namespace, labelled as the operator labels a tenant's; removed afterwards."""
    release = f"rollout-{uuid.uuid4().hex[:8]}"
    namespace = f"tenant-{release}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": namespace_labels(release)},
    }
    kube.kubectl("create", "-f", "-", input=yaml.safe_dump(manifest))
    helm = IsolatedHelm(HELM4, tmp_path, kube.env)
    yield Tenant(helm, release, namespace, tmp_path)
    helm.run("uninstall", release, "-n", namespace, "--wait", check=False)
    kube.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


def get(kube: Kube, *args: str) -> Any:
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)


def quota_refusals(kube: Kube, namespace: str) -> list[str]:
    """The messages of the namespace's events that tell of a pod the quota refused."""
    events = get(kube, "events", "-n", namespace)["items"]
    return [event["message"] for event in events if "exceeded quota" in event.get("message", "")]


def server_replica_sets(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    """The server's ReplicaSets by the Deployment revision each one holds."""
    found = get(kube, "replicasets", "-n", namespace, "-l", "app=neurallog-server")["items"]
    return {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs for rs in found}


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(2)


def test_a_tenant_whose_budget_just_holds_its_rollout_rolls_out_and_one_without_the_room_is_refused(
    kube: Kube, tenant: Tenant
) -> None:
    namespace = tenant.namespace

    # Room for the running pods only: the check refuses it, with what a rollout needs.
    code, stderr = tenant.install(values(RUNNING, "1"), check=False)
    assert code != 0, stderr
    assert (
        "requests.cpu: the workloads request 60m during a rollout but the quota allows 40m: 40m for the "
        "running pods and 20m for the 1 extra pod a rolling update starts before it stops old ones ("
    ) in stderr
    # (in the order Helm hands the objects over)
    assert "Deployment/neurallog-server (1 + 1 surge) x 20m = 40m" in stderr
    assert "StatefulSet/redis 1 x 20m = 20m" in stderr
    assert "limits.memory: the workloads are limited to 192Mi during a rollout" in stderr
    assert get(kube, "deployments,statefulsets,resourcequotas", "-n", namespace)["items"] == []

    # Room for the rollout, to the unit: accepted, and the pods run.
    tenant.install(values(ROLLING_OUT, "1"))
    quota = get(kube, "resourcequota", "tenant-quota", "-n", namespace)
    assert quota["status"]["hard"]["requests.cpu"] == "60m"

    # A rollout: the server's env changes. The new ReplicaSet gets its pod beside the old one (maxSurge 1,
    # maxUnavailable 0), which is exactly the budget, and the old one is stopped.
    tenant.install(values(ROLLING_OUT, "2"))
    deployment = get(kube, "deployment", "neurallog-server", "-n", namespace)
    status = deployment["status"]
    assert status["observedGeneration"] == deployment["metadata"]["generation"]
    assert [status.get(key, 0) for key in ("replicas", "updatedReplicas", "readyReplicas")] == [1, 1, 1]
    conditions = {condition["type"]: condition for condition in status["conditions"]}
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable", conditions
    assert "ReplicaFailure" not in conditions, conditions
    replica_sets = server_replica_sets(kube, namespace)
    assert sorted(replica_sets) == ["1", "2"]
    new, old = replica_sets["2"], replica_sets["1"]
    assert [new["status"].get(key, 0) for key in ("replicas", "readyReplicas")] == [1, 1], new["status"]
    assert old["status"].get("replicas", 0) == 0, old["status"]
    assert {"name": "ROLLOUT", "value": "2"} in new["spec"]["template"]["spec"]["containers"][0]["env"]
    assert quota_refusals(kube, namespace) == []

    # Negative control: the same tenant with a budget for its running pods only (what the check used to
    # accept), set behind Helm's back. The next rollout's surge pod is refused and nothing makes room.
    hard = {
        "requests.cpu": RUNNING["cpu"]["request"],
        "limits.cpu": RUNNING["cpu"]["limit"],
        "requests.memory": RUNNING["memory"]["request"],
        "limits.memory": RUNNING["memory"]["limit"],
    }
    patch = json.dumps({"spec": {"hard": hard}})
    kube.kubectl("patch", "resourcequota", "tenant-quota", "-n", namespace, "--type=merge", "-p", patch)
    wait_until(
        "the quota to enforce the lowered budget",
        lambda: (
            get(kube, "resourcequota", "tenant-quota", "-n", namespace)["status"]["hard"]["requests.cpu"]
            == "40m"
        ),
    )
    kube.kubectl("set", "env", "deployment/neurallog-server", "-n", namespace, "ROLLOUT=3")
    wait_until("the quota to refuse the surge pod", lambda: quota_refusals(kube, namespace) != [])
    assert "tenant-quota" in quota_refusals(kube, namespace)[0]
    # The ReplicaSet keeps retrying, and the old server, which maxUnavailable 0 keeps, never makes room.
    time.sleep(10)
    stalled = server_replica_sets(kube, namespace)["3"]
    assert stalled["spec"]["replicas"] == 1 and stalled["status"].get("replicas", 0) == 0, stalled["status"]
    status = get(kube, "deployment", "neurallog-server", "-n", namespace)["status"]
    assert [status.get(key, 0) for key in ("updatedReplicas", "readyReplicas")] == [0, 1], status
