"""Watches of the objects of tenant namespaces, and of Tenants for the cache, outside kopf's per-object work.

One list and then one watch per kind, label-selected on the server, as client-go's informers do: a thread
per kind reads the stream and hands each event to the event loop, where the kind's store (trimmed objects,
for the kinds the cache reads) is updated and the kind's callback runs. Kopf keeps a worker task and a
memory per object it watches, and with indices it made every worker wait on a condition that each new
object's worker notified: with 500 tenants (about 10,000 objects) a restart spent most of its 70 s waking
those waiters.

`Informers.start` lists every kind first and fills every store before any callback runs and before kopf's
handlers start (it runs in kopf's startup handler), so a status report never reads a half-filled cache. A
watch that ends is resumed from the last resourceVersion it saw (bookmarks keep that fresh); one the server
can no longer resume (410 Gone), or a failed request, makes the kind list again, and the objects missing
from the new listing are handed on as deleted.
"""

import asyncio
import itertools
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.watch.watch import iter_resp_lines

from tenant_operator import metrics
from tenant_operator.cache import pick
from tenant_operator.kube import RateLimit

logger = logging.getLogger(__name__)

Object = dict[str, Any]
# A kind's callback: the event's type (ADDED, MODIFIED, DELETED; None for an object of a listing) and the
# object slimmed (Kind.slim): what the store keeps of it, its kind, namespace and name, and who wrote it.
Callback = Callable[[str | None, Object], None]
# The store's key of an object: its namespace, or its name for a cluster-scoped kind (Tenants).
Key = Callable[[Mapping[str, Any]], str]
# What the store keeps of an object.
Trim = Callable[[Mapping[str, Any]], Object]

# Objects per page of a listing. A whole pod or workload takes some 30 KB as Python objects, and the kinds are
# listed side by side: pages of 500 made a restart with 1000 tenants peak at 345 MiB.
PAGE = 100
WATCH_SECONDS = (300, 600)  # each watch asks the server to end it after a random time in this range, as
# client-go does, so that the watches of many operators do not all renew at once
RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)  # after failed requests in a row; then every 8 s


class ExpiredError(Exception):
    """The server can no longer resume the watch from the version given (410): list again."""


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata: Mapping[str, Any] = obj.get("metadata") or {}
    return metadata


def by_namespace(obj: Mapping[str, Any]) -> str:
    return str(_metadata(obj).get("namespace", ""))


def by_name(obj: Mapping[str, Any]) -> str:
    return str(_metadata(obj).get("name", ""))


