"""Create and update: the guide's flow, namespace -> Helm release (Redis, server, network) -> status.

Helm is called only when the values or the chart changed since the last successful install (a digest kept in
status.release.appliedHash), so that a restarted operator re-installs nothing.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tenant_operator.api import (
    RECONCILE_ANNOTATION,
    ReleaseStatus,
    TenantSpec,
    TenantStatus,
    namespace_for,
    tenant_name_problem,
)
from tenant_operator.context import Context
from tenant_operator.drift import Drift, still_drifted
from tenant_operator.flux import hand_back, observe_generation, release_status, tenant_generation
from tenant_operator.namespace import (
    ADOPT_ANNOTATION,
    TENANT_LABEL,
    adoption_patch,
    adoption_requested,
    build_namespace,
    is_owned_by,
    labels_to_fix,
    role_binding,
)
from tenant_operator.release import HelmError, desired_hash
from tenant_operator.reporting import current_status, reported
from tenant_operator.settings import Settings

logger = logging.getLogger(__name__)


class InvalidTenant(kopf.PermanentError):
    """The Tenant can never work as written; a change of its spec is needed. `reason`: one CamelCase word."""

    def __init__(self, message: str, reason: str = "InvalidTenant") -> None:
        super().__init__(message)
        self.reason = reason


class NamespaceNotOwned(kopf.TemporaryError):
    """The tenant's namespace exists and is not the operator's: nothing is done until an administrator
    marks it for adoption or removes it (looked at again every NOT_OWNED_RETRY_SECONDS)."""


NOT_OWNED_RETRY_SECONDS = 30


def retry_delay(retry: int) -> float:
    """Backoff for temporary failures: 5 s, 10 s, 20 s ... at most 5 minutes."""
    return float(min(5 * 2**retry, 300))


def reconcile_request(tenant: Mapping[str, Any]) -> str:
    """The value of the Tenant's reconcile annotation ("" when it has none)."""
    return str((tenant["metadata"].get("annotations") or {}).get(RECONCILE_ANNOTATION) or "")


def parse_spec(name: str, spec: Mapping[str, Any]) -> TenantSpec:
    """The spec as the models read it (the CRD has refused bad ones already; this is the last guard)."""
    problem = tenant_name_problem(name)
    if problem:
        raise InvalidTenant(problem)
    try:
        return TenantSpec.model_validate(dict(spec))
    except ValidationError as error:
        raise InvalidTenant(f"invalid spec: {error}") from error


def check_policy(spec: TenantSpec, settings: Settings) -> None:
    """What the platform's administrator allows of every tenant (the operator chart's values)."""
    if not spec.network_policy.enabled and not settings.allow_isolation_off:
        raise InvalidTenant(
            "spec.networkPolicy.enabled is false, but this operator does not allow tenants without network "
            "isolation (operator chart value allowNetworkPolicyDisabled, environment "
            "TENANT_OPERATOR_ALLOW_ISOLATION_OFF); set it to true or remove it",
            reason="IsolationForbidden",
        )


async def grant_access(context: Context, namespace: str) -> None:
    """The operator's rights inside the tenant's namespace (Secrets included), before any Helm call there."""
    settings = context.settings
    if settings.tenant_role and settings.service_account:
        binding = role_binding(namespace, settings.tenant_role, settings.service_account)
        if await context.kube.create_role_binding(binding):
            logger.info("bound ClusterRole %s in namespace %s", settings.tenant_role, namespace)


def is_ready_for(namespace: Mapping[str, Any], tenant: Mapping[str, Any]) -> bool:
    """Whether a namespace is the Tenant's already, labelled as it should be and not being deleted."""
    metadata = namespace["metadata"]
    return (
        "deletionTimestamp" not in metadata
        and is_owned_by(namespace, tenant)
        and not labels_to_fix(namespace, tenant["metadata"]["name"])
    )


async def ensure_namespace(context: Context, body: Mapping[str, Any]) -> str:
    """The tenant's namespace: created, or relabelled, or adopted when an administrator marked it so."""
    name = body["metadata"]["name"]
    namespace = namespace_for(name)
    watched = context.cache.namespace(namespace)
    if watched is not None and is_ready_for(watched, body):  # a restart's case: nothing to read or write
        return namespace
    # One the watch has not seen is most likely not there (a new tenant's): created without a read first.
    existing = await context.kube.get_namespace(namespace) if watched is not None else None
    if existing is None:
        if await context.kube.create_namespace(build_namespace(namespace, body)):
            context.events.post(body, "Normal", "NamespaceCreated", f"Created namespace {namespace}")
            return namespace
        existing = await context.kube.get_namespace(namespace)  # someone else's, or made meanwhile
        if existing is None:
            raise kopf.TemporaryError(f"namespace {namespace} came and went; trying again", delay=1)
    if existing["metadata"].get("deletionTimestamp"):
        raise kopf.TemporaryError(f"namespace {namespace} is still being deleted; waiting", delay=5)
    if not is_owned_by(existing, body):
        owner = (existing["metadata"].get("labels") or {}).get(TENANT_LABEL)
        if owner not in (None, name):
            raise InvalidTenant(
                f"namespace {namespace} belongs to tenant {owner}", reason="NamespaceNotOwned"
            )
        if not adoption_requested(existing):
            raise NamespaceNotOwned(
                f"namespace {namespace} exists and was not created by the tenant operator; it is left alone. "
                f'Delete it, or annotate it {ADOPT_ANNOTATION}="true" to hand it to this Tenant',
                delay=NOT_OWNED_RETRY_SECONDS,
            )
        await context.kube.patch_namespace_metadata(namespace, adoption_patch(existing, body))
        context.events.post(
            body, "Normal", "NamespaceAdopted", f"Adopted namespace {namespace}, as annotated"
        )
        return namespace
    fixes = labels_to_fix(existing, name)
    if fixes:
        await context.kube.patch_namespace_metadata(namespace, {"labels": fixes})
        context.events.post(body, "Normal", "NamespaceLabelled", f"Labelled namespace {namespace}")
    return namespace


