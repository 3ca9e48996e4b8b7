"""The status reporter with the API faked: it patches only what changed, coalesces requests and announces."""

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tenant_operator.api import ReleaseStatus
from tenant_operator.cache import (
    DEPLOYMENTS,
    PODS,
    STATEFULSETS,
    TENANTS,
    Cache,
    trim_pod,
    trim_tenant,
    trim_workload,
)
from tenant_operator.reporting import COALESCE_SECONDS, Reporter

SERVER = {
    "metadata": {"name": "neurallog-server", "generation": 1},
    "spec": {"replicas": 1},
    "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
}
REDIS = copy.deepcopy(SERVER) | {"metadata": {"name": "redis", "generation": 1}}
DEPLOYED = {"name": "acme", "revision": 1, "chartVersion": "0.1.0", "state": "Deployed", "appliedHash": "h"}


@dataclass
class FakeKube:
    """The API as the reporter sees it: a status patch answers with the Tenant written (a new
    resourceVersion); the watch (`watch`) brings that version to the cache's index later."""

    tenant: dict[str, Any] | None
    secrets: dict[str, frozenset[str] | None] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)

    async def patch_tenant_status(self, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
        await asyncio.sleep(0.01)
        self.patches.append(dict(status))
        assert self.tenant is not None
        self.tenant["status"] = dict(status)
        metadata = self.tenant["metadata"]
        metadata["resourceVersion"] = str(int(metadata.get("resourceVersion", "1")) + 1)
        return copy.deepcopy(self.tenant)

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name}}

    async def secret_keys(self, namespace: str, names: Any) -> dict[str, frozenset[str] | None]:
        return {name: self.secrets.get(name) for name in names}


class CountingReporter(Reporter):
    """A reporter that counts its reports."""

    reports = 0

    async def _report(self, name: str, **kwargs: Any) -> Any:
        self.reports += 1
        return await super()._report(name, **kwargs)


def cache_of(kube: FakeKube, pods: list[dict[str, Any]] | None = None) -> Cache:
    """The stores as the informers fill them: the Tenant as the API holds it now, the workloads, the pods."""
    stores = {
        TENANTS: {"acme": {"acme": copy.deepcopy(kube.tenant)}} if kube.tenant else {},
        DEPLOYMENTS: {"tenant-acme": {"neurallog-server": SERVER}},
        STATEFULSETS: {"tenant-acme": {"redis": REDIS}},
        PODS: {"tenant-acme": {pod["metadata"]["name"]: pod for pod in pods or []}},
    }
    return Cache(stores=stores)


@dataclass
class FakeEvents:
    posted: list[tuple[str, str]] = field(default_factory=list)

    def post(self, tenant: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        self.posted.append((kind, reason))


def tenant(env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "acme", "uid": "u", "generation": 1},
        "spec": {"displayName": "Acme", "server": {"env": env or []}},
        "status": {"release": DEPLOYED, "observedGeneration": 1},
    }


def reporter(kube: FakeKube, events: FakeEvents, cache: Cache | None = None) -> CountingReporter:
    cache = cache if cache is not None else cache_of(kube)
    return CountingReporter(cast(Any, kube), cache, cast(Any, events), secret_recheck_seconds=0.05)


def test_a_change_is_patched_and_announced_once() -> None:
    """The second report, before the watch brought the status written, knows it from the patch's answer."""
    kube, events = FakeKube(tenant()), FakeEvents()
    report = reporter(kube, events)

    async def twice() -> None:
        await report.report("acme")
        await report.report("acme")

    asyncio.run(twice())
    assert len(kube.patches) == 1
    assert kube.patches[0]["phase"] == "Running"
    assert events.posted == [("Normal", "AllWorkloadsReady")]


def test_requests_during_a_report_make_one_more_report() -> None:
    kube, events = FakeKube(tenant()), FakeEvents()

    async def burst(report: Reporter) -> None:
        for _ in range(20):
            report.request("acme")
            await asyncio.sleep(0)
        while report._tasks:
            await asyncio.sleep(0.01)

    report = reporter(kube, events)
    asyncio.run(burst(report))
    assert 1 <= report.reports <= 2


