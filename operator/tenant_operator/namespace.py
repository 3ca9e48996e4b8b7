"""The tenant's namespace: labelled with the tenant's name and Pod Security `restricted`, owned by its Tenant,
with the RoleBinding that gives the operator its rights there.

A namespace is the tenant's when its ownerReferences name the Tenant (uid included): the operator made it, or
adopted it because an administrator annotated it `neurallog.io/adopt: "true"`. Any other namespace of that
name is never written to or deleted."""

from collections.abc import Mapping
from typing import Any

from tenant_operator.api import GROUP, KIND, VERSION

TENANT_LABEL = "neurallog.io/tenant"
ADOPT_ANNOTATION = f"{GROUP}/adopt"
ROLE_BINDING = "tenant-operator"


def namespace_labels(tenant_name: str) -> dict[str, str]:
    """The labels that the namespace of a tenant must carry."""
    return {
        TENANT_LABEL: tenant_name,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
        "app.kubernetes.io/managed-by": "tenant-operator",
        "app.kubernetes.io/part-of": "neurallog",
    }


def owner_reference(tenant: Mapping[str, Any]) -> dict[str, Any]:
    """The reference that makes a namespace the Tenant's."""
    metadata = tenant["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def is_owned_by(namespace: Mapping[str, Any], tenant: Mapping[str, Any]) -> bool:
    """Whether the namespace belongs to this Tenant (made or adopted by the operator for it)."""
    uid = tenant["metadata"].get("uid")
    references = namespace.get("metadata", {}).get("ownerReferences") or []
    return uid is not None and any(reference.get("uid") == uid for reference in references)


def adoption_requested(namespace: Mapping[str, Any]) -> bool:
    """Whether an administrator marked an existing namespace for the operator to take over."""
    annotations = namespace.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(ADOPT_ANNOTATION, "")).lower() == "true"


def adoption_patch(namespace: Mapping[str, Any], tenant: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata that makes an existing namespace the Tenant's: its labels and owner reference."""
    references = namespace.get("metadata", {}).get("ownerReferences") or []
    return {
        "labels": namespace_labels(tenant["metadata"]["name"]),
        "ownerReferences": [*references, owner_reference(tenant)],
    }


def role_binding(namespace: str, role: str, service_account: str) -> dict[str, Any]:
    """The RoleBinding of the operator's ServiceAccount (namespace/name) to its per-tenant ClusterRole."""
    account_namespace, account = service_account.split("/", 1)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": ROLE_BINDING,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "tenant-operator",
                "app.kubernetes.io/part-of": "neurallog",
            },
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_namespace}],
    }


def build_namespace(namespace: str, tenant: Mapping[str, Any]) -> dict[str, Any]:
    """The Namespace object of a Tenant (a body with metadata.name and metadata.uid).

    The owner reference lets the garbage collector remove the namespace should the Tenant ever go without the
    operator's finalizer (e.g. a finalizer removed by hand); normally the operator deletes it itself."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": namespace_labels(tenant["metadata"]["name"]),
            "ownerReferences": [owner_reference(tenant)],
        },
    }


def labels_to_fix(namespace: Mapping[str, Any], tenant_name: str) -> dict[str, str]:
    """The labels an existing namespace lacks or has wrong; {} when it is as it should be."""
    current = namespace.get("metadata", {}).get("labels") or {}
    return {key: value for key, value in namespace_labels(tenant_name).items() if current.get(key) != value}
