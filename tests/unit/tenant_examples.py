"""Tenant specs shared by the unit tests: the guide's example, and changes to it that must be refused."""

from pathlib import Path
from typing import Any

import yaml

GUIDE_TENANT = Path(__file__).resolve().parents[1] / "fixtures" / "sample-tenant.yaml"


def guide_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(GUIDE_TENANT.read_text())["spec"]
    return spec


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The guide's spec with the value at a dotted path (list indexes as numbers) replaced."""
    spec = guide_spec()
    *parents, last = path.split(".")
    node: Any = spec
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


BAD_SPECS = {
    "invalid quantity": ("resources.cpu.limit", "four", "not a quantity"),
    "negative quantity": ("server.resources.memory.request", "-1Gi", "not a quantity"),
    "request above limit": ("resources.memory.request", "16Gi", "must not exceed limit"),
    "negative replicas": ("server.replicas", -1, "greater than or equal to 0"),
    "port out of range": ("networkPolicy.ingressRules.0.ports.0.port", 70000, "less than or equal to 65535"),
    "port zero": ("networkPolicy.egressRules.0.ports.0.port", 0, "greater than or equal to 1"),
    "unknown protocol": ("networkPolicy.ingressRules.0.ports.0.protocol", "HTTP", "'TCP', 'UDP' or 'SCTP'"),
    "unknown maxmemory-policy": (
        "redis.config.maxmemory-policy",
        "lru-please",
        "maxmemory-policy must be one of",
    ),
    "bad maxmemory": ("redis.config.maxmemory", "lots", "maxmemory must be a size"),
    "reserved redis key": ("redis.config.requirepass", "hunter2", "managed by the chart"),
    "multi-line redis value": ("redis.config.appendonly", "yes\nrequirepass x", "pattern"),
    "invalid namespace": ("networkPolicy.allowedNamespaces.0", "Not_A_Namespace", "pattern"),
    "namespace too long": ("networkPolicy.allowedNamespaces.0", "a" * 64, "at most 63"),
    "both value and valueFrom": (
        "server.env.0",
        {"name": "X", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        "exactly one of value or valueFrom",
    ),
    "neither value nor valueFrom": ("server.env.0", {"name": "X"}, "exactly one of value or valueFrom"),
    "two sources": (
        "server.env.2.valueFrom",
        {"secretKeyRef": {"name": "s", "key": "k"}, "fieldRef": {"fieldPath": "metadata.name"}},
        "exactly one of secretKeyRef",
    ),
    "unknown field": ("server.replica", 3, "Extra inputs are not permitted"),
    "unknown valueFrom field": (
        "server.env.2.valueFrom.secretKeyRef.nmae",
        "x",
        "Extra inputs are not permitted",
    ),
    "empty image": ("server.image", "", "at least 1 character"),
    "duplicate env": ("server.env.1.name", "LOG_LEVEL", "duplicate environment variable names: LOG_LEVEL"),
    "bad label key": ("networkPolicy.egressRules.0.to", {"no spaces": "x"}, "not a label key"),
    "bad label value": ("networkPolicy.ingressRules.0.from", {"app": "-x-"}, "pattern"),
}
