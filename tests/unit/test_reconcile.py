"""The create/update and delete use cases with Helm, the API and the reporter faked: what is called when."""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import pytest

from tenant_operator import deletion, reconcile
from tenant_operator.api import ReleaseStatus
from tenant_operator.context import Context
from tenant_operator.release import HelmError, Release, desired_hash
from tenant_operator.settings import Settings

FINGERPRINT = "chart-fingerprint"


@dataclass
class FakeHelm:
    chart_fingerprint: str = FINGERPRINT
    failure: HelmError | None = None
    upgrades: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)
    uninstalls: list[str] = field(default_factory=list)

    async def upgrade(self, name: str, namespace: str, values: Mapping[str, Any]) -> Release:
        self.upgrades.append((name, namespace, values))
        if self.failure:
            raise self.failure
        return Release(name=name, revision=len(self.upgrades), chart_version="0.1.0", status="deployed")

    async def uninstall(self, name: str, namespace: str) -> bool:
        self.uninstalls.append(name)
        return True


@dataclass
class FakeKube:
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    disappear_after: int = 1  # reads of a deleted namespace before it is gone
    created: list[str] = field(default_factory=list)
    tenant: dict[str, Any] | None = None

    async def get_tenant(self, name: str) -> dict[str, Any] | None:
        return self.tenant

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        namespace = self.namespaces.get(name)
        if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
            self.disappear_after -= 1
            if self.disappear_after < 0:
                del self.namespaces[name]
                return None
        return namespace

    async def create_namespace(self, body: Mapping[str, Any]) -> bool:
        self.created.append(body["metadata"]["name"])
        self.namespaces[body["metadata"]["name"]] = dict(body)
        return True

    async def label_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        self.namespaces[name]["metadata"]["labels"].update(labels)

    async def delete_namespace(self, name: str) -> None:
        self.namespaces[name]["metadata"]["deletionTimestamp"] = "now"


@dataclass
class FakeReporter:
    reports: list[tuple[str, ReleaseStatus | None, int | None]] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)

    async def report(
        self, name: str, *, release: ReleaseStatus | None = None, observed_generation: int | None = None
    ) -> None:
        self.reports.append((name, release, observed_generation))

    def forget(self, name: str) -> None:
        self.forgotten.append(name)


@dataclass
class FakeEvents:
    posted: list[tuple[str, str]] = field(default_factory=list)

    def post(self, tenant: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        self.posted.append((kind, reason))


@dataclass
class World:
    helm: FakeHelm = field(default_factory=FakeHelm)
    kube: FakeKube = field(default_factory=FakeKube)
    reporter: FakeReporter = field(default_factory=FakeReporter)
    events: FakeEvents = field(default_factory=FakeEvents)

    def context(self) -> Context:
        settings = Settings(helm="helm", namespace_poll_seconds=0.01)
        return Context(
            settings=settings,
            helm=cast(Any, self.helm),
            kube=cast(Any, self.kube),
            reporter=cast(Any, self.reporter),
            events=cast(Any, self.events),
        )


def tenant(status: dict[str, Any] | None = None, generation: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "neurallog.io/v1",
        "kind": "Tenant",
        "metadata": {"name": "acme", "uid": "u-1", "generation": generation},
        "spec": {"displayName": "Acme", "server": {"replicas": 2}},
        "status": status or {},
    }


def values() -> dict[str, Any]:
    return reconcile.parse_spec("acme", tenant()["spec"]).to_values()


def test_a_new_tenant_gets_its_namespace_and_release() -> None:
    world = World()
    asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    assert world.kube.created == ["tenant-acme"]
    assert world.helm.upgrades == [("acme", "tenant-acme", values())]
    states = [
        (release.state if release else None, generation) for _, release, generation in world.reporter.reports
    ]
    assert states == [("Installing", 0), ("Deployed", 2)]
    deployed = world.reporter.reports[-1][1]
    assert deployed is not None and deployed.applied_hash == desired_hash(values(), FINGERPRINT)
    assert deployed.revision == 1
    assert world.events.posted == [
        ("Normal", "NamespaceCreated"),
        ("Normal", "Installing"),
        ("Normal", "Installed"),
    ]


def test_nothing_changed_means_no_helm_call() -> None:
    world = World()
    applied = {
        "state": "Deployed",
        "appliedHash": desired_hash(values(), FINGERPRINT),
        "name": "acme",
        "revision": 4,
    }
    world.kube.namespaces["tenant-acme"] = {"metadata": {"name": "tenant-acme", "labels": {}}}
    asyncio.run(reconcile.reconcile(world.context(), tenant({"release": applied}), retry=0))
    assert world.helm.upgrades == []
    assert world.reporter.reports == [("acme", None, 2)]
    assert world.events.posted == [("Normal", "NamespaceLabelled")], (
        "the namespace got its missing labels back"
    )


def test_a_chart_change_reinstalls() -> None:
    world = World()
    applied = {"state": "Deployed", "appliedHash": desired_hash(values(), "old chart")}
    asyncio.run(reconcile.reconcile(world.context(), tenant({"release": applied}), retry=0))
    assert len(world.helm.upgrades) == 1


def test_a_permanent_helm_failure_fails_the_tenant() -> None:
    world = World()
    world.helm.failure = HelmError("BudgetExceeded", "requests.cpu 3 > 2", permanent=True)
    with pytest.raises(kopf.PermanentError, match="BudgetExceeded"):
        asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    failed = world.reporter.reports[-1][1]
    assert failed is not None
    assert (failed.state, failed.reason, failed.message) == ("Failed", "BudgetExceeded", "requests.cpu 3 > 2")
    assert world.events.posted[-1] == ("Warning", "BudgetExceeded")


def test_a_temporary_helm_failure_is_retried_with_backoff() -> None:
    world = World()
    world.helm.failure = HelmError("HelmFailed", "connection refused", permanent=False)
    with pytest.raises(kopf.TemporaryError) as raised:
        asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=3))
    assert raised.value.delay == reconcile.retry_delay(3) == 40
    retrying = world.reporter.reports[-1][1]
    assert retrying is not None and (retrying.state, retrying.reason) == ("Installing", "HelmFailed")
    assert reconcile.retry_delay(20) == 300


