"""The create/update, follow and delete use cases in the flux backend (a Tenant becomes a HelmRelease that
Flux installs), and the helm backend taking a release back from a HelmRelease; the API, Helm, the reporter
and the post-renderer's check faked (test_reconcile.py's fakes)."""

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import pytest

from tenant_operator import deletion, drift, handlers, reconcile
from tenant_operator.context import MEMO_KEY, Context
from tenant_operator.flux import FORCE_AT, GENERATION_ANNOTATION, HASH_ANNOTATION, REQUESTED_AT, Flux
from tenant_operator.release import HelmError, desired_hash, refusal
from tenant_operator.schema import RENDERED_POLICIES
from tests.unit.test_reconcile import (
    FakeHelm,
    FakeKube,
    World,
    delete_until_done,
    owned_namespace,
    tenant,
    values,
)

FLUX = {"backend": "flux", "flux_source_name": "neurallog", "flux_source_namespace": "flux-system"}
KEY = ("tenant-acme", "acme")
POLICIES = [
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": "tenant-acme"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
]


@dataclass
class Checks:
    """Flux.policies faked: the post-renderer's verdict on each release checked."""

    checked: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)
    failure: HelmError | None = None

    async def policies(self, name: str, namespace: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.checked.append((name, namespace, values))
        if self.failure is not None:
            raise self.failure
        return POLICIES


def flux_context(world: World, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> tuple[Context, Checks]:
    """The world's context with the flux backend, whose check of a release is `Checks`."""
    context = world.context(**(FLUX | settings))
    flux = Flux(context.settings, context.helm, context.kube)
    checks = Checks()
    monkeypatch.setattr(flux, "policies", checks.policies)
    return dataclasses.replace(context, flux=flux), checks


def deployed(applied_hash: str = "old", revision: int = 3) -> dict[str, Any]:
    return {"state": "Deployed", "name": "acme", "revision": revision, "appliedHash": applied_hash}


def helm_release_of(
    generation: int,
    *,
    hr_generation: int = 3,
    observed: int = 3,
    conditions: list[dict[str, str]] | None = None,
    applied_hash: str = "sha256:applied",
) -> dict[str, Any]:
    """The tenant's HelmRelease written for Tenant generation `generation`, as Flux left it."""
    ready = [{"type": "Ready", "status": "True", "reason": "UpgradeSucceeded", "message": "upgraded"}]
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {
            "name": "acme",
            "namespace": "tenant-acme",
            "generation": hr_generation,
            "annotations": {GENERATION_ANNOTATION: str(generation), HASH_ANNOTATION: applied_hash},
        },
        "spec": {"releaseName": "acme"},
        "status": {
            "observedGeneration": observed,
            "conditions": ready if conditions is None else conditions,
            "history": [{"version": 4, "chartVersion": "0.1.0+0123456789ab", "status": "deployed"}],
        },
    }


# --- reconcile ------------------------------------------------------------------------------------------


def test_a_tenant_becomes_a_helm_release_and_is_installing_until_flux_says_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, checks = flux_context(
        world, monkeypatch, tenant_role="tenant-operator-tenant", service_account="system/tenant-operator"
    )
    world.kube.namespaces["tenant-acme"] = owned_namespace()
    body = tenant({"observedGeneration": 1, "release": deployed()})
    asyncio.run(reconcile.reconcile(context, body, retry=0))

    assert world.helm.upgrades == [], "no helm upgrade in the flux backend"
    assert world.kube.calls == ["rolebinding", "apply-helmrelease"], "the role is bound before the write"
    assert checks.checked == [("acme", "tenant-acme", values())]
    written = world.kube.helm_releases[KEY]
    assert written["spec"]["values"] == values() | {RENDERED_POLICIES: POLICIES}
    assert context.flux is not None
    wanted = desired_hash(values(), context.flux.fingerprint)
    assert written["metadata"]["annotations"] == {GENERATION_ANNOTATION: "2", HASH_ANNOTATION: wanted}
    assert REQUESTED_AT not in written["metadata"]["annotations"]

    states = [
        (release.state if release else None, observed) for _, release, observed in world.reporter.reports
    ]
    assert states == [("Installing", 1), ("Installing", 1)], "the previous generation until Flux is done"
    announced = world.reporter.reports[0][1]
    assert announced is not None and "HelmRelease" in announced.message
    installing = world.reporter.reports[-1][1]
    assert installing is not None
    assert installing.applied_hash == wanted
    assert installing.message == "waiting for Flux to install the HelmRelease"
    assert world.events.posted[-1] == ("Normal", "Installing")
    assert ("Normal", "Installed") not in world.events.posted, "Flux has installed nothing yet"


def test_a_new_tenant_is_installing_with_generation_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    asyncio.run(reconcile.reconcile(context, tenant(), retry=0))
    assert world.kube.created == ["tenant-acme"]
    assert KEY in world.kube.helm_releases
    states = [
        (release.state if release else None, observed) for _, release, observed in world.reporter.reports
    ]
    assert states == [("Installing", 0), ("Installing", 0)]


def test_the_helm_backend_hash_does_not_count_in_the_flux_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Tenant Deployed by the helm backend (hash over the chart and post-renderer) is written as a
    HelmRelease when the operator moves to the flux backend."""
    world = World()
    context, _ = flux_context(world, monkeypatch)
    world.kube.namespaces["tenant-acme"] = owned_namespace()
    helm_hash = desired_hash(values(), world.helm.chart_fingerprint)
    body = tenant({"observedGeneration": 2, "release": deployed(helm_hash)})
    asyncio.run(reconcile.reconcile(context, body, retry=0))
    assert KEY in world.kube.helm_releases


def written_and_handled(context: Context, world: World) -> dict[str, Any]:
    """The tenant's HelmRelease as the operator writes it for tenant() at generation 2, then Ready in Flux."""
    asyncio.run(reconcile.reconcile(context, tenant(), retry=0))
    hr = world.kube.helm_releases[KEY]
    assert hr["metadata"]["generation"] == 1
    hr["status"] = helm_release_of(2, hr_generation=1, observed=1)["status"]
    world.reporter.reports.clear()
    world.events.posted.clear()
    world.kube.calls.clear()
    return hr


def test_a_write_that_changes_no_spec_flux_has_handled_deploys_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    written_and_handled(context, world)
    asyncio.run(reconcile.reconcile(context, installing_tenant(), retry=0))
    assert world.kube.calls == ["apply-helmrelease"]
    assert world.kube.helm_releases[KEY]["metadata"]["generation"] == 1, "the same spec"
    [*_, (_, release, observed)] = world.reporter.reports
    assert release is not None and (release.state, release.revision) == ("Deployed", 4)
    assert observed == 2
    assert ("Normal", "Installed") in world.events.posted


def test_a_forced_reconciliation_asks_flux_for_an_upgrade_and_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    written_and_handled(context, world)
    assert context.flux is not None
    wanted = desired_hash(values(), context.flux.fingerprint)
    body = tenant({"observedGeneration": 2, "release": deployed(wanted, revision=4)})
    asyncio.run(reconcile.reconcile(context, body, retry=0))
    assert world.kube.calls == [], "nothing changed: no write"

    asyncio.run(reconcile.reconcile(context, body, retry=0, force=True))
    assert world.kube.calls == ["apply-helmrelease"]
    hr = world.kube.helm_releases[KEY]
    annotations = hr["metadata"]["annotations"]
    assert annotations[REQUESTED_AT] == annotations[FORCE_AT] != ""
    assert hr["metadata"]["generation"] == 1, "the spec is the same"
    last = world.reporter.reports[-1][1]
    assert last is not None and last.state == "Installing", "Flux has not handled the request yet"

    hr["status"] |= {"lastHandledReconcileAt": annotations[REQUESTED_AT]}
    hr["status"] |= {"lastHandledForceAt": annotations[FORCE_AT]}
    world.kube.tenant = tenant({"observedGeneration": 2, "release": last.model_dump(by_alias=True)})
    asyncio.run(reconcile.follow(context, "acme", hr))
    done = world.reporter.reports[-1][1]
    assert done is not None and done.state == "Deployed"


def test_a_release_the_post_renderer_refuses_fails_the_tenant_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, checks = flux_context(world, monkeypatch)
    checks.failure = refusal("ResourceQuota/tenant-quota spec.hard.requests.cpu: the workloads request 5")
    with pytest.raises(kopf.PermanentError, match="BudgetExceeded"):
        asyncio.run(reconcile.reconcile(context, tenant(), retry=0))
    assert world.kube.helm_releases == {} and "apply-helmrelease" not in world.kube.calls
    failed = world.reporter.reports[-1][1]
    assert failed is not None and (failed.state, failed.reason) == ("Failed", "BudgetExceeded")
    assert world.events.posted[-1] == ("Warning", "BudgetExceeded")


@dataclass
class UnwritableKube(FakeKube):
    async def apply_helm_release(self, body: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        raise RuntimeError("connection refused; token=abc.def.ghi")


def test_a_helm_release_that_cannot_be_written_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(kube=UnwritableKube())
    context, _ = flux_context(world, monkeypatch)
    with pytest.raises(kopf.TemporaryError, match="HelmReleaseNotWritten"):
        asyncio.run(reconcile.reconcile(context, tenant(), retry=0))
    retrying = world.reporter.reports[-1][1]
    assert retrying is not None
    assert (retrying.state, retrying.reason) == ("Installing", "HelmReleaseNotWritten")
    assert "connection refused" in retrying.message and "abc.def.ghi" not in retrying.message


# --- follow: the HelmRelease's status becomes the Tenant's ----------------------------------------------


def installing_tenant(generation: int = 2) -> dict[str, Any]:
    release = {"state": "Installing", "name": "acme", "revision": 3, "appliedHash": "sha256:applied"}
    return tenant({"observedGeneration": 1, "release": release}, generation=generation)


def test_a_helm_release_ready_at_its_generation_deploys_the_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    world.kube.tenant = installing_tenant()
    asyncio.run(reconcile.follow(context, "acme", helm_release_of(2)))
    [(name, release, observed)] = world.reporter.reports
    assert name == "acme" and observed == 2, "the Tenant's generation, now observed"
    assert release is not None
    assert (release.state, release.revision, release.chart_version) == ("Deployed", 4, "0.1.0+0123456789ab")
    assert release.applied_hash == "sha256:applied"
    assert world.events.posted == [("Normal", "Installed")]


def test_a_helm_release_written_for_an_older_generation_speaks_for_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    world.kube.tenant = installing_tenant(generation=3)
    asyncio.run(reconcile.follow(context, "acme", helm_release_of(2)))
    stalled = [{"type": "Stalled", "status": "True", "reason": "RetriesExceeded", "message": "gave up"}]
    asyncio.run(reconcile.follow(context, "acme", helm_release_of(2, conditions=stalled)))
    unmarked = helm_release_of(3)
    del unmarked["metadata"]["annotations"][GENERATION_ANNOTATION]
    asyncio.run(reconcile.follow(context, "acme", unmarked))
    assert world.reporter.reports == [] and world.events.posted == []


def test_a_helm_release_not_yet_at_its_generation_keeps_the_tenant_installing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    world.kube.tenant = installing_tenant()
    reconciling = [
        {"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "Running upgrade"}
    ]
    asyncio.run(
        reconcile.follow(context, "acme", helm_release_of(2, hr_generation=4, conditions=reconciling))
    )
    [(_, release, observed)] = world.reporter.reports
    assert release is not None and release.state == "Installing"
    assert release.message == "waiting for Flux to install the HelmRelease", (
        "not what Flux said of an older spec"
    )
    assert observed == 1, "the generation is not observed before Flux is done"
    assert world.events.posted == []


def test_a_stalled_helm_release_fails_the_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    world.kube.tenant = installing_tenant()
    message = "Failed to upgrade after 4 attempt(s): password: hunter2xyz"
    stalled = [
        {"type": "Ready", "status": "False", "reason": "UpgradeFailed", "message": "upgrade failed"},
        {"type": "Stalled", "status": "True", "reason": "RetriesExceeded", "message": message},
    ]
    asyncio.run(reconcile.follow(context, "acme", helm_release_of(2, conditions=stalled)))
    [(_, release, observed)] = world.reporter.reports
    assert release is not None and (release.state, release.reason) == ("Failed", "RetriesExceeded")
    assert "hunter2xyz" not in release.message
    assert observed == 2
    assert world.events.posted == [("Warning", "RetriesExceeded")]


def test_nothing_is_reported_twice_or_for_a_tenant_being_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    world.kube.tenant = installing_tenant()
    asyncio.run(reconcile.follow(context, "acme", helm_release_of(2)))
    [(_, release, _)] = world.reporter.reports
    assert release is not None
    world.kube.tenant["status"]["release"] = release.model_dump(mode="json", by_alias=True)
    asyncio.run(reconcile.follow(context, "acme", helm_release_of(2)))
    assert len(world.reporter.reports) == 1, "the Tenant already says so"

    world.kube.tenant = installing_tenant()
    world.kube.tenant["metadata"]["deletionTimestamp"] = "now"
    asyncio.run(reconcile.follow(context, "acme", helm_release_of(2)))
    assert len(world.reporter.reports) == 1


def test_a_spec_change_that_changes_no_value_keeps_the_helm_release_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    hr = written_and_handled(context, world)
    assert context.flux is not None
    wanted = desired_hash(values(), context.flux.fingerprint)

    # The spec changes in a way that changes no value (a default written out): generation 3, same values.
    changed = tenant({"observedGeneration": 2, "release": deployed(wanted, revision=4)}, generation=3)
    changed["spec"]["description"] = ""
    assert reconcile.parse_spec("acme", changed["spec"]).to_values() == values()
    asyncio.run(reconcile.reconcile(context, changed, retry=0))
    assert world.reporter.reports == [("acme", None, 3)], "nothing to write: generation 3 observed"

    # Later Flux gives up on the release (say a drift it cannot correct): the Tenant must say so.
    changed["status"]["observedGeneration"] = 3
    world.kube.tenant = changed
    stalled = {"type": "Stalled", "status": "True", "reason": "RetriesExceeded", "message": "gave up"}
    hr["status"]["conditions"] = [stalled]
    asyncio.run(reconcile.follow(context, "acme", hr))
    failed = world.reporter.reports[-1][1]
    assert failed is not None and failed.state == "Failed"


# --- the helm_release_changed handler ------------------------------------------------------------------


def test_helm_release_events_follow_the_status_and_report_foreign_writes_as_drift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    world.kube.tenant = installing_tenant()
    asked: list[tuple[str, list[drift.Drift]]] = []

    async def repair(name: str, drifted: list[drift.Drift]) -> None:
        asked.append((name, drifted))

    def body(helm_release: dict[str, Any]) -> kopf.Body:
        return kopf.Body(cast(Any, helm_release))

    async def events() -> None:
        memo = kopf.Memo({MEMO_KEY: context, drift.MEMO_KEY: drift.Repairs(repair)})
        ours = helm_release_of(2)
        ours["metadata"]["managedFields"] = [
            {"manager": "tenant-operator", "operation": "Apply"},
            {"manager": "helm-controller", "operation": "Update"},
            {"manager": "helm-controller", "operation": "Update", "subresource": "status"},
        ]
        await handlers.helm_release_changed("MODIFIED", body(ours), "tenant-acme", memo)
        await handlers.helm_release_changed("MODIFIED", body(ours), "flux-system", memo)
        await asyncio.sleep(0)
        assert asked == [], "Flux's and the operator's writes are no drift"
        states = [release.state for _, release, _ in world.reporter.reports if release]
        assert states == ["Deployed"]

        edited = helm_release_of(2)
        edited["metadata"]["managedFields"] = [{"manager": "kubectl-edit", "operation": "Update"}]
        await handlers.helm_release_changed("MODIFIED", body(edited), "tenant-acme", memo)
        await handlers.helm_release_changed("DELETED", body(helm_release_of(2)), "tenant-acme", memo)
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(events())
    drifts = [what for _, whats in asked for what in whats]
    assert {name for name, _ in asked} == {"acme"}
    assert (
        drift.Drift("HelmRelease", "tenant-acme", "acme", deleted=False, writers=("kubectl-edit",)) in drifts
    )
    assert drift.Drift("HelmRelease", "tenant-acme", "acme", deleted=True) in drifts


# --- deletion -------------------------------------------------------------------------------------------


def test_deletion_deletes_the_helm_release_and_waits_for_flux_to_uninstall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    context, _ = flux_context(world, monkeypatch)
    world.kube.namespaces["tenant-acme"] = owned_namespace()
    world.kube.helm_releases[KEY] = helm_release_of(2)

    for _ in range(2):
        with pytest.raises(kopf.TemporaryError, match="Flux"):
            asyncio.run(deletion.delete(context, tenant()))
    assert world.kube.calls.count("delete-helmrelease") == 1, "deleted once, then waited for"
    assert world.kube.helm_releases[KEY]["metadata"]["deletionTimestamp"]
    assert "deletionTimestamp" not in world.kube.namespaces["tenant-acme"]["metadata"], "namespace kept"
    assert [reason for _, reason in world.events.posted] == ["Uninstalling"]
    assert world.reporter.forgotten == []

    del world.kube.helm_releases[KEY]  # Flux uninstalled the release and let the HelmRelease go
    delete_until_done(context, tenant())
    assert "tenant-acme" not in world.kube.namespaces
    assert [reason for _, reason in world.events.posted][-2:] == ["DeletingNamespace", "Deleted"]
    assert world.reporter.forgotten == ["acme"]


# --- the helm backend hands a release back from a HelmRelease ------------------------------------------


@dataclass
class RecordingKube(FakeKube):
    patches: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)

    async def patch_helm_release(
        self, namespace: str, name: str, patch: Mapping[str, Any], field_manager: str
    ) -> None:
        self.calls.append("patch-helmrelease")
        self.patches.append((namespace, name, patch))


@dataclass
class RecordingHelm(FakeHelm):
    async def uninstall(self, name: str, namespace: str) -> bool:
        self.calls.append("uninstall")
        return await super().uninstall(name, namespace)


HAND_BACK = {"spec": {"suspend": True}, "metadata": {"finalizers": None}}


def test_the_helm_backend_takes_a_release_back_from_a_helm_release_before_upgrading() -> None:
    world = World(kube=RecordingKube())
    world.helm.calls = world.kube.calls
    world.kube.helm_releases[KEY] = helm_release_of(2)
    installed_by_flux = {"release": {"name": "acme", "revision": 3, "state": "Deployed", "appliedHash": "x"}}
    asyncio.run(reconcile.reconcile(world.context(), tenant(installed_by_flux), retry=0))
    assert world.kube.calls == ["patch-helmrelease", "delete-helmrelease", "upgrade"]
    assert isinstance(world.kube, RecordingKube)
    assert world.kube.patches == [("tenant-acme", "acme", HAND_BACK)]
    assert ("Normal", "HelmReleaseRemoved") in world.events.posted
    last = world.reporter.reports[-1][1]
    assert last is not None and last.state == "Deployed"


def test_a_first_install_looks_for_no_helm_release() -> None:
    """A tenant without a release never had a HelmRelease (nor, maybe, the right to read one yet)."""
    world = World(kube=RecordingKube())
    world.helm.calls = world.kube.calls
    world.kube.helm_releases[KEY] = helm_release_of(2)
    asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    assert world.kube.calls == ["upgrade"]


def test_the_helm_backend_without_a_helm_release_just_upgrades() -> None:
    world = World(kube=RecordingKube())
    world.helm.calls = world.kube.calls
    asyncio.run(reconcile.reconcile(world.context(), tenant(), retry=0))
    assert world.kube.calls == ["upgrade"]
    assert ("Normal", "HelmReleaseRemoved") not in world.events.posted


def test_the_helm_backend_takes_a_release_back_before_uninstalling_it() -> None:
    world = World(kube=RecordingKube(), helm=RecordingHelm())
    world.helm.calls = world.kube.calls
    world.kube.namespaces["tenant-acme"] = owned_namespace()
    world.kube.helm_releases[KEY] = helm_release_of(2)
    delete_until_done(world.context(), tenant())
    assert world.kube.calls == ["patch-helmrelease", "delete-helmrelease", "uninstall"]
    assert isinstance(world.kube, RecordingKube)
    assert world.kube.patches == [("tenant-acme", "acme", HAND_BACK)]
    assert world.helm.uninstalls == ["acme"]
