"""The release must fit the tenant's ResourceQuota: replicas x what each pod is charged."""

from decimal import Decimal

import pytest
from postrender_builders import (
    Manifest,
    container,
    example_release,
    helm_test_hook,
    resource_quota,
    statefulset,
    to_stream,
)

from tenant_postrender import ValidationFailed, Violation, render
from tenant_postrender.budget import pod_charge
from tenant_postrender.quantity import format_bytes, format_cpu, parse_quantity


def refusals(release: list[Manifest]) -> list[Violation]:
    with pytest.raises(ValidationFailed) as refused:
        render(to_stream(release))
    return refused.value.violations


def replace(release: list[Manifest], replacement: Manifest) -> list[Manifest]:
    return [replacement if obj["kind"] == replacement["kind"] else obj for obj in release]


def test_ten_server_replicas_overflow_the_examples_two_cpu_request_budget_with_the_numbers() -> None:
    violations = refusals(example_release(server_replicas=10))
    by_key = {violation.field: violation for violation in violations}
    requests = by_key["spec.hard.requests.cpu"]
    assert requests.subject == "ResourceQuota/tenant-quota"
    assert requests.problem == (
        "the workloads request 5200m in total but the quota allows 2 "
        "(Deployment/neurallog-server 10 x 500m = 5; StatefulSet/redis 1 x 200m = 200m)"
    )
    assert "resources.cpu.request to at least 5200m" in requests.fix
    assert "10500m in total but the quota allows 4" in by_key["spec.hard.limits.cpu"].problem
    assert "5632Mi in total but the quota allows 4Gi" in by_key["spec.hard.requests.memory"].problem


def test_a_release_that_just_fits_passes() -> None:
    # requests.cpu: 3 x 500m + 200m = 1700m of 2; limits.cpu: 3 x 1 + 500m = 3500m of 4.
    render(to_stream(example_release(server_replicas=3)))


def test_storage_claims_count_per_replica() -> None:
    [violation] = refusals(replace(example_release(), statefulset(replicas=3, storage="8Gi")))
    assert violation.field == "spec.hard.requests.storage"
    assert violation.problem == (
        "the workloads claim 24Gi in total but the quota allows 20Gi (StatefulSet/redis 3 x 8Gi = 24Gi)"
    )
    assert "resources.storage.limit" in violation.fix


def test_standalone_claims_count_too() -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": example_release()[1]["metadata"] | {"name": "uploads"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Gi"}}},
    }
    [violation] = refusals([*example_release(), claim])
    assert "PersistentVolumeClaim/uploads 1 x 16Gi = 16Gi" in violation.problem


def test_short_quota_keys_mean_requests() -> None:
    quota = resource_quota()
    quota["spec"]["hard"] = {"cpu": "1"}
    [violation] = refusals(replace(example_release(), quota))
    assert violation.field == "spec.hard.cpu"
    assert "request 1200m in total" in violation.problem


def test_zero_replicas_cost_nothing() -> None:
    render(to_stream(replace(example_release(server_replicas=0), statefulset(replicas=0))))


def test_hooks_do_not_count_against_the_budget() -> None:
    hook = helm_test_hook()
    hook["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "2", "memory": "64Mi"},
        "limits": {"cpu": "2", "memory": "64Mi"},
    }
    render(to_stream([*example_release(), hook]))


def test_a_release_without_the_quota_is_refused() -> None:
    [violation] = refusals([obj for obj in example_release() if obj["kind"] != "ResourceQuota"])
    assert violation.field == "ResourceQuota tenant-quota"
    assert "no budget" in violation.problem


def test_an_invalid_quota_value_is_refused() -> None:
    quota = resource_quota()
    quota["spec"]["hard"]["limits.memory"] = "eight gigs"
    [violation] = refusals(replace(example_release(), quota))
    assert violation.field == "spec.hard.limits.memory"


def test_a_pod_is_charged_its_containers_or_its_largest_init_container() -> None:
    small = container("a", "redis", cpu=("100m", "200m"))
    spec = {
        "initContainers": [container("init", "redis", cpu=("300m", "1"))],
        "containers": [small, container("b", "redis", cpu=("150m", "200m"))],
    }
    assert pod_charge(spec, "requests", "cpu") == Decimal("0.3")
    assert pod_charge(spec, "limits", "cpu") == Decimal("1")
    assert pod_charge(spec, "requests", "memory") == 2 * 512 * 2**20


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        (2, Decimal(2)),
        (0.5, Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("512Mi", 512 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("128974848", 128974848),
        ("129e6", 129 * 10**6),
        ("1k", 1000),
        ("1Ki", 1024),
    ],
)
def test_quantities_parse_like_kubernetes(quantity: str | int | float, value: Decimal) -> None:
    assert parse_quantity(quantity) == value


@pytest.mark.parametrize("quantity", ["", "lots", "1GB", "1.2.3", "m", True, None, [1]])
def test_non_quantities_are_rejected(quantity: object) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(quantity)


def test_quantities_print_in_the_units_manifests_use() -> None:
    assert [format_cpu(Decimal(v)) for v in ("2", "0.5", "5.2", "0.0001")] == ["2", "500m", "5200m", "0.1m"]
    assert [format_bytes(Decimal(v)) for v in (2**30, 3 * 2**29, 1000)] == ["1Gi", "1536Mi", "1000"]
