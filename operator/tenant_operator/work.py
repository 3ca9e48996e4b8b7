"""The Tenants' work queue: which Tenant to reconcile or delete, by name, each one at a time.

The Tenants' informer (informer.py) tells `changed` of every Tenant event. A Tenant is queued when there is
something to do: one not handled yet since the operator started (a restart reconciles every Tenant once,
which costs no Helm call when nothing changed: reconcile.py), a new generation of its spec, a new value of
its reconcile annotation, or its deletion. A status write (the operator's own, most of all) queues nothing.
A fixed number of workers take names from the queue and read the Tenant from the cache when they start, so
that a Tenant changed ten times while it waited is reconciled once, as it is then; a name that changes while
it is being worked on is queued again when that ends. A failure is tried again after its delay (a
TemporaryError's own, else growing: reconcile.retry_delay); one that a change of the spec must mend
(PermanentError) waits for that change.

What this queue holds per Tenant is a name and a few numbers, so a thousand Tenants created at once cost
little while they wait for a Helm slot; the Tenant itself stays in the informer's store, trimmed.

The finalizer is this module's: added before the first reconciliation, removed once deletion.py is done.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from tenant_operator import deletion, metrics, reconcile
from tenant_operator.api import GROUP
from tenant_operator.context import Context
from tenant_operator.kube import is_status
from tenant_operator.release import redact

logger = logging.getLogger(__name__)

FINALIZER = f"{GROUP}/finalizer"
# A finalizer patch refused because the Tenant changed meanwhile is tried again this soon (the watch brings
# the newer Tenant first, almost always).
CONFLICT_RETRY_SECONDS = 0.5
# How long a stopping operator lets the Tenants under way finish (within a pod's 30 s of grace by default).
STOP_GRACE_SECONDS = 20.0


def finalizers(tenant: Mapping[str, Any]) -> list[str]:
    return list(tenant["metadata"].get("finalizers") or [])


def deleting(tenant: Mapping[str, Any]) -> bool:
    return "deletionTimestamp" in tenant["metadata"]


def wanted(tenant: Mapping[str, Any]) -> tuple[int, str, bool]:
    """What a Tenant asks of the operator: its spec's generation, its reconcile request, its deletion. The
    same again after it was handled asks for nothing (a status write changes none of them)."""
    metadata = tenant["metadata"]
    return int(metadata.get("generation", 0)), reconcile.reconcile_request(tenant), deleting(tenant)


@dataclass
class Work:
    """The queue of Tenant names and its workers (`start`, in the operator's event loop)."""

    context: Context
    workers: int
    _ready: deque[str] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _queued: set[str] = field(default_factory=set)
    _running: set[str] = field(default_factory=set)
    _again: set[str] = field(default_factory=set)  # changed while being worked on
    _later: dict[str, asyncio.TimerHandle] = field(default_factory=dict)  # retries waiting for their time
    _retries: dict[str, int] = field(default_factory=dict)
    _asked: dict[str, tuple[int, str, bool]] = field(default_factory=dict)  # name -> `wanted` last queued
    _deleted: set[str] = field(default_factory=set)  # deletion.delete done; the finalizer's removal left
    _tasks: list["asyncio.Task[None]"] = field(default_factory=list)
    _stopping: bool = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work(), name=f"tenant-worker-{n}") for n in range(self.workers)]

    async def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """No new go at any Tenant; the ones under way may finish within `grace_seconds` (a release being
        installed, most of all), then they are cancelled."""
        self._stopping = True
        self._wake.set()
        for handle in self._later.values():
            handle.cancel()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # -- what queues a Tenant -----------------------------------------------------------------------------

    def changed(self, kind_of_event: str | None, tenant: Mapping[str, Any]) -> None:
        """The Tenants' informer callback: a Tenant listed, added, modified or deleted (or out of this
        shard's selector, which the watch also reports as deleted)."""
        name = str(tenant["metadata"].get("name", ""))
        if kind_of_event == "DELETED":
            self._forget(name)
        elif deleting(tenant) and FINALIZER not in finalizers(tenant):
            return  # someone else's finalizer holds it; nothing of it is the operator's any more
        elif self._asked.get(name) != (asked := wanted(tenant)):
            self._asked[name] = asked
            self._retries.pop(name, None)  # a new request starts its back-off anew
            self.request(name)

    def namespace_gone(self, name: str) -> None:
        """A tenant namespace was deleted: its Tenant's deletion, if it waits for that, goes on now."""
        tenant = self.context.cache.tenant(name)
        if tenant is not None and deleting(tenant):
            self.request(name)

    def request(self, name: str) -> None:
        """Work on `name` as soon as a worker is free (again, if one is at it now)."""
        handle = self._later.pop(name, None)
        if handle is not None:
            handle.cancel()
        if name in self._running:
            self._again.add(name)
        elif name not in self._queued:
            self._queued.add(name)
            self._ready.append(name)
            self._wake.set()

    def _later_request(self, name: str, delay: float) -> None:
        handle = self._later.pop(name, None)
        if handle is not None:
            handle.cancel()
        self._later[name] = asyncio.get_running_loop().call_later(delay, self._due, name)

    def _due(self, name: str) -> None:
        self._later.pop(name, None)
        self.request(name)

    def _forget(self, name: str) -> None:
        handle = self._later.pop(name, None)
        if handle is not None:
            handle.cancel()
        self._asked.pop(name, None)
        self._retries.pop(name, None)
        self._deleted.discard(name)

    # -- the workers --------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while not self._ready and not self._stopping:
                self._wake.clear()
                await self._wake.wait()
            if self._stopping:
                return
            name = self._ready.popleft()
            self._queued.discard(name)
            self._running.add(name)
            try:
                await self._handle(name)
            finally:
                self._running.discard(name)
                if name in self._again:
                    self._again.discard(name)
                    self.request(name)

    async def _handle(self, name: str) -> None:
        """One go at a Tenant as the cache has it now; what happens next (done, again later) decided."""
        tenant: Mapping[str, Any] | None = self.context.cache.tenant(name)
        if tenant is None:
            return  # deleted (the watch says so too)
        retry = self._retries.get(name, 0)
        try:
            if deleting(tenant):
                await self._delete(tenant)
            else:
                if FINALIZER not in finalizers(tenant):
                    tenant = await self._set_finalizers(name, add=True)
                async with metrics.reconcile():
                    await self._reconcile(tenant, retry)
        except ConflictError:
            self._later_request(name, CONFLICT_RETRY_SECONDS)
            return
        except kopf.PermanentError as error:
            logger.error("tenant %s: %s; waiting for a change of its spec", name, error)
        except kopf.TemporaryError as error:
            delay = reconcile.retry_delay(retry) if error.delay is None else float(error.delay)
            logger.info("tenant %s: %s; again in %.0f s", name, error, delay)
            self._retries[name] = retry + 1
            self._later_request(name, delay)
            return
        except Exception as error:  # a bug or an API error deletion.py did not expect: never the worker's end
            delay = reconcile.retry_delay(retry)
            logger.exception("tenant %s: %s; again in %.0f s", name, type(error).__name__, delay)
            self._retries[name] = retry + 1
            self._later_request(name, delay)
            return
        self._retries.pop(name, None)

    async def _delete(self, tenant: Mapping[str, Any]) -> None:
        """deletion.delete (once done, not again when only the finalizer's removal is left to try)."""
        name = tenant["metadata"]["name"]
        if FINALIZER not in finalizers(tenant):
            return
        if name not in self._deleted:
            await deletion.delete(self.context, tenant)
            self._deleted.add(name)
        await self._set_finalizers(name, add=False)

    async def _reconcile(self, tenant: Mapping[str, Any], retry: int) -> None:
        """reconcile.reconcile, its unexpected errors posted as events and tried again like temporary ones."""
        try:
            await reconcile.reconcile(self.context, tenant, retry)
        except (kopf.PermanentError, kopf.TemporaryError):
            raise
        except Exception as error:
            message = redact(f"{type(error).__name__}: {error}")
            self.context.events.post(tenant, "Warning", "ReconcileError", message)
            raise kopf.TemporaryError(message, delay=reconcile.retry_delay(retry)) from error

    async def _set_finalizers(self, name: str, *, add: bool) -> Mapping[str, Any]:
        """Add or remove the operator's finalizer, on the Tenant as last read or written (the patch fails
        with ConflictError if the Tenant changed since); the Tenant as written."""
        tenant = self.context.cache.tenant(name)
        if tenant is None:
            raise kopf.TemporaryError("not in the cache", delay=CONFLICT_RETRY_SECONDS)
        kept = [finalizer for finalizer in finalizers(tenant) if finalizer != FINALIZER]
        version = str(tenant["metadata"].get("resourceVersion", ""))
        try:
            written = await self.context.kube.patch_tenant_finalizers(
                name, [*kept, FINALIZER] if add else kept, version
            )
        except ApiException as error:
            if is_status(error, 409):
                raise ConflictError() from error
            raise kopf.TemporaryError(f"finalizer: {error.reason}") from error
        if written is None:  # gone already
            return tenant
        self.context.cache.wrote(name, written)
        return self.context.cache.tenant(name) or tenant


class ConflictError(Exception):
    """The Tenant changed between its read and a write that required it unchanged."""