@dataclass
class Kind:
    """One kind: how to list it (a list function, kube.Rest.lister, which also watches), which objects
    (a label selector), what to keep of each (None: nothing, the kind is only followed) and whom to tell."""

    name: str  # plural, for the logs and the request metric
    kind: str  # of the objects (list items do not say it)
    list_function: Callable[..., Any]
    selector: str
    callback: Callback
    trim: Trim | None = None
    key: Key = by_namespace
    # key -> name -> trimmed object
    store: dict[str, dict[str, Object]] = field(default_factory=dict)
    # Waits for the operator's request budget (kube.RateLimit): lists and watches count like any request.
    throttle: Callable[[], None] = field(default=lambda: None, repr=False)

    def slim(self, obj: Mapping[str, Any]) -> Object:
        """What the store and the callback read of an object: what `trim` keeps, the kind, namespace and name,
        and the managers of its managedFields (drift.py: who wrote it), not the fields they wrote. A tenth of
        a whole object or less, which is kept only while its page or event is read."""
        metadata = _metadata(obj)
        kept = self.trim(obj) if self.trim is not None else {}
        kept["kind"] = self.kind
        kept["metadata"] = {**kept.get("metadata", {}), **pick(metadata, ("namespace", "name"))}
        if "managedFields" in metadata:
            writers = [pick(entry, ("manager", "subresource")) for entry in metadata["managedFields"]]
            kept["metadata"]["managedFields"] = writers
        return kept

    def request(self, **parameters: Any) -> Any:
        self.throttle()
        metrics.API_REQUESTS.labels(f"{'watch' if parameters.get('watch') else 'list'}_{self.name}").inc()
        if self.selector:
            parameters["label_selector"] = self.selector
        return self.list_function(**parameters)

    def fetch(self) -> tuple[list[Object], str]:
        """Every object (in pages, slimmed), and the resourceVersion to watch from."""
        items: list[Object] = []
        token = None
        while True:
            page = json.loads(self.request(limit=PAGE, _continue=token, _request_timeout=60).data)
            items.extend(self.slim(item) for item in page.get("items") or [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items, str(page.get("metadata", {}).get("resourceVersion", ""))

    def watch(self, version: str, stop: threading.Event) -> Iterator[tuple[str, Object]]:
        """The events after `version` until the server ends the watch (or `stop`); bookmarks included."""
        seconds = random.randint(*WATCH_SECONDS)
        response = self.request(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            _request_timeout=(30, seconds + 30),
        )
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if stop.is_set():
                    return
                if not line:
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise ExpiredError(obj.get("message", ""))
                    raise RuntimeError(f"watch of {self.name} failed: {obj.get('message', obj)}")
                yield event["type"], obj
        finally:
            response.release_conn()

    # -- in the event loop --------------------------------------------------------------------------------

    def apply(self, kind_of_event: str | None, obj: Object) -> None:
        """Keep the object (or forget it), then tell the callback."""
        if self.trim is not None:
            key, name = self.key(obj), by_name(obj)
            if kind_of_event == "DELETED":
                objects = self.store.get(key)
                if objects is not None:
                    objects.pop(name, None)
                    if not objects:
                        del self.store[key]
            else:
                self.store.setdefault(key, {})[name] = self.trim(obj)
        self.callback(kind_of_event, obj)

    def replace(self, items: list[Object]) -> list[Object]:
        """A new listing becomes the store; the objects it no longer has (deleted while no watch ran)."""
        gone: list[Object] = []
        if self.trim is not None:
            listed = {(self.key(obj), by_name(obj)) for obj in items}
            scope = "namespace" if self.key is by_namespace else "name"
            gone = [
                {"kind": self.kind, "metadata": {scope: key, "name": name}}
                for key, objects in self.store.items()
                for name in objects
                if (key, name) not in listed
            ]
            self.store.clear()  # in place: the cache holds this dict
            for obj in items:
                self.store.setdefault(self.key(obj), {})[by_name(obj)] = self.trim(obj)
        return gone


@dataclass
class Informers:
    """The watches of every kind, started together."""

    kinds: list[Kind]
    limit: RateLimit | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    async def start(self) -> None:
        """List every kind, fill every store, hand the listings to the callbacks, then watch on."""
        loop = asyncio.get_running_loop()
        if self.limit is not None:
            limit = self.limit
            for kind in self.kinds:
                kind.throttle = lambda: asyncio.run_coroutine_threadsafe(limit.acquire(), loop).result()
        listings = await asyncio.gather(*(asyncio.to_thread(_list_until_done, kind) for kind in self.kinds))
        for kind, (items, _) in zip(self.kinds, listings, strict=True):
            kind.replace(items)
        for kind, (items, _) in zip(self.kinds, listings, strict=True):
            for obj in items:
                kind.callback(None, obj)
        for kind, (_, version) in zip(self.kinds, listings, strict=True):
            thread = threading.Thread(
                target=self._follow, args=(kind, version, loop), name=f"watch-{kind.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        counts = (f"{len(items)} {kind.name}" for kind, (items, _) in zip(self.kinds, listings, strict=True))
        logger.info("listed %s", ", ".join(counts))

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait (in a thread, with the loop running) for the watch threads to end; whether they all did."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def _follow(self, kind: Kind, version: str, loop: asyncio.AbstractEventLoop) -> None:
        """The thread of one kind: watch from `version`, list again when that is no longer possible."""
        failures = 0
        while not self._stop.is_set():
            try:
                if not version:
                    items, version = kind.fetch()
                    loop.call_soon_threadsafe(self._relisted, kind, items)
                for kind_of_event, obj in kind.watch(version, self._stop):
                    version = _metadata(obj).get("resourceVersion", version)
                    if kind_of_event != "BOOKMARK":
                        loop.call_soon_threadsafe(kind.apply, kind_of_event, kind.slim(obj))
                failures = 0
            except ExpiredError:
                logger.info("the watch of %s is too old to resume; listing again", kind.name)
                version = ""
            except Exception as error:  # the API server restarting, a connection cut: list again
                if self._stop.is_set():
                    return
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                logger.warning(
                    "the watch of %s failed (%s); listing again in %.0f s", kind.name, error, delay
                )
                version = ""
                self._stop.wait(delay)

    @staticmethod
    def _relisted(kind: Kind, items: list[Object]) -> None:
        for obj in kind.replace(items):
            kind.callback("DELETED", obj)
        for obj in items:
            kind.callback(None, obj)


def _list_until_done(kind: Kind) -> tuple[list[Object], str]:
    """The first listing, tried again until it succeeds (the operator cannot start without it)."""
    for failures in itertools.count():
        try:
            return kind.fetch()
        except Exception as error:  # the API server not there yet, a connection cut, no permission
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            logger.warning("listing %s failed (%s); trying again in %.0f s", kind.name, error, delay)
            threading.Event().wait(delay)
    raise AssertionError("unreachable")
