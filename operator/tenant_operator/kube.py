"""The few Kubernetes API calls of the operator, each run in a worker thread.

Requests go through the official client's configuration (kubeconfig or in-cluster, with its token refresh)
and its connection pool (TLS, client certificates, proxies), but not through its generated API classes:
importing those takes about 30 MiB, and each call of theirs validates its arguments with pydantic. Objects
come back as plain JSON dicts (camelCase), the form that `status.py` and the builders work on.
"""

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from tenant_operator import metrics
from tenant_operator.api import GROUP, PLURAL, VERSION

T = TypeVar("T")
Object = dict[str, Any]
HELM_RELEASES = ("helm.toolkit.fluxcd.io", "v2", "helmreleases")  # group, version, plural
CORE = "/api/v1"
APPS = "/apis/apps/v1"
NETWORKING = "/apis/networking.k8s.io/v1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
# The kinds of a tenant's release that drift.py reads back: API group path and plural.
RELEASE_KINDS = {
    "NetworkPolicy": (NETWORKING, "networkpolicies"),
    "ResourceQuota": (CORE, "resourcequotas"),
    "LimitRange": (CORE, "limitranges"),
    "Service": (CORE, "services"),
    "Deployment": (APPS, "deployments"),
    "StatefulSet": (APPS, "statefulsets"),
}
TENANTS = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML
GET, POST, PUT, PATCH, DELETE = "GET", "POST", "PUT", "PATCH", "DELETE"
# The list and watch parameters of the client's generated list functions, as the API server names them.
LIST_PARAMETERS = {
    "label_selector": "labelSelector",
    "limit": "limit",
    "_continue": "continue",
    "watch": "watch",
    "resource_version": "resourceVersion",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "timeout_seconds": "timeoutSeconds",
}


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


def path(*parts: str) -> str:
    """A request path from fixed parts and names (each name quoted as one segment)."""
    return "/".join(part if part.startswith("/") else quote(part, safe="") for part in parts)