async def prepare(
    context: Context, body: Mapping[str, Any], previous: TenantStatus, retry: int
) -> tuple[TenantSpec, str]:
    """The spec as the models read it, allowed by the platform's policy, and the tenant's namespace; a Tenant
    that cannot go further is reported (Failed, or Pending on an administrator) before the error is raised."""
    name, generation = body["metadata"]["name"], int(body["metadata"].get("generation", 0))
    try:
        spec = parse_spec(name, body.get("spec") or {})
        check_policy(spec, context.settings)
        namespace = await ensure_namespace(context, body)
    except InvalidTenant as error:
        failed = previous.release.model_copy(
            update={"state": "Failed", "reason": error.reason, "message": str(error)}
        )
        await context.reporter.report(name, release=failed, observed_generation=generation)
        context.events.post(body, "Warning", error.reason, str(error))
        raise
    except NamespaceNotOwned as error:
        waiting = previous.release.model_copy(
            update={"state": "Pending", "reason": "NamespaceNotOwned", "message": str(error)}
        )
        await context.reporter.report(name, release=waiting, observed_generation=generation)
        context.events.post(body, "Warning", "NamespaceNotOwned", str(error))
        raise
    except (kopf.TemporaryError, ApiException) as error:
        # A new Tenant's first status is normally "Installing", written once its namespace is there; one
        # whose namespace cannot be made yet (being deleted, an API error) says so meanwhile.
        problem = f"namespace: {error.reason}" if isinstance(error, ApiException) else str(error)
        if not reported(body):
            waiting = ReleaseStatus(
                state="Pending", reason="Accepted", message=f"Creating the namespace: {problem}"
            )
            await context.reporter.report(name, release=waiting, observed_generation=0)
        if isinstance(error, ApiException):
            raise kopf.TemporaryError(problem, delay=retry_delay(retry)) from error
        raise
    return spec, namespace


async def reconcile(
    context: Context, body: Mapping[str, Any], retry: int, *, force: bool = False, drift: str = ""
) -> None:
    """Bring the tenant's namespace and release to its spec, then report the status; `force` runs Helm even
    when nothing changed (to put back the `drift` someone made), and so does a new value of the Tenant's
    reconcile annotation (`kubectl annotate tenant <name> tenants.neurallog.io/reconcile=$(date +%s)
    --overwrite`)."""
    metadata = body["metadata"]
    name, generation = metadata["name"], int(metadata.get("generation", 0))
    previous = current_status(body)
    spec, namespace = await prepare(context, body, previous, retry)
    request = reconcile_request(body)
    if request and request != previous.last_handled_reconcile_at:
        message = f"{RECONCILE_ANNOTATION} set; installing again"
        context.events.post(body, "Normal", "ReconcileRequested", message)
        force = True
    else:
        request = ""
    values = spec.to_values()
    wanted = desired_hash(values, context.fingerprint)

    if not force and previous.release.state == "Deployed" and previous.release.applied_hash == wanted:
        logger.debug("tenant %s: values and chart unchanged, no Helm call", name)
        if context.flux is not None and previous.observed_generation != generation:
            await observe_generation(context.kube, namespace, name, generation)
        await context.reporter.report(name, observed_generation=generation)
        return

    action = "helm upgrade --install" if context.flux is None else "HelmRelease for Flux being written"
    installing = previous.release.model_copy(
        update={
            "name": name,
            "state": "Installing",
            "reason": "DriftDetected" if drift else "",
            "message": f"putting back: {drift}" if drift else f"{action} in progress",
        }
    )
    await context.reporter.report(
        name,
        release=installing,
        observed_generation=previous.observed_generation,
        handled_request=request or None,
    )
    context.events.post(body, "Normal", "Installing", f"Installing release {name} into {namespace}")
    try:
        await grant_access(context, namespace)
        outcome = await install(context, body, namespace, values, wanted, force=force)
    except HelmError as error:
        state = "Failed" if error.permanent else "Installing"
        update = {"state": state, "reason": error.reason, "message": error.message}
        if drift and not error.permanent:  # still drift to put back: the repair tries again (drift.Repairs)
            update |= {
                "reason": "DriftDetected",
                "message": f"putting back: {drift} ({error.reason}: {error.message})",
            }
        failed = installing.model_copy(update=update)
        await context.reporter.report(name, release=failed, observed_generation=generation)
        context.events.post(body, "Warning", error.reason, error.message)
        if error.permanent:
            raise kopf.PermanentError(f"{error.reason}: {error.message}") from None
        raise kopf.TemporaryError(f"{error.reason}: {error.message}", delay=retry_delay(retry)) from None

    await settle(context, body, installing, outcome, previous.observed_generation)


