"""The few Kubernetes API calls of the operator, on the official client, each run in a worker thread.

Objects come back as plain JSON dicts (camelCase), the form that `status.py` and the builders work on.
"""

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from tenant_operator import metrics
from tenant_operator.api import GROUP, PLURAL, VERSION

T = TypeVar("T")
Object = dict[str, Any]
HELM_RELEASES = ("helm.toolkit.fluxcd.io", "v2", "helmreleases")  # group, version, plural


def load_configuration() -> kubernetes.client.ApiClient:
    """An API client for the cluster the operator runs in, or else the one of KUBECONFIG."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = kubernetes.client.Configuration.get_default_copy()
    # Reports of many tenants run at once, each call in a worker thread of its own.
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)


def _json(response: Any) -> Object:
    document: Object = json.loads(response.data)
    return document


def is_status(error: ApiException, *codes: int) -> bool:
    return error.status in codes


class RateLimit:
    """A token bucket: at most `burst` requests at once, refilled at `qps` per second (client-go's defaults
    for controllers are of this kind), so that a burst of Tenant changes cannot flood the API server."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.qps)
            self.updated = now
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.qps)
                self.tokens = 1.0
                self.updated = time.monotonic()
            self.tokens -= 1


# Answers 429 (Too Many Requests) are retried this many times, after the server's Retry-After (else 1 s,
# doubling).
MAX_THROTTLED_RETRIES = 5


def retry_after(error: ApiException, default: float) -> float:
    """The seconds a 429 answer asks to wait (its Retry-After header), at most a minute."""
    headers = error.headers or {}
    try:
        return min(float(headers.get("Retry-After", default)), 60.0)
    except ValueError:
        return default


