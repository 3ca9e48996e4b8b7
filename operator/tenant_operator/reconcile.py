"""Create and update: the guide's flow, namespace -> Helm release (Redis, server, network) -> status.

Helm is called only when the values or the chart changed since the last successful install (a digest kept in
status.release.appliedHash), so that a restarted operator re-installs nothing.
"""

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tenant_operator.api import ReleaseStatus, TenantSpec, namespace_for, tenant_name_problem
from tenant_operator.context import Context
from tenant_operator.namespace import build_namespace, labels_to_fix
from tenant_operator.release import HelmError, desired_hash
from tenant_operator.reporting import current_status

logger = logging.getLogger(__name__)


class InvalidTenant(kopf.PermanentError):
    """The Tenant can never work as written; a change of its spec is needed."""


def retry_delay(retry: int) -> float:
    """Backoff for temporary failures: 5 s, 10 s, 20 s ... at most 5 minutes."""
    return float(min(5 * 2**retry, 300))


def parse_spec(name: str, spec: Mapping[str, Any]) -> TenantSpec:
    """The spec as the models read it (the CRD has refused bad ones already; this is the last guard)."""
    problem = tenant_name_problem(name)
    if problem:
        raise InvalidTenant(problem)
    try:
        return TenantSpec.model_validate(dict(spec))
    except ValidationError as error:
        raise InvalidTenant(f"invalid spec: {error}") from error


async def ensure_namespace(context: Context, body: Mapping[str, Any]) -> str:
    """The tenant's namespace, created or relabelled as needed."""
    name = body["metadata"]["name"]
    namespace = namespace_for(name)
    existing = await context.kube.get_namespace(namespace)
    if existing is not None and existing["metadata"].get("deletionTimestamp"):
        raise kopf.TemporaryError(f"namespace {namespace} is still being deleted; waiting", delay=5)
    if existing is None:
        if await context.kube.create_namespace(build_namespace(namespace, body)):
            context.events.post(body, "Normal", "NamespaceCreated", f"Created namespace {namespace}")
        return namespace
    owner = existing["metadata"].get("labels", {}).get("neurallog.io/tenant")
    if owner not in (None, name):
        raise InvalidTenant(f"namespace {namespace} belongs to tenant {owner}")
    fixes = labels_to_fix(existing, name)
    if fixes:
        await context.kube.label_namespace(namespace, fixes)
        context.events.post(body, "Normal", "NamespaceLabelled", f"Labelled namespace {namespace}")
    return namespace


async def reconcile(context: Context, body: Mapping[str, Any], retry: int, *, force: bool = False) -> None:
    """Bring the tenant's namespace and release to its spec, then report the status; `force` runs Helm even
    when nothing changed (to put back what someone deleted)."""
    metadata = body["metadata"]
    name, generation = metadata["name"], int(metadata.get("generation", 0))
    previous = current_status(body)
    try:
        spec = parse_spec(name, body.get("spec") or {})
    except InvalidTenant as error:
        failed = previous.release.model_copy(
            update={"state": "Failed", "reason": "InvalidTenant", "message": str(error)}
        )
        await context.reporter.report(name, release=failed, observed_generation=generation)
        context.events.post(body, "Warning", "InvalidTenant", str(error))
        raise
    values = spec.to_values()
    wanted = desired_hash(values, context.helm.chart_fingerprint)
    try:
        namespace = await ensure_namespace(context, body)
    except ApiException as error:
        raise kopf.TemporaryError(f"namespace: {error.reason}", delay=retry_delay(retry)) from error

    if not force and previous.release.state == "Deployed" and previous.release.applied_hash == wanted:
        logger.debug("tenant %s: values and chart unchanged, no Helm call", name)
        await context.reporter.report(name, observed_generation=generation)
        return

    installing = previous.release.model_copy(
        update={
            "name": name,
            "state": "Installing",
            "reason": "",
            "message": "helm upgrade --install in progress",
        }
    )
    await context.reporter.report(name, release=installing, observed_generation=previous.observed_generation)
    context.events.post(body, "Normal", "Installing", f"Installing release {name} into {namespace}")
    try:
        release = await context.helm.upgrade(name, namespace, values)
    except HelmError as error:
        state = "Failed" if error.permanent else "Installing"
        failed = installing.model_copy(
            update={"state": state, "reason": error.reason, "message": error.message}
        )
        await context.reporter.report(name, release=failed, observed_generation=generation)
        context.events.post(body, "Warning", error.reason, error.message)
        if error.permanent:
            raise kopf.PermanentError(f"{error.reason}: {error.message}") from None
        raise kopf.TemporaryError(f"{error.reason}: {error.message}", delay=retry_delay(retry)) from None

    deployed = ReleaseStatus(
        name=release.name,
        revision=release.revision,
        chart_version=release.chart_version,
        state="Deployed",
        applied_hash=wanted,
    )
    await context.reporter.report(name, release=deployed, observed_generation=generation)
    chart = f"chart {release.chart_version}"
    context.events.post(
        body, "Normal", "Installed", f"Release {name} revision {release.revision} ({chart}) installed"
    )


async def repair(context: Context, name: str, what: str) -> None:
    """A workload of a running tenant was deleted by someone: install the release again to put it back."""
    tenant = await context.kube.get_tenant(name)
    if tenant is None or "deletionTimestamp" in tenant["metadata"]:
        return
    if current_status(tenant).release.state != "Deployed":
        return  # a reconciliation is under way or failed: it knows better
    context.events.post(
        tenant, "Warning", "WorkloadDeleted", f"{what} was deleted; installing the release again"
    )
    try:
        await reconcile(context, tenant, retry=0, force=True)
    except (kopf.PermanentError, kopf.TemporaryError) as error:
        logger.warning("tenant %s: could not put back %s: %s", name, what, error)
