"""Writing Tenant.status: observe the workloads, derive the status (status.py), patch it when it changed.

Reports are triggered by events (a Tenant reconciled; a Deployment, StatefulSet or pod of a tenant namespace
changed), never by a per-tenant timer; they read what the watches saw (cache.py), not the API server. Reports
of one tenant run one at a time and coalesce: a request after a quiet moment reports at once; the events
that arrive during a report, or less than COALESCE_SECONDS after one began, cause exactly one more, that long
after it began. The event that ends a rollout (the last workload Ready) is not held back: reported at once.
The one exception to "no timer" is a missing secretKeyRef Secret, which no watched object reveals: while one
is missing, the tenant is looked at again now and then.
"""

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from tenant_operator import metrics
from tenant_operator.api import ReleaseStatus, TenantSpec, TenantStatus, WorkloadStatus, namespace_for
from tenant_operator.cache import Cache
from tenant_operator.events import EventRecorder
from tenant_operator.kube import Kube, Object
from tenant_operator.status import (
    REDIS_APP,
    REDIS_STATEFULSET,
    SERVER_APP,
    SERVER_DEPLOYMENT,
    Observation,
    missing_secret_refs,
    pods_of,
    referenced_secrets,
    same_status,
    status_patch,
    tenant_status,
    workload_status,
)

logger = logging.getLogger(__name__)

# Requested reports of one tenant begin at least this far apart: the burst of events of one rollout (pods
# created, scheduled, started, ready; their workloads counting) makes a status write a second at most instead
# of one each, while a lone event, and the one that ends a rollout (the last workload Ready), are reported at
# once. Under load (hundreds of tenants rolling out at once, each step slower) this is what keeps the status
# writes per tenant few.
COALESCE_SECONDS = 1.0

# Phases that the workloads bring about and that get an event here; the steps that lead to the others
# (installing, a failed install, deleting) post their own events.
ANNOUNCED_PHASES: dict[str, Literal["Normal", "Warning"]] = {"Running": "Normal", "Degraded": "Warning"}


def current_status(tenant: Mapping[str, Any]) -> TenantStatus:
    """The status the Tenant has now (an unreadable one counts as none)."""
    try:
        return TenantStatus.model_validate(tenant.get("status") or {})
    except ValidationError:
        return TenantStatus()


def reported(tenant: Mapping[str, Any]) -> bool:
    """Whether an operator wrote the Tenant's status already (the CRD defaults observedGeneration to 0)."""
    return bool(set(tenant.get("status") or {}) - {"observedGeneration"})


def tenant_spec(tenant: Mapping[str, Any]) -> TenantSpec | None:
    """The Tenant's spec as the models read it; None when it is invalid (the reconciliation says why)."""
    try:
        return TenantSpec.model_validate(tenant.get("spec") or {})
    except ValidationError:
        return None


