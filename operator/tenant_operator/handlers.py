"""What kopf runs: the start (the informers, the Tenants' work queue) and the end, and the informers'
callbacks, thin, each handing its work to the module of its use case. Kopf runs no handler of Tenants: the
work queue (work.py) does, from the Tenants' informer."""

import functools
from collections.abc import Mapping
from typing import Any

import kopf

from tenant_operator import cache, drift, informer, kube, reconcile
from tenant_operator.api import tenant_of
from tenant_operator.context import MEMO_KEY, Context, from_memo
from tenant_operator.informer import Informers, Kind
from tenant_operator.kube import HELM_RELEASES
from tenant_operator.namespace import TENANT_LABEL
from tenant_operator.work import Work

PART_OF = {"app.kubernetes.io/part-of": "neurallog"}
PART_OF_SELECTOR = ",".join(f"{key}={value}" for key, value in PART_OF.items())
INFORMERS_KEY = "informers"
WORK_KEY = "work"
# Tenants worked on at once (work.py) per Helm slot (settings.concurrency): while some wait for Helm, the
# others make their namespaces and statuses, or need no Helm at all (a restart, a deletion's next look).
WORKERS_PER_HELM_SLOT = 4


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Kopf configured; then the informers list what the cache keeps and what drift follows, and the
    Tenants' work queue starts on every Tenant listed (kopf starts its watches once this is done)."""
    context = from_memo(memo)
    configure(settings, context)
    memo[drift.MEMO_KEY] = drift.Repairs(functools.partial(reconcile.repair, context))
    work = memo[WORK_KEY] = Work(context, WORKERS_PER_HELM_SLOT * context.settings.concurrency)
    changed = functools.partial(object_changed, memo)
    kinds = watched_kinds(context, changed, functools.partial(namespace_changed, memo), work.changed)
    informers = Informers(kinds, context.kube.limit)
    memo[INFORMERS_KEY] = informers
    context.cache.bind({kind.name: kind.store for kind in informers.kinds if kind.trim is not None})
    await informers.start()
    work.start()


def configure(settings: kopf.OperatorSettings, context: Context) -> None:
    """No events of kopf's own; its one watch (of HelmReleases, in the flux backend: an event handler, which
    keeps no state in the objects) filtered server-side."""
    settings.posting.enabled = False  # events.py posts them where `kubectl describe tenant` finds them
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.label_selectors[HELM_RELEASES[2]] = PART_OF_SELECTOR


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the watches and the work queue, and end the helm-worker (after the releases under way)."""
    informers = memo.get(INFORMERS_KEY)
    if informers is not None:
        informers.stop()
    work = memo.get(WORK_KEY)
    if work is not None:
        await work.stop()
    if MEMO_KEY in memo:
        await from_memo(memo).helm.close()


def watched_kinds(
    context: Context,
    changed: informer.Callback,
    namespaces_changed: informer.Callback,
    tenants_changed: informer.Callback,
) -> list[informer.Kind]:
    """The Tenants for the cache and the work queue (a shard's only: `watch_label_selector`); the workloads
    and pods of tenant namespaces for the cache, the status and drift; the release's other objects for drift
    (drift.py); the tenant namespaces (labelled with their tenant) for reconciliations, deletion and drift."""
    reporter = context.reporter

    def tenant_changed(kind_of_event: str | None, tenant: informer.Object) -> None:
        reporter.tenant_seen(kind_of_event, tenant)
        tenants_changed(kind_of_event, tenant)

    lister = context.kube.rest.lister
    selector = context.settings.watch_label_selector
    part_of = functools.partial(Kind, selector=PART_OF_SELECTOR, callback=changed)

    def of_release(kind: str, trim: informer.Trim | None = None) -> Kind:
        group, plural = kube.RELEASE_KINDS[kind]
        return part_of(plural, kind, lister(f"{group}/{plural}"), trim=trim)

    workloads = {"Deployment": cache.trim_workload, "StatefulSet": cache.trim_workload}
    return [
        Kind(cache.TENANTS, "Tenant", lister(kube.TENANTS), selector, tenant_changed, cache.trim_tenant,
             key=informer.by_name),
        *(of_release(kind, workloads.get(kind)) for kind in kube.RELEASE_KINDS),
        part_of(cache.PODS, "Pod", lister(f"{kube.CORE}/pods"), trim=cache.trim_pod),
        Kind(cache.NAMESPACES, "Namespace", lister(f"{kube.CORE}/namespaces"), TENANT_LABEL,
             namespaces_changed, cache.trim_namespace, key=informer.by_name),
    ]  # fmt: skip


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
    until it is gone); one the operator deletes with its Tenant is not (the Tenant is being deleted), and its
    Tenant's deletion goes on."""
    name = body.get("metadata", {}).get("name")
    tenant = tenant_of(name)
    if type == "DELETED" and tenant is not None:
        drift.from_memo(memo).request(tenant, drift.Drift("Namespace", "", name or "", deleted=True))
        memo[WORK_KEY].namespace_gone(tenant)


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
