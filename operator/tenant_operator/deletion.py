"""Delete: uninstall the release, delete the namespace, wait until it is gone; then kopf drops the finalizer.
A namespace that is not the Tenant's (namespace.is_owned_by) is left as it is, with what it holds.

Runs as well for a Tenant deleted while the operator was stopped: the finalizer kept it until now.
"""

import asyncio
import logging
import time
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

# How long one deletion attempt waits for the namespace before it lets kopf retry (and say so in the log).
NAMESPACE_WAIT_SECONDS = 120


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
    """Uninstall, delete the namespace and wait (a while) for it to go; TemporaryError to wait longer."""
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
            existing = await context.kube.get_namespace(namespace)
    except HelmError as error:
        context.events.post(body, "Warning", error.reason, error.message)
        raise kopf.TemporaryError(f"uninstall: {error.message}", delay=10) from None
    except ApiException as error:
        raise kopf.TemporaryError(f"namespace {namespace}: {error.reason}", delay=10) from error
    deadline = time.monotonic() + NAMESPACE_WAIT_SECONDS
    while existing is not None and time.monotonic() < deadline:
        await asyncio.sleep(context.settings.namespace_poll_seconds)
        existing = await context.kube.get_namespace(namespace)
    if existing is not None:
        raise kopf.TemporaryError(
            f"waiting for namespace {namespace} to be deleted", delay=context.settings.namespace_poll_seconds
        )
    context.events.post(body, "Normal", "Deleted", f"Namespace {namespace} is gone")
    context.reporter.forget(name)
