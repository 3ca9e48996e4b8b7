"""Delete: uninstall the release, delete the namespace, and once it is gone the work queue (work.py) drops
the finalizer. A namespace that is not the Tenant's (namespace.is_owned_by) is left as it is, with what it
holds.

Runs as well for a Tenant deleted while the operator was stopped: the finalizer kept it until now.
"""

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from tenant_operator.api import namespace_for
from tenant_operator.context import Context
from tenant_operator.flux import hand_back
from tenant_operator.namespace import is_owned_by
from tenant_operator.reconcile import grant_access
from tenant_operator.release import HelmError

logger = logging.getLogger(__name__)

# While a deleted namespace is still there, deletion looks again this often when the namespaces' watch
# follows it (its deletion wakes the Tenant's work at once: work.Work.namespace_gone); one the watch does not
# follow (adopted without the tenant label) is looked at every `namespace_poll_seconds`.
WATCHED_NAMESPACE_RECHECK_SECONDS = 60


async def uninstall(context: Context, body: Mapping[str, Any], namespace: str) -> bool:
    """Uninstall the tenant's release; False while Flux is still at it (flux backend: the HelmRelease is
    deleted, and Flux uninstalls the release before it lets the HelmRelease go)."""
    name = body["metadata"]["name"]
    if context.flux is not None:
        helm_release = await context.kube.get_helm_release(namespace, name)
        if helm_release is not None:
            if not helm_release["metadata"].get("deletionTimestamp"):
                await context.kube.delete_helm_release(namespace, name)
                message = f"Deleted HelmRelease {name}; Flux uninstalls the release"
                context.events.post(body, "Normal", "Uninstalling", message)
            return False
        # No HelmRelease (any more): a release the helm backend made before a switch is Helm's to uninstall.
    elif await hand_back(context.kube, namespace, name):  # one the flux backend left: Helm uninstalls
        logger.info("tenant %s: HelmRelease removed before the uninstall", name)
    if await context.helm.uninstall(name, namespace):
        context.events.post(body, "Normal", "Uninstalled", f"Uninstalled release {name}")
    return True


async def delete(context: Context, body: Mapping[str, Any]) -> None:
    """Uninstall and delete the namespace; done once it is gone, TemporaryError until then."""
    name = body["metadata"]["name"]
    namespace = namespace_for(name)
    await context.reporter.report(name)
    try:
        existing = await context.kube.get_namespace(namespace)
        if existing is not None and not is_owned_by(existing, body):
            message = (
                f"Namespace {namespace} is not this Tenant's (not created or adopted for it); left alone"
            )
            context.events.post(body, "Normal", "NamespaceLeftAlone", message)
            context.reporter.forget(name)
            return
        if existing is not None and not existing["metadata"].get("deletionTimestamp"):
            await grant_access(context, namespace)
            if not await uninstall(context, body, namespace):
                raise kopf.TemporaryError(
                    f"waiting for Flux to uninstall release {name} (HelmRelease {namespace}/{name})",
                    delay=context.settings.namespace_poll_seconds,
                )
            await context.kube.delete_namespace(namespace)
            context.events.post(body, "Normal", "DeletingNamespace", f"Deleting namespace {namespace}")
    except HelmError as error:
        context.events.post(body, "Warning", error.reason, error.message)
        raise kopf.TemporaryError(f"uninstall: {error.message}", delay=10) from None
    except ApiException as error:
        raise kopf.TemporaryError(f"namespace {namespace}: {error.reason}", delay=10) from error
    if existing is not None:
        watched = context.cache.namespace(namespace) is not None
        raise kopf.TemporaryError(
            f"waiting for namespace {namespace} to be deleted",
            delay=WATCHED_NAMESPACE_RECHECK_SECONDS if watched else context.settings.namespace_poll_seconds,
        )
    context.events.post(body, "Normal", "Deleted", f"Namespace {namespace} is gone")
    context.reporter.forget(name)