def test_a_namespace_still_being_deleted_is_waited_for() -> None:
    world = World()
    world.kube.namespaces["tenant-acme"] = {"metadata": {"name": "tenant-acme", "deletionTimestamp": "then"}}
    world.kube.disappear_after = 10
    with pytest.raises(kopf.TemporaryError, match="still being deleted"):
        asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    assert world.helm.upgrades == []


def test_a_namespace_of_another_tenant_is_not_taken() -> None:
    world = World()
    labels = {"neurallog.io/tenant": "someone-else"}
    world.kube.namespaces["tenant-acme"] = {"metadata": {"name": "tenant-acme", "labels": labels}}
    with pytest.raises(reconcile.InvalidTenant, match="belongs to tenant someone-else"):
        asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    assert world.helm.upgrades == []


def test_deletion_uninstalls_deletes_and_waits_for_the_namespace() -> None:
    world = World()
    world.kube.namespaces["tenant-acme"] = {"metadata": {"name": "tenant-acme", "labels": {}}}
    world.kube.disappear_after = 3
    asyncio.run(deletion.delete(world.context(), tenant()))
    assert world.helm.uninstalls == ["acme"]
    assert "tenant-acme" not in world.kube.namespaces
    assert [reason for _, reason in world.events.posted] == ["Uninstalled", "DeletingNamespace", "Deleted"]
    assert world.reporter.forgotten == ["acme"]


def test_deletion_of_a_tenant_whose_namespace_is_gone_is_quick() -> None:
    world = World()
    asyncio.run(deletion.delete(world.context(), tenant()))
    assert world.helm.uninstalls == []
    assert [reason for _, reason in world.events.posted] == ["Deleted"]


@pytest.mark.parametrize(
    ("state", "deleting", "reinstalled"),
    [
        ("Deployed", False, True),
        ("Installing", False, False),
        ("Failed", False, False),
        ("Deployed", True, False),
    ],
)
def test_a_deleted_workload_is_put_back_only_for_a_deployed_tenant(
    state: str, deleting: bool, reinstalled: bool
) -> None:
    world = World()
    applied = {"state": state, "appliedHash": desired_hash(values(), FINGERPRINT)}
    world.kube.tenant = tenant({"release": applied})
    if deleting:
        world.kube.tenant["metadata"]["deletionTimestamp"] = "now"
    asyncio.run(reconcile.repair(world.context(), "acme", "Deployment neurallog-server"))
    assert len(world.helm.upgrades) == (1 if reinstalled else 0)
    assert (("Warning", "WorkloadDeleted") in world.events.posted) == reinstalled
