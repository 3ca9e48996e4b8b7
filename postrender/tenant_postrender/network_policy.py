"""The tenant's NetworkPolicies, built from the `networkPolicy` values the chart carries in a ConfigMap.

The chart cannot render these itself without duplicating the security design in templates; instead it carries
`toJson .Values.networkPolicy` in a ConfigMap annotated `neurallog.io/postrender-input: network-policy`, which
the post-renderer consumes (it is never applied) and replaces with the policies below. Names are fixed, so
`kubectl get networkpolicies` reads the same in every tenant:

- `default-deny`: every pod of the namespace, no ingress and no egress unless another policy allows it.
- `allow-dns`: egress to the cluster DNS only (pods labelled k8s-app=kube-dns in kube-system, UDP and TCP 53).
  Port 53 to anywhere would also let a tenant talk to any resolver outside the cluster, a known exfiltration
  path; clusters whose DNS pods carry another label add an `egressRules` entry.
- `server-to-redis`: the server reaches Redis on 6379. One policy selects both pod sets, redis accepting the
  server and the server sending to redis, so that the flow is one object; the only extra it admits is server
  to server on 6379, where nothing listens.
- `redis-replication`: Redis pods reach each other on 6379 (replicas follow the primary).
- `allow-namespaces`: the server accepts its port (3030 unless the tenant's PORT moves it) from each of
  `allowedNamespaces`, matched by the namespace's
  `kubernetes.io/metadata.name` label, which the API server sets and nobody can forge. Absent when the list is
  empty: a rule with no peers would admit everyone.
- `ingress-<i>` / `egress-<i>`: `ingressRules[i]` lets the pods with its `from` labels reach the server on its
  ports; `egressRules[i]` lets the server reach the pods with its `to` labels on its ports. The labels select
  pods of the tenant's own namespace and of the `allowedNamespaces` (by their name label), never of any other
  namespace. No ports means all ports, as in Kubernetes.
- `ingress-<i>-peers` / `egress-<i>-peers`: the other end of the same path for the peers that live in the
  tenant's namespace, which are under `default-deny` too: their egress to the server (ingress rules), their
  ingress from the server (egress rules), on the same ports. Peers in the allowedNamespaces answer to their
  own namespace's policies.
- `helm-test`, `helm-test-redis`, `helm-test-server`: the chart's `helm test` pods (app=tenant-test) reach
  Redis on 6379 and the server on its port, and Redis and the server accept them there. Both ends, nothing
  more: the tests prove the tenant's own paths rather than a path opened for them.
"""

import json
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from tenant_postrender.stream import Manifest, annotations_of, labels_of, name_of, subject_of
from tenant_postrender.violations import Violation
from tenant_postrender.workloads import containers, pod_template

CARRIER_ANNOTATION = "neurallog.io/postrender-input"
CARRIER_INPUT = "network-policy"
CARRIER_KEY = "networkPolicy.json"
FILENAME_ANNOTATION = "postrenderer.helm.sh/postrender-filename"
DESCRIPTION_ANNOTATION = "neurallog.io/description"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
MANAGED_BY = "tenant-postrender"

SERVER_PODS = {"app": "neurallog-server"}
REDIS_PODS = {"app": "redis"}
# The pods of the chart's `helm test` hooks (charts/tenant/templates/tests/).
TEST_PODS = {"app": "tenant-test"}
SERVER_PORT = 3030
REDIS_PORT = 6379
DNS_PORT = 53
PROTOCOLS = ("TCP", "UDP", "SCTP")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class Port(NamedTuple):
    protocol: str
    port: int


class Rule(NamedTuple):
    description: str
    peer_labels: dict[str, str]
    ports: tuple[Port, ...]


class NetworkPolicySettings(NamedTuple):
    """The chart's `networkPolicy` values, defaults as in the Tenant API."""

    enabled: bool = True
    allowed_namespaces: tuple[str, ...] = ()
    ingress_rules: tuple[Rule, ...] = ()
    egress_rules: tuple[Rule, ...] = ()


