"""Ready, Reconciling and Stalled for every phase, and what kstatus itself (the binary of tests/kstatus.py,
the rules GitOps tools apply) makes of the Tenant that carries them. No cluster: the Tenant is built here."""

import itertools
from datetime import UTC, datetime
from typing import Any, get_args

import pytest

from tenant_operator.api import Phase, ReleaseStatus, TenantStatus, WorkloadStatus
from tenant_operator.status import Observation, status_patch, tenant_status
from tests.kstatus import kstatus, kstatus_result

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEPLOYED = ReleaseStatus(
    name="t", revision=1, chart_version="0.1.0", state="Deployed", applied_hash="sha256:x"
)
RUNNING = WorkloadStatus(phase="Running", ready_replicas=1, total_replicas=1, message="Server is running")
REDIS_RUNNING = RUNNING.model_copy(update={"message": "Redis is running"})
BROKEN = WorkloadStatus(phase="Failed", message="Server: pod p is ImagePullBackOff")
BUDGET = "cpu requests 3 exceed the budget's 1"


def observe(**changes: Any) -> Observation:
    defaults: dict[str, Any] = {
        "namespace": "tenant-t",
        "generation": 2,
        "observed_generation": 2,
        "deleting": False,
        "release": DEPLOYED,
        "server": RUNNING,
        "redis": REDIS_RUNNING,
    }
    return Observation(**(defaults | changes))


def tenant_object(seen: Observation, status: TenantStatus) -> dict[str, Any]:
    """The Tenant as the API server would return it with this status."""
    metadata: dict[str, Any] = {"name": "t", "generation": seen.generation}
    if seen.deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "neurallog.io/v1",
        "kind": "Tenant",
        "metadata": metadata,
        "status": status_patch(status),
    }


def triple(status: TenantStatus) -> tuple[tuple[str, str], ...]:
    by_type = {c.type: (c.status, c.reason) for c in status.conditions}
    return by_type["Ready"], by_type["Reconciling"], by_type["Stalled"]


NOT_OWNED = ReleaseStatus(state="Pending", reason="NamespaceNotOwned", message="namespace tenant-t exists")
ACCEPTED = ReleaseStatus(state="Pending", reason="Accepted", message="Creating the tenant's namespace")
FAILED = DEPLOYED.model_copy(update={"state": "Failed", "reason": "BudgetExceeded", "message": BUDGET})
FIRST_INSTALL = ReleaseStatus(name="t", state="Installing", message="helm upgrade --install in progress")
UPGRADE = DEPLOYED.model_copy(update={"state": "Installing", "revision": 3, "message": "helm upgrade"})
RETRYING = FIRST_INSTALL.model_copy(update={"reason": "ReleaseBusy", "message": "another operation"})
REPAIR = UPGRADE.model_copy(update={"reason": "DriftDetected", "message": "putting back: x was deleted"})

