"""The release must fit the tenant's ResourceQuota: replicas x what each pod is charged, and during a rollout
the extra pods a rolling update starts (the Deployment's maxSurge) too."""

from decimal import Decimal

import pytest
from postrender_builders import (
    Manifest,
    container,
    deployment,
    example_release,
    helm_test_hook,
    resource_quota,
    statefulset,
    to_stream,
)

from tenant_postrender import ValidationFailed, Violation, render
from tenant_postrender.budget import pod_charge, surge_pods
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
        "the workloads request 5700m during a rollout but the quota allows 2: 5200m for the running pods and "
        "500m for the 1 extra pod a rolling update starts before it stops old ones "
        "(Deployment/neurallog-server (10 + 1 surge) x 500m = 5500m; StatefulSet/redis 1 x 200m = 200m)"
    )
    assert "resources.cpu.request to at least 5700m" in requests.fix
    assert "11500m during a rollout but the quota allows 4" in by_key["spec.hard.limits.cpu"].problem
    assert "6Gi during a rollout but the quota allows 4Gi" in by_key["spec.hard.requests.memory"].problem


# The guide's example (2 servers at 500m/1 CPU and 512Mi/1Gi, one Redis at 200m/500m and 512Mi/1Gi) needs
# this much while it runs, and one more server pod while the chart's strategy rolls it out.
RUNNING = {"cpu": ("1200m", "2500m"), "memory": ("1536Mi", "3Gi")}
ROLLING_OUT = {"cpu": ("1700m", "3500m"), "memory": ("2Gi", "4Gi")}


def with_budget(release: list[Manifest], budget: dict[str, tuple[str, str]]) -> list[Manifest]:
    return replace(release, resource_quota(cpu=budget["cpu"], memory=budget["memory"]))


def test_a_release_that_fits_only_without_its_surge_is_refused_with_the_rollout_numbers() -> None:
    violations = refusals(with_budget(example_release(), RUNNING))
    by_key = {violation.field: violation for violation in violations}
    assert set(by_key) == {
        f"spec.hard.{key}" for key in ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory")
    }
    requests = by_key["spec.hard.requests.cpu"]
    assert requests.problem == (
        "the workloads request 1700m during a rollout but the quota allows 1200m: 1200m for the running pods "
        "and 500m for the 1 extra pod a rolling update starts before it stops old ones "
        "(Deployment/neurallog-server (2 + 1 surge) x 500m = 1500m; StatefulSet/redis 1 x 200m = 200m)"
    )
    assert requests.fix == (
        "lower replicas or the per-pod CPU request, "
        "or raise the tenant's resources.cpu.request to at least 1700m"
    )
    assert by_key["spec.hard.limits.memory"].problem.startswith(
        "the workloads are limited to 4Gi during a rollout but the quota allows 3Gi: "
        "3Gi for the running pods and 1Gi for the 1 extra pod"
    )


def test_a_release_with_room_for_its_rollout_passes_to_the_unit() -> None:
    render(to_stream(with_budget(example_release(), ROLLING_OUT)))
    short = ROLLING_OUT | {"cpu": ("1699m", "3500m")}
    [violation] = refusals(with_budget(example_release(), short))
    assert violation.field == "spec.hard.requests.cpu"


def test_recreate_stops_the_old_pods_first_and_needs_no_room() -> None:
    release = replace(example_release(), deployment(strategy={"type": "Recreate"}))
    render(to_stream(with_budget(release, RUNNING)))


def test_kubernetes_default_strategy_surges_a_quarter_of_the_replicas_rounded_up() -> None:
    # No strategy in the manifest: the API server's default, maxSurge 25% (10 replicas: 2.5, so 3 pods).
    release = replace(example_release(), deployment(replicas=10, strategy={}))
    by_key = {violation.field: violation for violation in refusals(release)}
    requests = by_key["spec.hard.requests.cpu"].problem
    assert "request 6700m during a rollout" in requests
    assert "1500m for the 3 extra pods a rolling update starts" in requests
    assert "Deployment/neurallog-server (10 + 3 surge) x 500m = 6500m" in requests


def rolling_update(**fields: object) -> dict[str, object]:
    return {"type": "RollingUpdate", "rollingUpdate": fields}


