"""The Tenants' work queue (work.py): what is queued when, one go per Tenant at a time, retries, the
finalizer; reconcile.reconcile and deletion.delete replaced by recorders."""

import asyncio
import copy
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from tenant_operator import work
from tenant_operator.api import RECONCILE_ANNOTATION
from tenant_operator.context import Context
from tenant_operator.work import FINALIZER, Work


@dataclass
class FakeCache:
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tenant(self, name: str) -> dict[str, Any] | None:
        return self.tenants.get(name)

    def wrote(self, name: str, tenant: Mapping[str, Any] | None) -> None:
        if tenant is not None:
            self.tenants[name] = copy.deepcopy(dict(tenant))


@dataclass
class FakeKube:
    cache: FakeCache
    patches: list[tuple[str, list[str]]] = field(default_factory=list)
    conflicts: int = 0  # patches refused with 409 before one is taken

    async def patch_tenant_finalizers(
        self, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any] | None:
        if self.conflicts:
            self.conflicts -= 1
            raise ApiException(status=409, reason="Conflict")
        self.patches.append((name, finalizers))
        tenant = copy.deepcopy(self.cache.tenants[name])
        tenant["metadata"]["finalizers"] = finalizers
        tenant["metadata"]["resourceVersion"] = str(int(resource_version) + 1)
        return tenant


