"""`kubectl apply` refuses bad Tenants before anything is made, with a message that names the field."""

import copy
from typing import Any

import pytest
import yaml

from tests.conftest import Kube
from tests.e2e.operator_process import SMALL_WORKLOAD, Tenants, sample_tenant, small_tenant, unique
from tests.unit.tenant_examples import BAD_SPECS, with_change

pytestmark = pytest.mark.cluster

# What the API server's message says, for each bad spec of the unit tests.
NAMED_FIELD = {
    "invalid quantity": "spec.resources.cpu.limit",
    "negative quantity": "spec.server.resources.memory.request",
    "request above limit": "spec.resources.memory.request: Invalid value: request 16Gi must not exceed limit",
    "negative replicas": "spec.server.replicas",
    "port out of range": "spec.networkPolicy.ingressRules[0].ports[0].port",
    "port zero": "spec.networkPolicy.egressRules[0].ports[0].port",
    "unknown protocol": 'spec.networkPolicy.ingressRules[0].ports[0].protocol: Unsupported value: "HTTP"',
    "unknown maxmemory-policy": "spec.redis.config.[maxmemory-policy]: Invalid value: maxmemory-policy",
    "bad maxmemory": "spec.redis.config.[maxmemory]",
    "reserved redis key": "spec.redis.config: Invalid value: the chart manages requirepass",
    "multi-line redis value": "spec.redis.config.appendonly",
    "invalid namespace": "spec.networkPolicy.allowedNamespaces[0]",
    "namespace too long": "spec.networkPolicy.allowedNamespaces[0]: Too long",
    "both value and valueFrom": "spec.server.env[0]: Invalid value: exactly one of value or valueFrom",
    "neither value nor valueFrom": "spec.server.env[0]: Invalid value: exactly one of value or valueFrom",
    "two sources": "spec.server.env[2].valueFrom: Invalid value: exactly one of secretKeyRef",
    "unknown field": 'unknown field "spec.server.replica"',
    "unknown valueFrom field": 'unknown field "spec.server.env[2].valueFrom.secretKeyRef.nmae"',
    "empty image": "spec.server.image",
    "duplicate env": "spec.server.env[1]: Duplicate value",
    "bad label key": "spec.networkPolicy.egressRules[0].to: Invalid value: keys must be label keys",
    "bad label value": "spec.networkPolicy.ingressRules[0].from.app",
}


def dry_run(kube: Kube, tenant: dict[str, Any]) -> tuple[int, str]:
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(tenant), check=False)
    return result.returncode, result.stdout + result.stderr


def test_the_guides_example_is_accepted(kube: Kube, crd: None) -> None:
    assert dry_run(kube, sample_tenant()) == (
        0,
        "tenant.neurallog.io/sample-tenant created (server dry run)\n",
    )


@pytest.mark.parametrize("case", BAD_SPECS)
def test_bad_specs_are_refused_naming_the_field(kube: Kube, crd: None, case: str) -> None:
    path, value, _ = BAD_SPECS[case]
    tenant = copy.deepcopy(sample_tenant())
    tenant["spec"] = with_change(path, value)
    code, output = dry_run(kube, tenant)
    assert code != 0, output
    assert NAMED_FIELD[case] in output, output


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 54, "metadata.name must be at most 53 characters"),
        ("with.dot", "metadata.name must be a DNS-1123 label"),
    ],
)
def test_names_that_cannot_make_a_namespace_are_refused(
    kube: Kube, crd: None, name: str, message: str
) -> None:
    code, output = dry_run(kube, sample_tenant(name))
    assert code != 0
    assert message in output, output


def test_a_56_character_name_is_accepted(kube: Kube, crd: None) -> None:
    code, output = dry_run(kube, sample_tenant("a" * 53))
    assert code == 0, output


def test_redis_storage_cannot_change_after_creation(kube: Kube, tenants: Tenants) -> None:
    name = unique("storage")
    tenant = small_tenant(
        name, redis={"storage": "1Gi", "resources": SMALL_WORKLOAD, "config": {"maxmemory": "64mb"}}
    )
    tenants.apply(tenant)

    def applied(storage: str) -> Any:
        changed = copy.deepcopy(tenant)
        changed["spec"]["redis"]["storage"] = storage
        return kube.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(changed), check=False
        )

    refused = applied("5Gi")
    assert refused.returncode != 0
    assert (
        "spec.redis.storage: Forbidden: spec.redis.storage cannot change after creation (from 1Gi to 5Gi)"
        in (refused.stderr)
    ), refused.stderr
    assert applied("1024Mi").returncode == 0, "the same size written another way is no change"
    other = small_tenant(
        unique("storage"),
        redis={"storage": "5Gi", "resources": SMALL_WORKLOAD, "config": {"maxmemory": "64mb"}},
    )
    created = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(other), check=False)
    assert created.returncode == 0, "any size is fine on creation"
