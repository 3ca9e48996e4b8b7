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
    assert drift.drift_of("MODIFIED", scaled) == "Deployment neurallog-server was changed by kubectl"
    edited = obj("ResourceQuota", "tenant-quota", ("helm", ""), ("kubectl-edit", ""), ("kubectl-patch", ""))
    assert (
        drift.drift_of("MODIFIED", edited)
        == "ResourceQuota tenant-quota was changed by kubectl-edit, kubectl-patch"
    )


def test_a_deleted_object_is_drift() -> None:
    assert drift.drift_of("DELETED", obj("NetworkPolicy", "default-deny", ("helm", ""))) == (
        "NetworkPolicy default-deny was deleted"
    )


def test_repairs_coalesce_and_retry_until_they_succeed() -> None:
    calls: list[tuple[str, list[str]]] = []
    failures = [kopf.TemporaryError("namespace still being deleted")]

    async def repair(tenant: str, whats: list[str]) -> None:
        calls.append((tenant, list(whats)))
        await asyncio.sleep(0.01)
        if failures:
            raise failures.pop()

    async def scenario() -> None:
        drift.RETRY_SECONDS = (0.01,)
        repairs = drift.Repairs(repair)
        repairs.request("a", "x was deleted")
        repairs.request("a", "y was deleted")  # before the first repair starts: the same repair
        await asyncio.sleep(0)
        repairs.request("a", "z was deleted")  # during it: one more repair
        repairs.request("a", "z was deleted")
        repairs.request("b", "x was deleted")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not repairs._tasks:
                break

    asyncio.run(scenario())
    done_a = [whats for tenant, whats in calls if tenant == "a"]
    assert done_a[0] == ["x was deleted", "y was deleted"]
    assert sorted(what for whats in done_a[1:] for what in whats) == [
        "x was deleted",
        "y was deleted",
        "z was deleted",
    ], "the failed repair is tried again, with what came meanwhile"
    assert [whats for tenant, whats in calls if tenant == "b"] == [["x was deleted"]]
