"""charts/tenant rendered with `helm template`: the guide's defaults, the guide's example, and the rules every
object follows (names, labels, hardening, the network-policy carrier)."""

import base64
import json
import re
import shutil
from typing import Any

import pytest
import yaml
from chart_support import SAMPLE_TENANT, TENANT_CHART, TENANT_SCHEMA, Doc, Helm, Manifests, sample_tenant

from tenant_operator.api import TenantSpec

# The guide's defaults ("Configuration Options"), and the tenant budget of the contract (the guide has none).
GUIDE_DEFAULTS: Doc = {
    "displayName": "",
    "description": "",
    "resources": {
        "cpu": {"limit": "2", "request": "1"},
        "memory": {"limit": "4Gi", "request": "2Gi"},
        "storage": {"limit": "10Gi", "request": "5Gi"},
    },
    "server": {
        "replicas": 1,
        "image": "neurallog/server:latest",
        "resources": {
            "cpu": {"limit": "500m", "request": "100m"},
            "memory": {"limit": "512Mi", "request": "128Mi"},
        },
        "env": [],
    },
    "redis": {
        "replicas": 1,
        "image": "redis:7-alpine",
        "resources": {
            "cpu": {"limit": "300m", "request": "100m"},
            "memory": {"limit": "256Mi", "request": "128Mi"},
        },
        "storage": "1Gi",
        "config": {"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru"},
    },
    "networkPolicy": {"enabled": True, "allowedNamespaces": [], "ingressRules": [], "egressRules": []},
}
GUIDE_DEFAULT_ENV = [
    {"name": "NODE_ENV", "value": "production"},
    {"name": "PORT", "value": "3030"},
    {"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@redis:6379"},
    {"name": "LOG_LEVEL", "value": "info"},
]
REDIS_PASSWORD_ENV = {
    "name": "REDIS_PASSWORD",
    "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}},
}
OBJECTS = {
    ("ResourceQuota", "tenant-quota"),
    ("LimitRange", "tenant-limits"),
    ("Secret", "redis-auth"),
    ("ConfigMap", "redis-config"),
    ("ConfigMap", "tenant-network-policy"),
    ("StatefulSet", "redis"),
    ("Service", "redis-headless"),
    ("Service", "redis"),
    ("Deployment", "neurallog-server"),
    ("Service", "neurallog-server"),
    ("Pod", "tenant-test-redis"),
    ("Pod", "tenant-test-server"),
}
CI_CASES = sorted((TENANT_CHART / "ci").glob("*-values.yaml"))


def container(manifests: Manifests, kind: str, name: str) -> Doc:
    only: Doc
    (only,) = manifests.get(kind, name)["spec"]["template"]["spec"]["containers"]
    return only


def redis_conf(manifests: Manifests) -> list[str]:
    conf: str = manifests.get("ConfigMap", "redis-config")["data"]["redis.conf"]
    return [line for line in conf.splitlines() if line and not line.startswith("#")]


def resources(cpu: tuple[str, str], memory: tuple[str, str]) -> Doc:
    """Container resources from (limit, request) pairs."""
    return {"limits": {"cpu": cpu[0], "memory": memory[0]}, "requests": {"cpu": cpu[1], "memory": memory[1]}}


@pytest.fixture(scope="module")
def defaults(helm: Helm) -> Manifests:
    return helm.template(TENANT_CHART)


@pytest.fixture(scope="module")
def example(helm: Helm) -> Manifests:
    return helm.template(TENANT_CHART, sample_tenant()["spec"])


def test_values_yaml_holds_exactly_the_guides_defaults() -> None:
    assert yaml.safe_load((TENANT_CHART / "values.yaml").read_text()) == GUIDE_DEFAULTS


def test_values_yaml_is_the_api_models_defaults() -> None:
    """One source of truth: the operator's models, given only the required displayName, say the same."""
    assert TenantSpec.model_validate({"displayName": ""}).to_values() == GUIDE_DEFAULTS


def test_the_example_values_case_is_the_spec_of_the_sample_tenant() -> None:
    example_values = yaml.safe_load((TENANT_CHART / "ci" / "example-values.yaml").read_text())
    assert example_values == sample_tenant()["spec"], f"keep ci/example-values.yaml equal to {SAMPLE_TENANT}"


