"""The charts on a real API server: every rendered manifest, with and without the post-renderer, passes a
server-side dry run (admitted under Pod Security `restricted`), and charts/tenant installed with the guide's
example runs."""

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chart_support import OPERATOR_CHART, TENANT_CHART, Helm, unique_name

pytestmark = pytest.mark.cluster

EXAMPLE_VALUES = TENANT_CHART / "ci" / "example-values.yaml"
RENDERINGS = [
    pytest.param(chart, case, id=f"{chart.name}-{case.stem}")
    for chart in (TENANT_CHART, OPERATOR_CHART)
    for case in sorted((chart / "ci").glob("*-values.yaml"))
]


@pytest.mark.parametrize(("chart", "case"), RENDERINGS)
def test_rendered_manifests_pass_a_server_side_dry_run(
    kube: Any, helm: Helm, tenant_namespace: str, chart: Path, case: Path
) -> None:
    release = "tenant-operator" if chart == OPERATOR_CHART else tenant_namespace.removeprefix("tenant-")
    manifests = helm.template(
        chart, values_files=[case], release=release, namespace=tenant_namespace, extra=["--include-crds"]
    )
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests.text(), check=False)
    assert result.returncode == 0, result.stderr
    # The namespace warns about (and enforces) Pod Security `restricted`.
    assert "PodSecurity" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "case", sorted((TENANT_CHART / "ci").glob("*-values.yaml")), ids=lambda path: path.stem
)
def test_post_rendered_manifests_pass_a_server_side_dry_run(
    kube: Any, helm: Helm, tenant_namespace: str, case: Path
) -> None:
    """What the operator installs: the chart through the post-renderer, with its NetworkPolicies."""
    postrenderer = Path(sys.executable).parent / "tenant-postrender"
    if not postrenderer.exists():
        pytest.skip("tenant-postrender is not installed in this virtualenv")
    manifests = helm.template(TENANT_CHART, values_files=[case], namespace=tenant_namespace)
    rendered = subprocess.run(
        [str(postrenderer)], input=manifests.text(), capture_output=True, text=True, check=False, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered.stdout, check=False)
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr, result.stderr


def redis_password(kube: Any, namespace: str) -> str:
    secret = json.loads(kube.kubectl("get", "secret", "redis-auth", "-n", namespace, "-o", "json").stdout)
    return base64.b64decode(secret["data"]["password"]).decode()


def ready_pods(kube: Any, namespace: str, app: str) -> list[str]:
    pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json").stdout)
    return [
        pod["metadata"]["name"]
        for pod in pods["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    ]


@pytest.mark.parametrize("helm_tool", ["helm", "helm3"])
def test_the_guides_example_installs_and_runs(kube: Any, tenant_namespace: str, helm_tool: str) -> None:
    namespace = tenant_namespace
    release = unique_name("sample-tenant")

    def helm(*args: str, check: bool = True) -> Any:
        return kube.run(helm_tool, *args, check=check)

    # The example's API_KEY comes from this Secret, which the tenant provides.
    kube.kubectl(
        "create", "secret", "generic", "tenant-secrets", "--from-literal=api-key=test", "-n", namespace
    )
    helm("install", release, str(TENANT_CHART), "-n", namespace, "-f", str(EXAMPLE_VALUES))
    try:
        kube.kubectl("rollout", "status", "statefulset/redis", "-n", namespace, "--timeout=180s")
        kube.kubectl("rollout", "status", "deployment/neurallog-server", "-n", namespace, "--timeout=180s")
        assert ready_pods(kube, namespace, "redis") == ["redis-0"]
        assert len(ready_pods(kube, namespace, "neurallog-server")) == 2
        kube.kubectl(
            "wait",
            "--for=jsonpath={.status.phase}=Bound",
            "pvc/data-redis-0",
            "-n",
            namespace,
            "--timeout=120s",
        )
        claim = json.loads(kube.kubectl("get", "pvc", "data-redis-0", "-n", namespace, "-o", "json").stdout)
        assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
        quota = json.loads(
            kube.kubectl("get", "resourcequota", "tenant-quota", "-n", namespace, "-o", "json").stdout
        )
        assert quota["spec"]["hard"] == {
            "requests.cpu": "2",
            "limits.cpu": "4",
            "requests.memory": "4Gi",
            "limits.memory": "8Gi",
            "requests.storage": "20Gi",
            "services.nodeports": "0",
            "services.loadbalancers": "0",
        }

        password = redis_password(kube, namespace)
        helm("upgrade", release, str(TENANT_CHART), "-n", namespace, "-f", str(EXAMPLE_VALUES))
        assert redis_password(kube, namespace) == password, "an upgrade must keep the Redis password"
    finally:
        helm("uninstall", release, "-n", namespace, check=False)
