"""What the operator's watches saw last: Tenants, and the workloads and pods of tenant namespaces.

An informer-style cache on the stores of informer.py, which lists every kind before any handler runs, so a
status report reads nothing from the API server and never a half-filled cache. Objects are kept trimmed to
what the status, the events and a reconciliation read (a whole pod or workload is ten times larger), so that
a thousand tenants stay small in memory.

The operator's own status writes are seen at once: the answer to a status patch is kept beside the store
until the watch brings that version or a newer one.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenant_operator.api import RECONCILE_ANNOTATION

Object = dict[str, Any]
# An informer's store, read-only: a key (namespace; a Tenant's name) -> name -> the trimmed object.
Store = Mapping[str, Mapping[str, Object]]

TENANTS = "tenants"
DEPLOYMENTS = "deployments"
STATEFULSETS = "statefulsets"
PODS = "pods"
NAMESPACES = "namespaces"


def pick(source: Mapping[str, Any] | None, keys: Iterable[str]) -> Object:
    """The entries of `source` (None: none) under `keys`, those it has."""
    return {key: source[key] for key in keys if source is not None and key in source}


def trim_tenant(body: Mapping[str, Any]) -> Object:
    """A Tenant as the work queue, the reporter, a reconciliation and the events read it (of its annotations
    only the reconcile request)."""
    kept = ("name", "uid", "generation", "resourceVersion", "deletionTimestamp", "finalizers")
    metadata = pick(body.get("metadata"), kept)
    request = pick(body.get("metadata", {}).get("annotations"), (RECONCILE_ANNOTATION,))
    if request:
        metadata["annotations"] = request
    return {**pick(body, ("apiVersion", "kind", "spec", "status")), "metadata": metadata}


def trim_workload(body: Mapping[str, Any]) -> Object:
    """A Deployment or StatefulSet as `status.workload_status` reads it."""
    return {
        "metadata": pick(body.get("metadata"), ("name", "generation", "labels")),
        "spec": pick(body.get("spec"), ("replicas",)),
        "status": dict(body.get("status") or {}),
    }


def trim_pod(body: Mapping[str, Any]) -> Object:
    """A pod as `status.pod_problem` and `status.pods_of` read it."""
    return {
        "metadata": pick(body.get("metadata"), ("name", "labels")),
        "status": pick(
            body.get("status"),
            ("phase", "message", "conditions", "containerStatuses", "initContainerStatuses"),
        ),
    }


def trim_namespace(body: Mapping[str, Any]) -> Object:
    """A tenant namespace as a reconciliation reads it (reconcile.ensure_namespace)."""
    kept = ("name", "labels", "annotations", "ownerReferences", "deletionTimestamp")
    return {"metadata": pick(body.get("metadata"), kept)}


def _version(obj: Mapping[str, Any] | None) -> int:
    """The resourceVersion as a number (etcd's revision); -1 when absent or not a number."""
    value = (obj or {}).get("metadata", {}).get("resourceVersion", "")
    return int(value) if str(value).isdigit() else -1


@dataclass
class Cache:
    """Reads of the informers' stores (by kind), which `bind` connects."""

    stores: Mapping[str, Store] = field(default_factory=dict)
    _written: dict[str, Object] = field(default_factory=dict)

    def bind(self, stores: Mapping[str, Store]) -> None:
        self.stores = stores

    def _values(self, kind: str, key: str) -> list[Object]:
        objects = self.stores[kind].get(key)
        return list(objects.values()) if objects is not None else []

    def tenant(self, name: str) -> Object | None:
        """The Tenant as last watched, or as this operator last wrote its status if that is newer."""
        found = self._values(TENANTS, name)
        watched = found[0] if found else None
        written = self._written.get(name)
        if watched is None or written is None or _version(watched) >= _version(written):
            self._written.pop(name, None)  # gone, or the watch caught up
            return watched
        return written

    def wrote(self, name: str, tenant: Mapping[str, Any] | None) -> None:
        """The answer of a status patch: newer than the store until the watch brings it."""
        if tenant is None or _version(tenant) < 0:
            self._written.pop(name, None)
        else:
            self._written[name] = trim_tenant(tenant)

    def forget(self, name: str) -> None:
        self._written.pop(name, None)

    def workload(self, kind: str, namespace: str, name: str) -> Object | None:
        return self.stores[kind].get(namespace, {}).get(name)

    def deployment(self, namespace: str, name: str) -> Object | None:
        return self.workload(DEPLOYMENTS, namespace, name)

    def statefulset(self, namespace: str, name: str) -> Object | None:
        return self.workload(STATEFULSETS, namespace, name)

    def pods(self, namespace: str) -> list[Object]:
        return self._values(PODS, namespace)

    def namespace(self, name: str) -> Object | None:
        """A namespace labelled as a tenant's, as last watched; None also when it is not watched."""
        found = self._values(NAMESPACES, name) if NAMESPACES in self.stores else []
        return found[0] if found else None