def test_renders_the_fixed_set_of_objects_in_the_release_namespace(defaults: Manifests) -> None:
    assert defaults.names() == OBJECTS
    assert {doc["metadata"]["namespace"] for doc in defaults.docs} == {"tenant-sample-tenant"}
    assert not defaults.of_kind("NetworkPolicy"), "network policies are the post-renderer's"


def test_defaults_quota_and_limit_range(defaults: Manifests) -> None:
    assert defaults.get("ResourceQuota", "tenant-quota")["spec"]["hard"] == {
        "requests.cpu": "1",
        "limits.cpu": "2",
        "requests.memory": "2Gi",
        "limits.memory": "4Gi",
        "requests.storage": "10Gi",
        "services.nodeports": "0",
        "services.loadbalancers": "0",
    }
    (limits,) = defaults.get("LimitRange", "tenant-limits")["spec"]["limits"]
    assert limits == {
        "type": "Container",
        "default": {"cpu": "500m", "memory": "512Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
    }


def test_defaults_server(defaults: Manifests) -> None:
    deployment = defaults.get("Deployment", "neurallog-server")
    assert deployment["spec"]["replicas"] == 1
    server = container(defaults, "Deployment", "neurallog-server")
    assert server["image"] == "neurallog/server:latest"
    assert server["resources"] == resources(cpu=("500m", "100m"), memory=("512Mi", "128Mi"))
    assert server["env"] == [REDIS_PASSWORD_ENV, *GUIDE_DEFAULT_ENV]
    assert server["ports"] == [{"name": "http", "containerPort": 3030}]
    service = defaults.get("Service", "neurallog-server")
    assert service["spec"]["ports"] == [{"name": "http", "port": 3030, "targetPort": "http"}]


def test_defaults_redis(defaults: Manifests) -> None:
    statefulset = defaults.get("StatefulSet", "redis")
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == "redis-headless"
    redis = container(defaults, "StatefulSet", "redis")
    assert redis["image"] == "redis:7-alpine"
    assert redis["resources"] == resources(cpu=("300m", "100m"), memory=("256Mi", "128Mi"))
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert {"name": "data", "mountPath": "/data"} in redis["volumeMounts"]
    assert redis_conf(defaults) == [
        "maxmemory 256mb",
        "maxmemory-policy allkeys-lru",
        "dir /data",
        "port 6379",
    ]


def test_redis_services(defaults: Manifests) -> None:
    headless = defaults.get("Service", "redis-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis"}]
    client = defaults.get("Service", "redis")["spec"]
    assert client["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis"}]
    assert client["selector"]["statefulset.kubernetes.io/pod-name"] == "redis-0", "the Service is the primary"
    assert client["selector"]["app"] == "redis"


def test_redis_password_is_generated_into_a_secret_and_nowhere_else(defaults: Manifests) -> None:
    encoded = defaults.get("Secret", "redis-auth")["data"]["password"]
    password = base64.b64decode(encoded).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    everything_else = yaml.safe_dump_all([doc for doc in defaults.docs if doc["kind"] != "Secret"])
    assert password not in everything_else and encoded not in everything_else
    redis = container(defaults, "StatefulSet", "redis")
    from_secret = {"secretKeyRef": {"name": "redis-auth", "key": "password"}}
    assert {"name": "REDIS_PASSWORD", "valueFrom": from_secret} in redis["env"]
    assert '--requirepass "$REDIS_PASSWORD"' in redis["args"][0]


def expand(env: list[Doc], sources: dict[str, str]) -> dict[str, str]:
    """The container's environment as Kubernetes makes it: valueFrom entries from `sources` (by name), and
    `$(NAME)` in a value replaced by the variable NAME when it is defined earlier in the list."""
    values: dict[str, str] = {}
    for entry in env:
        if "valueFrom" in entry:
            values[entry["name"]] = sources[entry["name"]]
            continue
        values[entry["name"]] = re.sub(
            r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
            lambda match: values.get(match[1], match[0]),
            entry["value"],
        )
    return values


