"""The kopf handlers: thin, typed, each handing its work to the module of its use case."""

import functools
from collections.abc import Mapping
from typing import Any

import kopf

from tenant_operator import cache, deletion, drift, informer, kube, metrics, reconcile
from tenant_operator.api import GROUP, PLURAL, VERSION, tenant_of
from tenant_operator.context import MEMO_KEY, Context, from_memo
from tenant_operator.informer import Informers, Kind
from tenant_operator.kube import HELM_RELEASES
from tenant_operator.namespace import TENANT_LABEL
from tenant_operator.release import redact

TENANTS = (GROUP, VERSION, PLURAL)
PART_OF = {"app.kubernetes.io/part-of": "neurallog"}
PART_OF_SELECTOR = ",".join(f"{key}={value}" for key, value in PART_OF.items())
INFORMERS_KEY = "informers"
# Set to any new value, it makes the operator reconcile the Tenant at once, Helm included. (Not under
# neurallog.io/: kopf keeps its own state there and ignores changes of those annotations.)
RECONCILE_ANNOTATION = f"tenants.{GROUP}/reconcile"


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Kopf configured; then the informers list what the cache keeps and what drift follows, before any
    handler runs (kopf starts its watches once the startup handlers are done)."""
    context = from_memo(memo)
    configure(settings, context)
    memo[drift.MEMO_KEY] = drift.Repairs(functools.partial(reconcile.repair, context))
    changed = functools.partial(object_changed, memo)
    kinds = watched_kinds(context, changed, functools.partial(namespace_changed, memo))
    informers = Informers(kinds, context.kube.limit)
    memo[INFORMERS_KEY] = informers
    context.cache.bind({kind.name: kind.store for kind in informers.kinds if kind.trim is not None})
    await informers.start()


def configure(settings: kopf.OperatorSettings, context: Context) -> None:
    """Kopf's own state under our API group, no events of kopf's own, its watches filtered server-side."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # events.py posts them where `kubectl describe tenant` finds them
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    if context.settings.watch_label_selector:  # a shard: the other Tenants are not even listed
        settings.watching.label_selectors[PLURAL] = context.settings.watch_label_selector
    settings.watching.label_selectors[HELM_RELEASES[2]] = PART_OF_SELECTOR


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the watches and end the helm-worker (after the releases under way)."""
    informers = memo.get(INFORMERS_KEY)
    if informers is not None:
        informers.stop()
    if MEMO_KEY in memo:
        await from_memo(memo).helm.close()


def watched_kinds(
    context: Context, changed: informer.Callback, namespaces_changed: informer.Callback
) -> list[informer.Kind]:
    """The Tenants for the cache (kopf watches them too, for its handlers); the workloads and pods of tenant
    namespaces for the cache, the status and drift; the release's other objects for drift (drift.py); the
    tenant namespaces (labelled with their tenant) for reconciliations and drift."""
    lister = context.kube.rest.lister
    selector = context.settings.watch_label_selector
    part_of = functools.partial(Kind, selector=PART_OF_SELECTOR, callback=changed)

    def of_release(kind: str, trim: informer.Trim | None = None) -> Kind:
        group, plural = kube.RELEASE_KINDS[kind]
        return part_of(plural, kind, lister(f"{group}/{plural}"), trim=trim)

    workloads = {"Deployment": cache.trim_workload, "StatefulSet": cache.trim_workload}
    return [
        Kind(cache.TENANTS, "Tenant", lister(kube.TENANTS), selector, context.reporter.tenant_seen,
             cache.trim_tenant, key=informer.by_name),
        *(of_release(kind, workloads.get(kind)) for kind in kube.RELEASE_KINDS),
        part_of(cache.PODS, "Pod", lister(f"{kube.CORE}/pods"), trim=cache.trim_pod),
        Kind(cache.NAMESPACES, "Namespace", lister(f"{kube.CORE}/namespaces"), TENANT_LABEL,
             namespaces_changed, cache.trim_namespace, key=informer.by_name),
    ]  # fmt: skip


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


def object_changed(memo: kopf.Memo, type: str | None, body: informer.Object) -> None:
    """An object of a tenant namespace changed (an informer's callback): a workload or pod makes a report of
    the tenant's status; an object of its release (pods aside) is put back if it drifted."""
    tenant = tenant_of(body.get("metadata", {}).get("namespace"))
    if tenant is None:
        return
    kind = body.get("kind")
    if kind in WORKLOADS:
        from_memo(memo).reporter.request(tenant)
    if kind != "Pod":
        release_object_changed(memo, tenant, type, body)


def release_object_changed(memo: kopf.Memo, tenant: str, type: str | None, body: Mapping[str, Any]) -> None:
    drifted = drift.drift_of(type, body)
    if drifted:
        drift.from_memo(memo).request(tenant, drifted)


def namespace_changed(memo: kopf.Memo, type: str | None, body: informer.Object) -> None:
    """A tenant namespace deleted behind the operator's back is made again and filled (drift.Repairs waits
    until it is gone); one the operator deletes with its Tenant is not (the Tenant is being deleted)."""
    name = body.get("metadata", {}).get("name")
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
