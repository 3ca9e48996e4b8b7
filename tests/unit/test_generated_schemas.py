"""The generated CRD and values.schema.json: structural, strict, and refusing what the models refuse."""

from collections.abc import Iterator
from typing import Any

import pytest

from tenant_operator import api, schema
from tests.unit.tenant_examples import BAD_SPECS, guide_spec, with_change

# Rules that only CEL (the API server) and pydantic can check: plain JSON schema cannot compare quantities
# nor require list items to differ in one field.
NOT_IN_JSON_SCHEMA = {"request above limit", "duplicate env"}


def nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `node` with its path."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from nodes(node[key], f"{path}[{key}]")


def crd_version() -> dict[str, Any]:
    version: dict[str, Any] = schema.tenant_crd()["spec"]["versions"][0]
    return version


def openapi() -> dict[str, Any]:
    root: dict[str, Any] = crd_version()["schema"]["openAPIV3Schema"]
    return root


def test_crd_names_scope_and_subresources() -> None:
    crd = schema.tenant_crd()
    assert crd["metadata"]["name"] == "tenants.neurallog.io"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["shortNames"] == ["tn"]
    assert crd_version()["subresources"] == {"status": {}}
    columns = [(column["name"], column["jsonPath"]) for column in crd_version()["additionalPrinterColumns"]]
    assert columns[:3] == [
        ("Status", ".status.phase"),
        ("Namespace", ".status.namespace"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert all(column.get("priority", 0) == 1 for column in crd_version()["additionalPrinterColumns"][3:])


def test_crd_schema_is_structural() -> None:
    """A type on every node, no $ref, no null, no `additionalProperties: false`, nothing preserved unknown."""
    for path, node in nodes(openapi()):
        assert "type" in node, path
        assert not {"$ref", "anyOf", "oneOf", "title", "x-values-schema"} & node.keys(), path
        assert node.get("additionalProperties") is not False, path
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path


def test_crd_bounds_every_list_map_and_string_for_cel_costs() -> None:
    for path, node in nodes(openapi()["properties"]["spec"], ".spec"):
        if node["type"] == "array":
            assert "maxItems" in node, path
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
        if node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node, path


def rules_at(path: str) -> list[str]:
    found = dict(nodes(openapi()))
    return [rule["rule"] for rule in found[path].get("x-kubernetes-validations", [])]


def test_crd_cel_rules_guard_what_json_schema_cannot() -> None:
    assert "isQuantity(self)" in rules_at(".spec.resources.cpu.limit")
    assert any("compareTo" in rule for rule in rules_at(".spec.server.resources.memory"))
    assert any("maxmemory-policy" in rule for rule in rules_at(".spec.redis.config"))
    assert any("valueFrom" in rule for rule in rules_at(".spec.server.env[items]"))
    assert any("metadata.name" in rule and "53" in rule for rule in rules_at(""))
    ports = dict(nodes(openapi()))[".spec.networkPolicy.ingressRules[items].ports[items]"]["properties"]
    assert ports["protocol"]["enum"] == ["TCP", "UDP", "SCTP"]
    assert (ports["port"]["minimum"], ports["port"]["maximum"]) == (1, 65535)
    assert dict(nodes(openapi()))[".spec.server.replicas"]["minimum"] == 0
    assert dict(nodes(openapi()))[".spec.server.image"]["minLength"] == 1


def test_crd_defaults_are_the_models() -> None:
    spec = openapi()["properties"]["spec"]["properties"]
    defaults = api.TenantSpec(display_name="x").to_values()
    for name in ("resources", "server", "redis", "networkPolicy"):
        assert spec[name]["default"] == defaults[name], name
    status = dict(openapi()["properties"]["status"])
    # Nothing observed until an operator reports: observedGeneration 0 (kstatus: InProgress), nothing else.
    assert status.pop("default") == {"observedGeneration": 0}
    assert "default" not in str(status), "status shows only what was observed"


def test_crd_env_is_a_map_list_keyed_by_name() -> None:
    env = dict(nodes(openapi()))[".spec.server.env"]
    assert env["x-kubernetes-list-type"] == "map"
    assert env["x-kubernetes-list-map-keys"] == ["name"]


def values_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a development dependency")
    values = schema.values_schema()
    jsonschema.Draft7Validator.check_schema(values)
    return jsonschema.Draft7Validator(values)


def test_values_schema_is_strict_draft_07() -> None:
    values = schema.values_schema()
    assert values["$schema"] == "http://json-schema.org/draft-07/schema#"
    for path, node in nodes(values):
        if node.get("type") == "object":
            assert "additionalProperties" in node, path
        assert not any(key.startswith("x-") for key in node), path


def test_values_schema_accepts_the_guides_example_and_the_defaults() -> None:
    validator = values_validator()
    validator.validate(guide_spec())
    validator.validate(api.TenantSpec(display_name="x").to_values())
    validator.validate(api.TenantSpec.model_validate(guide_spec()).to_values())


@pytest.mark.parametrize(("case", "change"), BAD_SPECS.items(), ids=BAD_SPECS.keys())
def test_values_schema_refuses_bad_values(case: str, change: tuple[str, Any, str]) -> None:
    path, value, _ = change
    errors = list(values_validator().iter_errors(with_change(path, value)))
    if case in NOT_IN_JSON_SCHEMA:
        assert not errors
    else:
        assert errors, case


def test_values_schema_refuses_unknown_keys_everywhere() -> None:
    for path in ("extra", "server.extra", "redis.resources.cpu.extra", "networkPolicy.ingressRules.0.extra"):
        assert list(values_validator().iter_errors(with_change(path, 1))), path
