"""charts/tenant through the post-renderer, rendered by the real Helm 4 (plugin) and Helm 3 (executable).

No cluster is needed: `helm template` runs the post-renderer just as `helm install` does.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml
from policy_model import Pod, allows
from postrender_builders import EXAMPLE_POLICIES, policies, read_stream
from postrender_helm import CHART, EXAMPLE_VALUES, HELM3, HELM4, POSTRENDERER, HelmTool, IsolatedHelm

from tenant_postrender import render

DESIGNED = ["default-deny", "allow-dns", "server-to-redis", "redis-replication"]


def isolated(tool: HelmTool, home: Path) -> IsolatedHelm:
    if not tool.path.exists():
        pytest.skip(f"{tool.path} is not built yet (make cluster-up builds it)")
    return IsolatedHelm(tool, home)


@pytest.fixture(params=[HELM4, HELM3], ids=str)
def helm(request: pytest.FixtureRequest, tmp_path: Path) -> IsolatedHelm:
    return isolated(request.param, tmp_path)


def template(helm: IsolatedHelm, *args: str, check: bool = True) -> tuple[int, str, str]:
    # Offline, a Helm 3 built without version stamps assumes Kubernetes 1.20, below the chart's kubeVersion.
    result = helm.run(
        "template",
        "sample-tenant",
        str(CHART),
        "--namespace",
        "tenant-sample-tenant",
        "--kube-version",
        "1.37.0",
        *args,
        check=check,
    )
    return result.returncode, result.stdout, result.stderr


def test_the_guide_example_gets_its_policies_through_helm(helm: IsolatedHelm) -> None:
    _, stdout, _ = template(helm, "-f", str(EXAMPLE_VALUES), "--post-renderer", POSTRENDERER)
    objects = read_stream(stdout)
    assert sorted(policies(objects)) == sorted(EXAMPLE_POLICIES)
    assert not [
        obj for obj in objects if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("policy")
    ]
    # Helm 4 strips its filename annotation again after post-rendering.
    assert "postrenderer.helm.sh" not in stdout


@pytest.mark.parametrize("values", sorted(p.name for p in (CHART / "ci").glob("*-values.yaml")))
def test_every_ci_values_file_of_the_chart_passes_the_post_renderer(helm: IsolatedHelm, values: str) -> None:
    _, stdout, _ = template(helm, "-f", str(CHART / "ci" / values), "--post-renderer", POSTRENDERER)
    network_policy = (yaml.safe_load((CHART / "ci" / values).read_text()) or {}).get("networkPolicy", {})
    expected = DESIGNED if network_policy.get("enabled", True) else []
    assert list(policies(read_stream(stdout)))[:4] == expected


def test_a_refusal_reaches_the_user_and_helm_renders_nothing(helm: IsolatedHelm) -> None:
    code, stdout, stderr = template(
        helm,
        "-f",
        str(EXAMPLE_VALUES),
        "--set",
        "server.replicas=10",
        "--post-renderer",
        POSTRENDERER,
        check=False,
    )
    assert code != 0
    assert stdout == ""
    assert "tenant-postrender refused the release" in stderr
    assert "requests.cpu: the workloads request 5700m during a rollout but the quota allows 2" in stderr


def test_the_registry_allow_list_passes_through_post_renderer_args(helm: IsolatedHelm) -> None:
    code, _, stderr = template(
        helm,
        "-f",
        str(EXAMPLE_VALUES),
        "--post-renderer",
        POSTRENDERER,
        "--post-renderer-args",
        "--allowed-registry=ghcr.io",
        check=False,
    )
    assert code != 0
    assert "docker.io/neurallog/server) is not from an allowed registry" in stderr


def test_render_takes_the_chart_as_helm_renders_it(tmp_path: Path) -> None:
    # The operator's path: the Python API on the stream Helm would hand the post-renderer.
    _, stdout, _ = template(isolated(HELM3, tmp_path), "-f", str(EXAMPLE_VALUES))
    assert tuple(policies(read_stream(render(stdout)))) == EXAMPLE_POLICIES


def pods_of(objects: list[dict[str, Any]], namespace: str) -> dict[str, Pod]:
    """One pod of each workload and each bare Pod (the test hooks) of a rendering, with its labels."""
    found = {}
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] in ("Deployment", "StatefulSet"):
            found[name] = Pod(name, namespace, obj["spec"]["template"]["metadata"]["labels"])
        elif obj["kind"] == "Pod":
            found[name] = Pod(name, namespace, obj["metadata"]["labels"])
    return found


@pytest.mark.parametrize("port", [3030, 8080])
def test_the_charts_test_pods_reach_redis_and_the_server_through_the_injected_policies(
    helm: IsolatedHelm, tmp_path: Path, port: int
) -> None:
    """The labels of the chart's pods and hooks and the post-renderer's policies agree: each test pod reaches
    Redis on 6379 and the server on the port it listens on, and nothing else of the tenant."""
    values = tmp_path / "port.yaml"
    values.write_text(yaml.safe_dump({"server": {"env": [{"name": "PORT", "value": str(port)}]}}))
    _, stdout, _ = template(helm, "-f", str(EXAMPLE_VALUES), "-f", str(values))
    objects = read_stream(render(stdout))
    found = list(policies(objects).values())
    pods = pods_of(objects, "tenant-sample-tenant")
    server, redis = pods["neurallog-server"], pods["redis"]
    for test in (pods["tenant-test-redis"], pods["tenant-test-server"]):
        assert allows(found, test, redis, 6379)
        assert allows(found, test, server, port)
        assert not allows(found, test, server, 6379)
        assert not allows(found, test, redis, port)
        assert not allows(found, server, test, port)
