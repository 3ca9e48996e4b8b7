"""Two operator replicas on one Lease: only the leader acts (one release revision per change), and when the
leader is killed the standby takes over within the Lease's duration."""

import time
from pathlib import Path

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import Operator, Tenants, helm_revision, small_tenant, unique, wait_until

pytestmark = pytest.mark.cluster

# leader.Timing: a Lease not renewed for 15 s is free; a standby tries every 2 s.
FAILOVER_LIMIT_SECONDS = 15 + 2 + 3


def lease_holder(kube: Kube, operator: Operator) -> str:
    namespace = operator.account.settings["TENANT_OPERATOR_LEADER_ELECTION_NAMESPACE"]
    name = operator.account.settings["TENANT_OPERATOR_LEASE_NAME"]
    result = kube.kubectl(
        "get", "lease", name, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return result.stdout.strip()


def settled_revision(kube: Kube, name: str, expected: int) -> None:
    """The release reaches `expected` and stays there (no second replica adds a revision of its own)."""
    wait_until(lambda: helm_revision(kube, name) >= expected, what=f"revision {expected} of {name}")
    time.sleep(5)
    assert helm_revision(kube, name) == expected


def test_one_replica_acts_and_the_standby_takes_over_when_it_dies(
    kube: Kube, tenants: Tenants, operator: Operator, tmp_path: Path
) -> None:
    leader = wait_until(lambda: lease_holder(kube, operator), what="the operator to hold the Lease")
    standby = Operator(kube, tmp_path, operator.account)
    standby.start()  # its /healthz answers while it stands by
    try:
        name = unique("leader")
        tenants.apply(small_tenant(name))
        tenants.wait_for_phase(name, "Running")
        settled_revision(kube, name, 1)
        tenants.apply(small_tenant(name, server={"env": [{"name": "GREETING", "value": "one"}]}))
        settled_revision(kube, name, 2)
        assert lease_holder(kube, operator) == leader, "the standby took the Lease from a live leader"

        operator.kill()
        killed = time.monotonic()
        wait_until(
            lambda: lease_holder(kube, operator) not in ("", leader),
            timeout=2 * FAILOVER_LIMIT_SECONDS,
            every=0.2,
            what="the standby to take the Lease",
        )
        failover = time.monotonic() - killed
        print(f"failover after SIGKILL of the leader: {failover:.1f} s")
        assert failover <= FAILOVER_LIMIT_SECONDS

        tenants.apply(small_tenant(name, server={"env": [{"name": "GREETING", "value": "two"}]}))
        settled_revision(kube, name, 3)
        tenants.wait_for_phase(name, "Running")
    finally:
        standby.stop()  # a clean stop gives the Lease up
        if operator.process is None:
            operator.start()
    wait_until(
        lambda: lease_holder(kube, operator) not in ("", leader), what="the restarted operator to lead"
    )
