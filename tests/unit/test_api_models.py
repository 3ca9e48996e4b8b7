"""The Tenant API models: the guide's defaults and example, and the values they refuse."""

from typing import Any

import pytest
from pydantic import ValidationError

from tenant_operator import api
from tenant_operator.quantity import parse_quantity
from tests.unit.tenant_examples import BAD_SPECS, guide_spec, with_change


def test_defaults_are_the_guides() -> None:
    spec = api.TenantSpec(display_name="x")
    assert spec.server.replicas == 1
    assert spec.server.image == "neurallog/server:latest"
    assert spec.server.resources.cpu == api.ResourceRange(limit="500m", request="100m")
    assert spec.server.resources.memory == api.ResourceRange(limit="512Mi", request="128Mi")
    assert spec.redis.replicas == 1
    assert spec.redis.image == "redis:7-alpine"
    assert spec.redis.resources.cpu == api.ResourceRange(limit="300m", request="100m")
    assert spec.redis.resources.memory == api.ResourceRange(limit="256Mi", request="128Mi")
    assert spec.redis.storage == "1Gi"
    assert spec.redis.config == {"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru"}
    assert spec.network_policy == api.NetworkPolicySpec(
        enabled=True, allowed_namespaces=[], ingress_rules=[], egress_rules=[]
    )
    assert spec.resources.cpu == api.ResourceRange(limit="2", request="1")
    assert spec.resources.memory == api.ResourceRange(limit="4Gi", request="2Gi")
    assert spec.resources.storage == api.ResourceRange(limit="10Gi", request="5Gi")


def test_default_budget_holds_the_default_workloads() -> None:
    spec = api.TenantSpec(display_name="x")
    for kind in ("cpu", "memory"):
        for bound in ("limit", "request"):
            used = sum(
                parse_quantity(getattr(getattr(workload.resources, kind), bound)) * workload.replicas
                for workload in (spec.server, spec.redis)
            )
            assert used <= parse_quantity(getattr(getattr(spec.resources, kind), bound))
    assert parse_quantity(spec.redis.storage) <= parse_quantity(spec.resources.storage.request)


def test_the_guides_example_is_valid_and_round_trips() -> None:
    spec = api.TenantSpec.model_validate(guide_spec())
    assert spec.server.replicas == 2
    assert spec.redis.config == {"maxmemory": "512mb", "maxmemory-policy": "allkeys-lru"}
    api_key = spec.server.env[2]
    assert api_key.value_from is not None
    assert api_key.value_from.secret_key_ref == api.SecretKeySelector(name="tenant-secrets", key="api-key")
    assert spec.network_policy.ingress_rules[0].from_ == {"app": "prometheus"}
    values = spec.to_values()
    assert values["networkPolicy"]["ingressRules"][0]["from"] == {"app": "prometheus"}
    assert values["server"]["env"][2] == {
        "name": "API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "tenant-secrets", "key": "api-key"}},
    }
    assert api.TenantSpec.model_validate(values) == spec


def test_user_env_merges_over_the_defaults_by_name() -> None:
    spec = api.TenantSpec.model_validate(guide_spec())
    names = [entry.name for entry in spec.server.effective_env()]
    assert names == ["NODE_ENV", "PORT", "REDIS_URL", "LOG_LEVEL", "MAX_CONNECTIONS", "API_KEY"]
    log_levels = [entry.value for entry in spec.server.effective_env() if entry.name == "LOG_LEVEL"]
    assert log_levels == ["debug"]


def test_redis_config_keys_merge_over_the_defaults() -> None:
    redis = api.RedisSpec(config={"appendonly": "yes", "maxmemory": "1gb"})
    assert redis.config == {"maxmemory": "1gb", "maxmemory-policy": "allkeys-lru", "appendonly": "yes"}


@pytest.mark.parametrize(("path", "value", "message"), BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_values_are_refused(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        api.TenantSpec.model_validate(with_change(path, value))


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("sample-tenant", None),
        ("a" * 53, None),
        ("a" * 54, "at most 53 characters"),
        ("with.dot", "DNS-1123 label"),
        ("Upper", "DNS-1123 label"),
    ],
)
def test_tenant_names(name: str, problem: str | None) -> None:
    found = api.tenant_name_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)
    assert api.namespace_for("sample-tenant") == "tenant-sample-tenant"
