"""`helm install` of charts/tenant with the guide's example values through the post-renderer, on the cluster:
with Helm 4 (the plugin) and Helm 3 (the executable). The designed NetworkPolicies exist and the pods become
Ready in a namespace that enforces Pod Security `restricted`; a release over budget is refused whole."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postrender_builders import EXAMPLE_POLICIES
from postrender_helm import CHART, EXAMPLE_VALUES, HELM3, HELM4, POSTRENDERER, HelmTool, IsolatedHelm

pytestmark = pytest.mark.cluster


@pytest.fixture(params=[HELM4, HELM3], ids=str)
def tenant(
    request: pytest.FixtureRequest, kube: Any, tmp_path: Path
) -> Iterator[tuple[IsolatedHelm, str, str]]:
    """(helm, release, namespace): a fresh tenant namespace as the operator makes it, removed afterwards."""
    tool: HelmTool = request.param
    # A fresh name each time: the namespace of the previous test may still be terminating.
    release = f"postrender-{tool.executable}-{uuid.uuid4().hex[:8]}"
    namespace = f"tenant-{release}"
    kube.kubectl("create", "namespace", namespace)
    kube.kubectl(
        "label",
        "namespace",
        namespace,
        f"neurallog.io/tenant={release}",
        "pod-security.kubernetes.io/enforce=restricted",
    )
    # The guide's example takes API_KEY from this Secret.
    kube.kubectl("create", "secret", "generic", "tenant-secrets", "-n", namespace, "--from-literal=api-key=k")
    helm = IsolatedHelm(tool, tmp_path, kube.env)
    yield helm, release, namespace
    helm.run("uninstall", release, "-n", namespace, "--wait", check=False)
    kube.kubectl("delete", "namespace", namespace, "--wait=false")


def install(
    helm: IsolatedHelm, release: str, namespace: str, *args: str, check: bool = True, command: str = "install"
) -> tuple[int, str]:
    result = helm.run(
        command,
        release,
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(EXAMPLE_VALUES),
        "--post-renderer",
        POSTRENDERER,
        "--wait",
        "--timeout",
        "5m",
        *args,
        check=check,
    )
    return result.returncode, result.stderr


def items(kube: Any, kind: str, namespace: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(kube.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    return found


def test_the_guide_example_installs_with_its_network_policies_and_ready_pods(
    kube: Any, tenant: tuple[IsolatedHelm, str, str]
) -> None:
    helm, release, namespace = tenant
    install(helm, release, namespace)
    policies = {policy["metadata"]["name"]: policy for policy in items(kube, "networkpolicies", namespace)}
    assert set(policies) == set(EXAMPLE_POLICIES)
    assert policies["allow-namespaces"]["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}
        for name in ("default", "monitoring")
    ]
    assert "tenant-network-policy" not in {
        config["metadata"]["name"] for config in items(kube, "configmaps", namespace)
    }
    kube.kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", namespace, "--timeout=300s")
    pods = items(kube, "pods", namespace)
    assert sorted(pod["metadata"]["labels"]["app"] for pod in pods) == [
        "neurallog-server",
        "neurallog-server",
        "redis",
    ]
    # The policies are part of the release: an upgrade that drops a rule removes its policy.
    manifest = helm.run("get", "manifest", release, "-n", namespace).stdout
    assert manifest.count("kind: NetworkPolicy") == len(EXAMPLE_POLICIES)
    install(helm, release, namespace, "--set-json", "networkPolicy.egressRules=[]", command="upgrade")
    remaining = {policy["metadata"]["name"] for policy in items(kube, "networkpolicies", namespace)}
    assert remaining == set(EXAMPLE_POLICIES) - {"egress-0", "egress-0-peers"}


def test_a_release_over_budget_is_refused_and_nothing_is_applied(
    kube: Any, tenant: tuple[IsolatedHelm, str, str]
) -> None:
    helm, release, namespace = tenant
    code, stderr = install(helm, release, namespace, "--set", "server.replicas=10", check=False)
    assert code != 0
    assert "requests.cpu: the workloads request 5700m during a rollout but the quota allows 2" in stderr
    assert items(kube, "deployments,statefulsets,networkpolicies,resourcequotas", namespace) == []
    assert helm.run("list", "-n", namespace, "-q").stdout.strip() == ""


def helm_test(helm: IsolatedHelm, release: str, namespace: str, *only: str) -> tuple[int, str]:
    """`helm test` of the release (only the named test pods when given), its exit status and output."""
    filters = [arg for name in only for arg in ("--filter", f"name={name}")]
    result = helm.run("test", release, "-n", namespace, "--timeout", "3m", *filters, check=False)
    return result.returncode, result.stdout + result.stderr


def test_helm_test_passes_through_the_policies_and_fails_when_a_path_breaks(
    kube: Any, tenant: tuple[IsolatedHelm, str, str]
) -> None:
    helm, release, namespace = tenant
    if not helm.tool.plugin:
        pytest.skip("`helm test` runs the same with either Helm; Helm 4 covers it")
    install(helm, release, namespace)
    kube.kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", namespace, "--timeout=300s")
    code, output = helm_test(helm, release, namespace)
    assert code == 0, output
    tests = items(kube, "pods", namespace)
    assert {
        pod["metadata"]["name"]: pod["status"]["phase"]
        for pod in tests
        if pod["metadata"]["labels"]["app"] == "tenant-test"
    } == {
        "tenant-test-redis": "Succeeded",
        "tenant-test-server": "Succeeded",
    }
    # No ReplicaSet adopted a test pod.
    assert all(
        not pod["metadata"].get("ownerReferences")
        for pod in tests
        if pod["metadata"]["labels"]["app"] == "tenant-test"
    )
    # A server whose Redis is gone is unhealthy.
    kube.kubectl("scale", "statefulset", "redis", "-n", namespace, "--replicas=0")
    kube.kubectl("wait", "--for=delete", "pod", "redis-0", "-n", namespace, "--timeout=120s")
    code, output = helm_test(helm, release, namespace, "tenant-test-server")
    assert code != 0, output
    kube.kubectl("scale", "statefulset", "redis", "-n", namespace, "--replicas=1")
    kube.kubectl("rollout", "status", "statefulset", "redis", "-n", namespace, "--timeout=300s")
    code, output = helm_test(helm, release, namespace, "tenant-test-server")
    assert code == 0, output
    # A policy that drops the path of the tests fails them.
    kube.kubectl("delete", "networkpolicy", "helm-test-server", "-n", namespace)
    code, output = helm_test(helm, release, namespace, "tenant-test-server")
    assert code != 0, output
    # A password that is not the one Redis runs with is refused (Redis read its password at start).
    kube.kubectl(
        "patch",
        "secret",
        "redis-auth",
        "-n",
        namespace,
        "-p",
        '{"stringData": {"password": "not-the-password"}}',
    )
    code, output = helm_test(helm, release, namespace, "tenant-test-redis")
    assert code != 0, output
