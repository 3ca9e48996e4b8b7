"""Namespace guard rails, the multi-tenancy benchmark's namespace-level checks.

In a tenant namespace made and installed as the operator does it: the ResourceQuota and LimitRange are there;
Services of type NodePort and LoadBalancer are refused and ClusterIP ones accepted; Pod Security `restricted`
refuses privileged pods, host paths, host namespaces and added capabilities, and accepts a pod that meets it.
The operator's ServiceAccount has no escalate, impersonate or wildcard rule, and `bind` only on roles named in
the rule, both in the rendered chart and as the API server answers for the installed chart.

Requests are dry runs on the server: admission (Pod Security, quota) runs on them, nothing is stored.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenant_postrender import render
from tests.charts.chart_support import OPERATOR_CHART, Helm, find_tool
from tests.conftest import Kube
from tests.postrender.postrender_helm import CHART

Doc = dict[str, Any]
cluster = pytest.mark.cluster


def dry_run_create(kube: Kube, namespace: str, manifest: Doc) -> tuple[bool, str]:
    """Whether the API server admits the object (server-side dry run), and what it said."""
    result = kube.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    return result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def helm() -> Helm:
    binary = find_tool("helm")
    if binary is None:
        pytest.skip("no helm binary: run `make cluster-up` (it builds .cluster/bin/helm) or put helm on PATH")
    return Helm(binary)


# 1. The budget objects.


@cluster
def test_the_tenant_namespace_has_its_quota_and_limit_range(kube: Kube, tenant_namespace: str) -> None:
    quota = json.loads(
        kube.kubectl("get", "resourcequota", "tenant-quota", "-n", tenant_namespace, "-o", "json").stdout
    )
    assert set(quota["spec"]["hard"]) == {
        "requests.cpu",
        "limits.cpu",
        "requests.memory",
        "limits.memory",
        "requests.storage",
        "services.nodeports",
        "services.loadbalancers",
    }
    assert quota["spec"]["hard"]["services.nodeports"] == "0"
    assert quota["spec"]["hard"]["services.loadbalancers"] == "0"
    # Computed by the quota controller, so enforced.
    assert quota["status"]["hard"] == quota["spec"]["hard"]

    limit_range = json.loads(
        kube.kubectl("get", "limitrange", "tenant-limits", "-n", tenant_namespace, "-o", "json").stdout
    )
    (container,) = [limit for limit in limit_range["spec"]["limits"] if limit["type"] == "Container"]
    for section in ("default", "defaultRequest"):
        assert set(container[section]) == {"cpu", "memory"}, section


# 2. Services that expose the tenant beyond the cluster network.


def service(kind: str, **spec: Any) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"guard-{kind.lower()}"},
        "spec": {"type": kind, "selector": {"app": "neurallog-server"}, "ports": [{"port": 80}], **spec},
    }


@cluster
@pytest.mark.parametrize(
    ("manifest", "quota_key"),
    [
        pytest.param(service("NodePort"), "services.nodeports", id="NodePort"),
        # Without node ports, only the load balancer quota can refuse it.
        pytest.param(
            service("LoadBalancer", allocateLoadBalancerNodePorts=False),
            "services.loadbalancers",
            id="LoadBalancer",
        ),
    ],
)
def test_node_port_and_load_balancer_services_are_refused(
    kube: Kube, tenant_namespace: str, manifest: Doc, quota_key: str
) -> None:
    admitted, output = dry_run_create(kube, tenant_namespace, manifest)
    assert not admitted, output
    assert "exceeded quota: tenant-quota" in output, output
    assert f"limited: {quota_key}=0" in output, output


@cluster
def test_a_cluster_ip_service_is_accepted(kube: Kube, tenant_namespace: str) -> None:
    admitted, output = dry_run_create(kube, tenant_namespace, service("ClusterIP"))
    assert admitted, output


def test_the_post_renderer_accepts_the_release_with_the_service_quota(helm: Helm) -> None:
    """The budget check adds up only the keys a Tenant sets; the Service keys pass through untouched."""
    rendered = render(helm.run("template", "sample", CHART, "-n", "tenant-sample").stdout)
    (quota,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "ResourceQuota"]
    assert quota["spec"]["hard"]["services.nodeports"] == "0"
    assert quota["spec"]["hard"]["services.loadbalancers"] == "0"


# 3. Pod Security `restricted`.


def restricted_pod() -> Doc:
    """A pod that meets Pod Security `restricted` (resources come from the LimitRange)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "guard-pod"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "securityContext": {
                        "runAsUser": 65532,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def privileged(spec: Doc) -> None:
    context = spec["containers"][0]["securityContext"]
    # Validation itself refuses privileged together with allowPrivilegeEscalation=false, before admission.
    del context["allowPrivilegeEscalation"]
    context["privileged"] = True


def host_path(spec: Doc) -> None:
    spec["volumes"] = [{"name": "host", "hostPath": {"path": "/etc"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "host", "mountPath": "/host"}]


def net_admin(spec: Doc) -> None:
    spec["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]


def pod_field(field: str) -> Callable[[Doc], None]:
    def change(spec: Doc) -> None:
        spec[field] = True

    return change


@cluster
@pytest.mark.parametrize(
    ("change", "rule"),
    [
        pytest.param(
            privileged,
            'privileged (container "app" must not set securityContext.privileged=true)',
            id="privileged",
        ),
        pytest.param(
            host_path,
            'restricted volume types (volume "host" uses restricted volume type "hostPath")',
            id="hostPath",
        ),
        pytest.param(pod_field("hostNetwork"), "host namespaces (hostNetwork=true)", id="hostNetwork"),
        pytest.param(pod_field("hostPID"), "host namespaces (hostPID=true)", id="hostPID"),
        pytest.param(pod_field("hostIPC"), "host namespaces (hostIPC=true)", id="hostIPC"),
        pytest.param(
            net_admin,
            'unrestricted capabilities (container "app" must not include "NET_ADMIN" in '
            "securityContext.capabilities.add)",
            id="NET_ADMIN",
        ),
    ],
)
def test_pods_that_break_restricted_are_refused_naming_the_rule(
    kube: Kube, tenant_namespace: str, change: Callable[[Doc], None], rule: str
) -> None:
    pod = restricted_pod()
    change(pod["spec"])
    admitted, output = dry_run_create(kube, tenant_namespace, pod)
    assert not admitted, output
    assert 'violates PodSecurity "restricted:latest"' in output, output
    assert rule in output, output


@cluster
def test_a_pod_that_meets_restricted_is_accepted(kube: Kube, tenant_namespace: str) -> None:
    admitted, output = dry_run_create(kube, tenant_namespace, restricted_pod())
    assert admitted, output


# 4. The operator's own permissions.


def rule_problems(rule: Doc) -> list[str]:
    """What is wrong with one RBAC rule: a wildcard (`*`, or one in `pods/*` or `*/scale`), escalate,
    impersonate, or bind on roles not named."""
    problems = [
        f"* in {field}"
        for field in ("apiGroups", "resources", "verbs", "nonResourceURLs")
        if any("*" in value for value in rule.get(field, []))
    ]
    problems += [f"verb {verb}" for verb in ("escalate", "impersonate") if verb in rule.get("verbs", [])]
    if "bind" in rule.get("verbs", []) and not rule.get("resourceNames"):
        problems.append("bind without resourceNames")
    return problems


def role_problems(role: Doc) -> list[str]:
    """What is wrong with a ClusterRole or Role: its rules' problems; an aggregated role takes in rules from
    any ClusterRole with the right labels, so it is a problem too."""
    name = f"{role['kind']}/{role['metadata']['name']}"
    problems = [f"{name}: aggregationRule"] if role.get("aggregationRule") else []
    for index, rule in enumerate(role.get("rules") or []):
        problems += [f"{name} rule {index} {rule}: {problem}" for problem in rule_problems(rule)]
    return problems


@pytest.mark.parametrize(
    ("rule", "problems"),
    [
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, []),
        ({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, ["* in apiGroups"]),
        ({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}, ["* in resources"]),
        ({"apiGroups": [""], "resources": ["pods", "pods/*"], "verbs": ["get"]}, ["* in resources"]),
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}, ["* in verbs"]),
        ({"nonResourceURLs": ["*"], "verbs": ["get"]}, ["* in nonResourceURLs"]),
        (
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]},
            ["verb escalate"],
        ),
        ({"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}, ["verb impersonate"]),
        (
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"]},
            ["bind without resourceNames"],
        ),
        (
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "verbs": ["bind"],
                "resourceNames": ["tenant-operator-tenant"],
            },
            [],
        ),
    ],
)
def test_the_rule_check_itself(rule: Doc, problems: list[str]) -> None:
    assert rule_problems(rule) == problems


