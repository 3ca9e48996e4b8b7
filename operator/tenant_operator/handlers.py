"""The kopf handlers: thin, typed, each handing its work to the module of its use case."""

import functools
from typing import Any

import kopf

from tenant_operator import cache, deletion, drift, metrics, reconcile
from tenant_operator.api import GROUP, PLURAL, VERSION, tenant_of
from tenant_operator.context import from_memo
from tenant_operator.kube import HELM_RELEASES
from tenant_operator.namespace import TENANT_LABEL
from tenant_operator.release import redact

TENANTS = (GROUP, VERSION, PLURAL)
PART_OF = {"app.kubernetes.io/part-of": "neurallog"}
# What is watched (label-selected): the workloads, for the status and drift, and the release's other objects
# for drift (drift.py).
WATCHED = (
    "deployments",
    "statefulsets",
    "pods",
    "networkpolicies",
    "resourcequotas",
    "limitranges",
    "services",
)
# Set to any new value, it makes the operator reconcile the Tenant at once, Helm included. (Not under
# neurallog.io/: kopf keeps its own state there and ignores changes of those annotations.)
RECONCILE_ANNOTATION = f"tenants.{GROUP}/reconcile"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Kopf's own state under our API group, no events of kopf's own, watches filtered server-side; the
    cache reads kopf's indices (kopf passes them to every handler by name)."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # events.py posts them where `kubectl describe tenant` finds them
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    context = from_memo(memo)
    context.cache.bind(kwargs)
    memo[drift.MEMO_KEY] = drift.Repairs(functools.partial(reconcile.repair, context))
    # No limit on kopf's per-object workers (its default): a worker waits until every index is full, so with
    # fewer workers than objects a restart would wait forever. Helm calls and API requests have limits of
    # their own (settings concurrency, api_qps).
    settings.queueing.worker_limit = None
    if context.settings.watch_label_selector:  # a shard: the other Tenants are not even listed
        settings.watching.label_selectors[PLURAL] = context.settings.watch_label_selector
    for plural in (*WATCHED, HELM_RELEASES[2]):
        settings.watching.label_selectors[plural] = ",".join(
            f"{key}={value}" for key, value in PART_OF.items()
        )


# The cache's indices (cache.py): kopf keeps them from its watches and runs no handler before they are full.
@kopf.index(*TENANTS, id=cache.TENANTS)
def tenant_index(body: kopf.Body, name: str | None, **_: Any) -> dict[str | None, cache.Object]:
    return {name: cache.trim_tenant(body)}


kopf.index("apps", "v1", "deployments", labels=PART_OF, id=cache.DEPLOYMENTS)(
    cache.by_namespace(cache.trim_workload)
)
kopf.index("apps", "v1", "statefulsets", labels=PART_OF, id=cache.STATEFULSETS)(
    cache.by_namespace(cache.trim_workload)
)
kopf.index("", "v1", "pods", labels=PART_OF, id=cache.PODS)(cache.by_namespace(cache.trim_pod))


@kopf.on.resume(*TENANTS)
@kopf.on.create(*TENANTS)
@kopf.on.update(*TENANTS, field="spec")
async def reconcile_tenant(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    context = from_memo(memo)
    async with metrics.reconcile():
        try:
            await reconcile.reconcile(context, body, retry)
        except (kopf.PermanentError, kopf.TemporaryError):
            raise
        except Exception as error:
            message = redact(f"{type(error).__name__}: {error}")
            context.events.post(body, "Warning", "ReconcileError", message)
            raise kopf.TemporaryError(message, delay=reconcile.retry_delay(retry)) from error


@kopf.on.delete(*TENANTS)
async def delete_tenant(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await deletion.delete(from_memo(memo), body)


@kopf.on.field(*TENANTS, field=("metadata", "annotations", RECONCILE_ANNOTATION))
async def reconcile_requested(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
    """Reconcile now, Helm included: `kubectl annotate tenant <name>
    tenants.neurallog.io/reconcile=$(date +%s) --overwrite`."""
    if new and "deletionTimestamp" not in body["metadata"]:
        context = from_memo(memo)
        context.events.post(
            body, "Normal", "ReconcileRequested", f"{RECONCILE_ANNOTATION} set; installing again"
        )
        await reconcile.reconcile(context, body, retry=0, force=True)


WORKLOADS = frozenset({"Deployment", "StatefulSet", "Pod"})


@kopf.on.event("apps", "v1", "deployments", labels=PART_OF)
@kopf.on.event("apps", "v1", "statefulsets", labels=PART_OF)
@kopf.on.event("", "v1", "pods", labels=PART_OF)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=PART_OF)
@kopf.on.event("", "v1", "resourcequotas", labels=PART_OF)
@kopf.on.event("", "v1", "limitranges", labels=PART_OF)
@kopf.on.event("", "v1", "services", labels=PART_OF)
async def object_changed(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """An object of a tenant namespace changed: a workload or pod makes a report of the tenant's status;
    an object of its release (pods aside) is put back if it drifted."""
    tenant = tenant_of(namespace)
    if tenant is None:
        return
    kind = body.get("kind")
    if kind in WORKLOADS:
        from_memo(memo).reporter.request(tenant)
    if kind != "Pod":
        release_object_changed(memo, tenant, type, body)


def release_object_changed(memo: kopf.Memo, tenant: str, type: str | None, body: kopf.Body) -> None:
    drifted = drift.drift_of(type, body)
    if drifted:
        drift.from_memo(memo).request(tenant, drifted)


@kopf.on.event("", "v1", "namespaces", labels={TENANT_LABEL: kopf.PRESENT})
async def namespace_changed(type: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A tenant namespace deleted behind the operator's back is made again and filled (drift.Repairs waits
    until it is gone); one the operator deletes with its Tenant is not (the Tenant is being deleted)."""
    tenant = tenant_of(name)
    if type == "DELETED" and tenant is not None:
        drift.from_memo(memo).request(tenant, drift.Drift("Namespace", "", name or "", deleted=True))


async def helm_release_changed(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """The flux backend: a tenant's HelmRelease changed. Its status becomes the Tenant's; a HelmRelease
    deleted or edited by someone else is put back like any object of the release."""
    tenant = tenant_of(namespace)
    if tenant is None:
        return
    release_object_changed(memo, tenant, type, body)
    if type != "DELETED":
        await reconcile.follow(from_memo(memo), tenant, body)


def follow_helm_releases() -> None:
    """Watch the tenants' HelmReleases (the flux backend only: a cluster without Flux has no such API)."""
    group, version, plural = HELM_RELEASES
    kopf.on.event(group, version, plural, labels=PART_OF)(helm_release_changed)