@dataclass
class FakeEvents:
    posted: list[tuple[str, str]] = field(default_factory=list)

    def post(self, tenant: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        self.posted.append((kind, reason))


@dataclass
class Recorder:
    """Stands for reconcile.reconcile or deletion.delete: records each call, runs `then` (if given)."""

    calls: list[tuple[str, int]] = field(default_factory=list)  # name, retry (deletion: -1)
    then: Callable[[str, int], Awaitable[None]] | None = None
    running: int = 0
    most_at_once: int = 0

    async def __call__(self, name: str, retry: int) -> None:
        self.calls.append((name, retry))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(0)
            if self.then is not None:
                await self.then(name, retry)
        finally:
            self.running -= 1


@dataclass
class Setup:
    cache: FakeCache = field(default_factory=FakeCache)
    reconciles: Recorder = field(default_factory=Recorder)
    deletions: Recorder = field(default_factory=Recorder)
    events: FakeEvents = field(default_factory=FakeEvents)
    kube: FakeKube = field(init=False)

    def __post_init__(self) -> None:
        self.kube = FakeKube(self.cache)

    def work(self, monkeypatch: pytest.MonkeyPatch, workers: int = 2) -> Work:
        async def reconcile(context: Context, body: Mapping[str, Any], retry: int) -> None:
            await self.reconciles(body["metadata"]["name"], retry)

        async def delete(context: Context, body: Mapping[str, Any]) -> None:
            await self.deletions(body["metadata"]["name"], -1)

        monkeypatch.setattr(work.reconcile, "reconcile", reconcile)
        monkeypatch.setattr(work.deletion, "delete", delete)
        context = cast(Context, _Context(self.cache, self.kube, self.events))
        return Work(context, workers)

    def put(self, work: Work, tenant: dict[str, Any], kind_of_event: str | None = "MODIFIED") -> None:
        """The Tenants' informer: the store holds it, then the callback runs."""
        name = tenant["metadata"]["name"]
        if kind_of_event == "DELETED":
            self.cache.tenants.pop(name, None)
        else:
            self.cache.tenants[name] = tenant
        work.changed(kind_of_event, tenant)


@dataclass
class _Context:
    cache: FakeCache
    kube: FakeKube
    events: FakeEvents


def tenant(name: str = "acme", generation: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": generation, "resourceVersion": "10", **metadata},
        "spec": {},
        "status": {},
    }


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_listed_tenant_gets_the_finalizer_then_one_reconciliation(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup()

    async def scenario() -> None:
        queue = setup.work(monkeypatch)
        setup.put(queue, tenant(), kind_of_event=None)  # listed before the workers start
        queue.start()
        await settle()
        assert setup.kube.patches == [("acme", [FINALIZER])]
        assert setup.reconciles.calls == [("acme", 0)]
        assert setup.cache.tenants["acme"]["metadata"]["finalizers"] == [FINALIZER]

        # Status writes (the operator's own) and the finalizer's arrival ask for nothing.
        written = copy.deepcopy(setup.cache.tenants["acme"])
        written["status"] = {"phase": "Running"}
        setup.put(queue, written)
        await settle()
        assert setup.reconciles.calls == [("acme", 0)]

        # A new generation of the spec, and a new reconcile request, each ask for one more.
        setup.put(queue, tenant(generation=2, finalizers=[FINALIZER]))
        await settle()
        annotated = tenant(generation=2, finalizers=[FINALIZER], annotations={RECONCILE_ANNOTATION: "1"})
        setup.put(queue, annotated)
        await settle()
        assert setup.reconciles.calls == [("acme", 0)] * 3
        assert len(setup.kube.patches) == 1, "the finalizer is added once"
        await queue.stop()

    run(scenario)


def test_changes_while_a_tenant_is_worked_on_make_exactly_one_more_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup()
    release = asyncio.Event()

    async def scenario() -> None:
        async def slow(name: str, retry: int) -> None:
            await release.wait()

        setup.reconciles.then = slow
        queue = setup.work(monkeypatch)
        queue.start()
        setup.put(queue, tenant(finalizers=[FINALIZER]))
        await settle()
        for generation in (2, 3, 4):  # while the first go waits (for a Helm slot, say)
            setup.put(queue, tenant(generation=generation, finalizers=[FINALIZER]))
        await settle()
        assert len(setup.reconciles.calls) == 1
        assert setup.reconciles.most_at_once == 1, "never two goes at one Tenant"
        release.set()
        await settle()
        assert len(setup.reconciles.calls) == 2, "the three changes: one more go, at the newest"
        await queue.stop()

    run(scenario)


def test_workers_bound_the_tenants_worked_on_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup()
    release = asyncio.Event()

    async def scenario() -> None:
        async def slow(name: str, retry: int) -> None:
            await release.wait()

        setup.reconciles.then = slow
        queue = setup.work(monkeypatch, workers=3)
        queue.start()
        for n in range(10):
            setup.put(queue, tenant(f"t{n}", finalizers=[FINALIZER]))
        await settle()
        assert setup.reconciles.running == 3
        release.set()
        await settle()
        assert sorted(name for name, _ in setup.reconciles.calls) == sorted(f"t{n}" for n in range(10))
        assert setup.reconciles.most_at_once == 3
        await queue.stop()

    run(scenario)


def test_a_temporary_error_is_tried_again_after_its_delay_a_permanent_one_waits_for_a_new_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup()

    async def scenario() -> None:
        async def failing(name: str, retry: int) -> None:
            if name == "temporary" and retry < 2:
                raise kopf.TemporaryError("not yet", delay=0.05)
            if name == "permanent":
                raise kopf.PermanentError("never as written")

        setup.reconciles.then = failing
        queue = setup.work(monkeypatch)
        queue.start()
        setup.put(queue, tenant("temporary", finalizers=[FINALIZER]))
        setup.put(queue, tenant("permanent", finalizers=[FINALIZER]))
        await settle(0.3)
        calls = setup.reconciles.calls
        assert [retry for name, retry in calls if name == "temporary"] == [0, 1, 2]
        assert [retry for name, retry in calls if name == "permanent"] == [0]

        # Its status written (the reason of the failure): no new go; a new spec: one.
        setup.put(queue, {**tenant("permanent", finalizers=[FINALIZER]), "status": {"phase": "Failed"}})
        await settle()
        assert [retry for name, retry in calls if name == "permanent"] == [0]
        setup.put(queue, tenant("permanent", generation=2, finalizers=[FINALIZER]))
        await settle()
        assert [retry for name, retry in calls if name == "permanent"] == [0, 0]
        await queue.stop()

    run(scenario)


def test_an_unexpected_error_is_an_event_and_a_retry_and_the_worker_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup()

    async def scenario() -> None:
        async def broken(name: str, retry: int) -> None:
            if name == "broken":
                raise KeyError("spec")

        setup.reconciles.then = broken
        monkeypatch.setattr(work.reconcile, "retry_delay", lambda retry: 0.05)
        queue = setup.work(monkeypatch, workers=1)
        queue.start()
        setup.put(queue, tenant("broken", finalizers=[FINALIZER]))
        setup.put(queue, tenant("fine", finalizers=[FINALIZER]))
        await settle(0.2)
        names = [name for name, _ in setup.reconciles.calls]
        assert "fine" in names and names.count("broken") >= 2
        assert ("Warning", "ReconcileError") in setup.events.posted
        await queue.stop()

    run(scenario)


def test_a_deleted_tenant_is_deleted_then_its_finalizer_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup()
    namespace_there = True

    async def scenario() -> None:
        async def waits_for_the_namespace(name: str, retry: int) -> None:
            if namespace_there:
                raise kopf.TemporaryError("waiting for namespace", delay=60)

        setup.deletions.then = waits_for_the_namespace
        queue = setup.work(monkeypatch)
        queue.start()
        deleted = tenant(finalizers=["someone/else", FINALIZER], deletionTimestamp="now")
        setup.put(queue, deleted)
        await settle()
        assert len(setup.deletions.calls) == 1 and setup.kube.patches == []

        nonlocal namespace_there
        namespace_there = False
        queue.namespace_gone("acme")  # the namespaces' watch: no waiting out the 60 s
        await settle()
        assert len(setup.deletions.calls) == 2
        assert setup.kube.patches == [("acme", ["someone/else"])], "only the operator's finalizer goes"
        assert setup.reconciles.calls == []

        # Still held by another finalizer: nothing more is the operator's to do.
        setup.put(queue, setup.cache.tenants["acme"])
        await settle()
        assert len(setup.deletions.calls) == 2
        await queue.stop()

    run(scenario)


def test_a_refused_finalizer_patch_is_tried_again_without_deleting_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup()
    setup.kube.conflicts = 1
    monkeypatch.setattr(work, "CONFLICT_RETRY_SECONDS", 0.01)

    async def scenario() -> None:
        queue = setup.work(monkeypatch)
        queue.start()
        setup.put(queue, tenant(finalizers=[FINALIZER], deletionTimestamp="now"))
        await settle(0.1)
        assert len(setup.deletions.calls) == 1, "the deletion was done; only the patch is tried again"
        assert setup.kube.patches == [("acme", [])]
        await queue.stop()

    run(scenario)


def test_a_tenant_that_leaves_the_watch_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted, or moved out of this shard's selector (the watch says DELETED too): a retry waiting for it
    is dropped, and its return is a new Tenant to reconcile."""
    setup = Setup()

    async def scenario() -> None:
        async def failing(name: str, retry: int) -> None:
            raise kopf.TemporaryError("not yet", delay=0.1)

        setup.reconciles.then = failing
        queue = setup.work(monkeypatch)
        queue.start()
        setup.put(queue, tenant(finalizers=[FINALIZER]))
        await settle()
        setup.put(queue, tenant(finalizers=[FINALIZER]), kind_of_event="DELETED")
        await settle(0.2)
        assert len(setup.reconciles.calls) == 1, "no retry of a Tenant gone"
        setup.reconciles.then = None
        setup.put(queue, tenant(finalizers=[FINALIZER]), kind_of_event="ADDED")
        await settle()
        assert len(setup.reconciles.calls) == 2
        await queue.stop()

    run(scenario)


def test_stopping_lets_the_tenants_under_way_finish_and_starts_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup()
    finished: list[str] = []

    async def scenario() -> None:
        async def installing(name: str, retry: int) -> None:
            await asyncio.sleep(0.1 if name == "quick" else 10)
            finished.append(name)

        setup.reconciles.then = installing
        queue = setup.work(monkeypatch, workers=2)
        queue.start()
        for name in ("quick", "slow", "waiting"):
            setup.put(queue, tenant(name, finalizers=[FINALIZER]))
        await settle()
        await queue.stop(grace_seconds=0.3)
        assert finished == ["quick"], "the quick one finished, the slow one was cancelled"
        assert [name for name, _ in setup.reconciles.calls] == ["quick", "slow"], "none started after"

    run(scenario)
