"""The `helm test` hooks of charts/tenant (templates/tests/), rendered with `helm template`: what each checks,
that they are admissible under Pod Security `restricted`, that no workload adopts them, that the post-renderer
accepts them, and that they leave a release that just fits its budget alone."""

from decimal import Decimal
from pathlib import Path

import pytest
from chart_support import TENANT_CHART, Doc, Helm, Manifests, sample_tenant

from tenant_postrender import ValidationFailed, render
from tenant_postrender.budget import charges, pod_charge
from tenant_postrender.quantity import parse_quantity

TESTS = ("tenant-test-redis", "tenant-test-server")
CI_CASES = sorted((TENANT_CHART / "ci").glob("*-values.yaml"))
QUOTA_KEYS = ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory")


def hooks(manifests: Manifests) -> dict[str, Doc]:
    return {name: manifests.get("Pod", name) for name in TESTS}


def script(pod: Doc) -> str:
    (only,) = pod["spec"]["containers"]
    assert only["command"] == ["sh", "-c"]
    text: str = only["args"][0]
    return text


@pytest.fixture(scope="module")
def defaults(helm: Helm) -> Manifests:
    return helm.template(TENANT_CHART)


def test_each_test_is_a_helm_test_hook_kept_until_the_next_run_redis_first(defaults: Manifests) -> None:
    weights = {}
    for name, pod in hooks(defaults).items():
        annotations = pod["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "test", name
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation", name
        weights[name] = int(annotations["helm.sh/hook-weight"])
        assert pod["metadata"]["namespace"] == "tenant-sample-tenant"
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never", name
        assert 0 < spec["activeDeadlineSeconds"] <= 120, name
    assert weights["tenant-test-redis"] < weights["tenant-test-server"]


def test_redis_test_pings_the_redis_service_with_the_password_of_redis_auth(defaults: Manifests) -> None:
    pod = hooks(defaults)["tenant-test-redis"]
    (probe,) = pod["spec"]["containers"]
    assert probe["env"] == [
        {"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}
    ]
    assert "redis-cli -h redis -p 6379 ping" in script(pod)
    # Only PONG passes: redis-cli may exit 0 after printing NOAUTH or WRONGPASS.
    assert '[ "$reply" = PONG ] && exit 0' in script(pod)
    assert script(pod).rstrip().endswith("exit 1")


def test_server_test_gets_the_health_endpoint_through_the_service(defaults: Manifests) -> None:
    pod = hooks(defaults)["tenant-test-server"]
    service = defaults.get("Service", "neurallog-server")["spec"]["ports"][0]
    url = f"http://{defaults.get('Service', 'neurallog-server')['metadata']['name']}:{service['port']}/health"
    assert url == "http://neurallog-server:3030/health"
    assert f"timeout 5 wget -q -O - {url}" in script(pod)
    assert script(pod).rstrip().endswith("exit 1")
    assert "env" not in pod["spec"]["containers"][0], "the server test needs no secret"


@pytest.mark.parametrize("image", ["redis:7-alpine", "registry.example/tools/redis:7.2"])
def test_tests_run_in_the_charts_redis_image(helm: Helm, image: str) -> None:
    manifests = helm.template(TENANT_CHART, {"redis": {"image": image}})
    for pod in hooks(manifests).values():
        assert [container["image"] for container in pod["spec"]["containers"]] == [image]


@pytest.mark.parametrize("case", CI_CASES, ids=lambda path: path.stem)
def test_tests_are_admissible_under_pod_security_restricted(helm: Helm, case: Path) -> None:
    for name, pod in hooks(helm.template(TENANT_CHART, values_files=[case])).items():
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name
        assert not {"hostNetwork", "hostPID", "hostIPC", "volumes", "initContainers"} & spec.keys(), name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        (container,) = spec["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        assert container["resources"] == {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "32Mi"},
        }, name
        assert "ports" not in container, name


def test_no_workload_or_service_selects_a_test_pod(defaults: Manifests) -> None:
    """A pod that a ReplicaSet's selector matches is adopted (and deleted as a surplus replica); one that a
    Service selects gets the Service's traffic."""
    selectors = [doc["spec"]["selector"]["matchLabels"] for doc in defaults.of_kind("Deployment")]
    selectors += [doc["spec"]["selector"]["matchLabels"] for doc in defaults.of_kind("StatefulSet")]
    selectors += [doc["spec"]["selector"] for doc in defaults.of_kind("Service")]
    assert len(selectors) == 5
    for name, pod in hooks(defaults).items():
        labels = pod["metadata"]["labels"]
        assert labels["app"] == "tenant-test", name
        assert labels["app.kubernetes.io/component"] == "test", name
        for selector in selectors:
            assert not selector.items() <= labels.items(), (name, selector)


@pytest.mark.parametrize("case", CI_CASES, ids=lambda path: path.stem)
def test_the_post_renderer_accepts_the_release_with_its_tests(helm: Helm, case: Path) -> None:
    manifests = helm.template(TENANT_CHART, values_files=[case])
    rendered = render(manifests.text())
    assert rendered.count("helm.sh/hook: test") == len(TESTS)


@pytest.mark.parametrize("case", CI_CASES, ids=lambda path: path.stem)
def test_every_ci_case_leaves_room_for_one_test_pod_beside_the_release(helm: Helm, case: Path) -> None:
    """ct install runs `helm test` after installing each case: the quota charges the running test pod."""
    manifests = helm.template(TENANT_CHART, values_files=[case])
    hard = manifests.get("ResourceQuota", "tenant-quota")["spec"]["hard"]
    release = [doc for doc in manifests.docs if doc["kind"] != "Pod"]
    for key in QUOTA_KEYS:
        section, _, resource = key.partition(".")
        steady = sum((charge.total for charge in charges(release, key)), Decimal(0))
        largest_test = max(pod_charge(pod["spec"], section, resource) for pod in hooks(manifests).values())
        assert steady + largest_test <= parse_quantity(hard[key]), (case.name, key)


def test_a_release_that_just_fits_its_budget_installs_with_its_tests(helm: Helm) -> None:
    """Hooks are not counted in the budget: workloads that take the whole budget (with the room of one
    rollout pod) still pass."""
    spec = sample_tenant()["spec"]
    # Two servers at 500m/1 CPU and 512Mi/1Gi, one more during a rollout, plus one Redis at 200m/500m and
    # 512Mi/1Gi, to the unit.
    spec["resources"] = {
        "cpu": {"request": "1700m", "limit": "3500m"},
        "memory": {"request": "2Gi", "limit": "4Gi"},
        "storage": {"request": "5Gi", "limit": "5Gi"},
    }
    manifests = helm.template(TENANT_CHART, spec)
    render(manifests.text())
    # The same budget one millicore smaller is refused: the fit is exact, and the tests were not counted.
    spec["resources"]["cpu"]["request"] = "1699m"
    with pytest.raises(ValidationFailed, match=r"requests\.cpu"):
        render(helm.template(TENANT_CHART, spec).text())