def test_the_default_redis_url_carries_the_password_redis_requires(defaults: Manifests) -> None:
    password = base64.b64decode(defaults.get("Secret", "redis-auth")["data"]["password"]).decode()
    env = container(defaults, "Deployment", "neurallog-server")["env"]
    assert expand(env, {"REDIS_PASSWORD": password})["REDIS_URL"] == f"redis://:{password}@redis:6379"
    # Redis requires that same password: the server's REDIS_PASSWORD and redis-server's come from one key.
    redis = container(defaults, "StatefulSet", "redis")
    assert REDIS_PASSWORD_ENV in env
    assert REDIS_PASSWORD_ENV in redis["env"]
    assert '--requirepass "$REDIS_PASSWORD"' in redis["args"][0]


def test_network_policy_carrier_holds_the_network_policy_values(
    defaults: Manifests, example: Manifests
) -> None:
    for manifests, values in ((defaults, GUIDE_DEFAULTS), (example, sample_tenant()["spec"])):
        carrier = manifests.get("ConfigMap", "tenant-network-policy")
        assert carrier["metadata"]["annotations"]["neurallog.io/postrender-input"] == "network-policy"
        assert json.loads(carrier["data"]["networkPolicy.json"]) == values["networkPolicy"]


def test_the_guides_example(example: Manifests) -> None:
    assert example.get("ResourceQuota", "tenant-quota")["spec"]["hard"] == {
        "requests.cpu": "2",
        "limits.cpu": "4",
        "requests.memory": "4Gi",
        "limits.memory": "8Gi",
        "requests.storage": "20Gi",
        "services.nodeports": "0",
        "services.loadbalancers": "0",
    }
    assert example.get("Deployment", "neurallog-server")["spec"]["replicas"] == 2
    server = container(example, "Deployment", "neurallog-server")
    assert server["image"] == "neurallog/server:latest"
    assert server["resources"] == resources(cpu=("1", "500m"), memory=("1Gi", "512Mi"))
    env = server["env"]
    assert [entry for entry in env if entry["name"] == "LOG_LEVEL"] == [
        {"name": "LOG_LEVEL", "value": "debug"}
    ]
    assert env == [
        REDIS_PASSWORD_ENV,
        {"name": "NODE_ENV", "value": "production"},
        {"name": "PORT", "value": "3030"},
        {"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@redis:6379"},
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "MAX_CONNECTIONS", "value": "100"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "tenant-secrets", "key": "api-key"}}},
    ]
    statefulset = example.get("StatefulSet", "redis")
    assert statefulset["spec"]["replicas"] == 1
    redis = container(example, "StatefulSet", "redis")
    assert redis["image"] == "redis:7-alpine"
    assert redis["resources"] == resources(cpu=("500m", "200m"), memory=("1Gi", "512Mi"))
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert redis_conf(example) == [
        "maxmemory 512mb",
        "maxmemory-policy allkeys-lru",
        "dir /data",
        "port 6379",
    ]
    for workload in ("Deployment", "StatefulSet"):
        name = "neurallog-server" if workload == "Deployment" else "redis"
        assert example.get(workload, name)["metadata"]["annotations"] == {
            "neurallog.io/display-name": "Sample Tenant",
            "neurallog.io/description": "A sample tenant for demonstration purposes",
        }


