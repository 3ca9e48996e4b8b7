"""The tenant's namespace: labelled with the tenant's name and Pod Security `restricted`."""

from collections.abc import Mapping
from typing import Any

from tenant_operator.api import GROUP, KIND, VERSION

TENANT_LABEL = "neurallog.io/tenant"


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


def build_namespace(namespace: str, tenant: Mapping[str, Any]) -> dict[str, Any]:
    """The Namespace object of a Tenant (a body with metadata.name and metadata.uid).

    The owner reference lets the garbage collector remove the namespace should the Tenant ever go without the
    operator's finalizer (e.g. a finalizer removed by hand); normally the operator deletes it itself."""
    metadata = tenant["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": namespace_labels(metadata["name"]),
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
    }


def labels_to_fix(namespace: Mapping[str, Any], tenant_name: str) -> dict[str, str]:
    """The labels an existing namespace lacks or has wrong; {} when it is as it should be."""
    current = namespace.get("metadata", {}).get("labels") or {}
    return {key: value for key, value in namespace_labels(tenant_name).items() if current.get(key) != value}
