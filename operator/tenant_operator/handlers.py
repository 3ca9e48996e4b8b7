"""The kopf handlers: thin, typed, each handing its work to the module of its use case."""

from typing import Any

import kopf

from tenant_operator import deletion, metrics, reconcile
from tenant_operator.api import GROUP, NAMESPACE_PREFIX, PLURAL, VERSION
from tenant_operator.context import from_memo
from tenant_operator.release import redact
from tenant_operator.status import REDIS_STATEFULSET, SERVER_DEPLOYMENT

TENANTS = (GROUP, VERSION, PLURAL)
PART_OF = {"app.kubernetes.io/part-of": "neurallog"}
WORKLOADS = ("deployments", "statefulsets", "pods")
REPAIRED = {("Deployment", SERVER_DEPLOYMENT), ("StatefulSet", REDIS_STATEFULSET)}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Kopf's own state under our API group, no events of kopf's own, watches filtered server-side."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # events.py posts them where `kubectl describe tenant` finds them
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.queueing.worker_limit = 16 * from_memo(memo).settings.concurrency
    for plural in WORKLOADS:
        settings.watching.label_selectors[plural] = ",".join(
            f"{key}={value}" for key, value in PART_OF.items()
        )


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


@kopf.on.event("apps", "v1", "deployments", labels=PART_OF)
@kopf.on.event("apps", "v1", "statefulsets", labels=PART_OF)
@kopf.on.event("", "v1", "pods", labels=PART_OF)
async def workload_changed(
    type: str | None, body: kopf.Body, name: str | None, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A workload of a tenant namespace changed: report that tenant's status; put back a deleted workload."""
    if not namespace or not namespace.startswith(NAMESPACE_PREFIX):
        return
    context, tenant = from_memo(memo), namespace.removeprefix(NAMESPACE_PREFIX)
    context.reporter.request(tenant)
    if type == "DELETED" and (body.get("kind"), name) in REPAIRED:
        await reconcile.repair(context, tenant, f"{body.get('kind')} {name}")
