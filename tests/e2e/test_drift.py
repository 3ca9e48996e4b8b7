"""Drift in what a release owns is detected, reported and put back, and a lost namespace is made again; the
reconcile annotation runs Helm at once. Times are printed: the README states the bound they stay under."""

import json
import time
from collections.abc import Callable

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import Tenants, helm_revision, small_tenant, unique, wait_until

pytestmark = pytest.mark.cluster

# How long a repair may take, from the change to the object being back (the README says 30 s).
REPAIR_LIMIT_SECONDS = 30


@pytest.fixture(scope="module")
def running(kube: Kube, tenants_for_module: Tenants) -> str:
    """One Running tenant that the tests of this module drift in turn."""
    name = unique("drift")
    tenants_for_module.apply(small_tenant(name))
    tenants_for_module.wait_for_phase(name, "Running")
    return name


def repaired(
    kube: Kube, tenants: Tenants, name: str, change: Callable[[], None], back: Callable[[], bool]
) -> float:
    """Make the change, then wait until it is undone; the seconds it took. Checks the event and revision."""
    revision = helm_revision(kube, name)
    started = time.monotonic()
    change()
    wait_until(back, timeout=2 * REPAIR_LIMIT_SECONDS, every=0.2, what="the drift to be put back")
    took = time.monotonic() - started
    wait_until(lambda: helm_revision(kube, name) > revision, what="a new revision putting it back")
    drifts = [event for event in tenants.events(name) if event["reason"] == "DriftDetected"]
    assert drifts, "no DriftDetected event"
    wait_until(lambda: tenants.condition(name, "Drifted")["status"] == "False", what="Drifted to clear")
    return took


def jsonpath(kube: Kube, namespace: str, what: str, path: str) -> str:
    result = kube.kubectl("get", what, "-n", namespace, "-o", f"jsonpath={path}", check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def test_a_deleted_network_policy_is_put_back(kube: Kube, tenants_for_module: Tenants, running: str) -> None:
    namespace = f"tenant-{running}"
    took = repaired(
        kube,
        tenants_for_module,
        running,
        lambda: kube.kubectl("delete", "networkpolicy", "default-deny", "-n", namespace),
        lambda: jsonpath(kube, namespace, "networkpolicy/default-deny", "{.metadata.name}") == "default-deny",
    )
    print(f"deleted NetworkPolicy default-deny put back in {took:.1f} s")
    assert took <= REPAIR_LIMIT_SECONDS


def test_an_edited_quota_is_put_back(kube: Kube, tenants_for_module: Tenants, running: str) -> None:
    namespace = f"tenant-{running}"
    budget = jsonpath(kube, namespace, "resourcequota/tenant-quota", "{.spec.hard.requests\\.cpu}")
    patch = json.dumps({"spec": {"hard": {"requests.cpu": "100"}}})
    took = repaired(
        kube,
        tenants_for_module,
        running,
        lambda: kube.kubectl(
            "patch", "resourcequota", "tenant-quota", "-n", namespace, "--type=merge", "-p", patch
        ),
        lambda: (
            jsonpath(kube, namespace, "resourcequota/tenant-quota", "{.spec.hard.requests\\.cpu}") == budget
        ),
    )
    print(f"edited ResourceQuota put back to requests.cpu={budget} in {took:.1f} s")
    assert took <= REPAIR_LIMIT_SECONDS


def test_a_workload_scaled_by_hand_is_scaled_back(
    kube: Kube, tenants_for_module: Tenants, running: str
) -> None:
    namespace = f"tenant-{running}"
    took = repaired(
        kube,
        tenants_for_module,
        running,
        lambda: kube.kubectl("scale", "deployment", "neurallog-server", "-n", namespace, "--replicas=3"),
        lambda: jsonpath(kube, namespace, "deployment/neurallog-server", "{.spec.replicas}") == "1",
    )
    print(f"Deployment scaled by hand scaled back in {took:.1f} s")
    assert took <= REPAIR_LIMIT_SECONDS
    tenants_for_module.wait_for_phase(running, "Running")


def test_the_reconcile_annotation_runs_helm_at_once(
    kube: Kube, tenants_for_module: Tenants, running: str
) -> None:
    revision = helm_revision(kube, running)
    kube.kubectl(
        "annotate", "tenant", running, f"tenants.neurallog.io/reconcile={time.time()}", "--overwrite"
    )
    wait_until(
        lambda: "ReconcileRequested" in {event["reason"] for event in tenants_for_module.events(running)},
        timeout=60,
        what="the operator to take the request",
    )
    wait_until(lambda: helm_revision(kube, running) > revision, timeout=60, what="a Helm call")


def test_a_deleted_namespace_is_made_again_and_filled(kube: Kube, tenants_for_module: Tenants) -> None:
    name = unique("lost")
    namespace = f"tenant-{name}"
    tenants_for_module.apply(small_tenant(name))
    tenants_for_module.wait_for_phase(name, "Running")
    started = time.monotonic()
    kube.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s")
    gone = time.monotonic() - started

    def filled() -> bool:
        kinds = "resourcequota,limitrange,networkpolicy,deployment,statefulset"
        names = kube.kubectl("get", kinds, "-n", namespace, "-o", "name", check=False).stdout.split()
        return {
            "resourcequota/tenant-quota",
            "limitrange/tenant-limits",
            "networkpolicy.networking.k8s.io/default-deny",
            "deployment.apps/neurallog-server",
            "statefulset.apps/redis",
        } <= set(names)

    wait_until(filled, timeout=120, every=0.5, what=f"{namespace} made again with the tenant's objects")
    took = time.monotonic() - started
    print(f"namespace deleted in {gone:.1f} s, made again and filled {took - gone:.1f} s after it was gone")
    labels = json.loads(kube.kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"][
        "labels"
    ]
    assert labels["neurallog.io/tenant"] == name
    tenants_for_module.wait_for_phase(name, "Running", timeout=180)
