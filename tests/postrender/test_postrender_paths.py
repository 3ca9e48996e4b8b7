"""The connections the injected policies let through, asked of a model of the NetworkPolicy API
(policy_model.py): every path the design opens is open, and nothing else between these pods is."""

from typing import Any

import pytest
from policy_model import Pod, allows, open_paths
from postrender_builders import (
    EXAMPLE_NETWORK_POLICY,
    NAMESPACE,
    example_release,
    policies,
    read_stream,
    to_stream,
)

from tenant_postrender import render

PORTS = [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 3030), ("TCP", 6379), ("TCP", 8080)]

SERVER_A = Pod("server-a", NAMESPACE, {"app": "neurallog-server"})
SERVER_B = Pod("server-b", NAMESPACE, {"app": "neurallog-server"})
REDIS_0 = Pod("redis-0", NAMESPACE, {"app": "redis"})
REDIS_1 = Pod("redis-1", NAMESPACE, {"app": "redis"})
TEST = Pod("tenant-test-redis", NAMESPACE, {"app": "tenant-test"})
PROMETHEUS = Pod("prometheus", NAMESPACE, {"app": "prometheus"})
EXTERNAL_API = Pod("external-api", NAMESPACE, {"app": "external-api"})
STRANGER = Pod("stranger", NAMESPACE, {"app": "stranger"})
DNS = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"})
MONITORING_PROMETHEUS = Pod("prometheus", "monitoring", {"app": "prometheus"})
MONITORING_GRAFANA = Pod("grafana", "monitoring", {"app": "grafana"})
DEFAULT_EXTERNAL_API = Pod("external-api", "default", {"app": "external-api"})
# Another tenant, whose pods carry the labels the rules name.
OTHER_PROMETHEUS = Pod("prometheus", "tenant-other", {"app": "prometheus"})
OTHER_EXTERNAL_API = Pod("external-api", "tenant-other", {"app": "external-api"})
OTHER_SERVER = Pod("server", "tenant-other", {"app": "neurallog-server"})

TENANT_PODS = [SERVER_A, SERVER_B, REDIS_0, REDIS_1, TEST, PROMETHEUS, EXTERNAL_API, STRANGER]
OUTSIDE_PODS = [
    DNS,
    MONITORING_PROMETHEUS,
    MONITORING_GRAFANA,
    DEFAULT_EXTERNAL_API,
    OTHER_PROMETHEUS,
    OTHER_EXTERNAL_API,
    OTHER_SERVER,
]


