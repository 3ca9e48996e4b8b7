"""The create/update and delete use cases with Helm, the API and the reporter faked: what is called when."""

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import pytest

from tenant_operator import deletion, reconcile
from tenant_operator.api import ReleaseStatus
from tenant_operator.context import Context
from tenant_operator.drift import Drift
from tenant_operator.namespace import TENANT_LABEL, namespace_labels
from tenant_operator.release import HelmError, Release, desired_hash
from tenant_operator.settings import Settings

FINGERPRINT = "chart-fingerprint"


@dataclass
class FakeHelm:
    chart_fingerprint: str = FINGERPRINT
    failure: HelmError | None = None
    upgrades: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)
    uninstalls: list[str] = field(default_factory=list)

    calls: list[str] = field(default_factory=list)

    async def upgrade(self, name: str, namespace: str, values: Mapping[str, Any]) -> Release:
        self.calls.append("upgrade")
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
    calls: list[str] = field(default_factory=list)  # what was done, in order (with FakeHelm's calls)
    namespace_reads: list[str] = field(default_factory=list)
    role_bindings: list[Mapping[str, Any]] = field(default_factory=list)
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (kind, name) -> object

    async def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        self.namespace_reads.append(name)
        namespace = self.namespaces.get(name)
        if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
            self.disappear_after -= 1
            if self.disappear_after < 0:
                del self.namespaces[name]
                return None
        return namespace

    async def create_namespace(self, body: Mapping[str, Any]) -> bool:
        """As the API: False (409) when a namespace of that name exists, even one being deleted."""
        name = body["metadata"]["name"]
        if name in self.namespaces:
            return False
        self.created.append(name)
        self.namespaces[name] = dict(body)
        return True

    async def patch_namespace_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        current = self.namespaces[name]["metadata"]
        current.setdefault("labels", {}).update(metadata.get("labels", {}))
        if "ownerReferences" in metadata:
            current["ownerReferences"] = metadata["ownerReferences"]

    async def create_role_binding(self, body: Mapping[str, Any]) -> bool:
        self.calls.append("rolebinding")
        self.role_bindings.append(body)
        return True

    async def delete_namespace(self, name: str) -> None:
        self.namespaces[name]["metadata"]["deletionTimestamp"] = "now"

    # HelmReleases: (namespace, name) -> object
    helm_releases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    async def get_helm_release(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.helm_releases.get((namespace, name))

    async def apply_helm_release(self, body: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        self.calls.append("apply-helmrelease")
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        before = self.helm_releases.get(key, {"metadata": {"generation": 0}})
        changed = before.get("spec") != body["spec"]
        generation = before["metadata"]["generation"] + (1 if changed else 0)
        applied = {**body, "metadata": {**body["metadata"], "generation": generation}}
        self.helm_releases[key] = applied | {"status": before.get("status", {})}
        return self.helm_releases[key]

    async def patch_helm_release(
        self, namespace: str, name: str, patch: Mapping[str, Any], field_manager: str
    ) -> None:
        self.calls.append(f"patch-helmrelease {patch}")
        found = self.helm_releases.get((namespace, name))
        annotations = patch.get("metadata", {}).get("annotations", {})
        if found is not None and annotations:
            found["metadata"]["annotations"] = {**found["metadata"].get("annotations", {}), **annotations}

    async def delete_helm_release(self, namespace: str, name: str) -> None:
        self.calls.append("delete-helmrelease")
        found = self.helm_releases.get((namespace, name))
        if found is not None:
            found["metadata"]["deletionTimestamp"] = "now"


@dataclass
class FakeCache:
    """The watched Tenant is the one the fake API holds; so are the namespaces, if it watches them."""

    kube: FakeKube
    watches_namespaces: bool = False

    def tenant(self, name: str) -> dict[str, Any] | None:
        return self.kube.tenant

    def namespace(self, name: str) -> dict[str, Any] | None:
        return self.kube.namespaces.get(name) if self.watches_namespaces else None


@dataclass
class FakeReporter:
    reports: list[tuple[str, ReleaseStatus | None, int | None]] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    handled_requests: list[str] = field(default_factory=list)

    async def report(
        self,
        name: str,
        *,
        release: ReleaseStatus | None = None,
        observed_generation: int | None = None,
        handled_request: str | None = None,
    ) -> None:
        self.reports.append((name, release, observed_generation))
        if handled_request is not None:
            self.handled_requests.append(handled_request)

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

    def context(self, **settings_given: Any) -> Context:
        settings = Settings(helm="helm", namespace_poll_seconds=0.01, **settings_given)
        return Context(
            settings=settings,
            helm=cast(Any, self.helm),
            kube=cast(Any, self.kube),
            cache=cast(Any, FakeCache(self.kube)),
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


OWNED = [
    {"apiVersion": "neurallog.io/v1", "kind": "Tenant", "name": "acme", "uid": "u-1", "controller": True}
]


def owned_namespace(**metadata: Any) -> dict[str, Any]:
    """tenant-acme as the operator made it for tenant() (its owner reference), `metadata` over it."""
    return {"metadata": {"name": "tenant-acme", "labels": {}, "ownerReferences": OWNED, **metadata}}


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
    assert states == [("Installing", 0), ("Deployed", 2)], "the first status: Installing, once it is so"
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
    world.kube.namespaces["tenant-acme"] = owned_namespace()
    asyncio.run(reconcile.reconcile(world.context(), tenant({"release": applied}), retry=0))
    assert world.helm.upgrades == []
    assert world.reporter.reports == [("acme", None, 2)]
    assert world.events.posted == [("Normal", "NamespaceLabelled")], (
        "the namespace got its missing labels back"
    )


def test_a_namespace_the_watch_saw_ready_is_not_read_again() -> None:
    """A restart: every Tenant resumes, and a namespace the informer holds, owned and labelled, costs no
    request; one it holds with a label missing is read and relabelled as before."""
    world = World()
    applied = {"state": "Deployed", "appliedHash": desired_hash(values(), FINGERPRINT), "revision": 4}
    labels = namespace_labels("acme")
    world.kube.namespaces["tenant-acme"] = owned_namespace(labels=labels)
    context = dataclasses.replace(world.context(), cache=cast(Any, FakeCache(world.kube, True)))
    asyncio.run(reconcile.reconcile(context, tenant({"release": applied}), retry=0))
    assert world.kube.namespace_reads == [] and world.helm.upgrades == [] and world.events.posted == []
    world.kube.namespaces["tenant-acme"] = owned_namespace(labels={**labels, TENANT_LABEL: "other"})
    asyncio.run(reconcile.reconcile(context, tenant({"release": applied}), retry=0))
    assert world.kube.namespace_reads == ["tenant-acme"]
    assert world.events.posted == [("Normal", "NamespaceLabelled")]


def test_a_new_tenants_namespace_is_created_without_a_read_first() -> None:
    """The watch has not seen it: most likely not there, so it is created at once; one that is there after
    all (someone else's) is read when the create finds it, and left alone."""
    world = World()
    context = dataclasses.replace(world.context(), cache=cast(Any, FakeCache(world.kube, True)))
    asyncio.run(reconcile.reconcile(context, tenant(), retry=0))
    assert (world.kube.namespace_reads, world.kube.created, len(world.helm.upgrades)) == (
        [],
        ["tenant-acme"],
        1,
    )
    foreign = World()
    foreign.kube.namespaces["tenant-acme"] = {"metadata": {"name": "tenant-acme"}}
    with pytest.raises(reconcile.NamespaceNotOwned):
        asyncio.run(reconcile.reconcile(foreign.context(), tenant(), retry=0))
    assert foreign.kube.created == [] and foreign.helm.upgrades == []


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
    (_, waiting, observed), *_ = world.reporter.reports
    assert waiting is not None and (waiting.state, waiting.reason, observed) == ("Pending", "Accepted", 0)
    assert "still being deleted" in waiting.message, "a new Tenant that must wait says why"


def test_a_namespace_of_another_tenant_is_not_taken() -> None:
    world = World()
    labels = {"neurallog.io/tenant": "someone-else"}
    world.kube.namespaces["tenant-acme"] = {"metadata": {"name": "tenant-acme", "labels": labels}}
    with pytest.raises(reconcile.InvalidTenant, match="belongs to tenant someone-else"):
        asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    assert world.helm.upgrades == []


def delete_until_done(context: Context, body: Mapping[str, Any], attempts: int = 10) -> list[float]:
    """deletion.delete tried again as the work queue does while it waits for the namespace; the delays
    asked for on the way."""
    delays: list[float] = []
    for _ in range(attempts):
        try:
            asyncio.run(deletion.delete(context, body))
            return delays
        except kopf.TemporaryError as error:
            assert "waiting for namespace tenant-acme to be deleted" in str(error)
            delays.append(float(error.delay or 0))
    raise AssertionError(f"not done after {attempts} attempts")


@pytest.mark.parametrize(
    ("watched", "delay"), [(False, 0.01), (True, deletion.WATCHED_NAMESPACE_RECHECK_SECONDS)]
)
def test_deletion_uninstalls_deletes_and_waits_for_the_namespace(watched: bool, delay: float) -> None:
    """Each attempt returns at once; while the namespace is there it asks to be tried again: soon when the
    namespaces' watch does not follow it, else seldom (the namespace's deletion wakes it: work.py)."""
    world = World()
    world.kube.namespaces["tenant-acme"] = owned_namespace()
    world.kube.disappear_after = 3
    context = world.context()
    cast(FakeCache, context.cache).watches_namespaces = watched
    delays = delete_until_done(context, tenant())
    assert delays == [delay] * 4, "deleted, then three reads of it still there"
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
        ("Pending", False, False),
        ("Deployed", True, False),
    ],
)
def test_drift_is_put_back_unless_the_tenant_failed_or_goes(
    state: str, deleting: bool, reinstalled: bool
) -> None:
    world = World()
    applied = {"state": state, "appliedHash": desired_hash(values(), FINGERPRINT), "revision": 1}
    world.kube.tenant = tenant({"release": applied})
    world.kube.namespaces["tenant-acme"] = owned_namespace()
    if deleting:
        world.kube.tenant["metadata"]["deletionTimestamp"] = "now"
    gone = Drift("NetworkPolicy", "tenant-acme", "default-deny", deleted=True)
    asyncio.run(reconcile.repair(world.context(), "acme", [gone]))
    assert len(world.helm.upgrades) == (1 if reinstalled else 0), "Helm runs although the hash is unchanged"
    assert (("Warning", "DriftDetected") in world.events.posted) == reinstalled
    if reinstalled:
        repairing = world.reporter.reports[-2][1]
        assert repairing is not None and (repairing.state, repairing.reason) == (
            "Installing",
            "DriftDetected",
        )
        assert repairing.message == "putting back: NetworkPolicy default-deny was deleted"


def test_a_foreign_namespace_is_left_alone_and_the_tenant_says_why() -> None:
    world = World()
    world.kube.namespaces["tenant-acme"] = {"metadata": {"name": "tenant-acme", "labels": {"team": "x"}}}
    with pytest.raises(reconcile.NamespaceNotOwned) as raised:
        asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    assert raised.value.delay == reconcile.NOT_OWNED_RETRY_SECONDS
    assert world.helm.upgrades == [] and world.kube.created == []
    assert world.kube.namespaces["tenant-acme"]["metadata"]["labels"] == {"team": "x"}, "not relabelled"
    waiting = world.reporter.reports[-1][1]
    assert waiting is not None and (waiting.state, waiting.reason) == ("Pending", "NamespaceNotOwned")
    assert "neurallog.io/adopt" in waiting.message
    assert world.events.posted == [("Warning", "NamespaceNotOwned")]


def test_a_namespace_marked_for_adoption_is_adopted() -> None:
    world = World()
    annotations = {"neurallog.io/adopt": "true"}
    world.kube.namespaces["tenant-acme"] = {
        "metadata": {"name": "tenant-acme", "labels": {"team": "x"}, "annotations": annotations}
    }
    asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    metadata = world.kube.namespaces["tenant-acme"]["metadata"]
    assert metadata["labels"]["neurallog.io/tenant"] == "acme" and metadata["labels"]["team"] == "x"
    assert [reference["uid"] for reference in metadata["ownerReferences"]] == ["u-1"]
    assert ("Normal", "NamespaceAdopted") in world.events.posted
    assert len(world.helm.upgrades) == 1


def test_deleting_a_tenant_leaves_a_foreign_namespace_alone() -> None:
    world = World()
    world.kube.namespaces["tenant-acme"] = {"metadata": {"name": "tenant-acme", "labels": {}}}
    asyncio.run(deletion.delete(world.context(), tenant()))
    assert world.helm.uninstalls == []
    assert "deletionTimestamp" not in world.kube.namespaces["tenant-acme"]["metadata"]
    assert [reason for _, reason in world.events.posted] == ["NamespaceLeftAlone"]
    assert world.reporter.forgotten == ["acme"]


def isolation_off() -> dict[str, Any]:
    off = tenant()
    off["spec"]["networkPolicy"] = {"enabled": False}
    return off


def test_isolation_off_is_refused_unless_the_operator_allows_it() -> None:
    world = World()
    with pytest.raises(reconcile.InvalidTenant, match=r"spec\.networkPolicy\.enabled"):
        asyncio.run(reconcile.reconcile(world.context(), isolation_off(), retry=0))
    failed = world.reporter.reports[-1][1]
    assert failed is not None and (failed.state, failed.reason) == ("Failed", "IsolationForbidden")
    assert world.kube.created == [] and world.helm.upgrades == [], "nothing made"
    assert world.events.posted == [("Warning", "IsolationForbidden")]

    allowed = World()
    asyncio.run(reconcile.reconcile(allowed.context(allow_isolation_off=True), isolation_off(), retry=0))
    assert len(allowed.helm.upgrades) == 1


def test_the_operator_binds_its_tenant_role_before_helm_runs() -> None:
    world = World()
    world.helm.calls = world.kube.calls  # one record of both, in order
    context = world.context(tenant_role="tenant-operator-tenant", service_account="system/tenant-operator")
    asyncio.run(reconcile.reconcile(context, tenant(), retry=0))
    assert world.kube.calls == ["rolebinding", "upgrade"]
    binding = world.kube.role_bindings[0]
    assert binding["metadata"]["namespace"] == "tenant-acme"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "tenant-operator-tenant",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tenant-operator", "namespace": "system"}
    ]

    unbound = World()
    asyncio.run(reconcile.reconcile(unbound.context(), tenant(), retry=0))
    assert unbound.kube.role_bindings == [], "no role given: no binding"


