"""The CRD and the chart's values.schema.json, derived from the pydantic models of `api.py`.

Pydantic writes JSON schema with `$ref`s, `anyOf [X, null]` for optional fields and `additionalProperties:
false`. A CRD needs a structural schema instead: everything inlined, one type per node, no `false`
additionalProperties (unknown fields are pruned, or refused by strict field validation), CEL rules under
`x-kubernetes-validations`. values.schema.json is plain draft-07, strict about unknown keys, and carries the
rules of `x-values-schema` that JSON schema can express where the CRD uses CEL.
"""

from typing import Any

from pydantic import BaseModel

from tenant_operator import api

JsonObject = dict[str, Any]
CRD_NAME = f"{api.PLURAL}.{api.GROUP}"
VALUES_ONLY = "x-values-schema"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _simplify(node: Any, definitions: JsonObject) -> Any:
    """Inline `$ref`s, turn `anyOf [X, null]` into X and drop titles and null defaults."""
    if isinstance(node, list):
        return [_simplify(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    options = node.get("anyOf")
    if isinstance(options, list) and any(_is_null(option) for option in options):
        rest = [option for option in options if not _is_null(option)]
        del node["anyOf"]
        if len(rest) == 1:
            node = {**rest[0], **node}
        else:
            node["anyOf"] = rest
        if "$ref" in node:
            return _simplify(node, definitions)
    node.pop("title", None)
    if "default" in node and node["default"] is None:
        del node["default"]
    return {key: _simplify(value, definitions) for key, value in node.items()}


def _model_schema(model: type[BaseModel]) -> JsonObject:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    simplified: JsonObject = _simplify(raw, definitions)
    return simplified


def _to_openapi(node: Any, *, keep_defaults: bool = True) -> Any:
    """The CRD dialect: no `additionalProperties: false`, no values-only rules."""
    if isinstance(node, list):
        return [_to_openapi(item, keep_defaults=keep_defaults) for item in node]
    if not isinstance(node, dict):
        return node
    result: JsonObject = {}
    for key, value in node.items():
        if key == VALUES_ONLY or (key == "additionalProperties" and value is False):
            continue
        if key == "default" and not keep_defaults:
            continue
        if key in ("properties",):
            result[key] = {
                name: _to_openapi(child, keep_defaults=keep_defaults) for name, child in value.items()
            }
        else:
            result[key] = _to_openapi(value, keep_defaults=keep_defaults)
    return result


def _to_draft07(node: Any) -> Any:
    """Plain JSON schema: no Kubernetes extensions, values-only rules merged in."""
    if isinstance(node, list):
        return [_to_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    result: JsonObject = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == VALUES_ONLY:
            continue
        if key == "properties":
            result[key] = {name: _to_draft07(child) for name, child in value.items()}
        else:
            result[key] = _to_draft07(value)
    for key, value in node.get(VALUES_ONLY, {}).items():
        if key == "properties":
            result["properties"] = {**result.get("properties", {}), **value}
        else:
            result[key] = value
    if result.get("type") == "object" and "additionalProperties" not in result:
        result["additionalProperties"] = False
    return result


def tenant_openapi_schema() -> JsonObject:
    """The openAPIV3Schema of the Tenant CRD."""
    return {
        "type": "object",
        "description": (
            "A NeuralLog tenant: an isolated namespace tenant-<name> with a NeuralLog server, a Redis, "
            "network policies and a resource budget."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object (neurallog.io/v1)."},
            "kind": {"type": "string", "description": "Kind of this object (Tenant)."},
            "metadata": {"type": "object"},
            "spec": _to_openapi(_model_schema(api.TenantSpec)),
            # A Tenant no operator has reported on yet reads as not observed (generation 1, observed 0):
            # kstatus and the GitOps tools on it then say InProgress, not Current.
            "status": {
                **_to_openapi(_model_schema(api.TenantStatus), keep_defaults=False),
                "default": {"observedGeneration": 0},
            },
        },
        "x-kubernetes-validations": api.ROOT_RULES,
    }


PRINTER_COLUMNS: list[JsonObject] = [
    {"name": "Status", "type": "string", "jsonPath": ".status.phase", "description": "Phase of the tenant."},
    {
        "name": "Namespace",
        "type": "string",
        "jsonPath": ".status.namespace",
        "description": "The tenant's namespace.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Server",
        "type": "integer",
        "jsonPath": ".status.serverStatus.readyReplicas",
        "description": "Ready server replicas.",
        "priority": 1,
    },
    {
        "name": "Redis",
        "type": "integer",
        "jsonPath": ".status.redisStatus.readyReplicas",
        "description": "Ready Redis replicas.",
        "priority": 1,
    },
    {
        "name": "Revision",
        "type": "integer",
        "jsonPath": ".status.release.revision",
        "description": "Revision of the tenant's Helm release.",
        "priority": 1,
    },
    {
        "name": "Isolated",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Isolated")].status',
        "description": "Whether the tenant's NetworkPolicies apply (False: networkPolicy.enabled is false).",
        "priority": 1,
    },
]


def tenant_crd() -> JsonObject:
    """The CustomResourceDefinition of Tenant."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["neurallog"],
            },
            "scope": "Cluster",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": tenant_openapi_schema()},
                }
            ],
        },
    }


# The one value of charts/tenant that is not a Tenant's spec: policies computed ahead (the flux backend).
RENDERED_POLICIES = "renderedNetworkPolicies"


def values_schema() -> JsonObject:
    """charts/tenant/values.schema.json: the values of charts/tenant are a Tenant's spec."""
    schema: JsonObject = _to_draft07(_model_schema(api.TenantSpec))
    schema["properties"][RENDERED_POLICIES] = {
        "type": "array",
        "items": {"type": "object", "additionalProperties": True},
        "description": "The tenant's NetworkPolicies as tenant-postrender computed them from networkPolicy, "
        "emitted verbatim instead of the post-renderer's carrier ConfigMap. Set by the operator's flux "
        "backend (Flux runs no post-renderer); leave it empty with a post-renderer.",
    }
    return {
        "$schema": DRAFT_07,
        "title": "Values of charts/tenant (the spec of a neurallog.io/v1 Tenant)",
        **schema,
    }
