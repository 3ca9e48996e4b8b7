"""The NetworkPolicies the post-renderer injects, one test per designed rule."""

from typing import Any

import pytest
from postrender_builders import (
    EXAMPLE_NETWORK_POLICY,
    EXAMPLE_POLICIES,
    NAMESPACE,
    carrier,
    example_release,
    policies,
    read_stream,
    to_stream,
    with_filenames,
)

from tenant_postrender import ValidationFailed, render

SERVER = {"matchLabels": {"app": "neurallog-server"}}
REDIS = {"matchLabels": {"app": "redis"}}


def injected(network_policy: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return policies(read_stream(render(to_stream(example_release(network_policy=network_policy)))))


def test_the_guide_example_gets_every_designed_policy() -> None:
    assert tuple(injected()) == EXAMPLE_POLICIES


def test_default_deny_covers_every_pod_both_ways() -> None:
    assert injected()["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_dns_egress_reaches_only_the_cluster_dns() -> None:
    spec = injected()["allow-dns"]["spec"]
    assert spec["podSelector"] == {}
    assert spec["policyTypes"] == ["Egress"]
    assert spec["egress"] == [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
    ]


def test_server_reaches_redis_on_6379_and_redis_accepts_the_server() -> None:
    spec = injected()["server-to-redis"]["spec"]
    selected = spec["podSelector"]["matchExpressions"]
    assert selected == [{"key": "app", "operator": "In", "values": ["neurallog-server", "redis"]}]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [
        {"from": [{"podSelector": SERVER}], "ports": [{"protocol": "TCP", "port": 6379}]}
    ]
    assert spec["egress"] == [{"to": [{"podSelector": REDIS}], "ports": [{"protocol": "TCP", "port": 6379}]}]


def test_redis_pods_replicate_among_themselves() -> None:
    spec = injected()["redis-replication"]["spec"]
    assert spec["podSelector"] == REDIS
    assert spec["ingress"] == [
        {"from": [{"podSelector": REDIS}], "ports": [{"protocol": "TCP", "port": 6379}]}
    ]
    assert spec["egress"] == [{"to": [{"podSelector": REDIS}], "ports": [{"protocol": "TCP", "port": 6379}]}]


def test_allowed_namespaces_reach_the_server_by_their_name_label() -> None:
    spec = injected()["allow-namespaces"]["spec"]
    assert spec["podSelector"] == SERVER
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "default"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
            ],
            "ports": [{"protocol": "TCP", "port": 3030}],
        }
    ]


def test_no_allowed_namespaces_means_no_policy_rather_than_an_open_one() -> None:
    assert "allow-namespaces" not in injected(EXAMPLE_NETWORK_POLICY | {"allowedNamespaces": []})


def peer(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": labels},
    }


def test_ingress_rule_admits_its_peers_here_and_in_the_allowed_namespaces_into_the_server() -> None:
    policy = injected()["ingress-0"]
    assert policy["metadata"]["annotations"]["neurallog.io/description"] == "Allow monitoring tools"
    prometheus = {"app": "prometheus"}
    assert policy["spec"] == {
        "podSelector": SERVER,
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": prometheus}},
                    peer("default", prometheus),
                    peer("monitoring", prometheus),
                ],
                "ports": [{"protocol": "TCP", "port": 3030}],
            }
        ],
    }


def test_ingress_rule_opens_the_egress_of_its_peers_in_the_tenant_namespace_to_the_server() -> None:
    policy = injected()["ingress-0-peers"]
    assert policy["metadata"]["annotations"]["neurallog.io/description"] == "Allow monitoring tools"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"app": "prometheus"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": SERVER}], "ports": [{"protocol": "TCP", "port": 3030}]}],
    }


def test_egress_rule_lets_the_server_reach_its_peers_here_and_in_the_allowed_namespaces() -> None:
    policy = injected()["egress-0"]
    assert policy["metadata"]["annotations"]["neurallog.io/description"] == "Allow external API access"
    external = {"app": "external-api"}
    assert policy["spec"] == {
        "podSelector": SERVER,
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {"podSelector": {"matchLabels": external}},
                    peer("default", external),
                    peer("monitoring", external),
                ],
                "ports": [{"protocol": "TCP", "port": 443}],
            }
        ],
    }


