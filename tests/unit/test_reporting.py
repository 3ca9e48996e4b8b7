"""The status reporter with the API faked: it patches only what changed, coalesces requests and announces."""

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from tenant_operator.reporting import Reporter

SERVER = {
    "metadata": {"name": "neurallog-server", "generation": 1},
    "spec": {"replicas": 1},
    "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
}
REDIS = copy.deepcopy(SERVER) | {"metadata": {"name": "redis", "generation": 1}}
DEPLOYED = {"name": "acme", "revision": 1, "chartVersion": "0.1.0", "state": "Deployed", "appliedHash": "h"}


@dataclass
class FakeKube:
    tenant: dict[str, Any] | None
    workloads: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"deployment": SERVER, "statefulset": REDIS}
    )
    secrets: dict[str, frozenset[str] | None] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0

    async def get_tenant(self, name: str) -> dict[str, Any] | None:
        self.reads += 1
        await asyncio.sleep(0.01)
        return copy.deepcopy(self.tenant)

    async def patch_tenant_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append(dict(status))
        assert self.tenant is not None
        self.tenant["status"] = dict(status)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.workloads.get("deployment")

    async def get_statefulset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.workloads.get("statefulset")

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        return []

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name}}

    async def secret_keys(self, namespace: str, names: Any) -> dict[str, frozenset[str] | None]:
        return {name: self.secrets.get(name) for name in names}


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


def reporter(kube: FakeKube, events: FakeEvents) -> Reporter:
    return Reporter(cast(Any, kube), cast(Any, events), secret_recheck_seconds=0.05)


def test_a_change_is_patched_and_announced_once() -> None:
    kube, events = FakeKube(tenant()), FakeEvents()

    async def twice() -> None:
        await reporter(kube, events).report("acme")
        await reporter(kube, events).report("acme")

    asyncio.run(twice())
    assert len(kube.patches) == 1
    assert kube.patches[0]["phase"] == "Running"
    assert events.posted == [("Normal", "AllWorkloadsReady")]


def test_requests_during_a_report_make_one_more_report() -> None:
    kube, events = FakeKube(tenant()), FakeEvents()

    async def burst() -> None:
        report = reporter(kube, events)
        for _ in range(20):
            report.request("acme")
            await asyncio.sleep(0)
        while report._tasks:
            await asyncio.sleep(0.01)

    asyncio.run(burst())
    assert kube.reads <= 2


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
    assert asyncio.run(reporter(kube, events).report("acme")) is None
    assert kube.patches == []