@pytest.mark.parametrize(
    ("user_env", "expected_after_password"),
    [
        pytest.param(
            [{"name": "NODE_ENV", "value": "development"}, {"name": "EXTRA", "value": "1"}],
            [
                {"name": "NODE_ENV", "value": "development"},
                *GUIDE_DEFAULT_ENV[1:],
                {"name": "EXTRA", "value": "1"},
            ],
            id="override-in-place-and-append",
        ),
        pytest.param(
            [{"name": "Z", "value": "z"}, {"name": "A", "value": "a"}],
            [*GUIDE_DEFAULT_ENV, {"name": "Z", "value": "z"}, {"name": "A", "value": "a"}],
            id="user-order-kept",
        ),
        pytest.param(
            [{"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "redis-url", "key": "url"}}}],
            [
                *GUIDE_DEFAULT_ENV[:2],
                {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "redis-url", "key": "url"}}},
                GUIDE_DEFAULT_ENV[3],
            ],
            id="default-replaced-by-reference",
        ),
        pytest.param(
            [{"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@redis:6379/2"}],
            [
                *GUIDE_DEFAULT_ENV[:2],
                {"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@redis:6379/2"},
                GUIDE_DEFAULT_ENV[3],
            ],
            id="default-replaced-by-value",
        ),
        pytest.param(
            [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            [
                *GUIDE_DEFAULT_ENV,
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ],
            id="field-reference-passed-through",
        ),
    ],
)
def test_server_env_merges_over_the_defaults_by_name(
    helm: Helm, user_env: list[Doc], expected_after_password: list[Doc]
) -> None:
    manifests = helm.template(TENANT_CHART, {"server": {"env": user_env}})
    assert container(manifests, "Deployment", "neurallog-server")["env"] == [
        REDIS_PASSWORD_ENV,
        *expected_after_password,
    ]


def test_port_of_the_environment_is_the_container_port(helm: Helm) -> None:
    manifests = helm.template(TENANT_CHART, {"server": {"env": [{"name": "PORT", "value": "8080"}]}})
    assert container(manifests, "Deployment", "neurallog-server")["ports"] == [
        {"name": "http", "containerPort": 8080}
    ]
    assert manifests.get("Service", "neurallog-server")["spec"]["ports"][0]["port"] == 3030


def test_redis_config_merges_over_the_defaults(helm: Helm) -> None:
    config = {"maxmemory": "1gb", "appendonly": "yes", "appendfsync": "everysec"}
    manifests = helm.template(TENANT_CHART, {"redis": {"config": config}})
    assert redis_conf(manifests) == [
        "appendfsync everysec",
        "appendonly yes",
        "maxmemory 1gb",
        "maxmemory-policy allkeys-lru",
        "dir /data",
        "port 6379",
    ]


def test_redis_config_change_restarts_redis(helm: Helm, defaults: Manifests) -> None:
    changed = helm.template(TENANT_CHART, {"redis": {"config": {"maxmemory": "128mb"}}})

    def checksum(manifests: Manifests) -> str:
        annotations = manifests.get("StatefulSet", "redis")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum(changed) != checksum(defaults)


def test_more_redis_replicas_are_read_replicas_of_pod_0(helm: Helm) -> None:
    manifests = helm.template(TENANT_CHART, {"redis": {"replicas": 3}})
    assert manifests.get("StatefulSet", "redis")["spec"]["replicas"] == 3
    script = container(manifests, "StatefulSet", "redis")["args"][0]
    assert 'if [ "$POD_NAME" != "redis-0" ]' in script
    assert "--replicaof redis-0.redis-headless 6379" in script
    assert manifests.get("Service", "redis-headless")["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("case", CI_CASES, ids=lambda path: path.stem)
def test_every_container_is_hardened(helm: Helm, case: Any) -> None:
    manifests = helm.template(TENANT_CHART, values_files=[case])
    templates = manifests.pod_templates()
    assert {name for name, _ in templates} == {"redis", "neurallog-server"}
    for name, template in templates:
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        pod_security = pod["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] > 0, name
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for each in pod["containers"] + pod.get("initContainers", []):
            security = each["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["runAsNonRoot"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert set(each["resources"]["requests"]) == {"cpu", "memory"}, name
            assert set(each["resources"]["limits"]) == {"cpu", "memory"}, name


@pytest.mark.parametrize("case", CI_CASES, ids=lambda path: path.stem)
def test_labels(helm: Helm, case: Any) -> None:
    manifests = helm.template(TENANT_CHART, values_files=[case])
    for doc in manifests.docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", doc["metadata"]["name"]
        assert labels["helm.sh/chart"] == "tenant-0.1.0", doc["metadata"]["name"]
        assert labels["app.kubernetes.io/part-of"] == "neurallog", doc["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == "sample-tenant", doc["metadata"]["name"]
    for workload, app, component in (
        ("redis", "redis", "redis"),
        ("neurallog-server", "neurallog-server", "server"),
    ):
        kind = "StatefulSet" if workload == "redis" else "Deployment"
        spec = manifests.get(kind, workload)["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        assert pod_labels["app"] == app
        assert pod_labels["app.kubernetes.io/component"] == component
        assert pod_labels["app.kubernetes.io/part-of"] == "neurallog"
        for key in ("name", "instance", "version"):
            assert f"app.kubernetes.io/{key}" in pod_labels
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
        # A new chart version (or another Helm client installing the same chart) restarts no pod by itself.
        assert "helm.sh/chart" not in pod_labels
        selector = manifests.get("Service", workload)["spec"]["selector"]
        selector.pop("statefulset.kubernetes.io/pod-name", None)
        assert selector.items() <= pod_labels.items()


def test_services_do_not_leak_into_the_pods_environment(defaults: Manifests) -> None:
    # A Service named redis would otherwise give every pod REDIS_PORT=tcp://..., next to the server's PORT.
    for name, template in defaults.pod_templates():
        assert template["spec"]["enableServiceLinks"] is False, name


@pytest.mark.parametrize(
    ("values", "path"),
    [
        pytest.param(
            {"resources": {"cpu": {"limit": "lots"}}}, "/resources/cpu/limit", id="invalid-quantity"
        ),
        pytest.param({"server": {"replicas": -1}}, "/server/replicas", id="negative-replicas"),
        pytest.param(
            {"networkPolicy": {"ingressRules": [{"ports": [{"protocol": "TCP", "port": 70000}]}]}},
            "/networkPolicy/ingressRules/0/ports/0/port",
            id="port-out-of-range",
        ),
        pytest.param(
            {"networkPolicy": {"egressRules": [{"ports": [{"protocol": "HTTP", "port": 80}]}]}},
            "/networkPolicy/egressRules/0/ports/0/protocol",
            id="unknown-protocol",
        ),
        pytest.param(
            {"redis": {"config": {"maxmemory-policy": "sometimes"}}},
            "/redis/config/maxmemory-policy",
            id="unknown-maxmemory-policy",
        ),
        pytest.param(
            {"networkPolicy": {"allowedNamespaces": ["Not_A_Namespace"]}},
            "/networkPolicy/allowedNamespaces/0",
            id="invalid-namespace",
        ),
        pytest.param(
            {"server": {"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}},
            "/server/env/0",
            id="env-value-and-value-from",
        ),
        pytest.param({"server": {"replica": 2}}, "replica", id="typo"),
        pytest.param({"server": {"image": ""}}, "/server/image", id="empty-image"),
        # The key itself is named: Helm's JSON schema library misplaces propertyNames errors in the values.
        pytest.param({"redis": {"config": {"requirepass": "x"}}}, "requirepass", id="reserved-redis-key"),
        pytest.param(
            {"redis": {"config": {"maxmemory": "1mb\nrequirepass x"}}},
            "/redis/config/maxmemory",
            id="redis-config-injection",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_value(helm_versions: list[Helm], values: Doc, path: str) -> None:
    if not TENANT_SCHEMA.exists():
        pytest.skip("charts/tenant/values.schema.json is generated by `make manifests`")
    for helm in helm_versions:
        error = helm.template_error(TENANT_CHART, values)
        assert path in error, f"{helm.binary.name}: {error}"


def test_pods_are_the_same_under_another_chart_version(helm: Helm, tmp_path: Any) -> None:
    """The same chart packaged at another version (as Flux serves it) renders the same pod templates."""
    repackaged = tmp_path / "tenant"
    shutil.copytree(TENANT_CHART, repackaged)
    chart_yaml = repackaged / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 0.1.0", "version: 0.1.0+0123456789ab"))
    before = helm.template(TENANT_CHART, sample_tenant()["spec"])
    after = helm.template(repackaged, sample_tenant()["spec"])
    assert (
        after.get("Deployment", "neurallog-server")["metadata"]["labels"]["helm.sh/chart"]
        != (before.get("Deployment", "neurallog-server")["metadata"]["labels"]["helm.sh/chart"])
    )
    assert after.pod_templates() == before.pod_templates()


def test_rendered_network_policies_are_written_verbatim_instead_of_the_carrier(helm: Helm) -> None:
    policies = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "tenant-sample-tenant", "labels": {"a": "b"}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
        for name in ("default-deny", "allow-dns")
    ]
    manifests = helm.template(TENANT_CHART, {"renderedNetworkPolicies": policies})
    assert manifests.of_kind("NetworkPolicy") == policies
    assert ("ConfigMap", "tenant-network-policy") not in manifests.names()
    assert ("ConfigMap", "tenant-network-policy") in helm.template(TENANT_CHART).names()
