"""charts/tenant-operator rendered with `helm template`: least-privilege RBAC, the hardened operator
Deployment that the guide's commands find, the metrics Service and the admission guard."""

import json

import pytest
from chart_support import CRD_FILE, OPERATOR_CHART, Doc, Helm, Manifests

from tenant_operator.settings import SELECTOR_PATTERN

RELEASE = "tenant-operator"
NAMESPACE = "system"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
READ = ("get", "list", "watch")
TENANT_ROLE = f"{RELEASE}-tenant"
# Every (API group, resource, verb) the operator may use cluster-wide, and nothing else: no Secret at all.
EXPECTED_PERMISSIONS = {
    *(("neurallog.io", "tenants", verb) for verb in ("get", "list", "watch", "patch", "update")),
    ("neurallog.io", "tenants/status", "patch"),
    ("neurallog.io", "tenants/status", "update"),
    ("neurallog.io", "tenants/finalizers", "update"),
    *(("apiextensions.k8s.io", "customresourcedefinitions", verb) for verb in READ),
    *(("", "namespaces", verb) for verb in ("get", "list", "watch", "create", "patch", "delete")),
    *((group, "events", verb) for group in ("", "events.k8s.io") for verb in ("create", "patch")),
    *(
        ("", resource, verb)
        for resource in ("pods", "services", "resourcequotas", "limitranges")
        for verb in READ
    ),
    *(("apps", resource, verb) for resource in ("statefulsets", "deployments") for verb in READ),
    *(("networking.k8s.io", "networkpolicies", verb) for verb in READ),
    ("rbac.authorization.k8s.io", "rolebindings", "create"),
    ("rbac.authorization.k8s.io", "clusterroles", "bind"),
}
# What it may do inside a tenant namespace, where it binds the tenant role.
EXPECTED_TENANT_PERMISSIONS = {
    *(
        ("", resource, verb)
        for resource in ("resourcequotas", "limitranges", "secrets", "configmaps", "services")
        for verb in ALL_VERBS
    ),
    *(("apps", resource, verb) for resource in ("statefulsets", "deployments") for verb in ALL_VERBS),
    *(("networking.k8s.io", "networkpolicies", verb) for verb in ALL_VERBS),
    *(("", resource, verb) for resource in ("pods", "persistentvolumeclaims") for verb in READ),
    *(("apps", "replicasets", verb) for verb in READ),
    *(("helm.toolkit.fluxcd.io", "helmreleases", verb) for verb in ALL_VERBS),
}


def render(helm: Helm, values: Doc | None = None) -> Manifests:
    return helm.template(OPERATOR_CHART, values, release=RELEASE, namespace=NAMESPACE)


@pytest.fixture(scope="module")
def defaults(helm: Helm) -> Manifests:
    return render(helm)


def permissions(cluster_role: Doc) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in cluster_role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_objects(defaults: Manifests) -> None:
    assert defaults.names() == {
        ("ServiceAccount", RELEASE),
        ("ClusterRole", RELEASE),
        ("ClusterRole", TENANT_ROLE),
        ("ClusterRoleBinding", RELEASE),
        ("Role", f"{RELEASE}-leader-election"),
        ("RoleBinding", f"{RELEASE}-leader-election"),
        ("Deployment", "controller-manager"),
        ("Service", f"{RELEASE}-metrics"),
        ("ValidatingAdmissionPolicy", f"{RELEASE}-tenant-namespaces"),
        ("ValidatingAdmissionPolicyBinding", f"{RELEASE}-tenant-namespaces"),
    }
    namespaced = [
        doc
        for doc in defaults.docs
        if doc["kind"] in ("ServiceAccount", "Deployment", "Service", "Role", "RoleBinding")
    ]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {NAMESPACE}


def test_cluster_role_grants_exactly_what_the_operator_uses(defaults: Manifests) -> None:
    cluster_role = defaults.get("ClusterRole", RELEASE)
    assert permissions(cluster_role) == EXPECTED_PERMISSIONS
    for rule in cluster_role["rules"]:
        named = {"resourceNames": [TENANT_ROLE]} if rule["verbs"] == ["bind"] else {}
        assert {key: rule[key] for key in set(rule) - {"apiGroups", "resources", "verbs"}} == named, (
            "bind is limited to the tenant role by name; nothing else is named"
        )
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]