def injected(network_policy: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    objects = read_stream(render(to_stream(example_release(network_policy=network_policy))))
    return list(policies(objects).values())


def tenant_paths(found: list[dict[str, Any]]) -> set[tuple[str, str, str, int]]:
    """Every open connection that starts or ends in the tenant's namespace (the others are not its business:
    the namespaces outside have no policies in this model)."""
    return {
        path
        for path in open_paths(found, TENANT_PODS + OUTSIDE_PODS, PORTS)
        if NAMESPACE in (path[0].split("/")[0], path[1].split("/")[0])
    }


def dns_paths() -> set[tuple[str, str, str, int]]:
    return {(str(pod), str(DNS), protocol, 53) for pod in TENANT_PODS for protocol in ("UDP", "TCP")}


def tcp(source: Pod, target: Pod, port: int) -> tuple[str, str, str, int]:
    return (str(source), str(target), "TCP", port)


def test_the_guide_example_opens_exactly_the_designed_paths() -> None:
    designed = dns_paths() | {
        # The server and Redis, Redis replication.
        tcp(SERVER_A, REDIS_0, 6379),
        tcp(SERVER_A, REDIS_1, 6379),
        tcp(SERVER_B, REDIS_0, 6379),
        tcp(SERVER_B, REDIS_1, 6379),
        tcp(REDIS_0, REDIS_1, 6379),
        tcp(REDIS_1, REDIS_0, 6379),
        # allowedNamespaces: every pod of default and monitoring reaches the server's port.
        *(
            tcp(source, server, 3030)
            for source in (MONITORING_PROMETHEUS, MONITORING_GRAFANA, DEFAULT_EXTERNAL_API)
            for server in (SERVER_A, SERVER_B)
        ),
        # ingressRules[0]: app=prometheus of the tenant's namespace too (both ends opened).
        tcp(PROMETHEUS, SERVER_A, 3030),
        tcp(PROMETHEUS, SERVER_B, 3030),
        # egressRules[0]: app=external-api here (both ends opened) and in the allowed namespaces.
        *(
            tcp(server, target, 443)
            for server in (SERVER_A, SERVER_B)
            for target in (EXTERNAL_API, DEFAULT_EXTERNAL_API)
        ),
        # The chart's helm test pods.
        tcp(TEST, REDIS_0, 6379),
        tcp(TEST, REDIS_1, 6379),
        tcp(TEST, SERVER_A, 3030),
        tcp(TEST, SERVER_B, 3030),
    }
    assert tenant_paths(injected()) == designed


def test_without_allowed_namespaces_rules_reach_only_the_tenant_namespace() -> None:
    found = injected(EXAMPLE_NETWORK_POLICY | {"allowedNamespaces": []})
    paths = tenant_paths(found)
    assert tcp(PROMETHEUS, SERVER_A, 3030) in paths
    assert tcp(SERVER_A, EXTERNAL_API, 443) in paths
    assert not {path for path in paths if not {path[0], path[1]} <= {str(pod) for pod in [*TENANT_PODS, DNS]}}


@pytest.mark.parametrize(
    ("source", "target", "port"),
    [
        # Another tenant's pods never get in nor are reached, whatever labels they carry.
        (OTHER_PROMETHEUS, SERVER_A, 3030),
        (SERVER_A, OTHER_EXTERNAL_API, 443),
        (OTHER_SERVER, REDIS_0, 6379),
        (SERVER_A, OTHER_SERVER, 3030),
        # The rules open their ports only, and only towards the server.
        (PROMETHEUS, SERVER_A, 8080),
        (PROMETHEUS, REDIS_0, 6379),
        (REDIS_0, EXTERNAL_API, 443),
        (SERVER_A, EXTERNAL_API, 80),
        (STRANGER, SERVER_A, 3030),
        # Test pods reach Redis and the server on their ports only; nobody reaches a test pod.
        (TEST, SERVER_A, 6379),
        (TEST, REDIS_0, 3030),
        (SERVER_A, TEST, 3030),
        (MONITORING_PROMETHEUS, TEST, 3030),
        # Redis is reached from nowhere outside.
        (MONITORING_PROMETHEUS, REDIS_0, 6379),
    ],
)
def test_paths_that_stay_closed(source: Pod, target: Pod, port: int) -> None:
    assert not allows(injected(), source, target, port)


def test_a_rule_without_labels_or_ports_opens_every_port_between_the_server_and_every_pod_here() -> None:
    found = injected({"ingressRules": [{"description": "all", "from": {}}]})
    for source in (STRANGER, PROMETHEUS, REDIS_0):
        for port in (3030, 8080):
            assert allows(found, source, SERVER_A, port), (source, port)
    # Not the other way, and not from another namespace.
    assert not allows(found, SERVER_A, STRANGER, 3030)
    assert not allows(found, OTHER_PROMETHEUS, SERVER_A, 3030)


def test_the_server_reaching_a_labelled_pod_does_not_let_that_pod_reach_the_server() -> None:
    found = injected({"egressRules": [{"to": {"app": "external-api"}, "ports": [{"port": 443}]}]})
    assert allows(found, SERVER_A, EXTERNAL_API, 443)
    assert not allows(found, EXTERNAL_API, SERVER_A, 443)
    assert not allows(found, EXTERNAL_API, SERVER_A, 3030)


def test_disabled_policies_leave_everything_open() -> None:
    found = injected({"enabled": False})
    assert found == []
    assert allows(found, OTHER_SERVER, REDIS_0, 6379)
