"""The informers with the API faked: listings in pages fill the stores before any callback, watches resume
from the last version, a watch too old to resume lists again and hands on what went meanwhile as deleted."""

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from tenant_operator.cache import trim_workload
from tenant_operator.informer import ExpiredError, Informers, Kind, by_namespace
from tenant_operator.kube import RateLimit


def deployment(namespace: str, name: str, version: int, ready: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": str(version), "generation": 1},
        "spec": {"replicas": 1},
        "status": {"readyReplicas": ready},
    }


@dataclass
class Response:
    data: bytes = b""
    lines: list[dict[str, Any]] = field(default_factory=list)
    released: bool = False

    def stream(self, amt: Any = None, decode_content: Any = None) -> Any:
        for line in self.lines:  # as the server sends them: one JSON document per line, in chunks
            text = json.dumps(line).encode() + b"\n"
            yield text[:10]
            yield text[10:]

    def release_conn(self) -> None:
        self.released = True


@dataclass
class FakeApi:
    """A list function of the official client: pages of a listing, then the watches' events in turn."""

    pages: list[list[dict[str, Any]]]
    version: str = "10"
    relisted: list[list[dict[str, Any]]] | None = None  # the pages of every listing after the first
    watches: list[list[dict[str, Any]]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    watched: threading.Event = field(default_factory=threading.Event)

    def __call__(self, **parameters: Any) -> Response:
        self.calls.append(parameters)
        if parameters.get("watch"):
            if not self.watches:
                self.watched.set()
                threading.Event().wait(0.05)
                return Response()
            return Response(lines=self.watches.pop(0))
        number = int(parameters.get("_continue") or 0)
        more = {"continue": str(number + 1)} if number + 1 < len(self.pages) else {}
        body = {"items": self.pages[number], "metadata": {"resourceVersion": self.version, **more}}
        if not more and self.relisted is not None:
            self.pages = self.relisted
        return Response(data=json.dumps(body).encode())


async def until_watched(informers: Informers, api: FakeApi) -> None:
    """Start the informers, let them watch until the fake API has no events left, stop and join them."""
    await informers.start()
    while not api.watched.is_set():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    informers.stop()
    assert await asyncio.to_thread(informers.join, 5), "a watch thread outlived the test"


def test_a_listing_in_pages_is_kept_trimmed_and_says_its_kind() -> None:
    api = FakeApi([[deployment("tenant-a", "server", 5)], [deployment("tenant-b", "server", 6)]])
    kind = Kind("deployments", "Deployment", api, "app=x", lambda *_: None, trim_workload)
    items, version = kind.fetch()
    assert [item["kind"] for item in items] == ["Deployment", "Deployment"]
    assert version == "10"
    assert [call.get("_continue") for call in api.calls] == [None, "1"]
    assert all(call["label_selector"] == "app=x" for call in api.calls)
    assert kind.replace(items) == []
    assert set(kind.store) == {"tenant-a", "tenant-b"}
    assert kind.store["tenant-a"]["server"] == trim_workload(deployment("tenant-a", "server", 5))


def test_what_is_kept_of_an_object_is_what_the_store_and_the_callback_read() -> None:
    written_by = [
        {"manager": "helm", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "kube-controller-manager", "subresource": "status", "fieldsV1": {"f:status": {}}},
    ]
    whole = deployment("tenant-a", "server", 5) | {"apiVersion": "apps/v1"}
    whole["metadata"] |= {"managedFields": written_by, "uid": "u", "labels": {"app": "server"}}
    whole["spec"] |= {"template": {"spec": {"containers": [{"name": "server", "image": "server:1"}]}}}
    kind = Kind("deployments", "Deployment", FakeApi([[whole]]), "", lambda *_: None, trim_workload)

    slim = kind.slim(whole)
    assert slim["kind"] == "Deployment"
    assert slim["metadata"]["namespace"] == "tenant-a"
    assert slim["metadata"]["managedFields"] == [
        {"manager": "helm"},
        {"manager": "kube-controller-manager", "subresource": "status"},
    ]
    assert "template" not in slim["spec"] and "uid" not in slim["metadata"]
    assert trim_workload(slim) == trim_workload(whole), "the store keeps the same of the slim object"
    assert kind.fetch()[0] == [slim]
    followed = Kind("services", "Service", FakeApi([]), "", lambda *_: None)
    writers = slim["metadata"]["managedFields"]
    only_followed = {"namespace": "tenant-a", "name": "server", "managedFields": writers}
    assert followed.slim(whole) == {"kind": "Service", "metadata": only_followed}


def test_every_store_is_full_before_the_first_callback() -> None:
    seen: list[tuple[str | None, str, int]] = []
    pods = FakeApi([[{"metadata": {"namespace": "tenant-a", "name": "p"}}]])
    deployments = FakeApi([[deployment("tenant-a", "server", 5)]])
    deployments_kind = Kind("deployments", "Deployment", deployments, "", lambda *_: None, trim_workload)

    def on_pod(kind_of_event: str | None, obj: dict[str, Any]) -> None:
        seen.append((kind_of_event, obj["kind"], len(deployments_kind.store)))

    informers = Informers([Kind("pods", "Pod", pods, "", on_pod, dict), deployments_kind])

    async def run() -> None:
        await informers.start()
        informers.stop()
        assert await asyncio.to_thread(informers.join, 5), "a watch thread outlived the test"

    asyncio.run(run())
    assert seen == [(None, "Pod", 1)], "the deployments were listed before the pod's callback ran"


def test_a_watch_resumes_from_the_last_version_and_changes_the_store() -> None:
    events: list[tuple[str | None, str]] = []
    api = FakeApi(
        [[deployment("tenant-a", "server", 5)]],
        watches=[
            [
                {"type": "MODIFIED", "object": deployment("tenant-a", "server", 11, ready=1)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            [{"type": "DELETED", "object": deployment("tenant-a", "server", 16)}],
        ],
    )
    kind = Kind("deployments", "Deployment", api, "", lambda t, o: events.append((t, o["metadata"]["name"])),
                trim_workload)  # fmt: skip
    informers = Informers([kind])

    asyncio.run(until_watched(informers, api))
    versions = [call["resource_version"] for call in api.calls if call.get("watch")]
    assert versions[:3] == ["10", "15", "16"]
    assert events == [(None, "server"), ("MODIFIED", "server"), ("DELETED", "server")]
    assert kind.store == {}


def test_a_watch_too_old_lists_again_and_hands_on_what_went_as_deleted() -> None:
    events: list[tuple[str | None, str]] = []
    api = FakeApi(
        [[deployment("tenant-a", "server", 5), deployment("tenant-b", "server", 6)]],
        watches=[[{"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}]],
        relisted=[[deployment("tenant-b", "server", 20)]],  # tenant-a's went while no watch ran
    )
    kind = Kind("deployments", "Deployment", api, "", lambda t, o: events.append(
        (t, o["metadata"].get("namespace"))), trim_workload)  # fmt: skip
    informers = Informers([kind])

    asyncio.run(until_watched(informers, api))
    assert events[2:] == [("DELETED", "tenant-a"), (None, "tenant-b")]
    assert set(kind.store) == {"tenant-b"}
    assert kind.store["tenant-b"]["server"]["metadata"]["generation"] == 1


def test_an_error_event_other_than_gone_is_an_error() -> None:
    api = FakeApi([[]], watches=[[{"type": "ERROR", "object": {"code": 500, "message": "boom"}}]])
    kind = Kind("deployments", "Deployment", api, "", lambda *_: None, trim_workload)
    with pytest.raises(RuntimeError, match="boom"):
        list(kind.watch("1", threading.Event()))
    api.watches = [[{"type": "ERROR", "object": {"code": 410, "message": "gone"}}]]
    with pytest.raises(ExpiredError):
        list(kind.watch("1", threading.Event()))


def test_the_store_key_of_a_namespaced_kind_is_the_namespace() -> None:
    assert by_namespace(deployment("tenant-a", "server", 1)) == "tenant-a"


def test_lists_and_watches_spend_the_operators_request_budget() -> None:
    class Counted(RateLimit):
        spent = 0

        async def acquire(self, later: bool = False) -> None:
            self.spent += 1
            await super().acquire(later)

    limit = Counted(qps=1000, burst=10)
    api = FakeApi([[deployment("tenant-a", "server", 5)], [deployment("tenant-b", "server", 6)]])
    informers = Informers([Kind("deployments", "Deployment", api, "", lambda *_: None, trim_workload)], limit)

    asyncio.run(until_watched(informers, api))
    assert limit.spent >= len(api.calls) - 1 >= 2  # (the last watch may not have counted yet)
