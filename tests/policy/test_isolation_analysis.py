"""Tenant isolation proven by an independent analyzer: np-guard's netpol-analyzer over the policies that the
real chart and post-renderer give three tenants, among probe pods standing for the cluster around them.

No cluster is needed: the analyzer reads YAML. Every assertion is made on the analyzer's list of allowed
connections, never on policy text; the negative controls show that each check fails on policies that leak.

The tenants: the guide's example (allowedNamespaces default and monitoring, prometheus in on TCP 3030, out to
external-api on TCP 443), one with the default network policy, and one whose server listens on 8080, with
a rule of all ports, a rule of UDP, a rule of two labels, and an invitation to another tenant's namespace
(the other tenant's default deny keeps that path closed: both ends must agree).
"""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from netpol_analysis import (
    ALL,
    NONE,
    OUTSIDE,
    Connectivity,
    Doc,
    PortRange,
    Ports,
    Tenant,
    Workload,
    analyze,
    deployment,
    has_port,
    namespace,
    namespace_of,
    pod,
    ports,
    render_tenant,
    show,
    tcp,
    tenant_namespace,
    tools,
    udp,
    union,
    workloads,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TENANT = REPO / "tests" / "fixtures" / "sample-tenant.yaml"

SERVER = {"app": "neurallog-server"}
REDIS = {"app": "redis"}
HELM_TEST = {"app": "tenant-test"}  # the chart's `helm test` pods
CLUSTER_DNS = {"k8s-app": "kube-dns"}  # the local cluster's CoreDNS pods carry this label, as kubeadm's do
DNS = union(tcp(53), udp(53))

SAMPLE = Tenant("sample-tenant", yaml.safe_load(SAMPLE_TENANT.read_text())["spec"])
PLAIN = Tenant("plain", {})
ANALYTICS = Tenant(
    "analytics",
    {
        "server": {"env": [{"name": "PORT", "value": "8080"}]},
        "networkPolicy": {
            "allowedNamespaces": ["data", "tenant-plain"],
            "ingressRules": [{"description": "The ingest pipeline, any port", "from": {"app": "ingest"}}],
            "egressRules": [
                {
                    "description": "The warehouse",
                    "to": {"app": "warehouse"},
                    "ports": [{"protocol": "TCP", "port": 5432}],
                },
                {
                    "description": "Metrics",
                    "to": {"app": "collector", "tier": "metrics"},
                    "ports": [{"protocol": "UDP", "port": 8125}],
                },
            ],
        },
    },
)
TENANTS = [SAMPLE, PLAIN, ANALYTICS]

# The cluster around the tenants: who should and who should not get through.
WORLD: list[Doc] = [
    *(namespace(name) for name in ("default", "monitoring", "kube-system", "data", "elsewhere")),
    deployment("kube-system", "coredns", CLUSTER_DNS),
    pod("kube-system", "metrics-server", {"k8s-app": "metrics-server"}),
    pod("default", "external-api", {"app": "external-api"}),
    pod("default", "web", {"app": "web"}),
    # Pods of an allowed namespace labelled as a tenant's own pods: namespaces, not labels, decide.
    pod("default", "impostor-server", SERVER),
    pod("default", "impostor-test", HELM_TEST),
    pod("monitoring", "prometheus", {"app": "prometheus"}),
    pod("monitoring", "grafana", {"app": "grafana"}),
    pod("data", "ingest", {"app": "ingest"}),
    pod("data", "warehouse", {"app": "warehouse"}),
    pod("data", "collector", {"app": "collector", "tier": "metrics"}),
    pod("data", "collector-canary", {"app": "collector"}),
    # A namespace no tenant allows, with pods that carry the labels of the tenants' rules and of the DNS.
    pod("elsewhere", "external-api", {"app": "external-api"}),
    pod("elsewhere", "prometheus", {"app": "prometheus"}),
    pod("elsewhere", "ingest", {"app": "ingest"}),
    pod("elsewhere", "warehouse", {"app": "warehouse"}),
    pod("elsewhere", "fake-dns", CLUSTER_DNS),
    pod("elsewhere", "impostor-redis", REDIS),
    # Pods someone runs in a tenant's namespace: under its default deny, but peers of its own rules.
    pod("tenant-sample-tenant", "prometheus", {"app": "prometheus"}),
    pod("tenant-sample-tenant", "external-api", {"app": "external-api"}),
    pod("tenant-sample-tenant", "debug", {"app": "debug"}),
    pod("tenant-plain", "debug", {"app": "debug"}),
    pod("tenant-analytics", "ingest", {"app": "ingest"}),
]


class Analysis:
    """The tenants rendered among the world, and what the analyzer says is allowed."""

    def __init__(self, tenants: list[Tenant], documents: list[Doc], connectivity: Connectivity) -> None:
        self.tenants = tenants
        self.documents = documents
        self.pods = workloads(documents)
        self.connectivity = connectivity
        self.tenant_namespaces = {tenant.namespace for tenant in tenants}
        self.cluster_dns = [
            each for each in self.pods if each.namespace == "kube-system" and each.matches(CLUSTER_DNS)
        ]

    def pod(self, namespace: str, labels: dict[str, str]) -> Workload:
        found = [each for each in self.pods if each.namespace == namespace and each.matches(labels)]
        assert len(found) == 1, f"expected one pod set {labels} in {namespace}, found {found}"
        return found[0]

    def named(self, peer: str) -> Workload:
        found = [each for each in self.pods if each.peer == peer]
        assert len(found) == 1, f"no {peer} among {[each.peer for each in self.pods]}"
        return found[0]

    def between(self, source: str, destination: str) -> Ports:
        return self.connectivity.get((source, destination), NONE)


Mutation = Callable[[list[Doc]], None]
MakeAnalysis = Callable[[str, list[Tenant], dict[str, Mutation]], Analysis]


@pytest.fixture(scope="module")
def make_analysis(tmp_path_factory: pytest.TempPathFactory) -> MakeAnalysis:
    """Renders tenants among the world (a tenant's rendered documents changed by its mutation, for the
    negative controls) and runs the analyzer over them."""
    analyzer, helm = tools()
    root = tmp_path_factory.mktemp("isolation")

    def run(label: str, tenants: list[Tenant], mutations: dict[str, Mutation]) -> Analysis:
        documents = list(WORLD)
        for tenant in tenants:
            rendered = render_tenant(helm, tenant, root)
            if tenant.name in mutations:
                mutations[tenant.name](rendered)
            documents += [tenant_namespace(tenant), *rendered]
        return Analysis(tenants, documents, analyze(analyzer, documents, root / label))

    return run


@pytest.fixture(scope="module")
def isolated(make_analysis: MakeAnalysis) -> Analysis:
    return make_analysis("isolated", TENANTS, {})


# The checks: each returns what it finds wrong, so that the negative controls can show it finding something.


def cross_tenant_paths(analysis: Analysis) -> list[str]:
    """Connections between pods of two different tenants' namespaces, either way, any port."""
    return [
        f"{source} -> {destination}: {show(connections)}"
        for (source, destination), connections in sorted(analysis.connectivity.items())
        if {namespace_of(source), namespace_of(destination)} <= analysis.tenant_namespaces
        and namespace_of(source) != namespace_of(destination)
    ]


def redis_intruders(analysis: Analysis) -> list[str]:
    """Whatever reaches a tenant's Redis but its own server (and its chart's `helm test` pods), or on another
    port than 6379."""
    found = []
    for tenant in analysis.tenants:
        redis = analysis.pod(tenant.namespace, REDIS)
        own = {analysis.pod(tenant.namespace, SERVER).peer} | {
            each.peer
            for each in analysis.pods
            if each.namespace == tenant.namespace and each.matches(HELM_TEST)
        }
        for (source, destination), connections in sorted(analysis.connectivity.items()):
            if destination == redis.peer and (source not in own or connections != tcp(6379)):
                found.append(f"{source} -> {destination}: {show(connections)}")
    return found


def dns_leaks(analysis: Analysis) -> list[str]:
    """Port 53 (any protocol) from a tenant's pods out of their namespace to anything but the cluster DNS
    pods, and the cluster DNS reached on anything but TCP and UDP 53. (Within its namespace a tenant's own
    rules decide: analytics lets its ingest pods reach its server on every port.)"""
    cluster_dns = {each.peer for each in analysis.cluster_dns}
    assert cluster_dns, "the world has no cluster DNS"
    found = []
    for (source, destination), connections in sorted(analysis.connectivity.items()):
        if namespace_of(source) not in analysis.tenant_namespaces:
            continue
        to_dns = destination in cluster_dns
        leaves = namespace_of(destination) != namespace_of(source)
        if (to_dns and connections != DNS) or (not to_dns and leaves and has_port(connections, 53)):
            found.append(f"{source} -> {destination}: {show(connections)}")
    return found


def _server_port(tenant: Tenant) -> int:
    """The server's port as the tenant's spec sets it: its PORT env, else 3030."""
    env = (tenant.values.get("server") or {}).get("env") or []
    return next((int(each["value"]) for each in env if each["name"] == "PORT" and "value" in each), 3030)


def _rule_ports(rule: dict[str, Any]) -> Ports:
    """A rule's ports; none listed means all, as in Kubernetes."""
    listed = rule.get("ports") or []
    return ports(PortRange(each.get("protocol", "TCP"), each["port"], each["port"]) for each in listed) or ALL


def _peers(analysis: Analysis, tenant: Tenant, labels: dict[str, str]) -> list[Workload]:
    """The pods with these labels that a tenant's rule connects: those of the tenant's namespace (the rule
    opens their end too) and those of its allowedNamespaces whose own end is open (not another tenant's
    namespace, under that tenant's default deny)."""
    allowed = set(tenant.network_policy.get("allowedNamespaces") or []) - analysis.tenant_namespaces
    return [
        each
        for each in analysis.pods
        if each.matches(labels) and (each.namespace == tenant.namespace or each.namespace in allowed)
    ]


def designed_connectivity(analysis: Analysis) -> Connectivity:
    """What the design (shared/DESIGN.md, 'What a tenant gets') lets through to and from the tenants' pods,
    worked out from the tenants' specs and the pods' labels alone: every pod of a tenant's namespace reaches
    the cluster DNS on 53; the server reaches Redis on 6379; the `helm test` pods reach Redis and the server;
    the pods of each allowedNamespace reach the server on its port; each rule opens its path, on its ports,
    to its peers in the tenant's namespace and in the allowedNamespaces. Nothing else: no other tenant, and
    nothing outside the cluster."""
    found: Connectivity = {}

    def allow(sources: Iterable[Workload], destinations: Iterable[Workload], connections: Ports) -> None:
        for source in sources:
            for destination in destinations:
                if source != destination:
                    key = (source.peer, destination.peer)
                    found[key] = union(found.get(key, NONE), connections)

    for tenant in analysis.tenants:
        settings = tenant.network_policy
        assert settings.get("enabled", True), "the design's connectivity is that of enabled policies"
        own = [each for each in analysis.pods if each.namespace == tenant.namespace]
        server, redis = analysis.pod(tenant.namespace, SERVER), analysis.pod(tenant.namespace, REDIS)
        helm_tests = [each for each in own if each.matches(HELM_TEST)]
        listen = tcp(_server_port(tenant))
        allow(own, analysis.cluster_dns, DNS)
        allow([server], [redis], tcp(6379))
        allow(helm_tests, [redis], tcp(6379))
        allow(helm_tests, [server], listen)
        allow([each for each in _peers(analysis, tenant, {}) if each not in own], [server], listen)
        for rule in settings.get("ingressRules") or []:
            allow(_peers(analysis, tenant, rule.get("from") or {}), [server], _rule_ports(rule))
        for rule in settings.get("egressRules") or []:
            allow([server], _peers(analysis, tenant, rule.get("to") or {}), _rule_ports(rule))
    return found


def differences(analysis: Analysis, designed: Connectivity) -> list[str]:
    """Where the analyzer and the design disagree about a connection to or from a tenant's pods."""
    touching = {
        key
        for key in analysis.connectivity.keys() | designed.keys()
        if {namespace_of(key[0]), namespace_of(key[1])} & analysis.tenant_namespaces
    }
    return [
        f"{source} -> {destination}: analyzer {show(analysis.between(source, destination)) or 'nothing'},"
        f" design {show(designed.get((source, destination), NONE)) or 'nothing'}"
        for source, destination in sorted(touching)
        if analysis.between(source, destination) != designed.get((source, destination), NONE)
    ]


# The isolated tenants.


def test_the_analysis_sees_every_tenant_under_its_policies(isolated: Analysis) -> None:
    for tenant in TENANTS:
        policies = {
            doc["metadata"]["name"]
            for doc in isolated.documents
            if doc["kind"] == "NetworkPolicy" and doc["metadata"]["namespace"] == tenant.namespace
        }
        assert "default-deny" in policies, tenant.name
        # The analyzer reads the workloads themselves (a pod template stands in for the pods).
        server, redis = isolated.pod(tenant.namespace, SERVER), isolated.pod(tenant.namespace, REDIS)
        assert (server.kind, redis.kind) == ("Deployment", "StatefulSet")
        # The analysis is not vacuous: the tenant's own path is there.
        assert isolated.between(server.peer, redis.peer) == tcp(6379)


def test_no_path_between_tenants(isolated: Analysis) -> None:
    assert cross_tenant_paths(isolated) == []


def test_only_its_own_server_reaches_redis_and_only_on_6379(isolated: Analysis) -> None:
    assert redis_intruders(isolated) == []
    for tenant in TENANTS:
        redis = isolated.pod(tenant.namespace, REDIS).peer
        sources = {source for source, destination in isolated.connectivity if destination == redis}
        helm_tests = {
            f"{tenant.namespace}/tenant-test-redis[Pod]",
            f"{tenant.namespace}/tenant-test-server[Pod]",
        }
        assert sources == {isolated.pod(tenant.namespace, SERVER).peer} | helm_tests


def test_dns_goes_only_to_the_cluster_dns_on_53(isolated: Analysis) -> None:
    assert dns_leaks(isolated) == []
    coredns = isolated.named("kube-system/coredns[Deployment]").peer
    for tenant in TENANTS:
        for each in isolated.pods:
            if each.namespace == tenant.namespace:
                assert isolated.between(each.peer, coredns) == DNS, each.peer
                assert isolated.between(each.peer, "elsewhere/fake-dns[Pod]") == NONE, each.peer


def test_nothing_outside_the_cluster_reaches_or_is_reached(isolated: Analysis) -> None:
    assert [
        key
        for key in isolated.connectivity
        if OUTSIDE in key and {namespace_of(key[0]), namespace_of(key[1])} & isolated.tenant_namespaces
    ] == []
    # The analyzer does model the outside: the world's unconfined pods reach it.
    assert isolated.between("default/web[Pod]", OUTSIDE) == ALL


SAMPLE_SERVER = "tenant-sample-tenant/neurallog-server[Deployment]"
PLAIN_SERVER = "tenant-plain/neurallog-server[Deployment]"
ANALYTICS_SERVER = "tenant-analytics/neurallog-server[Deployment]"


@pytest.mark.parametrize(
    ("source", "destination", "expected"),
    [
        # The guide's tenant: its ingress rule and allowedNamespaces, both on the server's port.
        ("monitoring/prometheus[Pod]", SAMPLE_SERVER, tcp(3030)),
        ("tenant-sample-tenant/prometheus[Pod]", SAMPLE_SERVER, tcp(3030)),
        ("elsewhere/prometheus[Pod]", SAMPLE_SERVER, NONE),
        ("default/web[Pod]", SAMPLE_SERVER, tcp(3030)),
        ("monitoring/grafana[Pod]", SAMPLE_SERVER, tcp(3030)),
        ("data/ingest[Pod]", SAMPLE_SERVER, NONE),
        # Its egress rule: external-api on 443 in its own and its allowed namespaces only.
        (SAMPLE_SERVER, "default/external-api[Pod]", tcp(443)),
        (SAMPLE_SERVER, "tenant-sample-tenant/external-api[Pod]", tcp(443)),
        (SAMPLE_SERVER, "elsewhere/external-api[Pod]", NONE),
        (SAMPLE_SERVER, "monitoring/prometheus[Pod]", NONE),
        (SAMPLE_SERVER, "default/web[Pod]", NONE),
        # Only the server has the rule's egress: Redis does not reach external-api.
        ("tenant-sample-tenant/redis[StatefulSet]", "default/external-api[Pod]", NONE),
        # The default policy: nobody in, nothing out but DNS and Redis.
        ("default/web[Pod]", PLAIN_SERVER, NONE),
        ("monitoring/prometheus[Pod]", PLAIN_SERVER, NONE),
        ("tenant-plain/debug[Pod]", PLAIN_SERVER, NONE),
        (PLAIN_SERVER, "default/external-api[Pod]", NONE),
        # A server on 8080: allowedNamespaces on 8080, a rule of no ports on all, rules on their ports.
        ("data/warehouse[Pod]", ANALYTICS_SERVER, tcp(8080)),
        ("data/ingest[Pod]", ANALYTICS_SERVER, ALL),
        ("tenant-analytics/ingest[Pod]", ANALYTICS_SERVER, ALL),
        ("elsewhere/ingest[Pod]", ANALYTICS_SERVER, NONE),
        (ANALYTICS_SERVER, "data/warehouse[Pod]", tcp(5432)),
        (ANALYTICS_SERVER, "elsewhere/warehouse[Pod]", NONE),
        (ANALYTICS_SERVER, "data/collector[Pod]", udp(8125)),
        (ANALYTICS_SERVER, "data/collector-canary[Pod]", NONE),
        (ANALYTICS_SERVER, "data/ingest[Pod]", NONE),
        # Its invitation to tenant-plain opens nothing: tenant-plain's pods may not send.
        (PLAIN_SERVER, ANALYTICS_SERVER, NONE),
        ("tenant-plain/debug[Pod]", ANALYTICS_SERVER, NONE),
    ],
)
def test_a_described_path_has_exactly_its_ports(
    isolated: Analysis, source: str, destination: str, expected: Ports
) -> None:
    # Both ends exist: a misspelt name would pass as "no path".
    isolated.named(source)
    isolated.named(destination)
    assert show(isolated.between(source, destination)) == show(expected)


def test_every_path_to_or_from_a_tenant_is_a_designed_one_and_every_designed_one_is_there(
    isolated: Analysis,
) -> None:
    designed = designed_connectivity(isolated)
    assert len(designed) > 40  # the tenants, their rules and the world make many paths
    assert differences(isolated, designed) == []


# Negative controls: the same checks on policies that leak find the leak.


def _without(name: str) -> Mutation:
    def mutate(documents: list[Doc]) -> None:
        documents[:] = [
            doc for doc in documents if doc["metadata"]["name"] != name or doc["kind"] != "NetworkPolicy"
        ]

    return mutate


def _policy(documents: list[Doc], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        doc for doc in documents if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == name
    )
    return found


def test_control_a_tenant_without_policies_is_reached_and_reaches_others(
    make_analysis: MakeAnalysis,
) -> None:
    open_plain = Tenant("plain", {"networkPolicy": {"enabled": False}})
    analysis = make_analysis("plain-disabled", [SAMPLE, open_plain, ANALYTICS], {})
    # tenant-plain's pods, unconfined, now take the analytics tenant's invitation.
    assert f"{PLAIN_SERVER} -> {ANALYTICS_SERVER}: TCP 8080" in cross_tenant_paths(analysis)
    assert "default/web[Pod] -> tenant-plain/redis[StatefulSet]: All Connections" in redis_intruders(analysis)


def test_control_dns_to_any_address_is_found(make_analysis: MakeAnalysis) -> None:
    def dns_anywhere(documents: list[Doc]) -> None:
        del _policy(documents, "allow-dns")["spec"]["egress"][0]["to"]

    analysis = make_analysis("dns-anywhere", TENANTS, {SAMPLE.name: dns_anywhere})
    leaks = dns_leaks(analysis)
    assert f"{SAMPLE_SERVER} -> elsewhere/fake-dns[Pod]: TCP 53,UDP 53" in leaks
    assert f"{SAMPLE_SERVER} -> {OUTSIDE}: TCP 53,UDP 53" in leaks
    assert not [leak for leak in leaks if not leak.startswith("tenant-sample-tenant/")]


def test_control_a_widened_rule_and_a_lost_allowed_namespace_are_found(
    make_analysis: MakeAnalysis,
) -> None:
    def widen_and_drop(documents: list[Doc]) -> None:
        del _policy(documents, "egress-0")["spec"]["egress"][0]["ports"]
        _without("allow-namespaces")(documents)

    analysis = make_analysis("widened", TENANTS, {SAMPLE.name: widen_and_drop})
    found = differences(analysis, designed_connectivity(analysis))
    assert f"{SAMPLE_SERVER} -> default/external-api[Pod]: analyzer All Connections, design TCP 443" in found
    assert f"default/web[Pod] -> {SAMPLE_SERVER}: analyzer nothing, design TCP 3030" in found
    # The guide's monitoring still gets in through the ingress rule: only its other pods lost the path.
    assert analysis.between("monitoring/prometheus[Pod]", SAMPLE_SERVER) == tcp(3030)