def test_tenant_role_grants_what_the_operator_does_in_a_tenant_namespace(defaults: Manifests) -> None:
    tenant_role = defaults.get("ClusterRole", TENANT_ROLE)
    assert permissions(tenant_role) == EXPECTED_TENANT_PERMISSIONS
    deployment = defaults.get("Deployment", "controller-manager")
    (manager,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "TENANT_OPERATOR_TENANT_ROLE", "value": TENANT_ROLE} in manager["env"]
    account = {"name": "TENANT_OPERATOR_SERVICE_ACCOUNT", "value": f"{NAMESPACE}/{RELEASE}"}
    assert account in manager["env"]


def test_isolation_and_registry_settings_reach_the_operator(helm: Helm) -> None:
    def env(manifests: Manifests) -> dict[str, str]:
        (manager,) = manifests.get("Deployment", "controller-manager")["spec"]["template"]["spec"][
            "containers"
        ]
        return {variable["name"]: variable.get("value", "") for variable in manager["env"]}

    defaults = env(render(helm))
    assert defaults["TENANT_OPERATOR_ALLOW_ISOLATION_OFF"] == "false", "isolation off is forbidden by default"
    assert defaults["TENANT_OPERATOR_ALLOWED_REGISTRIES"] == ""
    given = env(render(helm, {"allowNetworkPolicyDisabled": True, "allowedRegistries": ["a.example/x", "b"]}))
    assert given["TENANT_OPERATOR_ALLOW_ISOLATION_OFF"] == "true"
    assert given["TENANT_OPERATOR_ALLOWED_REGISTRIES"] == "a.example/x,b"


