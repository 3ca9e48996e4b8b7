"""What a set of NetworkPolicies lets through, by the rules of the Kubernetes NetworkPolicy API, so that tests
can ask about connections instead of comparing policy text.

A connection from one pod to another on a port passes when the source's egress and the target's ingress both
admit it. A pod that no policy of a direction selects is open in that direction; a pod that some do is open
only to what one of their rules admits. Supported: podSelector and namespaceSelector (matchLabels and
matchExpressions), numbered ports with protocols. Anything else (ipBlock, named ports) admits nothing here,
and the policies under test use none of it.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a label selector select these labels (an empty selector selects everything)?"""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_admits(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    namespaces = peer.get("namespaceSelector")
    if namespaces is None:
        in_namespace = pod.namespace == policy_namespace
    else:
        in_namespace = selects(namespaces, {NAMESPACE_NAME_LABEL: pod.namespace})
    pods = peer.get("podSelector")
    return in_namespace and (pods is None or selects(pods, pod.labels))


def _ports_admit(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(
        entry.get("protocol", "TCP") == protocol and entry.get("port") in (None, port) for entry in ports
    )


def _policy_types(spec: dict[str, Any]) -> list[str]:
    types: list[str] = spec.get("policyTypes") or ["Ingress"] + (["Egress"] if "egress" in spec else [])
    return types


def _side_admits(
    policies: Iterable[dict[str, Any]], pod: Pod, direction: str, other: Pod, *, port: int, protocol: str
) -> bool:
    """Do the policies of `pod`'s namespace let it send to (Egress) or accept from (Ingress) `other`?"""
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == pod.namespace
        and selects(policy["spec"]["podSelector"], pod.labels)
        and direction in _policy_types(policy["spec"])
    ]
    if not selecting:
        return True
    return any(
        _ports_admit(rule.get("ports"), port, protocol)
        and (
            not rule.get(peers_key)
            or any(_peer_admits(peer, policy["metadata"]["namespace"], other) for peer in rule[peers_key])
        )
        for policy in selecting
        for rule in policy["spec"].get(rules_key) or []
    )


def allows(
    policies: list[dict[str, Any]], source: Pod, target: Pod, port: int, protocol: str = "TCP"
) -> bool:
    """Does a connection from `source` to `target` on this port pass the policies?"""
    return _side_admits(policies, source, "Egress", target, port=port, protocol=protocol) and _side_admits(
        policies, target, "Ingress", source, port=port, protocol=protocol
    )


def open_paths(
    policies: list[dict[str, Any]], pods: list[Pod], ports: list[tuple[str, int]]
) -> set[tuple[str, str, str, int]]:
    """(source, target, protocol, port) of every connection between two different pods that passes."""
    return {
        (str(source), str(target), protocol, port)
        for source in pods
        for target in pods
        if source != target
        for protocol, port in ports
        if allows(policies, source, target, port, protocol)
    }