def starting_server(cache: Cache) -> None:
    """The server's Deployment as a rollout begins: no replica ready."""
    starting = copy.deepcopy(SERVER)
    starting["status"]["readyReplicas"] = 0
    cache.stores[DEPLOYMENTS]["tenant-acme"]["neurallog-server"] = starting


def test_a_lone_request_reports_at_once_and_the_next_waits_its_turn() -> None:
    """A request after a quiet moment is not delayed; one right after a report waits until COALESCE_SECONDS
    after that report began (while the rollout goes on)."""
    kube, events = FakeKube(tenant()), FakeEvents()
    cache = cache_of(kube)
    starting_server(cache)

    async def two(report: CountingReporter) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        report.request("acme")
        while report.reports < 1:
            await asyncio.sleep(0.001)
        first = loop.time() - start
        report.request("acme")
        while report.reports < 2:
            await asyncio.sleep(0.001)
        return first, loop.time() - start

    first, second = asyncio.run(two(reporter(kube, events, cache)))
    assert first < COALESCE_SECONDS / 2
    assert second >= COALESCE_SECONDS


@pytest.mark.parametrize("waiting", [False, True], ids=["after-a-report", "while-a-report-waits"])
def test_the_event_that_ends_a_rollout_is_reported_at_once(waiting: bool) -> None:
    """Right after a report that found the server not Ready yet, the server's becoming Ready is reported at
    once, not COALESCE_SECONDS after that report began: it changes the phase to Running. So it is when a
    report of an earlier event already waits its turn."""
    kube, events = FakeKube(tenant()), FakeEvents()
    cache = cache_of(kube)
    starting_server(cache)

    async def rollout(report: CountingReporter) -> float:
        loop = asyncio.get_running_loop()
        await report.report("acme")
        assert kube.patches[-1]["phase"] == "Provisioning"
        if waiting:
            report.request("acme")  # an event of the rollout: its report waits its turn
            await asyncio.sleep(0.01)
            assert len(kube.patches) == 1
        cache.stores[DEPLOYMENTS]["tenant-acme"]["neurallog-server"] = SERVER  # the watch: now Ready
        start = loop.time()
        report.request("acme")
        while len(kube.patches) < 2:
            await asyncio.sleep(0.001)
        return loop.time() - start

    assert asyncio.run(rollout(reporter(kube, events, cache))) < COALESCE_SECONDS / 2
    assert [patch["phase"] for patch in kube.patches] == ["Provisioning", "Running"]


def test_a_missing_secret_is_looked_for_again_until_it_exists() -> None:
    env = [{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "tenant-secrets", "key": "api-key"}}}]
    kube, events = FakeKube(tenant(env)), FakeEvents()

    async def scenario() -> None:
        report = reporter(kube, events)
        await report.report("acme")
        assert kube.patches[-1]["phase"] == "Degraded"
        kube.secrets["tenant-secrets"] = frozenset({"api-key"})
        for _ in range(100):
            await asyncio.sleep(0.02)
            if kube.patches[-1]["phase"] == "Running":
                break
        assert not report._rechecks, "no more rechecks once the secret is there"

    asyncio.run(scenario())
    assert [patch["phase"] for patch in kube.patches] == ["Degraded", "Running"]
    assert events.posted == [("Warning", "SecretNotFound"), ("Normal", "AllWorkloadsReady")]


def test_a_gone_tenant_is_forgotten() -> None:
    kube, events = FakeKube(None), FakeEvents()
    report = reporter(kube, events)
    deployed = ReleaseStatus.model_validate(DEPLOYED)
    assert asyncio.run(report.report("acme", release=deployed, observed_generation=1)) is None
    assert kube.patches == []
    report.forget("acme")  # its deletion is done: a new Tenant of that name starts from nothing
    assert report._unseen == {}