async def install(
    context: Context,
    body: Mapping[str, Any],
    namespace: str,
    values: Mapping[str, Any],
    wanted: str,
    *,
    force: bool,
) -> ReleaseStatus:
    """Install or upgrade the tenant's release with its backend: Helm here and now (Deployed), or a
    HelmRelease for Flux (what it says at once; its changes follow, see `follow`). HelmError on failure."""
    name, generation = body["metadata"]["name"], int(body["metadata"].get("generation", 0))
    if context.flux is not None:
        return await context.flux.apply(
            name, namespace, values, generation=generation, applied_hash=wanted, force=force
        )
    previous = current_status(body).release
    # A release made before (revision > 0) may have been Flux's, if the flux backend ran: take it back.
    if previous.revision and await hand_back(context.kube, namespace, name):
        message = f"Release {name} taken over from Flux's HelmRelease by the operator's Helm"
        context.events.post(body, "Normal", "HelmReleaseRemoved", message)
    release = await context.helm.upgrade(name, namespace, values)
    return ReleaseStatus(
        name=release.name,
        revision=release.revision,
        chart_version=release.chart_version,
        state="Deployed",
        applied_hash=wanted,
    )


async def settle(
    context: Context, body: Mapping[str, Any], before: ReleaseStatus, after: ReleaseStatus, observed: int
) -> None:
    """Report what the backend says of the release now (the generation counts as observed once the release
    is Deployed or Failed) and announce a release installed or failed (in the flux backend, as Flux says)."""
    if after.state == "Installing" and before.reason == "DriftDetected":  # still the drift being put back
        after = after.model_copy(update={"reason": before.reason, "message": before.message})
    name, generation = body["metadata"]["name"], int(body["metadata"].get("generation", 0))
    settled = after.state in ("Deployed", "Failed")
    await context.reporter.report(
        name, release=after, observed_generation=generation if settled else observed
    )
    if after.state == before.state and after.revision == before.revision:
        return
    if after.state == "Deployed":
        chart = f"chart {after.chart_version}"
        context.events.post(
            body, "Normal", "Installed", f"Release {name} revision {after.revision} ({chart}) installed"
        )
    elif after.state == "Failed":
        context.events.post(body, "Warning", after.reason or "ReleaseFailed", after.message)


async def follow(context: Context, name: str, helm_release: Mapping[str, Any]) -> None:
    """The flux backend: a tenant's HelmRelease changed; its status becomes the Tenant's release status,
    while it holds the Tenant's current spec (one written for an older spec, or kept while a newer one was
    refused, speaks for nothing)."""
    tenant = context.cache.tenant(name)
    if tenant is None or "deletionTimestamp" in tenant["metadata"]:
        return
    generation = int(tenant["metadata"].get("generation", 0))
    if tenant_generation(helm_release) != generation or helm_release["metadata"].get("deletionTimestamp"):
        return  # (one being deleted speaks of its uninstall)
    previous = current_status(tenant)
    outcome = release_status(helm_release)
    if outcome != previous.release:
        await settle(context, tenant, previous.release, outcome, previous.observed_generation)


async def repair(context: Context, name: str, drifted: Sequence[Drift]) -> None:
    """Objects of a tenant's release were deleted or changed by someone (drift.py): install the release
    again to put them back, unless they are back already. Errors reach the caller, which tries again."""
    tenant = context.cache.tenant(name)
    if tenant is None or "deletionTimestamp" in tenant["metadata"]:
        return
    release = current_status(tenant).release
    # This operator deletes a HelmRelease only with its Tenant: gone otherwise, it is always written again.
    lost = any(drift.kind == "HelmRelease" and drift.deleted for drift in drifted)
    if release.state != "Deployed" and release.reason != "DriftDetected" and not lost:
        # Being installed (its own reconciliation puts everything in place, and may itself delete objects
        # when it frees a release left pending), failed, or not made yet: not drift to repair here.
        return
    still = [drift for drift in drifted if still_drifted(drift, await _now(context, drift))]
    if not still:
        return
    what = "; ".join(map(str, still))
    context.events.post(tenant, "Warning", "DriftDetected", f"{what}; installing the release again")
    await reconcile(context, tenant, retry=0, force=True, drift=what)


async def _now(context: Context, drift: Drift) -> Mapping[str, Any] | None:
    if drift.kind == "Namespace":
        return await context.kube.get_namespace(drift.name)
    return await context.kube.get_object(drift.kind, drift.namespace, drift.name)