def test_drift_that_is_gone_by_the_time_of_the_repair_makes_no_helm_call() -> None:
    world = World()
    world.kube.tenant = tenant({"release": {"state": "Deployed", "appliedHash": "x", "revision": 1}})
    world.kube.objects[("NetworkPolicy", "default-deny")] = {
        "metadata": {"managedFields": [{"manager": "helm"}]}
    }
    gone = Drift("NetworkPolicy", "tenant-acme", "default-deny", deleted=True)
    asyncio.run(reconcile.repair(world.context(), "acme", [gone]))
    assert world.helm.upgrades == [] and world.events.posted == []


def test_a_repair_that_failed_for_a_while_is_tried_again() -> None:
    world = World()
    interrupted = {"state": "Installing", "reason": "DriftDetected", "appliedHash": "x", "revision": 1}
    world.kube.tenant = tenant({"release": interrupted})
    gone = Drift("NetworkPolicy", "tenant-acme", "default-deny", deleted=True)
    world.helm.failure = HelmError("ReleaseBusy", "another operation is in progress", permanent=False)
    with pytest.raises(kopf.TemporaryError):
        asyncio.run(reconcile.repair(world.context(), "acme", [gone]))
    still = world.reporter.reports[-1][1]
    assert still is not None and (still.state, still.reason) == ("Installing", "DriftDetected"), (
        "the Tenant keeps saying what drifted, so that the next attempt repairs it"
    )
    assert "ReleaseBusy" in still.message