class Rest:
    """HTTP requests to the API server with the official client's configuration and connection pool.

    Synchronous (run in worker threads, and by the leader election's thread). A request answered outside 2xx
    raises the client's ApiException, with the status, reason, body and headers of the answer."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.configuration = client.configuration
        self.pool = client.rest_client.pool_manager

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": JSON, "Content-Type": content_type}
        # The bearer token when the configuration has one (refreshed by the client's hook as it expires).
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        return headers

    def __call__(
        self,
        method: str,
        target: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout: float | tuple[float, float] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """The answer, unread (`.data` reads it whole; a watch is read line by line)."""
        url = self.configuration.host + target
        parameters = {
            key: str(value).lower() if isinstance(value, bool) else value
            for key, value in (query or {}).items()
            if value is not None
        }
        if parameters:
            url += "?" + urlencode(parameters)
        if isinstance(timeout, tuple):
            timeouts = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            timeouts = urllib3.Timeout(total=timeout)
        response = self.pool.request(
            method,
            url,
            body=None if body is None else json.dumps(body).encode(),
            headers=self._headers(content_type),
            timeout=timeouts,
            preload_content=False,
        )
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = response.data.decode("utf-8", "replace")
            error.headers = response.headers  # read whole above: the connection is back in the pool
            raise error
        return response

    def lister(self, target: str) -> Callable[..., urllib3.BaseHTTPResponse]:
        """A list function for `target` (a collection) taking the client's list parameters (label_selector,
        watch, resource_version, ..., _request_timeout), as informer.Kind calls it."""

        def list_objects(
            _request_timeout: float | tuple[float, float] | None = None, **parameters: Any
        ) -> urllib3.BaseHTTPResponse:
            query = {LIST_PARAMETERS[name]: value for name, value in parameters.items()}
            return self(GET, target, query=query, timeout=_request_timeout)

        return list_objects


def helm_release_path(namespace: str, name: str) -> str:
    group, version, plural = HELM_RELEASES
    return path(f"/apis/{group}/{version}", "namespaces", namespace, plural, name)


def is_status(error: ApiException, *codes: int) -> bool:
    return error.status in codes


class RateLimit:
    """A token bucket: at most `burst` requests at once, refilled at `qps` per second (client-go's defaults
    for controllers are of this kind), so that a burst of Tenant changes cannot flood the API server.

    Waiting requests take the tokens in turn, those that can wait (`later`: the events of `kubectl describe`)
    only when no other request waits: under a burst of new Tenants, their statuses (what a user and a GitOps
    tool wait for) are not queued behind thousands of events telling how they got there."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())  # first, later
        self._dispenser: asyncio.Task[None] | None = None

    async def acquire(self, later: bool = False) -> None:
        self._refill()
        if self.tokens >= 1 and not any(self._waiting):
            self.tokens -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting[later].append(turn)
        if self._dispenser is None or self._dispenser.done():
            self._dispenser = asyncio.create_task(self._dispense())
        await turn

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.qps)
        self.updated = now

    async def _dispense(self) -> None:
        """Hand out tokens as they come to the waiting requests, the first lane before the later one."""
        while queue := next((waiting for waiting in self._waiting if waiting), None):
            self._refill()
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.qps)
                continue
            turn = queue.popleft()
            if not turn.done():  # else its request was cancelled while it waited
                self.tokens -= 1
                turn.set_result(None)


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
        self.rest = Rest(client)
        self.limit = RateLimit(qps, burst)

    async def _call(
        self, name: str, function: Callable[..., T], *args: Any, later: bool = False, **kwargs: Any
    ) -> T:
        """`function` in a worker thread, after the rate limit (`later`: after every other request waiting
        for it); counted as `name`; 429 answers waited out."""
        for attempt in range(MAX_THROTTLED_RETRIES + 1):
            await self.limit.acquire(later)
            metrics.API_REQUESTS.labels(name).inc()
            try:
                return await asyncio.to_thread(function, *args, **kwargs)
            except ApiException as error:
                if not is_status(error, 429) or attempt == MAX_THROTTLED_RETRIES:
                    raise
                await asyncio.sleep(retry_after(error, default=float(2**attempt)))
        raise AssertionError("unreachable")

    async def _request(
        self, name: str, method: str, target: str, later: bool = False, **options: Any
    ) -> Object:
        """One request; the object of the answer."""
        response = await self._call(name, self.rest, method, target, later=later, **options)
        return _json(response)

    async def _get_or_none(self, name: str, target: str) -> Object | None:
        try:
            return await self._request(name, GET, target)
        except ApiException as error:
            if is_status(error, 404):
                return None
            raise

    async def _create(self, name: str, target: str, body: Mapping[str, Any], later: bool = False) -> bool:
        """Create an object; False when one of that name exists (a 409 is not an error here)."""
        try:
            await self._request(name, POST, target, later=later, body=body)
        except ApiException as error:
            if is_status(error, 409):
                return False
            raise
        return True

    async def patch_tenant_status(self, name: str, status: Mapping[str, Any]) -> Object | None:
        """Merge-patch the status subresource (lists such as conditions are replaced whole); the Tenant as
        written, None when it is gone."""
        try:
            return await self._request(
                "patch_cluster_custom_object_status",
                PATCH,
                path(TENANTS, name, "status"),
                body={"status": status},
                content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if not is_status(error, 404):  # the Tenant is gone: nothing to report on
                raise
            return None

    async def patch_tenant_finalizers(
        self, name: str, finalizers: list[str], resource_version: str
    ) -> Object | None:
        """Set the Tenant's finalizers, if it is still at `resource_version` (else 409); the Tenant as
        written, None when it is gone."""
        metadata = {"finalizers": finalizers, "resourceVersion": resource_version}
        try:
            return await self._request(
                "patch_cluster_custom_object",
                PATCH,
                path(TENANTS, name),
                body={"metadata": metadata},
                content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if not is_status(error, 404):
                raise
            return None

    async def create_event(self, event: Mapping[str, Any]) -> bool:
        """Create an event (after the requests that cannot wait); False when one of that name exists."""
        target = path(CORE, "namespaces", event["metadata"]["namespace"], "events")
        return await self._create("create_namespaced_event", target, event, later=True)

    async def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        target = path(CORE, "namespaces", namespace, "events", name)
        await self._request(
            "patch_namespaced_event", PATCH, target, later=True, body=patch, content_type=MERGE_PATCH
        )

    async def get_namespace(self, name: str) -> Object | None:
        return await self._get_or_none("read_namespace", path(CORE, "namespaces", name))

    async def create_namespace(self, body: Mapping[str, Any]) -> bool:
        """Create a namespace; False when it already exists (a 409 is success, not an error)."""
        return await self._create("create_namespace", path(CORE, "namespaces"), body)

    async def patch_namespace_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Strategic-merge-patch labels (and ownerReferences, merged by uid) of a namespace."""
        await self._request(
            "patch_namespace",
            PATCH,
            path(CORE, "namespaces", name),
            body={"metadata": dict(metadata)},
            content_type=STRATEGIC_MERGE_PATCH,
        )

    async def create_role_binding(self, body: Mapping[str, Any]) -> bool:
        """Create a RoleBinding; False when one of that name exists."""
        namespace = body["metadata"]["namespace"]
        target = path(RBAC, "namespaces", namespace, "rolebindings")
        return await self._create("create_namespaced_role_binding", target, body)

    async def delete_namespace(self, name: str) -> None:
        try:
            await self._request("delete_namespace", DELETE, path(CORE, "namespaces", name))
        except ApiException as error:
            if not is_status(error, 404):
                raise

    async def get_object(self, kind: str, namespace: str, name: str) -> Object | None:
        """One object of a tenant's release, by kind (those drift.py watches); None when it does not exist."""
        if kind == "HelmRelease":
            return await self.get_helm_release(namespace, name)
        group, plural = RELEASE_KINDS[kind]
        return await self._get_or_none(f"read_{plural}", path(group, "namespaces", namespace, plural, name))

    async def secret_keys(self, namespace: str, names: Iterable[str]) -> dict[str, frozenset[str] | None]:
        """The keys of each named Secret (None when it does not exist; left out when it may not be read); the
        values are dropped at once."""
        found: dict[str, frozenset[str] | None] = {}
        for name in names:
            try:
                secret = await self._get_or_none(
                    "read_namespaced_secret", path(CORE, "namespaces", namespace, "secrets", name)
                )
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
        target = helm_release_path(namespace, name)
        return await self._get_or_none("get_namespaced_custom_object", target)

    async def apply_helm_release(self, body: Mapping[str, Any], field_manager: str) -> Object:
        """Server-side apply of a HelmRelease (the fields this operator sets are its; others' are kept)."""
        metadata = body["metadata"]
        return await self._request(
            "patch_namespaced_custom_object",
            PATCH,
            helm_release_path(metadata["namespace"], metadata["name"]),
            body=body,
            query={"fieldManager": field_manager, "force": True},
            content_type=APPLY_PATCH,
        )

    async def patch_helm_release(
        self, namespace: str, name: str, patch: Mapping[str, Any], field_manager: str
    ) -> None:
        """Merge-patch a HelmRelease (annotations, suspend, finalizers); nothing when it is gone."""
        try:
            await self._request(
                "patch_namespaced_custom_object",
                PATCH,
                helm_release_path(namespace, name),
                body=patch,
                query={"fieldManager": field_manager},
                content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if not is_status(error, 404):
                raise

    async def delete_helm_release(self, namespace: str, name: str) -> None:
        try:
            target = helm_release_path(namespace, name)
            await self._request("delete_namespaced_custom_object", DELETE, target)
        except ApiException as error:
            if not is_status(error, 404):
                raise