def is_carrier(manifest: Manifest) -> bool:
    return (
        manifest.get("kind") == "ConfigMap"
        and annotations_of(manifest).get(CARRIER_ANNOTATION) == CARRIER_INPUT
    )


class _SettingsReader:
    """Reads the carried values, collecting every problem instead of stopping at the first."""

    def __init__(self, carrier: Manifest) -> None:
        self.subject = subject_of(carrier)
        self.violations: list[Violation] = []

    def refuse(self, field: str, problem: str, fix: str) -> None:
        self.violations.append(Violation(self.subject, field, problem, fix))

    def settings(self, values: object) -> NetworkPolicySettings:
        if not isinstance(values, dict):
            self.refuse("networkPolicy", "is not a mapping", "set networkPolicy to a mapping in the values")
            return NetworkPolicySettings()
        known = {"enabled", "allowedNamespaces", "ingressRules", "egressRules"}
        for key in sorted(set(values) - known):
            self.refuse(
                f"networkPolicy.{key}", "is not a known field", f"use only {', '.join(sorted(known))}"
            )
        enabled = values.get("enabled", True)
        if not isinstance(enabled, bool):
            self.refuse("networkPolicy.enabled", f"is {enabled!r}, not a boolean", "set it to true or false")
        return NetworkPolicySettings(
            enabled=enabled is not False,
            allowed_namespaces=self.namespaces(values.get("allowedNamespaces", [])),
            ingress_rules=self.rules("ingressRules", "from", values.get("ingressRules", [])),
            egress_rules=self.rules("egressRules", "to", values.get("egressRules", [])),
        )

    def namespaces(self, names: object) -> tuple[str, ...]:
        field = "networkPolicy.allowedNamespaces"
        if not isinstance(names, list):
            self.refuse(field, "is not a list", "list namespace names, e.g. [monitoring]")
            return ()
        for index, name in enumerate(names):
            if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
                self.refuse(
                    f"{field}[{index}]",
                    f"{name!r} is not a namespace name",
                    "use a DNS-1123 label: lower-case letters, digits and '-', at most 63 characters",
                )
        return tuple(name for name in names if isinstance(name, str))

    def rules(self, key: str, peer_key: str, entries: object) -> tuple[Rule, ...]:
        field = f"networkPolicy.{key}"
        if not isinstance(entries, list):
            self.refuse(field, "is not a list", f"list rules of description, {peer_key} and ports")
            return ()
        rules = []
        for index, entry in enumerate(entries):
            rule_field = f"{field}[{index}]"
            if not isinstance(entry, dict):
                self.refuse(rule_field, "is not a mapping", f"give description, {peer_key} and ports")
                continue
            for unknown in sorted(set(entry) - {"description", peer_key, "ports"}):
                self.refuse(
                    f"{rule_field}.{unknown}", "is not a known field", f"use description, {peer_key}, ports"
                )
            description = entry.get("description", "")
            if not isinstance(description, str):
                self.refuse(f"{rule_field}.description", "is not a string", "describe the rule in words")
                description = ""
            rules.append(
                Rule(
                    description,
                    self.labels(f"{rule_field}.{peer_key}", entry.get(peer_key, {})),
                    self.ports(f"{rule_field}.ports", entry.get("ports", [])),
                )
            )
        return tuple(rules)

    def labels(self, field: str, labels: object) -> dict[str, str]:
        if not isinstance(labels, dict):
            self.refuse(field, "is not a mapping of pod labels", "write it as {label: value}, e.g. {app: x}")
            return {}
        for key, value in labels.items():
            if not _is_label_key(key):
                self.refuse(
                    f"{field}.{key}",
                    "is not a valid label key",
                    "use [prefix/]name with a name of at most 63 letters, digits, '-', '_' or '.'",
                )
            if not isinstance(value, str) or not (value == "" or _LABEL_NAME.fullmatch(value)):
                self.refuse(
                    f"{field}.{key}",
                    f"{value!r} is not a valid label value",
                    "quote it as a string of at most 63 letters, digits, '-', '_' or '.'",
                )
        return {str(key): str(value) for key, value in labels.items()}

    def ports(self, field: str, ports: object) -> tuple[Port, ...]:
        if not isinstance(ports, list):
            self.refuse(field, "is not a list", "list ports as {protocol: TCP, port: 443}")
            return ()
        parsed = []
        for index, entry in enumerate(ports):
            port_field = f"{field}[{index}]"
            if not isinstance(entry, dict):
                self.refuse(port_field, "is not a mapping", "write it as {protocol: TCP, port: 443}")
                continue
            protocol, port = entry.get("protocol", "TCP"), entry.get("port")
            if protocol not in PROTOCOLS:
                self.refuse(
                    f"{port_field}.protocol", f"{protocol!r} is not a protocol", "use TCP, UDP or SCTP"
                )
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                self.refuse(f"{port_field}.port", f"{port!r} is not a port number", "use a number 1-65535")
                continue
            parsed.append(Port(str(protocol), port))
        return tuple(parsed)


