"""Drift: an object of a tenant's release deleted, or written by someone other than Helm, is put back.

What a release owns is watched (handlers.py): its NetworkPolicies, ResourceQuota, LimitRange, Services,
Deployment and StatefulSet, and the namespace itself. Each object says who wrote it in its managedFields:
Helm, the cluster's own controllers (status, the scale an autoscaler sets, revision annotations), or someone
else. A write by someone else (kubectl edit, scale, patch, apply), or a deletion, is drift: the tenant is
installed again, and `helm upgrade` puts back every field the chart sets (Helm 4, with --force-conflicts,
takes the fields back from whoever wrote them). Fields the chart does not set (an extra label, the annotation
of `kubectl rollout restart`) are left as they are. The release's Secret and ConfigMap are not watched: the
operator may not watch Secrets outside tenant namespaces, and the ConfigMap changes Redis only at a restart.

Repairs of one tenant run one at a time and coalesce; a repair that meets a temporary error (the namespace
still being deleted, Helm busy) is tried again with backoff until it succeeds.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

logger = logging.getLogger(__name__)

# Writers whose writes are not drift: Helm, or Flux's helm-controller (flux backend) installing the release,
# this operator writing the HelmRelease, and the cluster's own controllers (an autoscaler's scale included:
# replicas of a workload under an HPA are the HPA's).
CLUSTER_MANAGERS = frozenset(
    {
        "helm",
        "helm-controller",
        "tenant-operator",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-apiserver",
        "kube-proxy",
    }
)
RETRY_SECONDS = (2.0, 5.0, 10.0, 30.0, 60.0)


def foreign_writers(obj: Mapping[str, Any]) -> list[str]:
    """Who other than Helm and the cluster's controllers wrote the object (status writes aside)."""
    writers = []
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        manager = str(entry.get("manager", ""))
        if entry.get("subresource") == "status" or manager in CLUSTER_MANAGERS:
            continue
        if manager not in writers:
            writers.append(manager or "an unnamed client")
    return writers


@dataclass(frozen=True)
class Drift:
    """An object of a release seen deleted, or written by others (a namespace: `kind` Namespace)."""

    kind: str
    namespace: str
    name: str
    deleted: bool
    writers: tuple[str, ...] = ()

    def __str__(self) -> str:
        what = f"{self.kind} {self.name}"
        return f"{what} was deleted" if self.deleted else f"{what} was changed by {', '.join(self.writers)}"


def drift_of(event_type: str | None, obj: Mapping[str, Any]) -> Drift | None:
    """What a watch event of a release's object says has drifted, or None."""
    metadata = obj.get("metadata", {})
    kind, namespace, name = str(obj.get("kind", "")), metadata.get("namespace", ""), metadata.get("name", "")
    if event_type == "DELETED":
        return Drift(kind, namespace, name, deleted=True)
    writers = foreign_writers(obj)
    return Drift(kind, namespace, name, deleted=False, writers=tuple(writers)) if writers else None


def still_drifted(drift: Drift, now: Mapping[str, Any] | None) -> bool:
    """Whether the object as it is now (None: gone) still shows the drift seen earlier: a repair that came
    meanwhile may have put it back already, and then there is nothing to do."""
    if drift.deleted:
        return now is None
    return now is not None and bool(foreign_writers(now))


@dataclass
class Repairs:
    """The repairs asked for, one task per tenant at a time."""

    repair: Callable[[str, list[Drift]], Awaitable[None]]  # reconcile.repair, of the operator's context
    _pending: dict[str, list[Drift]] = field(default_factory=dict)
    _tasks: dict[str, "asyncio.Task[None]"] = field(default_factory=dict)

    def request(self, tenant: str, what: Drift) -> None:
        """Put tenant `tenant` back soon, because `what` (drifted); requests during a repair make one more."""
        found = self._pending.setdefault(tenant, [])
        if what not in found:
            found.append(what)
        running = self._tasks.get(tenant)
        if running is None or running.done():
            self._tasks[tenant] = asyncio.get_running_loop().create_task(self._run(tenant))

    async def _run(self, tenant: str) -> None:
        attempt = 0
        while self._pending.get(tenant):
            whats = self._pending.pop(tenant)
            try:
                await self.repair(tenant, whats)
                attempt = 0
            except kopf.PermanentError as error:
                logger.warning("tenant %s: cannot put back %s: %s", tenant, "; ".join(map(str, whats)), error)
            except Exception as error:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                logger.info("tenant %s: repair to retry in %ss: %s", tenant, delay, error)
                attempt += 1
                again = self._pending.setdefault(tenant, [])
                again[:0] = [what for what in whats if what not in again]
                await asyncio.sleep(delay)
        self._tasks.pop(tenant, None)


MEMO_KEY = "tenant_operator.repairs"


def from_memo(memo: kopf.Memo) -> Repairs:
    """The repairs that the startup handler put into kopf's memo."""
    repairs = memo[MEMO_KEY]
    assert isinstance(repairs, Repairs)
    return repairs