def test_egress_rule_opens_the_ingress_of_its_peers_in_the_tenant_namespace_from_the_server() -> None:
    assert injected()["egress-0-peers"]["spec"] == {
        "podSelector": {"matchLabels": {"app": "external-api"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": SERVER}], "ports": [{"protocol": "TCP", "port": 443}]}],
    }


def test_each_rule_gets_its_own_policies_and_a_rule_without_ports_opens_all_ports() -> None:
    rules = [
        {"description": "a", "from": {"app": "a"}, "ports": [{"protocol": "UDP", "port": 9000}]},
        {"description": "b", "from": {"app": "b", "tier": "web"}},
    ]
    found = injected({"ingressRules": rules})
    assert [name for name in found if name.startswith(("ingress-", "egress-"))] == [
        "ingress-0",
        "ingress-0-peers",
        "ingress-1",
        "ingress-1-peers",
    ]
    web = {"podSelector": {"matchLabels": {"app": "b", "tier": "web"}}}
    assert found["ingress-1"]["spec"]["ingress"] == [{"from": [web]}]
    assert found["ingress-1-peers"]["spec"]["podSelector"] == web["podSelector"]
    assert found["ingress-1-peers"]["spec"]["egress"] == [{"to": [{"podSelector": SERVER}]}]


def test_helm_test_pods_reach_redis_and_the_server_port_and_are_accepted_there() -> None:
    found = injected()
    tests = {"matchLabels": {"app": "tenant-test"}}
    assert found["helm-test"]["spec"] == {
        "podSelector": tests,
        "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"podSelector": REDIS}], "ports": [{"protocol": "TCP", "port": 6379}]},
            {"to": [{"podSelector": SERVER}], "ports": [{"protocol": "TCP", "port": 3030}]},
        ],
    }
    assert found["helm-test-redis"]["spec"] == {
        "podSelector": REDIS,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": tests}], "ports": [{"protocol": "TCP", "port": 6379}]}],
    }
    assert found["helm-test-server"]["spec"] == {
        "podSelector": SERVER,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": tests}], "ports": [{"protocol": "TCP", "port": 3030}]}],
    }


def test_disabled_injects_nothing_and_still_consumes_the_carrier() -> None:
    objects = read_stream(render(to_stream(example_release(network_policy={"enabled": False}))))
    assert policies(objects) == {}
    assert not [obj for obj in objects if obj["kind"] == "ConfigMap"]


def test_defaults_from_the_api_apply_to_missing_keys() -> None:
    assert list(injected({})) == [
        "default-deny",
        "allow-dns",
        "server-to-redis",
        "redis-replication",
        "helm-test",
        "helm-test-redis",
        "helm-test-server",
    ]


def test_policies_are_labelled_namespaced_and_take_the_carriers_place() -> None:
    objects = read_stream(render(to_stream(example_release())))
    assert objects[0]["metadata"]["name"] == "default-deny"
    assert all(obj["kind"] != "ConfigMap" for obj in objects)
    for policy in policies(objects).values():
        assert policy["metadata"]["namespace"] == NAMESPACE
        labels = policy["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "tenant-postrender"
        assert labels["app.kubernetes.io/part-of"] == "neurallog"
        assert labels["app.kubernetes.io/instance"] == "sample-tenant"


def test_helm4_filename_annotation_of_the_carrier_goes_to_the_policies() -> None:
    objects = read_stream(render(to_stream(with_filenames(example_release()))))
    carrier_file = "tenant/templates/configmap-tenant-network-policy.yaml"
    for policy in policies(objects).values():
        assert policy["metadata"]["annotations"]["postrenderer.helm.sh/postrender-filename"] == carrier_file


@pytest.mark.parametrize(
    ("network_policy", "field", "problem"),
    [
        ({"enabled": "yes"}, "networkPolicy.enabled", "not a boolean"),
        ({"allowedNamespaces": ["Monitoring"]}, "networkPolicy.allowedNamespaces[0]", "not a namespace name"),
        ({"allowedNamespaces": "default"}, "networkPolicy.allowedNamespaces", "not a list"),
        (
            {"ingressRules": [{"from": {"app": "x"}, "ports": [{"port": 0}]}]},
            "ingressRules[0].ports[0].port",
            "",
        ),
        (
            {"egressRules": [{"to": {"app": "x"}, "ports": [{"protocol": "ICMP", "port": 1}]}]},
            "egressRules[0].ports[0].protocol",
            "not a protocol",
        ),
        (
            {"ingressRules": [{"from": {"app": "has space"}}]},
            "ingressRules[0].from.app",
            "not a valid label value",
        ),
        ({"ingressRules": [{"from": {"-bad": "x"}}]}, "ingressRules[0].from.-bad", "not a valid label key"),
        ({"ingressRules": [{"to": {"app": "x"}}]}, "ingressRules[0].to", "not a known field"),
        ({"allowedNamespace": ["default"]}, "networkPolicy.allowedNamespace", "not a known field"),
    ],
)
def test_bad_network_policy_values_are_refused_with_the_field(
    network_policy: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        render(to_stream(example_release(network_policy=network_policy)))
    [violation] = refused.value.violations
    assert violation.subject == "ConfigMap/tenant-network-policy"
    assert field in violation.field
    assert problem in violation.problem
    assert violation.fix


def test_carrier_that_is_not_json_is_refused() -> None:
    broken = carrier()
    broken["data"]["networkPolicy.json"] = "{enabled: true"
    release = example_release()
    release[0] = broken
    with pytest.raises(ValidationFailed, match="is not JSON"):
        render(to_stream(release))


def test_a_chart_policy_named_like_an_injected_one_is_refused() -> None:
    clash = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": example_release()[1]["metadata"] | {"name": "default-deny"},
        "spec": {"podSelector": {}},
    }
    with pytest.raises(ValidationFailed, match="clashes with a policy the post-renderer injects"):
        render(to_stream([*example_release(), clash]))


def test_allowed_namespaces_reach_the_port_the_server_listens_on() -> None:
    release = example_release()
    [server] = [obj for obj in release if obj["kind"] == "Deployment"]
    server["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
    found = policies(read_stream(render(to_stream(release))))
    assert found["allow-namespaces"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert found["helm-test"]["spec"]["egress"][1]["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert found["helm-test-server"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8080}]