def _is_label_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return bool(_LABEL_NAME.fullmatch(name))


def read_settings(carrier: Manifest) -> tuple[NetworkPolicySettings, list[Violation]]:
    """The values carried by the ConfigMap, and every reason they cannot be used."""
    reader = _SettingsReader(carrier)
    data = carrier.get("data")
    text = data.get(CARRIER_KEY) if isinstance(data, dict) else None
    if not isinstance(text, str):
        reader.refuse(
            f"data.{CARRIER_KEY}",
            "is missing",
            "render it as {{ toJson .Values.networkPolicy }} (charts/tenant does)",
        )
        return NetworkPolicySettings(), reader.violations
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        reader.refuse(f"data.{CARRIER_KEY}", f"is not JSON ({error})", "render it with toJson")
        return NetworkPolicySettings(), reader.violations
    return reader.settings(values), reader.violations


class _Placement(NamedTuple):
    """Where the injected policies go and how they are labelled: after the carrier they replace."""

    namespace: str | None
    labels: dict[str, str]
    annotations: dict[str, str]

    @classmethod
    def of(cls, carrier: Manifest) -> "_Placement":
        metadata = carrier.get("metadata") or {}
        namespace = metadata.get("namespace")
        labels = {str(key): str(value) for key, value in labels_of(carrier).items()}
        labels |= {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/part-of": "neurallog"}
        # Helm 4 maps each post-rendered document back to a template file through this annotation;
        # the policies belong to the template that carried their values.
        filename = annotations_of(carrier).get(FILENAME_ANNOTATION)
        annotations = {FILENAME_ANNOTATION: str(filename)} if filename else {}
        return cls(namespace if isinstance(namespace, str) else None, labels, annotations)


def _policy(placement: _Placement, name: str, spec: dict[str, Any], description: str = "") -> Manifest:
    metadata: dict[str, Any] = {"name": name}
    if placement.namespace:
        metadata["namespace"] = placement.namespace
    metadata["labels"] = dict(placement.labels)
    annotations = placement.annotations | ({DESCRIPTION_ANNOTATION: description} if description else {})
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def _ports(*ports: Port) -> list[dict[str, Any]]:
    return [{"protocol": port.protocol, "port": port.port} for port in ports]


def _pods(labels: dict[str, str]) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": dict(labels)}}


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def _one_way(
    placement: _Placement,
    name: str,
    direction: str,
    pods: dict[str, str],
    entries: list[tuple[list[dict[str, Any]], tuple[Port, ...]]],
    *,
    description: str = "",
) -> Manifest:
    """The pods with these labels accept (Ingress) or send (Egress) traffic: one entry per (peers, ports),
    no ports meaning all ports."""
    peers_key = "from" if direction == "Ingress" else "to"
    rules = [{peers_key: peers} | ({"ports": _ports(*ports)} if ports else {}) for peers, ports in entries]
    spec = {"podSelector": {"matchLabels": dict(pods)}, "policyTypes": [direction], direction.lower(): rules}
    return _policy(placement, name, spec, description)


def _rule_policies(
    placement: _Placement, name: str, direction: str, rule: Rule, namespaces: tuple[str, ...]
) -> list[Manifest]:
    """Both ends of a rule's path: the server's (`name`) and that of the peers in the tenant's namespace."""
    peers = [_pods(rule.peer_labels)] + [
        _namespace(namespace) | _pods(rule.peer_labels) for namespace in namespaces
    ]
    other_way = "Egress" if direction == "Ingress" else "Ingress"
    return [
        _one_way(
            placement, name, direction, SERVER_PODS, [(peers, rule.ports)], description=rule.description
        ),
        _one_way(
            placement,
            f"{name}-peers",
            other_way,
            rule.peer_labels,
            [([_pods(SERVER_PODS)], rule.ports)],
            description=rule.description,
        ),
    ]


def server_port(manifests: Iterable[Manifest]) -> int:
    """The port the server listens on, as its Deployment declares it (the tenant's PORT env moves it)."""
    for manifest in manifests:
        template = pod_template(manifest)
        if (
            manifest.get("kind") != "Deployment"
            or name_of(manifest) != "neurallog-server"
            or template is None
        ):
            continue
        for field, container in containers(template.spec):
            ports = container.get("ports")
            for port in ports if field.startswith("containers") and isinstance(ports, list) else []:
                if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
                    return int(port["containerPort"])
    return SERVER_PORT


def build_policies(
    settings: NetworkPolicySettings, carrier: Manifest, listen_port: int = SERVER_PORT
) -> list[Manifest]:
    """The designed policies for these settings (none when disabled), in the order they are documented."""
    if not settings.enabled:
        return []
    placement = _Placement.of(carrier)
    redis_port = _ports(Port("TCP", REDIS_PORT))
    policies = [
        _policy(placement, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy(
            placement,
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [_namespace("kube-system") | _pods({"k8s-app": "kube-dns"})],
                        "ports": _ports(Port("UDP", DNS_PORT), Port("TCP", DNS_PORT)),
                    }
                ],
            },
        ),
        _policy(
            placement,
            "server-to-redis",
            {
                "podSelector": {
                    "matchExpressions": [
                        {"key": "app", "operator": "In", "values": [SERVER_PODS["app"], REDIS_PODS["app"]]}
                    ]
                },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [_pods(SERVER_PODS)], "ports": redis_port}],
                "egress": [{"to": [_pods(REDIS_PODS)], "ports": redis_port}],
            },
        ),
        _policy(
            placement,
            "redis-replication",
            {
                "podSelector": {"matchLabels": dict(REDIS_PODS)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [_pods(REDIS_PODS)], "ports": redis_port}],
                "egress": [{"to": [_pods(REDIS_PODS)], "ports": redis_port}],
            },
        ),
    ]
    if settings.allowed_namespaces:
        policies.append(
            _one_way(
                placement,
                "allow-namespaces",
                "Ingress",
                SERVER_PODS,
                [([_namespace(name) for name in settings.allowed_namespaces], (Port("TCP", listen_port),))],
            )
        )
    for direction, rules in (("Ingress", settings.ingress_rules), ("Egress", settings.egress_rules)):
        for index, rule in enumerate(rules):
            name = f"{direction.lower()}-{index}"
            policies += _rule_policies(placement, name, direction, rule, settings.allowed_namespaces)
    redis, server = (Port("TCP", REDIS_PORT),), (Port("TCP", listen_port),)
    tests = [_pods(TEST_PODS)]
    policies += [
        _one_way(
            placement,
            "helm-test",
            "Egress",
            TEST_PODS,
            [([_pods(REDIS_PODS)], redis), ([_pods(SERVER_PODS)], server)],
        ),
        _one_way(placement, "helm-test-redis", "Ingress", REDIS_PODS, [(tests, redis)]),
        _one_way(placement, "helm-test-server", "Ingress", SERVER_PODS, [(tests, server)]),
    ]
    return policies