@dataclass
class Reporter:
    """Derives and writes the status of tenants."""

    kube: Kube
    cache: Cache
    events: EventRecorder
    secret_recheck_seconds: float
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _pending: set[str] = field(default_factory=set)
    _began: dict[str, float] = field(default_factory=dict)  # loop time of each tenant's last report
    _wakes: dict[str, asyncio.Event] = field(default_factory=dict)  # set: a waiting report goes at once
    _rechecks: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: set["asyncio.Task[None]"] = field(default_factory=set)
    # Tenants a report found missing from the cache: their watch had not brought them yet (its events come on
    # their own stream, and after an API server restart the Tenants may be listed again last). Reported again
    # when the watch brings them (`tenant_seen`), with what the missed reports were given to write (a
    # reconciliation's release and generation, which nothing else would bring back).
    _unseen: dict[str, tuple[ReleaseStatus | None, int | None]] = field(default_factory=dict)

    def request(self, name: str) -> None:
        """Ask for a report of tenant `name` soon; many requests during one report make one more report."""
        if name in self._pending:
            wake = self._wakes.get(name)
            if wake is not None and not wake.is_set() and self._rollout_ended(name):
                wake.set()  # the waiting report goes now
            return
        self._pending.add(name)
        task = asyncio.get_running_loop().create_task(self._requested(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _requested(self, name: str) -> None:
        try:
            loop = asyncio.get_running_loop()
            wait = self._began.get(name, -COALESCE_SECONDS) + COALESCE_SECONDS - loop.time()
            if wait > 0 and not self._rollout_ended(name):
                wake = self._wakes[name] = asyncio.Event()
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), wait)
                finally:
                    self._wakes.pop(name, None)
            async with self._lock(name):
                self._pending.discard(name)
                await self._report(name)
        except Exception:
            self._pending.discard(name)
            logger.exception("could not report the status of tenant %s; retrying", name)
            asyncio.get_running_loop().call_later(5, self.request, name)

    def _rollout_ended(self, name: str) -> bool:
        """Whether the tenant's release is deployed and every workload of it is Running as the watches see
        them, while its written phase is not Running yet: a report now would say Running."""
        tenant = self.cache.tenant(name)
        status = (tenant or {}).get("status") or {}
        if status.get("phase") == "Running" or (status.get("release") or {}).get("state") != "Deployed":
            return False
        return all(workload.phase == "Running" for workload in self._workloads(namespace_for(name)))

    def _workloads(self, namespace: str) -> tuple[WorkloadStatus, WorkloadStatus]:
        """The server and Redis as the watches see them now."""
        pods = self.cache.pods(namespace)
        return (
            workload_status(
                "Server", self.cache.deployment(namespace, SERVER_DEPLOYMENT), pods_of(SERVER_APP, pods)
            ),
            workload_status(
                "Redis", self.cache.statefulset(namespace, REDIS_STATEFULSET), pods_of(REDIS_APP, pods)
            ),
        )

    def tenant_seen(self, kind_of_event: str | None, tenant: Mapping[str, Any]) -> None:
        """The Tenants' watch brought a Tenant (or its deletion): one a report missed is reported now."""
        name = str((tenant.get("metadata") or {}).get("name", ""))
        if kind_of_event == "DELETED":
            self._unseen.pop(name, None)
        elif name in self._unseen:
            self.request(name)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def report(
        self,
        name: str,
        *,
        release: ReleaseStatus | None = None,
        observed_generation: int | None = None,
        handled_request: str | None = None,
    ) -> TenantStatus | None:
        """Report now, with the release and generation of a reconciliation when given (and the reconcile
        request it acts on); the status written."""
        async with self._lock(name):
            return await self._report(
                name,
                release=release,
                observed_generation=observed_generation,
                handled_request=handled_request,
            )

    async def _report(
        self,
        name: str,
        *,
        release: ReleaseStatus | None = None,
        observed_generation: int | None = None,
        handled_request: str | None = None,
    ) -> TenantStatus | None:
        self._began[name] = asyncio.get_running_loop().time()
        tenant = self.cache.tenant(name)
        held_release, held_generation = self._unseen.pop(name, (None, None))
        release = release or held_release
        observed_generation = held_generation if observed_generation is None else observed_generation
        if tenant is None:
            self._missed(name, release, observed_generation)
            return None
        previous = current_status(tenant)
        metadata = tenant["metadata"]
        namespace = namespace_for(name)
        server, redis = self._workloads(namespace)
        spec = tenant_spec(tenant)
        missing = await self._missing_refs(spec, namespace)
        seen = Observation(
            namespace=namespace,
            generation=int(metadata.get("generation", 0)),
            observed_generation=previous.observed_generation
            if observed_generation is None
            else observed_generation,
            deleting="deletionTimestamp" in metadata,
            release=previous.release if release is None else release,
            server=server,
            redis=redis,
            missing_refs=missing,
            isolated=spec is None or spec.network_policy.enabled,
            handled_request=handled_request,
        )
        status = tenant_status(seen, previous, datetime.now(UTC).replace(microsecond=0))
        if not same_status(status, previous) or not reported(tenant):
            self.cache.wrote(name, await self.kube.patch_tenant_status(name, status_patch(status)))
            self._announce(tenant, previous, status)
        metrics.set_phase(name, status.phase)
        self._recheck_while_missing(name, bool(missing))
        return status

    async def _missing_refs(self, spec: TenantSpec | None, namespace: str) -> list[str]:
        if spec is None:
            return []
        names = referenced_secrets(spec.server.env)
        if not names or await self.kube.get_namespace(namespace) is None:
            return []
        return missing_secret_refs(spec.server.env, namespace, await self.kube.secret_keys(namespace, names))

    def _announce(self, tenant: Object, previous: TenantStatus, status: TenantStatus) -> None:
        """An event when the tenant starts running or degrades, or the reason of its trouble changes."""
        degraded = next((c for c in status.conditions if c.type == "Degraded"), None)
        before = next((c for c in previous.conditions if c.type == "Degraded"), None)
        new_problem = (
            degraded is not None
            and degraded.status == "True"
            and (before is None or before.status != "True" or before.reason != degraded.reason)
        )
        event_type = ANNOUNCED_PHASES.get(status.phase)
        if event_type is None or (status.phase == previous.phase and not new_problem):
            return
        ready = next(c for c in status.conditions if c.type == "Ready")
        self.events.post(tenant, event_type, ready.reason, ready.message or status.phase)

    def _recheck_while_missing(self, name: str, missing: bool) -> None:
        handle = self._rechecks.pop(name, None)
        if handle is not None:
            handle.cancel()
        if missing:
            loop = asyncio.get_running_loop()
            self._rechecks[name] = loop.call_later(self.secret_recheck_seconds, self.request, name)

    def _missed(self, name: str, release: ReleaseStatus | None, observed_generation: int | None) -> None:
        """A report found no Tenant `name` in the cache: what is kept about it goes, but what the report was
        given to write is held until the watch brings the Tenant (`tenant_seen`)."""
        self.forget(name)
        self._unseen[name] = (release, observed_generation)

    def forget(self, name: str) -> None:
        """The tenant is gone: drop what is kept about it."""
        metrics.set_phase(name, None)
        self.cache.forget(name)
        self._began.pop(name, None)
        self._unseen.pop(name, None)
        handle = self._rechecks.pop(name, None)
        if handle is not None:
            handle.cancel()
        lock = self._locks.get(name)
        if lock is not None and not lock.locked():
            del self._locks[name]