OPERATOR_VALUES = [None, *sorted((OPERATOR_CHART / "ci").glob("*.yaml"))]


@pytest.mark.parametrize("values", OPERATOR_VALUES, ids=lambda path: path.stem if path else "defaults")
def test_the_operator_chart_grants_no_escalate_impersonate_wildcard_or_unnamed_bind(
    helm: Helm, values: Path | None
) -> None:
    manifests = helm.template(
        OPERATOR_CHART, release="tenant-operator", namespace="system", values_files=[values] if values else []
    )
    roles = [doc for doc in manifests.docs if doc["kind"] in ("ClusterRole", "Role")]
    assert any(role.get("rules") for role in roles), "no rules rendered: nothing was checked"
    assert [problem for role in roles for problem in role_problems(role)] == []


RBAC = "rbac.authorization.k8s.io"
FORBIDDEN = [
    ("impersonate", "users"),
    ("impersonate", "groups"),
    ("impersonate", "serviceaccounts"),
    ("escalate", f"clusterroles.{RBAC}"),
    ("escalate", f"roles.{RBAC}"),
    ("bind", f"clusterroles.{RBAC}"),
    ("bind", f"roles.{RBAC}"),
    ("bind", f"clusterroles.{RBAC}/cluster-admin"),
    ("bind", f"clusterroles.{RBAC}/admin"),
    ("*", "*"),
]


@cluster
@pytest.mark.parametrize(("verb", "resource"), FORBIDDEN)
def test_the_operators_account_cannot_impersonate_escalate_or_bind_freely(
    kube: Kube, operator_account: str, verb: str, resource: str
) -> None:
    result = kube.kubectl(
        "auth", "can-i", verb, resource, "--all-namespaces", f"--as={operator_account}", check=False
    )
    assert result.stdout.strip() == "no", (result.stdout, result.stderr)
