"""What counts as drift, and the repair queue: one repair at a time per tenant, coalesced, retried."""

import asyncio
from typing import Any

import kopf

from tenant_operator import drift


def obj(kind: str, name: str, *managers: tuple[str, str]) -> dict[str, Any]:
    """An object with managedFields entries (manager, subresource)."""
    fields = [{"manager": manager, "operation": "Update", "subresource": sub} for manager, sub in managers]
    return {"kind": kind, "metadata": {"name": name, "managedFields": fields}}


def test_only_writes_by_others_than_helm_and_the_cluster_are_drift() -> None:
    installed = obj(
        "Deployment", "neurallog-server", ("helm", ""), ("kube-controller-manager", ""), ("x", "status")
    )
    assert drift.drift_of("MODIFIED", installed) is None
    autoscaled = obj("Deployment", "neurallog-server", ("helm", ""), ("kube-controller-manager", "scale"))
    assert drift.drift_of("MODIFIED", autoscaled) is None, "an HPA's replicas are the HPA's"
    scaled = obj("Deployment", "neurallog-server", ("helm", ""), ("kubectl", "scale"))
    assert str(drift.drift_of("MODIFIED", scaled)) == "Deployment neurallog-server was changed by kubectl"
    edited = obj("ResourceQuota", "tenant-quota", ("helm", ""), ("kubectl-edit", ""), ("kubectl-patch", ""))
    assert str(drift.drift_of("MODIFIED", edited)) == (
        "ResourceQuota tenant-quota was changed by kubectl-edit, kubectl-patch"
    )


def test_a_deleted_object_is_drift() -> None:
    seen = drift.drift_of("DELETED", obj("NetworkPolicy", "default-deny", ("helm", "")))
    assert str(seen) == "NetworkPolicy default-deny was deleted"
    assert seen is not None and drift.still_drifted(seen, None)
    assert not drift.still_drifted(seen, obj("NetworkPolicy", "default-deny", ("helm", ""))), "put back since"


def test_a_write_put_back_since_is_no_drift_any_more() -> None:
    seen = drift.drift_of(
        "MODIFIED", obj("Deployment", "neurallog-server", ("helm", ""), ("kubectl", "scale"))
    )
    assert seen is not None
    assert drift.still_drifted(
        seen, obj("Deployment", "neurallog-server", ("helm", ""), ("kubectl", "scale"))
    )
    assert not drift.still_drifted(seen, obj("Deployment", "neurallog-server", ("helm", "")))


def test_repairs_coalesce_and_retry_until_they_succeed() -> None:
    calls: list[tuple[str, list[str]]] = []

    def gone(name: str) -> drift.Drift:
        return drift.Drift("NetworkPolicy", "tenant-a", name, deleted=True)

    failures = [kopf.TemporaryError("namespace still being deleted")]

    async def repair(tenant: str, whats: list[drift.Drift]) -> None:
        calls.append((tenant, [what.name for what in whats]))
        await asyncio.sleep(0.01)
        if failures:
            raise failures.pop()

    async def scenario() -> None:
        drift.RETRY_SECONDS = (0.01,)
        repairs = drift.Repairs(repair)
        repairs.request("a", gone("x"))
        repairs.request("a", gone("y"))  # before the first repair starts: the same repair
        await asyncio.sleep(0)
        repairs.request("a", gone("z"))  # during it: one more repair
        repairs.request("a", gone("z"))
        repairs.request("b", gone("x"))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not repairs._tasks:
                break

    asyncio.run(scenario())
    done_a = [whats for tenant, whats in calls if tenant == "a"]
    assert done_a[0] == ["x", "y"]
    assert sorted(what for whats in done_a[1:] for what in whats) == ["x", "y", "z"], (
        "the failed repair is tried again, with what came meanwhile"
    )
    assert [whats for tenant, whats in calls if tenant == "b"] == [["x"]]