def test_the_watch_catching_up_replaces_what_was_written() -> None:
    """Once the store holds the version written (or a newer one), it is what the cache gives."""
    kube = FakeKube(tenant() | {"metadata": {"name": "acme", "uid": "u", "generation": 1}})
    cache = cache_of(kube)
    written = asyncio.run(kube.patch_tenant_status("acme", {"phase": "Running"}))
    cache.wrote("acme", written)
    assert cache.tenant("acme") == trim_tenant(kube.tenant or {})
    newer = copy.deepcopy(kube.tenant or {})
    newer["metadata"]["resourceVersion"] = "7"
    newer["spec"]["displayName"] = "Acme 2"
    cast(dict[str, Any], cache.stores[TENANTS])["acme"] = {"acme": newer}
    assert cache.tenant("acme") == newer
    assert cache._written == {}
    cast(dict[str, Any], cache.stores[TENANTS]).pop("acme")
    cache.wrote("acme", written)
    assert cache.tenant("acme") is None, "a Tenant the watch saw go is gone, whatever was written before"


def test_pods_and_workloads_are_read_from_the_stores() -> None:
    """A pod that cannot pull its image, as the watch saw it: the report says so without any read."""
    pulling = {
        "metadata": {"name": "neurallog-server-1", "labels": {"app": "neurallog-server"}},
        "status": {
            "containerStatuses": [
                {"name": "server", "image": "x", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
            ]
        },
    }
    kube, events = FakeKube(tenant()), FakeEvents()
    status = asyncio.run(reporter(kube, events, cache_of(kube, [trim_pod(pulling)])).report("acme"))
    assert status is not None and status.phase == "Degraded"
    assert "ImagePullBackOff" in status.server_status.message


def test_trimmed_objects_keep_what_the_status_reads() -> None:
    workload = SERVER | {"metadata": SERVER["metadata"] | {"managedFields": [{"manager": "x"}] * 20}}
    assert trim_workload(workload) == SERVER
    assert "managedFields" not in trim_workload(workload)["metadata"]
    body = tenant() | {"metadata": {"name": "acme", "annotations": {"big": "x" * 10000}, "generation": 3}}
    assert trim_tenant(body)["metadata"] == {"name": "acme", "generation": 3}
    assert trim_tenant(body)["spec"] == body["spec"]


def test_a_report_that_found_no_tenant_is_made_when_the_watch_brings_it() -> None:
    """The settle report of a Tenant the Tenants' watch has not brought yet (after an API server restart it
    may list them last) is made once the watch brings it, not dropped."""
    kube, events = FakeKube(tenant()), FakeEvents()
    cache = cache_of(kube)
    listed = cast(dict[str, Any], cache.stores[TENANTS]).pop("acme")
    report = reporter(kube, events, cache)

    async def outage() -> None:
        assert await report.report("acme") is None
        assert kube.patches == [], "nothing to report on yet"
        cast(dict[str, Any], cache.stores[TENANTS])["acme"] = listed
        report.tenant_seen(None, listed["acme"])  # the listing after the restart
        while report._tasks:
            await asyncio.sleep(0.01)
        report.tenant_seen("MODIFIED", listed["acme"])  # reported already: no more

    asyncio.run(outage())
    assert [patch["phase"] for patch in kube.patches] == ["Running"]
    assert report.reports == 2


def test_a_reconciliation_s_report_that_found_no_tenant_keeps_its_release_for_when_the_watch_brings_it() -> (
    None
):
    """The release a reconciliation installed exists only in its report: a Tenant the watch has not brought
    yet gets it (and the generation) once the watch does, not the release state of its older status."""
    installing = tenant() | {"status": {"phase": "Installing", "release": {"state": "Installing"}}}
    kube, events = FakeKube(installing), FakeEvents()
    cache = cache_of(kube)
    listed = cast(dict[str, Any], cache.stores[TENANTS]).pop("acme")
    report = reporter(kube, events, cache)

    async def outage() -> None:
        assert (
            await report.report("acme", release=ReleaseStatus.model_validate(DEPLOYED), observed_generation=1)
            is None
        )
        report.request("acme")  # a workload event meanwhile: still no Tenant, still nothing lost
        while report._tasks:
            await asyncio.sleep(0.01)
        assert kube.patches == []
        cast(dict[str, Any], cache.stores[TENANTS])["acme"] = listed
        report.tenant_seen(None, listed["acme"])
        while report._tasks:
            await asyncio.sleep(0.01)

    asyncio.run(outage())
    assert [
        (patch["phase"], patch["release"]["state"], patch["observedGeneration"]) for patch in kube.patches
    ] == [("Running", "Deployed", 1)]
    assert events.posted == [("Normal", "AllWorkloadsReady")]