def test_cluster_role_is_bound_to_the_operators_service_account(defaults: Manifests) -> None:
    binding = defaults.get("ClusterRoleBinding", RELEASE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": RELEASE,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    deployment = defaults.get("Deployment", "controller-manager")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == RELEASE


def test_deployment_is_what_the_guides_troubleshooting_finds(defaults: Manifests) -> None:
    deployment = defaults.get("Deployment", "controller-manager")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert spec["selector"]["matchLabels"]["control-plane"] == "controller-manager"
    assert spec["template"]["metadata"]["labels"]["control-plane"] == "controller-manager"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_operator_container(defaults: Manifests) -> None:
    pod = defaults.get("Deployment", "controller-manager")["spec"]["template"]["spec"]
    (manager,) = pod["containers"]
    assert manager["image"] == "neurallog/tenant-operator:latest"
    assert manager["imagePullPolicy"] == "IfNotPresent"
    assert manager["command"] == ["tenant-operator"]
    assert manager["args"] == ["--zap-log-level=info"]
    assert {"name": "TENANT_OPERATOR_CONCURRENCY", "value": "4"} in manager["env"]
    assert manager["ports"] == [
        {"name": "healthz", "containerPort": 8080},
        {"name": "metrics", "containerPort": 9090},
    ]
    for probe in (manager["livenessProbe"], manager["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert manager["resources"] == {
        "requests": {"cpu": "100m", "memory": "192Mi"},
        "limits": {"cpu": "1", "memory": "384Mi"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert manager["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_values_reach_the_container(helm: Helm) -> None:
    manifests = render(
        helm,
        {
            "logLevel": "debug",
            "concurrency": 16,
            "image": {"repository": "registry.example.com/operator", "tag": "1.2.3", "pullPolicy": "Always"},
            "replicas": 0,
        },
    )
    deployment = manifests.get("Deployment", "controller-manager")
    (manager,) = deployment["spec"]["template"]["spec"]["containers"]
    assert manager["args"] == ["--zap-log-level=debug"]
    assert {"name": "TENANT_OPERATOR_CONCURRENCY", "value": "16"} in manager["env"]
    assert manager["image"] == "registry.example.com/operator:1.2.3"
    assert manager["imagePullPolicy"] == "Always"
    assert deployment["spec"]["replicas"] == 0


def test_metrics_service_selects_the_operator(defaults: Manifests) -> None:
    service = defaults.get("Service", f"{RELEASE}-metrics")["spec"]
    assert service["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]
    pod_labels = defaults.get("Deployment", "controller-manager")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()


def test_admission_guard_matches_only_the_operator(defaults: Manifests) -> None:
    policy = defaults.get("ValidatingAdmissionPolicy", f"{RELEASE}-tenant-namespaces")["spec"]
    (condition,) = policy["matchConditions"]
    assert f"'{SERVICE_ACCOUNT}'" in condition["expression"]
    guarded = {
        resource for rule in policy["matchConstraints"]["resourceRules"] for resource in rule["resources"]
    }
    written = {
        resource
        for _, resource, verb in EXPECTED_PERMISSIONS | EXPECTED_TENANT_PERMISSIONS
        if verb in ("create", "update", "delete")
    }
    assert guarded == written - {"tenants", "tenants/status", "tenants/finalizers", "events"}
    binding = defaults.get("ValidatingAdmissionPolicyBinding", f"{RELEASE}-tenant-namespaces")["spec"]
    assert binding == {"policyName": f"{RELEASE}-tenant-namespaces", "validationActions": ["Deny"]}


def test_other_release_names_give_other_cluster_wide_names(helm: Helm) -> None:
    manifests = helm.template(OPERATOR_CHART, release="neurallog", namespace="operators")
    assert ("ClusterRole", "neurallog-tenant-operator") in manifests.names()
    binding = manifests.get("ClusterRoleBinding", "neurallog-tenant-operator")
    assert binding["subjects"][0]["namespace"] == "operators"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        pytest.param({"replicas": 6}, "replicas", id="too-many-replicas"),
        pytest.param({"logLevel": "verbose"}, "logLevel", id="unknown-log-level"),
        pytest.param({"concurrency": 0}, "concurrency", id="no-concurrency"),
        pytest.param({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy", id="unknown-pull-policy"),
        pytest.param({"replica": 1}, "replica", id="typo"),
        pytest.param({"watchLabelSelector": "shard a"}, "watchLabelSelector", id="not-a-selector"),
    ],
)
def test_schema_refuses_bad_values(helm: Helm, values: Doc, named: str) -> None:
    error = helm.template_error(OPERATOR_CHART, values, release=RELEASE, namespace=NAMESPACE)
    assert named in error


def test_the_schema_checks_shard_selectors_as_the_operator_does() -> None:
    """values.schema.json holds a copy of the operator's selector pattern: the two may not drift apart."""
    schema = json.loads((OPERATOR_CHART / "values.schema.json").read_text())
    assert schema["properties"]["watchLabelSelector"]["pattern"] == SELECTOR_PATTERN


def test_crd_is_the_generated_one_in_crds(helm: Helm) -> None:
    if not CRD_FILE.exists():
        pytest.skip(f"{CRD_FILE.relative_to(OPERATOR_CHART.parent.parent)} is generated by `make manifests`")
    manifests = helm.template(OPERATOR_CHART, release=RELEASE, namespace=NAMESPACE, extra=["--include-crds"])
    crd = manifests.get("CustomResourceDefinition", "tenants.neurallog.io")
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "Tenant"


def test_replicas_elect_a_leader_on_a_lease_of_their_namespace(helm: Helm) -> None:
    manifests = render(helm, {"replicas": 2})
    role = manifests.get("Role", f"{RELEASE}-leader-election")
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    binding = manifests.get("RoleBinding", f"{RELEASE}-leader-election")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    (manager,) = manifests.get("Deployment", "controller-manager")["spec"]["template"]["spec"]["containers"]
    assert {"name": "TENANT_OPERATOR_LEADER_ELECTION_NAMESPACE", "value": NAMESPACE} in manager["env"]
    assert {"name": "TENANT_OPERATOR_LEASE_NAME", "value": RELEASE} in manager["env"]
    budget = manifests.get("PodDisruptionBudget", RELEASE)["spec"]
    pod_labels = manifests.get("Deployment", "controller-manager")["spec"]["template"]["metadata"]["labels"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert ("PodDisruptionBudget", RELEASE) not in render(helm).names(), "no budget for a single replica"


def manager_env(manifests: Manifests) -> dict[str, str]:
    (manager,) = manifests.get("Deployment", "controller-manager")["spec"]["template"]["spec"]["containers"]
    return {variable["name"]: variable.get("value", "") for variable in manager["env"]}


def test_the_helm_backend_is_the_default_and_watches_no_helm_release(defaults: Manifests) -> None:
    assert manager_env(defaults)["TENANT_OPERATOR_BACKEND"] == "helm"
    assert not any(name.startswith("TENANT_OPERATOR_FLUX_") for name in manager_env(defaults))
    assert not any(
        group == "helm.toolkit.fluxcd.io" for group, _, _ in permissions(defaults.get("ClusterRole", RELEASE))
    )
    assert not defaults.of_kind("HelmRepository")


def test_the_flux_backend_with_a_helm_repository_it_creates(helm: Helm) -> None:
    manifests = render(
        helm,
        {"backend": "flux", "flux": {"source": {"url": "http://charts.example/neurallog"}, "retries": 5}},
    )
    source = manifests.get("HelmRepository", f"{RELEASE}-tenant-chart")
    assert source["metadata"]["namespace"] == NAMESPACE
    assert source["spec"] == {"interval": "10m", "url": "http://charts.example/neurallog"}
    env = manager_env(manifests)
    assert env["TENANT_OPERATOR_BACKEND"] == "flux"
    assert env["TENANT_OPERATOR_FLUX_SOURCE_KIND"] == "HelmRepository"
    assert env["TENANT_OPERATOR_FLUX_SOURCE_NAME"] == f"{RELEASE}-tenant-chart"
    assert env["TENANT_OPERATOR_FLUX_SOURCE_NAMESPACE"] == NAMESPACE
    assert env["TENANT_OPERATOR_FLUX_CHART_VERSION"] == ""
    assert env["TENANT_OPERATOR_FLUX_RETRIES"] == "5"
    watched = permissions(manifests.get("ClusterRole", RELEASE))
    assert {("helm.toolkit.fluxcd.io", "helmreleases", verb) for verb in ("get", "list", "watch")} <= watched
    assert not {verb for group, _, verb in watched if group == "helm.toolkit.fluxcd.io"} - {
        "get",
        "list",
        "watch",
    }


def test_the_flux_backend_with_an_oci_repository_needs_the_version(helm: Helm) -> None:
    values = {
        "backend": "flux",
        "flux": {"source": {"kind": "OCIRepository", "url": "oci://r.example/c/tenant"}},
    }
    assert "flux.version" in helm.template_error(OPERATOR_CHART, values, release=RELEASE, namespace=NAMESPACE)
    values["flux"]["version"] = "0.1.0+0123456789ab"
    source = render(helm, values).get("OCIRepository", f"{RELEASE}-tenant-chart")
    assert source["spec"]["ref"] == {"tag": "0.1.0_0123456789ab"}
    assert source["spec"]["url"] == "oci://r.example/c/tenant"


def test_the_flux_backend_with_an_existing_source(helm: Helm) -> None:
    values = {"backend": "flux", "flux": {"source": {"name": "charts", "namespace": "flux-system"}}}
    manifests = render(helm, values)
    assert not manifests.of_kind("HelmRepository")
    env = manager_env(manifests)
    assert (env["TENANT_OPERATOR_FLUX_SOURCE_NAME"], env["TENANT_OPERATOR_FLUX_SOURCE_NAMESPACE"]) == (
        "charts",
        "flux-system",
    )
    error = helm.template_error(OPERATOR_CHART, {"backend": "flux"}, release=RELEASE, namespace=NAMESPACE)
    assert "flux.source.url" in error
