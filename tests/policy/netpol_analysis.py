"""np-guard's netpol-analyzer over tenants rendered by the real chart and post-renderer.

The analyzer (`netpolicy`, built from cluster/tools/netpol-analyzer like the project's other tools) reads a
directory of YAML: Namespaces, NetworkPolicies and workloads (Pods, Deployments, StatefulSets...: it stands
a workload's pod template in for its pods) and lists every allowed connection between them and the IP range
outside the cluster. No cluster is needed.

(A module of its own, not conftest.py: tests/charts already has a `conftest` module on the path.)
"""

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from local_cluster.build import ensure_binaries
from tenant_operator.namespace import namespace_labels
from tenant_postrender.render import render

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".cluster" / "bin"
ANALYZER = BIN / "netpolicy"
HELM = BIN / "helm"
CHART = REPO / "charts" / "tenant"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_PORT = 65535
# How the analyzer names the world outside the cluster (any address no policy names).
OUTSIDE = "0.0.0.0-255.255.255.255"

Doc = dict[str, Any]


def tools() -> tuple[Path, Path]:
    """The analyzer and Helm of .cluster/bin, built (or linked from the cache) when missing. A missing tool
    fails the tests: isolation that was not analysed is not proven."""
    if not (ANALYZER.is_file() and HELM.is_file()):
        ensure_binaries(BIN, clients_only=True)
    for tool in (ANALYZER, HELM):
        assert tool.is_file(), f"{tool} is missing after building the client tools"
    return ANALYZER, HELM


class PortRange(NamedTuple):
    protocol: str
    start: int
    end: int


Ports = frozenset[PortRange]
"""A set of connections, canonical: per protocol, disjoint ranges that do not touch."""


def ports(ranges: Iterable[PortRange]) -> Ports:
    """The canonical form of these ranges: overlapping or adjacent ranges of a protocol merged."""
    merged: list[PortRange] = []
    for current in sorted(ranges):
        last = merged[-1] if merged else None
        if last and last.protocol == current.protocol and current.start <= last.end + 1:
            merged[-1] = PortRange(last.protocol, last.start, max(last.end, current.end))
        else:
            merged.append(current)
    return frozenset(merged)


NONE: Ports = frozenset()
ALL: Ports = ports(PortRange(protocol, 1, MAX_PORT) for protocol in PROTOCOLS)


def tcp(*numbers: int) -> Ports:
    return ports(PortRange("TCP", number, number) for number in numbers)


def udp(*numbers: int) -> Ports:
    return ports(PortRange("UDP", number, number) for number in numbers)


def union(*sets: Ports) -> Ports:
    return ports(port_range for each in sets for port_range in each)


def has_port(connections: Ports, number: int) -> bool:
    return any(each.start <= number <= each.end for each in connections)


def show(connections: Ports) -> str:
    """As the analyzer prints them, for messages."""
    if connections == ALL:
        return "All Connections"
    return ",".join(
        f"{each.protocol} {each.start}" + (f"-{each.end}" if each.end != each.start else "")
        for each in sorted(connections)
    )


def parse_connections(text: str) -> Ports:
    """The analyzer's `conn` field: "All Connections", or "TCP 53,443,UDP 53,1000-2000" (its source,
    pkg/netpol/internal/common/connectionset.go, joins protocols and the ranges of each with commas)."""
    if text == "All Connections":
        return ALL
    ranges: list[PortRange] = []
    protocol = ""
    for item in text.split(","):
        words = item.split()
        if words[0] in PROTOCOLS:
            protocol, words = words[0], words[1:]
        assert protocol and len(words) == 1, f"unexpected connection text {text!r}"
        low, _, high = words[0].partition("-")
        ranges.append(PortRange(protocol, int(low), int(high or low)))
    return ports(ranges)


@dataclass(frozen=True)
class Workload:
    """Pods as the analyzer sees them: one object (a Pod or a workload's template) in a namespace."""

    namespace: str
    name: str
    kind: str
    labels: Mapping[str, str] = field(hash=False, compare=False)

    @property
    def peer(self) -> str:
        """The analyzer's name for it."""
        return f"{self.namespace}/{self.name}[{self.kind}]"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(self.labels.get(key) == value for key, value in labels.items())


