"""Tenant.status from workloads, pods and the release: pure functions, no cluster."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenant_operator.api import EnvVar, ReleaseStatus, TenantStatus, WorkloadStatus
from tenant_operator.status import (
    Observation,
    missing_secret_refs,
    pod_problem,
    pods_of,
    same_status,
    tenant_status,
    workload_status,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEPLOYED = ReleaseStatus(
    name="t", revision=1, chart_version="0.1.0", state="Deployed", applied_hash="sha256:x"
)
RUNNING = WorkloadStatus(phase="Running", ready_replicas=1, total_replicas=1, message="Server is running")


def deployment(replicas: int = 2, ready: int = 2, updated: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "neurallog-server", "generation": 3},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 3, "readyReplicas": ready, "updatedReplicas": updated, **status},
    }


def pod(name: str, app: str = "neurallog-server", waiting: str = "", message: str = "") -> dict[str, Any]:
    state = {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}
    return {
        "metadata": {"name": name, "labels": {"app": app}},
        "status": {
            "containerStatuses": [{"name": "server", "image": "neurallog/server:unpullable", "state": state}]
        },
    }


def test_a_missing_workload_is_pending() -> None:
    assert workload_status("Redis", None, []) == WorkloadStatus(
        phase="Pending", message="Redis is not created yet"
    )


def test_a_complete_rollout_is_running() -> None:
    assert workload_status("Server", deployment(), [pod("a"), pod("b")]) == WorkloadStatus(
        phase="Running", ready_replicas=2, total_replicas=2, message="Server is running"
    )


@pytest.mark.parametrize(
    "workload",
    [deployment(ready=1), deployment(updated=1), {**deployment(), "metadata": {"generation": 4}}],
    ids=["not all ready", "not all updated", "spec not yet observed"],
)
def test_an_unfinished_rollout_is_provisioning(workload: dict[str, Any]) -> None:
    status = workload_status("Server", workload, [])
    assert status.phase == "Provisioning"
    assert status.message.startswith("Server: ")


def test_zero_replicas_is_running() -> None:
    status = workload_status("Server", deployment(replicas=0, ready=0, updated=0), [])
    assert (status.phase, status.message) == ("Running", "Server is scaled to zero")


def test_pods_that_cannot_start_fail_the_workload_and_say_why() -> None:
    stuck = pod(
        "server-1", waiting="ImagePullBackOff", message='Back-off pulling image "neurallog/server:unpullable"'
    )
    status = workload_status("Server", deployment(ready=0, updated=2), [stuck])
    assert status.phase == "Failed"
    assert "pod server-1" in status.message
    assert "ImagePullBackOff" in status.message
    assert "neurallog/server:unpullable" in status.message
    assert workload_status("Server", deployment(ready=1), [stuck]).phase == "Degraded"


def test_a_replica_failure_condition_is_reported() -> None:
    quota = {"type": "ReplicaFailure", "status": "True", "message": "exceeded quota: tenant-quota"}
    status = workload_status("Server", deployment(ready=0, conditions=[quota]), [])
    assert status.phase == "Failed"
    assert "exceeded quota: tenant-quota" in status.message


def test_pod_problems() -> None:
    assert pod_problem(pod("ok")) is None
    assert pod_problem(pod("slow", waiting="ContainerCreating")) is None
    unschedulable = {
        "metadata": {"name": "p"},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}
            ]
        },
    }
    assert pod_problem(unschedulable) == "pod p cannot be scheduled: 0/1 nodes"
    binding = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    unschedulable["status"]["conditions"][0]["message"] = binding
    assert pod_problem(unschedulable) is None, "a claim being bound is not a problem"
    assert [p["metadata"]["name"] for p in pods_of("redis", [pod("a"), pod("r", app="redis")])] == ["r"]


def test_missing_secret_references() -> None:
    env = [
        EnvVar.model_validate({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        EnvVar.model_validate({"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "other"}}}),
        EnvVar.model_validate({"name": "C", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}),
        EnvVar.model_validate(
            {"name": "D", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}}
        ),
        EnvVar(name="E", value="plain"),
    ]
    missing = missing_secret_refs(env, "tenant-t", {"s": frozenset({"k"}), "gone": None})
    assert missing == [
        "B needs key other of Secret s in tenant-t, which it lacks",
        "C needs Secret gone (key k), which does not exist in tenant-t",
    ]


def observe(**changes: Any) -> Observation:
    defaults: dict[str, Any] = {
        "namespace": "tenant-t",
        "generation": 2,
        "observed_generation": 2,
        "deleting": False,
        "release": DEPLOYED,
        "server": RUNNING,
        "redis": RUNNING.model_copy(update={"message": "Redis is running"}),
    }
    return Observation(**(defaults | changes))


def conditions(status: TenantStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_everything_ready_is_running() -> None:
    status = tenant_status(observe(), TenantStatus(), NOW)
    assert status.phase == "Running"
    assert status.namespace == "tenant-t"
    assert status.observed_generation == 2
    assert conditions(status) == {
        "Ready": ("True", "AllWorkloadsReady"),
        "Reconciling": ("False", "Reconciled"),
        "Stalled": ("False", "AsExpected"),
        "Degraded": ("False", "AsExpected"),
        "Isolated": ("True", "NetworkPoliciesEnabled"),
        "Drifted": ("False", "InSync"),
    }
    assert all(c.observed_generation == 2 and c.last_transition_time == NOW for c in status.conditions)


@pytest.mark.parametrize(
    ("changes", "phase", "reason"),
    [
        ({"deleting": True}, "Terminating", "Terminating"),
        (
            {
                "release": DEPLOYED.model_copy(
                    update={"state": "Failed", "reason": "BudgetExceeded", "message": "x"}
                )
            },
            "Failed",
            "BudgetExceeded",
        ),
        ({"missing_refs": ["API_KEY needs Secret s"]}, "Degraded", "SecretNotFound"),
        (
            {"server": WorkloadStatus(phase="Failed", message="Server: pod p is ImagePullBackOff")},
            "Degraded",
            "WorkloadsDegraded",
        ),
        (
            {"release": DEPLOYED.model_copy(update={"state": "Installing", "revision": 0})},
            "Provisioning",
            "Installing",
        ),
        (
            {"redis": WorkloadStatus(phase="Provisioning", message="Redis: 0/1")},
            "Provisioning",
            "WaitingForWorkloads",
        ),
    ],
)
def test_phases_and_their_reasons(changes: dict[str, Any], phase: str, reason: str) -> None:
    status = tenant_status(observe(**changes), TenantStatus(), NOW)
    assert status.phase == phase
    assert conditions(status)["Ready"] == ("False", reason)
    degraded = phase in ("Degraded", "Failed")
    assert conditions(status)["Degraded"][0] == ("True" if degraded else "False")
    assert conditions(status)["Reconciling"][0] == (
        "True" if phase in ("Provisioning", "Terminating") else "False"
    )
    assert conditions(status)["Stalled"] == (("True", reason) if degraded else ("False", "AsExpected"))


def test_transition_times_change_only_with_the_condition_status() -> None:
    before = tenant_status(observe(), TenantStatus(), NOW)
    later = NOW + timedelta(minutes=5)
    same = tenant_status(observe(), before, later)
    assert [c.last_transition_time for c in same.conditions] == [NOW] * 6
    assert same_status(before, same)
    broken = tenant_status(observe(missing_refs=["x"]), before, later)
    times = {c.type: c.last_transition_time for c in broken.conditions}
    assert times == {
        "Ready": later,
        "Reconciling": NOW,
        "Stalled": later,
        "Degraded": later,
        "Isolated": NOW,
        "Drifted": NOW,
    }
    assert not same_status(before, broken)


def test_a_tenant_without_network_policies_says_so() -> None:
    status = tenant_status(observe(isolated=False), TenantStatus(), NOW)
    assert status.phase == "Running", "isolation off is allowed here (the operator refuses it unless allowed)"
    assert conditions(status)["Isolated"] == ("False", "NetworkPoliciesDisabled")


def test_a_tenant_waiting_for_its_namespace_is_pending() -> None:
    waiting = ReleaseStatus(state="Pending", reason="NamespaceNotOwned", message="namespace tenant-t exists")
    status = tenant_status(observe(release=waiting), TenantStatus(), NOW)
    assert status.phase == "Pending"
    assert conditions(status)["Ready"] == ("False", "NamespaceNotOwned")
    assert conditions(status)["Reconciling"][0] == "False"
    assert conditions(status)["Stalled"] == ("True", "NamespaceNotOwned"), "it waits for an administrator"


def test_an_upgrade_of_a_running_release_does_not_flip_ready() -> None:
    upgrading = DEPLOYED.model_copy(update={"state": "Installing", "revision": 3})
    status = tenant_status(observe(release=upgrading), TenantStatus(), NOW)
    assert status.phase == "Running"
    assert conditions(status)["Ready"] == ("True", "AllWorkloadsReady")
    assert conditions(status)["Reconciling"] == ("True", "Installing"), "but the upgrade is under way"


def test_drift_shows_until_the_release_that_puts_it_back_is_installed() -> None:
    repairing = DEPLOYED.model_copy(
        update={"state": "Installing", "reason": "DriftDetected", "message": "putting back: x was deleted"}
    )
    status = tenant_status(observe(release=repairing), TenantStatus(), NOW)
    assert conditions(status)["Drifted"] == ("True", "DriftDetected")
    assert next(c for c in status.conditions if c.type == "Drifted").message == "putting back: x was deleted"
    assert status.phase == "Running", "the workloads still run"
    repaired = tenant_status(observe(), status, NOW)
    assert conditions(repaired)["Drifted"] == ("False", "InSync")