# case: (observation, phase, Ready, Reconciling, Stalled, kstatus's verdict)
CASES: dict[str, tuple[Observation, Phase, tuple[str, str], tuple[str, str], tuple[str, str], str]] = {
    "running": (
        observe(),
        "Running",
        ("True", "AllWorkloadsReady"),
        ("False", "Reconciled"),
        ("False", "AsExpected"),
        "Current",
    ),
    "running, upgrading": (
        observe(release=UPGRADE),
        "Running",
        ("True", "AllWorkloadsReady"),
        ("True", "Installing"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "running, drift being put back": (
        observe(release=REPAIR),
        "Running",
        ("True", "AllWorkloadsReady"),
        ("True", "DriftDetected"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "running, new generation not reconciled yet": (
        observe(generation=3),
        "Running",
        ("True", "AllWorkloadsReady"),
        ("True", "LatestGenerationNotObserved"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "accepted (first seen)": (
        observe(
            generation=1,
            observed_generation=0,
            release=ACCEPTED,
            server=WorkloadStatus(),
            redis=WorkloadStatus(),
        ),
        "Pending",
        ("False", "Accepted"),
        ("True", "Accepted"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "pending for an administrator": (
        observe(release=NOT_OWNED, server=WorkloadStatus(), redis=WorkloadStatus()),
        "Pending",
        ("False", "NamespaceNotOwned"),
        ("False", "NamespaceNotOwned"),
        ("True", "NamespaceNotOwned"),
        "Failed",
    ),
    "provisioning, first install": (
        observe(
            observed_generation=1, release=FIRST_INSTALL, server=WorkloadStatus(), redis=WorkloadStatus()
        ),
        "Provisioning",
        ("False", "Installing"),
        ("True", "Installing"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "provisioning, a Helm error retried": (
        observe(release=RETRYING, server=WorkloadStatus(), redis=WorkloadStatus()),
        "Provisioning",
        ("False", "Installing"),
        ("True", "Installing"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "provisioning, waiting for workloads": (
        observe(redis=WorkloadStatus(phase="Provisioning", message="Redis: 0/1 replicas ready")),
        "Provisioning",
        ("False", "WaitingForWorkloads"),
        ("True", "WaitingForWorkloads"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "failed": (
        observe(release=FAILED),
        "Failed",
        ("False", "BudgetExceeded"),
        ("False", "BudgetExceeded"),
        ("True", "BudgetExceeded"),
        "Failed",
    ),
    "failed, a new generation not reconciled yet": (
        observe(generation=3, release=FAILED),
        "Failed",
        ("False", "BudgetExceeded"),
        ("True", "LatestGenerationNotObserved"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "degraded, a missing Secret": (
        observe(missing_refs=["API_KEY needs Secret s (key k), which does not exist in tenant-t"]),
        "Degraded",
        ("False", "SecretNotFound"),
        ("False", "SecretNotFound"),
        ("True", "SecretNotFound"),
        "Failed",
    ),
    "degraded, pods that need someone to act": (
        observe(server=BROKEN),
        "Degraded",
        ("False", "WorkloadsDegraded"),
        ("False", "WorkloadsDegraded"),
        ("True", "WorkloadsDegraded"),
        "Failed",
    ),
    "degraded, an upgrade under way (maybe the fix)": (
        observe(server=BROKEN, release=UPGRADE),
        "Degraded",
        ("False", "WorkloadsDegraded"),
        ("True", "Installing"),
        ("False", "AsExpected"),
        "InProgress",
    ),
    "terminating": (
        observe(deleting=True),
        "Terminating",
        ("False", "Terminating"),
        ("True", "Terminating"),
        ("False", "AsExpected"),
        "Terminating",
    ),
}


def test_every_phase_has_cases() -> None:
    assert {case[1] for case in CASES.values()} == set(get_args(Phase))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_kstatus_conditions_and_verdict(case: str) -> None:
    seen, phase, ready, reconciling, stalled, verdict = CASES[case]
    status = tenant_status(seen, TenantStatus(), NOW)
    assert status.phase == phase
    assert triple(status) == (ready, reconciling, stalled)
    assert all(c.observed_generation == seen.observed_generation for c in status.conditions)
    assert status.observed_generation == seen.observed_generation
    assert kstatus(tenant_object(seen, status)) == verdict


def test_a_stalled_tenant_says_why_and_kstatus_repeats_it() -> None:
    seen = observe(release=FAILED)
    status = tenant_status(seen, TenantStatus(), NOW)
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason, stalled.message) == ("True", "BudgetExceeded", BUDGET)
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.reason, ready.message) == ("BudgetExceeded", BUDGET), "Ready says what it said before"
    assert kstatus_result(tenant_object(seen, status)) == {"status": "Failed", "message": BUDGET}


def test_false_conditions_are_written_not_left_out() -> None:
    patch = status_patch(tenant_status(observe(), TenantStatus(), NOW))
    written = {c["type"]: c["status"] for c in patch["conditions"]}
    assert written == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Degraded": "False",
        "Isolated": "True",
        "Drifted": "False",
    }
    assert all(c["observedGeneration"] == 2 for c in patch["conditions"])


RELEASES = [DEPLOYED, ACCEPTED, NOT_OWNED, FAILED, FIRST_INSTALL, UPGRADE, RETRYING, REPAIR]
WORKLOADS = [
    RUNNING,
    WorkloadStatus(),
    WorkloadStatus(phase="Provisioning", message="Server: 0/1 replicas ready"),
    BROKEN,
    WorkloadStatus(
        phase="Degraded", ready_replicas=1, total_replicas=2, message="Server: pod q is CrashLoopBackOff"
    ),
]


def sweep() -> list[Observation]:
    return [
        observe(
            release=release, server=server, deleting=deleting, generation=generation, missing_refs=missing
        )
        for release, server, deleting, generation, missing in itertools.product(
            RELEASES, WORKLOADS, (False, True), (2, 3), ((), ("API_KEY needs Secret s",))
        )
    ]


def test_the_three_conditions_agree_with_kstatus_everywhere() -> None:
    """Every combination of release, workloads, deletion, generation and a missing Secret: Reconciling and
    Stalled are never True together (kstatus would go by their order), and kstatus's verdict follows from
    them alone: Terminating when deleted, else Reconciling -> InProgress, Stalled -> Failed, Ready ->
    Current."""
    for seen in sweep():
        status = tenant_status(seen, TenantStatus(), NOW)
        ready, reconciling, stalled = (state for state, _ in triple(status))
        assert (reconciling, stalled) != ("True", "True"), seen
        assert ready == "True" or "True" in (reconciling, stalled), (
            f"Ready False says nothing to kstatus: {seen}"
        )
        expected = (
            "Terminating"
            if seen.deleting
            else "InProgress"
            if reconciling == "True"
            else "Failed"
            if stalled == "True"
            else "Current"
        )
        assert kstatus(tenant_object(seen, status)) == expected, (seen, status.conditions)
        if status.phase in ("Failed", "Degraded"):
            assert expected in ("Failed", "InProgress", "Terminating"), "a broken tenant is never Current"
        if expected == "Current":
            assert status.phase == "Running"


def test_a_status_written_before_reconciling_replaced_progressing_is_still_read() -> None:
    """An operator upgraded over Tenants whose status has Progressing: the rest of the status (the release
    and its applied hash, which spare a Helm call) still reads; the next report writes the new conditions."""
    old = status_patch(tenant_status(observe(), TenantStatus(), NOW))
    old["conditions"] = [
        {**c, "type": "Progressing", "reason": "Complete"} if c["type"] == "Reconciling" else c
        for c in old["conditions"]
        if c["type"] != "Stalled"
    ]
    read = TenantStatus.model_validate(old)
    assert read.release == DEPLOYED
    assert [c.type for c in read.conditions] == ["Ready", "Degraded", "Isolated", "Drifted"]
    written = tenant_status(observe(), read, NOW)
    assert [c.type for c in written.conditions] == [
        "Ready",
        "Reconciling",
        "Stalled",
        "Degraded",
        "Isolated",
        "Drifted",
    ]