@pytest.mark.parametrize(
    ("strategy", "replicas", "surge"),
    [
        pytest.param({}, 1, 1, id="default 25% of 1 rounds up to 1"),
        pytest.param({}, 4, 1, id="default 25% of 4"),
        pytest.param({}, 5, 2, id="default 25% of 5 rounds up to 2"),
        pytest.param({"type": "RollingUpdate"}, 10, 3, id="RollingUpdate without fields is 25%"),
        pytest.param(rolling_update(maxUnavailable=1), 8, 2, id="maxSurge absent is 25%"),
        pytest.param(rolling_update(maxSurge="30%"), 3, 1, id="30% of 3 rounds up to 1"),
        pytest.param(rolling_update(maxSurge="50%"), 3, 2, id="50% of 3 rounds up to 2"),
        pytest.param(rolling_update(maxSurge="100%"), 3, 3, id="100%"),
        pytest.param(rolling_update(maxSurge="0%", maxUnavailable=1), 3, 0, id="0%"),
        pytest.param(rolling_update(maxSurge=2), 5, 2, id="absolute"),
        pytest.param(rolling_update(maxSurge=0, maxUnavailable=1), 5, 0, id="absolute 0"),
        pytest.param(rolling_update(maxSurge=3), 1, 1, id="never more new pods than replicas"),
        pytest.param(rolling_update(maxSurge=1), 0, 0, id="no replicas, no rollout"),
        pytest.param({"type": "Recreate"}, 5, 0, id="Recreate"),
        pytest.param(rolling_update(maxSurge="1"), 8, 2, id="invalid (refused by the API) counts as 25%"),
    ],
)
def test_a_deployments_surge_is_its_max_surge_as_kubernetes_resolves_it(
    strategy: dict[str, object], replicas: int, surge: int
) -> None:
    assert surge_pods(deployment(replicas=replicas, strategy=strategy), replicas) == surge


def test_statefulsets_and_daemonsets_roll_without_surge_unless_a_daemonset_asks() -> None:
    redis = statefulset(replicas=3)
    redis["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert surge_pods(redis, 3) == 0
    # One pod per node, counted on one node: the default maxSurge of a DaemonSet is 0.
    daemons = {"kind": "DaemonSet", "spec": {"updateStrategy": {"type": "RollingUpdate"}}}
    assert surge_pods(daemons, 1) == 0
    daemons["spec"]["updateStrategy"]["rollingUpdate"] = {"maxSurge": "10%", "maxUnavailable": 0}
    assert surge_pods(daemons, 1) == 1
    assert surge_pods({"kind": "Pod", "spec": {}}, 1) == 0


def test_redis_replicas_need_no_room_to_roll_out() -> None:
    # Three Redis pods and one server with its surge, to the unit: requests.cpu 3 x 200m + (1 + 1) x 500m.
    release = replace(example_release(server_replicas=1), statefulset(replicas=3))
    render(to_stream(with_budget(release, {"cpu": ("1600m", "3500m"), "memory": ("2560Mi", "5Gi")})))


@pytest.mark.parametrize("key", ["pods", "count/pods"])
def test_a_quota_on_pods_counts_the_surge_pod_too(key: str) -> None:
    quota = resource_quota()
    quota["spec"]["hard"][key] = 3
    [violation] = refusals(replace(example_release(), quota))
    assert violation.field == f"spec.hard.{key}"
    assert violation.problem == (
        "the workloads run 4 pods during a rollout but the quota allows 3: 3 for the running pods and 1 for "
        "the 1 extra pod a rolling update starts before it stops old ones "
        "(Deployment/neurallog-server (2 + 1 surge) x 1 = 3; StatefulSet/redis 1 x 1 = 1)"
    )
    assert violation.fix == f"lower replicas, or raise spec.hard.{key} to at least 4"
    quota["spec"]["hard"][key] = "4"
    render(to_stream(replace(example_release(), quota)))


def test_storage_claims_count_per_replica() -> None:
    [violation] = refusals(
        replace(example_release(server_replicas=1), statefulset(replicas=3, storage="8Gi"))
    )
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
    assert "request 1700m during a rollout" in violation.problem


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