POD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def workloads(documents: Iterable[Doc]) -> list[Workload]:
    """Every Pod and workload among these documents, with its pods' labels."""
    found = []
    for document in documents:
        kind = document.get("kind")
        if kind not in POD_KINDS:
            continue
        metadata = document["metadata"]
        labels = (
            metadata.get("labels") if kind == "Pod" else document["spec"]["template"]["metadata"]["labels"]
        )
        found.append(Workload(metadata["namespace"], metadata["name"], str(kind), dict(labels or {})))
    return found


@dataclass(frozen=True)
class Tenant:
    """A Tenant as the operator installs it: release `name` of charts/tenant with the spec as values, in
    namespace tenant-<name>."""

    name: str
    values: Doc

    @property
    def namespace(self) -> str:
        return f"tenant-{self.name}"

    @property
    def network_policy(self) -> Doc:
        settings: Doc = self.values.get("networkPolicy") or {}
        return settings


def helm_template(helm: Path, tenant: Tenant, values_dir: Path) -> str:
    values = values_dir / f"{tenant.name}-values.yaml"
    values.write_text(yaml.safe_dump(tenant.values))
    result = subprocess.run(
        [
            str(helm),
            "template",
            tenant.name,
            str(CHART),
            "--namespace",
            tenant.namespace,
            "--values",
            str(values),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"helm template {tenant.name} failed:\n{result.stderr}"
    return result.stdout


def render_tenant(helm: Path, tenant: Tenant, values_dir: Path) -> list[Doc]:
    """The tenant's release as it is applied: `helm template` through the post-renderer."""
    return [doc for doc in yaml.safe_load_all(render(helm_template(helm, tenant, values_dir))) if doc]


def namespace(name: str, labels: Mapping[str, str] | None = None) -> Doc:
    """A Namespace with the name label the API server sets on every namespace."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**(labels or {}), NAMESPACE_NAME_LABEL: name}},
    }


def tenant_namespace(tenant: Tenant) -> Doc:
    """The tenant's namespace, labelled as the operator labels it."""
    return namespace(tenant.namespace, namespace_labels(tenant.name))


def pod(namespace: str, name: str, labels: Mapping[str, str]) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"containers": [{"name": name, "image": "probe:1"}]},
    }


def deployment(namespace: str, name: str, labels: Mapping[str, str], replicas: int = 2) -> Doc:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": name, "image": "probe:1"}]},
            },
        },
    }


Connectivity = dict[tuple[str, str], Ports]
"""(source peer, destination peer) -> what the policies allow from one to the other (pairs allowing nothing
are absent)."""


def analyze(analyzer: Path, documents: Iterable[Doc], directory: Path) -> Connectivity:
    """Every connection the analyzer finds allowed among these objects (written to `directory`).

    Not with `--fail`: in v1.4.2 it makes the reading of a directory fail with no error (ConnlistFromDirPath
    takes the builder's empty error list for an error, and aggregating no error is nil), so the command exits
    0 having listed nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resources.yaml").write_text(yaml.safe_dump_all(list(documents)))
    output = directory.parent / f"{directory.name}-connlist.json"
    result = subprocess.run(
        [str(analyzer), "list", "--dirpath", str(directory), "-o", "json", "-f", str(output)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    # It logs to stderr whatever it could not read or understand (a policy or object it skips), and goes on.
    assert result.returncode == 0 and not result.stderr, f"netpolicy list failed or warned:\n{result.stderr}"
    entries = json.loads(output.read_text())
    # An empty list would make every "no path" true; at the least, the probe pods reach each other.
    assert entries, f"the analyzer found no connection at all in {directory}"
    connectivity: Connectivity = {}
    for entry in entries:
        key = (entry["src"], entry["dst"])
        assert key not in connectivity, f"the analyzer listed {key} twice"
        connectivity[key] = parse_connections(entry["conn"])
    return connectivity


def namespace_of(peer: str) -> str:
    """The namespace of a peer name, "" for the IP ranges outside the cluster."""
    return peer.split("/", 1)[0] if "/" in peer else ""