class Kube:
    """Typed access to what the operator reads and writes, rate-limited."""

    def __init__(self, client: kubernetes.client.ApiClient, qps: float = 20, burst: int = 40) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(client)
        self.networking = kubernetes.client.NetworkingV1Api(client)
        self.limit = RateLimit(qps, burst)

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in range(MAX_THROTTLED_RETRIES + 1):
            await self.limit.acquire()
            metrics.API_REQUESTS.labels(getattr(function, "__name__", "call")).inc()
            try:
                return await asyncio.to_thread(function, *args, **kwargs)
            except ApiException as error:
                if not is_status(error, 429) or attempt == MAX_THROTTLED_RETRIES:
                    raise
                await asyncio.sleep(retry_after(error, default=float(2**attempt)))
        raise AssertionError("unreachable")

    async def _get_or_none(self, function: Callable[..., Any], *args: Any) -> Object | None:
        try:
            return _json(await self._call(function, *args, _preload_content=False))
        except ApiException as error:
            if is_status(error, 404):
                return None
            raise

    async def patch_tenant_status(self, name: str, status: Mapping[str, Any]) -> Object | None:
        """Merge-patch the status subresource (lists such as conditions are replaced whole); the Tenant as
        written, None when it is gone."""
        try:
            response = await self._call(
                self.custom.patch_cluster_custom_object_status,
                GROUP,
                VERSION,
                PLURAL,
                name,
                {"status": status},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        except ApiException as error:
            if not is_status(error, 404):  # the Tenant is gone: nothing to report on
                raise
            return None
        return _json(response)

    async def create_event(self, event: Mapping[str, Any]) -> bool:
        """Create an event; False when one of that name exists."""
        try:
            await self._call(self.core.create_namespaced_event, event["metadata"]["namespace"], event)
        except ApiException as error:
            if is_status(error, 409):
                return False
            raise
        return True

    async def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._call(self.core.patch_namespaced_event, name, namespace, patch)

    async def get_namespace(self, name: str) -> Object | None:
        return await self._get_or_none(self.core.read_namespace, name)

    async def create_namespace(self, body: Mapping[str, Any]) -> bool:
        """Create a namespace; False when it already exists (a 409 is success, not an error)."""
        try:
            await self._call(self.core.create_namespace, body)
        except ApiException as error:
            if is_status(error, 409):
                return False
            raise
        return True

    async def patch_namespace_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Merge-patch labels (and ownerReferences, replaced whole) of a namespace."""
        await self._call(self.core.patch_namespace, name, {"metadata": dict(metadata)})

    async def create_role_binding(self, body: Mapping[str, Any]) -> bool:
        """Create a RoleBinding; False when one of that name exists."""
        try:
            await self._call(self.rbac.create_namespaced_role_binding, body["metadata"]["namespace"], body)
        except ApiException as error:
            if is_status(error, 409):
                return False
            raise
        return True

    async def delete_namespace(self, name: str) -> None:
        try:
            await self._call(self.core.delete_namespace, name)
        except ApiException as error:
            if not is_status(error, 404):
                raise

    async def get_object(self, kind: str, namespace: str, name: str) -> Object | None:
        """One object of a tenant's release, by kind (those drift.py watches); None when it does not exist."""
        readers: dict[str, Callable[..., Any]] = {
            "NetworkPolicy": self.networking.read_namespaced_network_policy,
            "ResourceQuota": self.core.read_namespaced_resource_quota,
            "LimitRange": self.core.read_namespaced_limit_range,
            "Service": self.core.read_namespaced_service,
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
        }
        if kind == "HelmRelease":
            return await self.get_helm_release(namespace, name)
        return await self._get_or_none(readers[kind], name, namespace)

    async def secret_keys(self, namespace: str, names: Iterable[str]) -> dict[str, frozenset[str] | None]:
        """The keys of each named Secret (None when it does not exist; left out when it may not be read); the
        values are dropped at once."""
        found: dict[str, frozenset[str] | None] = {}
        for name in names:
            try:
                secret = await self._get_or_none(self.core.read_namespaced_secret, name, namespace)
            except ApiException as error:
                if not is_status(error, 403):
                    raise
                continue  # not granted in this namespace yet (see namespace.role_binding): left unknown
            keys = (
                None if secret is None else {**secret.get("data", {}), **secret.get("stringData", {})}.keys()
            )
            found[name] = None if keys is None else frozenset(keys)
        return found

    # Flux HelmReleases (the flux backend, flux.py; and a switch back to the helm backend).

    async def get_helm_release(self, namespace: str, name: str) -> Object | None:
        """A HelmRelease; None when it does not exist, or when the cluster has no such API (no Flux)."""
        return await self._get_or_none(
            self.custom.get_namespaced_custom_object, *HELM_RELEASES[:2], namespace, HELM_RELEASES[2], name
        )

    async def apply_helm_release(self, body: Mapping[str, Any], field_manager: str) -> Object:
        """Server-side apply of a HelmRelease (the fields this operator sets are its; others' are kept)."""
        metadata = body["metadata"]
        response = await self._call(
            self.custom.patch_namespaced_custom_object,
            *HELM_RELEASES[:2],
            metadata["namespace"],
            HELM_RELEASES[2],
            metadata["name"],
            body,
            field_manager=field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
            _preload_content=False,
        )
        return _json(response)

    async def patch_helm_release(
        self, namespace: str, name: str, patch: Mapping[str, Any], field_manager: str
    ) -> None:
        """Merge-patch a HelmRelease (annotations, suspend, finalizers); nothing when it is gone."""
        try:
            await self._call(
                self.custom.patch_namespaced_custom_object,
                *HELM_RELEASES[:2],
                namespace,
                HELM_RELEASES[2],
                name,
                patch,
                field_manager=field_manager,
                _content_type="application/merge-patch+json",
            )
        except ApiException as error:
            if not is_status(error, 404):
                raise

    async def delete_helm_release(self, namespace: str, name: str) -> None:
        try:
            await self._call(
                self.custom.delete_namespaced_custom_object,
                *HELM_RELEASES[:2],
                namespace,
                HELM_RELEASES[2],
                name,
            )
        except ApiException as error:
            if not is_status(error, 404):
                raise
