"""Scale and speed side by side: N tenants created at once, until every one runs, per contestant.

For each N (and each repetition, the contestants taking turns in a rotating order) the harness creates N
tenants in one `kubectl create` and measures, per contestant:
- time until every tenant runs: the contestant says it is done (ours: phase Running; the floor: `helm`
  exited; Flux: the HelmRelease Ready at its generation) and its Deployment and StatefulSet are Ready (read by
  one watcher, the same for everyone); the lag between the two per tenant (positive: said after the workloads
  were Ready);
- the contestant's CPU seconds, children included (ours: the operator, Helm and the post-renderer it runs;
  the floor: the Helm processes; Flux: helm-controller and source-controller), from /proc/<pid>/stat;
- its peak memory: the main process's VmHWM (reset first for a process that already ran) and the peak of the
  whole tree's summed RSS, sampled every 0.5 s;
- the API server's requests (apiserver_request_total, every client: the cluster's own controllers and KWOK
  too) and CPU seconds, etcd's CPU seconds; Helm commands run (ours: its metric; the floor: one per tenant).
At the largest N, in the first repetition: ours is restarted (Helm commands of the new process, which should
be none, and the time until it knows every tenant Running again), then each contestant with a process is left
idle (--idle-seconds) and its CPU and the API requests are measured.

Contestants (--contestants): `ours` (the operator as a process, helm backend, as the chart's account),
`ours-flux` (the same with the flux backend: its HelmReleases installed by the Flux of `flux`),
`floor` (N `helm upgrade --install` of charts/tenant through the same post-renderer, the operator's own Helm
code with the same concurrency, no operator), `flux` (Flux's helm-controller of the local cluster,
HelmReleases of the chart served by its HelmRepository; its concurrency is the local cluster's, 4),
`helm-operator` (operator-sdk's, through bench/helm_operator.py). Equal knobs: the same chart
and small spec (no secretKeyRef), the same concurrency, nobody waits (no --wait, disableWait).

Pods land on KWOK nodes (no containers): the harness adds KWOK nodes of its own (tainted like the
cluster's, labelled neurallog.io/bench=scale, as many as the largest N needs) and a MutatingAdmissionPolicy
that gives pods created in namespaces `tenant-scale-*` a toleration and a nodeSelector for them. The real
node's NetworkPolicy firewall is paused meanwhile (it acts on no KWOK pod; `firewall_paused`). Nothing else in
the cluster changes; nodes and policy are deleted at the end, as is every tenant, namespace and HelmRelease it
made.

    .venv/bin/python bench/scale.py [--n 1,10,100] [--contestants ours,floor,flux] [--repetitions 1]
                                    [--concurrency 4] [--sweep 1,2,4,10 --sweep-n 100] [--idle-seconds 300]
                                    [--out bench/results]
    .venv/bin/python bench/scale.py --plot-from DIR [DIR ...] --out DIR   # plots of earlier runs together

Needs the local cluster up (make cluster-up); nothing else may run an operator meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # the tests' operator helpers, bench/helm_operator.py

import matplotlib  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from local_cluster.cluster import KWOK_TAINT, LocalCluster  # noqa: E402
from local_cluster.flux import HELM_CONTROLLER, SOURCE_CONTROLLER, ensure_flux, publish_chart  # noqa: E402
from local_cluster.flux import NAMESPACE as FLUX_NAMESPACE  # noqa: E402
from local_cluster.flux import REPOSITORY as FLUX_REPOSITORY  # noqa: E402
from tenant_operator.flux import chart_version  # noqa: E402
from tenant_operator.namespace import namespace_labels  # noqa: E402
from tenant_operator.release import Helm, HelmError  # noqa: E402
from tenant_operator.settings import Settings  # noqa: E402
from tests.conftest import Kube  # noqa: E402
from tests.e2e.operator_process import Operator, ServiceAccount, small_tenant, wait_until  # noqa: E402

STATE = REPO / ".cluster"
CHART = REPO / "charts" / "tenant"
OPERATOR_CHART = REPO / "charts" / "tenant-operator"
CRD = OPERATOR_CHART / "crds" / "tenants.neurallog.io.yaml"
# The operator chart with no operator pod, for its ServiceAccount, roles and guard (as the e2e tier does).
PREFIX = "scale-"  # tenant names; their namespaces are tenant-scale-*
NAMESPACE_PREFIX = f"tenant-{PREFIX}"
BENCH_LABEL = {"neurallog.io/bench": "scale"}
SHARD_LABEL = "neurallog.io/shard"  # ours-2shards: which operator a Tenant is for
POLICY = "bench-scale-kwok"
PODS_PER_NODE = 1000  # KWOK's node capacity (local_cluster/kwok-stages.yaml)
PODS_PER_TENANT = 2  # a server and a Redis
HELM_RELEASE = ("helm.toolkit.fluxcd.io", "v2", "helmreleases")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
FULL_N = (1, 10, 100, 500, 1000)


# -- processes: CPU and memory from /proc ----------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def children_of() -> dict[int, list[int]]:
    """Parent pid -> its children, for every process."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                tree.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes, their reaped children (cutime, cstime) and their live descendants."""
    tree = children_of()
    total = 0
    for pid in {p for root in pids for p in (root, *descendants(root, tree))}:
        with contextlib.suppress(OSError, IndexError):
            fields = _stat(pid)
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return 0


def vm_hwm_bytes(pid: int) -> int:
    """The process's peak resident memory (VmHWM) since it started or since reset_peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid: int) -> None:
    """Sets VmHWM back to the current RSS (proc(5), clear_refs 5), for a process that ran before."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class TreeSampler:
    """Samples the summed RSS of some processes (given the process tree) every `every` seconds; keeps the
    peak."""

    def __init__(self, processes: Callable[[dict[int, list[int]]], list[int]], every: float = 0.5) -> None:
        self.processes, self.every, self.peak = processes, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(map(rss_bytes, set(self.processes(children_of())))))
            self._stop.wait(self.every)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the cluster: API server metrics, placement on KWOK, the watcher -------------------------------------


class Cluster:
    """The local cluster as the bench sees it: the admin's clients, kubectl, the control plane's processes."""

    def __init__(self) -> None:
        self.local = LocalCluster(STATE)
        if not self.local.api_healthy():
            sys.exit("the local cluster is not up: run `make cluster-up` first")
        self.kube = Kube(self.local.kubeconfig, self.local.bin)
        config.load_kube_config(config_file=str(self.local.kubeconfig))
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def pid(self, component: str) -> int:
        pid = self.local.pid(component)
        if pid is None:
            raise RuntimeError(f"{component} of the local cluster is not running")
        return pid

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.kube.kubectl(*args, input=input, check=check, timeout=1800).stdout

    def api_requests(self) -> float:
        """The API server's apiserver_request_total, all series summed (read without a subprocess)."""
        method, url, headers, _, _ = self.api.param_serialize(
            "GET", "/metrics", auth_settings=["BearerToken"]
        )
        response = self.api.call_api(method, url, header_params=headers)
        response.read()
        total = 0.0
        for line in response.data.decode().splitlines():
            if line.startswith("apiserver_request_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def namespaces(self) -> list[str]:
        items = self.core.list_namespace().items
        return [ns.metadata.name for ns in items if ns.metadata.name.startswith(NAMESPACE_PREFIX)]

    def wait_namespaces_gone(self, timeout: float) -> None:
        wait_until(
            lambda: not self.namespaces(), timeout=timeout, every=2, what="the bench's namespaces to go"
        )


def kwok_nodes(largest_n: int) -> list[dict[str, Any]]:
    count = max(1, math.ceil(largest_n * PODS_PER_TENANT / (PODS_PER_NODE * 0.9)))
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-scale-{index}",
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": f"kwok-scale-{index}", "kubernetes.io/os": "linux"}
                | BENCH_LABEL,
            },
            "spec": {"taints": [KWOK_TAINT]},
        }
        for index in range(count)
    ]


def placement_policy() -> list[dict[str, Any]]:
    """Pods created in the bench's namespaces go to its KWOK nodes: a toleration and a nodeSelector added at
    admission (the tenant chart has neither value)."""
    fields = ", ".join(f'{key}: "{value}"' for key, value in {**KWOK_TAINT, "operator": "Equal"}.items())
    toleration = f"Object.spec.tolerations{{{fields}}}"
    selector = ", ".join(f'"{key}": "{value}"' for key, value in BENCH_LABEL.items())
    # JSON patches: nodeSelector and tolerations are atomic, which an apply configuration may not change.
    expression = (
        f'[JSONPatch{{op: "add", path: "/spec/nodeSelector", value: {{{selector}}}}}] + '
        f"(has(object.spec.tolerations) "
        f'? [JSONPatch{{op: "add", path: "/spec/tolerations/-", value: {toleration}}}] '
        f': [JSONPatch{{op: "add", path: "/spec/tolerations", value: [{toleration}]}}])'
    )
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ]
                },
                "matchConditions": [
                    {
                        "name": "bench-namespace",
                        "expression": f'request.namespace.startsWith("{NAMESPACE_PREFIX}")',
                    }
                ],
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": expression}}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY},
            "spec": {"policyName": POLICY},
        },
    ]


@contextlib.contextmanager
def firewall_paused(cluster: Cluster) -> Iterator[None]:
    """The real node's NetworkPolicy firewall (kube-router) stopped (SIGSTOP) for the duration of the bench.

    The bench's pods live on KWOK nodes, where no firewall acts, yet kube-router re-syncs its rules for
    every policy, pod and namespace of the cluster on each change: with the floor at N = 100 it took more CPU
    than the API server, and all Running took 74 s instead of 46 s. On a real cluster that work runs on the
    nodes, not beside the control plane; here it would share the 2 cores with the contestants. Continued
    (SIGCONT) at the end, it lists the cluster again and re-syncs."""
    pid = cluster.local.pid("kube-router")
    if pid is None:  # a cluster without the real node
        yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def on_kwok(cluster: Cluster, largest_n: int) -> Iterator[None]:
    """The bench's KWOK nodes and placement policy, for the duration of the bench."""
    objects = kwok_nodes(largest_n) + placement_policy()
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    try:
        cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)
        names = [f"node/{node['metadata']['name']}" for node in objects if node["kind"] == "Node"]
        cluster.kubectl("wait", "--for=condition=Ready", "--timeout=90s", *names)
        time.sleep(2)  # the policy is in force once the API server has loaded it
        yield
    finally:
        cluster.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=manifest, check=False
        )


def _ready(workload: Any) -> bool:
    spec_replicas = workload.spec.replicas if workload.spec.replicas is not None else 1
    status = workload.status
    return (
        (status.observed_generation or 0) >= (workload.metadata.generation or 0)
        and (status.ready_replicas or 0) >= spec_replicas
        and (status.updated_replicas or 0) >= spec_replicas
    )


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c.get("type") == kind), {})


class Watcher:
    """One watch per kind for the whole bench: stamps (time.monotonic) per tenant namespace when its workloads
    are first Ready and when its contestant first says it is done."""

    def __init__(self, cluster: Cluster, *, tenants: bool, flux: bool) -> None:
        self.cluster = cluster
        self.workloads: dict[str, dict[str, float]] = {}  # namespace -> {"neurallog-server": t, "redis": t}
        self.said: dict[str, float] = {}  # namespace -> first time the contestant said done
        self.lock = threading.Lock()
        apps = client.AppsV1Api(cluster.api)
        custom = cluster.custom
        follows: list[tuple[Callable[..., Any], Callable[[Any], None]]] = [
            (apps.list_deployment_for_all_namespaces, self._workload),
            (apps.list_stateful_set_for_all_namespaces, self._workload),
        ]
        if tenants:
            follows.append(
                (
                    lambda **kw: custom.list_cluster_custom_object("neurallog.io", "v1", "tenants", **kw),
                    self._tenant,
                )
            )
        if flux:
            follows.append(
                (lambda **kw: custom.list_cluster_custom_object(*HELM_RELEASE, **kw), self._release)
            )
        for list_call, handler in follows:
            threading.Thread(target=self._follow, args=(list_call, handler), daemon=True).start()

    def _follow(self, list_call: Callable[..., Any], handler: Callable[[Any], None]) -> None:
        version = ""
        while True:
            try:
                if not version:
                    listed = list_call()
                    items = listed["items"] if isinstance(listed, dict) else listed.items
                    for item in items:
                        handler(item)
                    metadata = listed["metadata"] if isinstance(listed, dict) else listed.metadata
                    version = (
                        metadata["resourceVersion"]
                        if isinstance(metadata, dict)
                        else metadata.resource_version
                    )
                for event in watch.Watch().stream(list_call, resource_version=version, timeout_seconds=300):
                    obj = event["object"]
                    metadata = obj["metadata"] if isinstance(obj, dict) else obj.metadata
                    version = (
                        metadata["resourceVersion"]
                        if isinstance(metadata, dict)
                        else metadata.resource_version
                    )
                    if event["type"] in ("ADDED", "MODIFIED"):
                        handler(obj)
            except ApiException as error:
                if error.status == 410:  # expired: list again
                    version = ""
                else:
                    time.sleep(1)
            except Exception:  # a dropped connection: watch again from where it was
                time.sleep(1)

    def stamp_said(self, namespace: str) -> None:
        with self.lock:
            self.said.setdefault(namespace, time.monotonic())

    def _workload(self, workload: Any) -> None:
        namespace = workload.metadata.namespace
        name = workload.metadata.name
        if (
            namespace.startswith(NAMESPACE_PREFIX)
            and name in ("neurallog-server", "redis")
            and _ready(workload)
        ):
            with self.lock:
                self.workloads.setdefault(namespace, {}).setdefault(workload.metadata.name, time.monotonic())

    def _tenant(self, tenant: dict[str, Any]) -> None:
        name = tenant["metadata"]["name"]
        if name.startswith(PREFIX) and tenant.get("status", {}).get("phase") == "Running":
            self.stamp_said(f"tenant-{name}")

    def _release(self, release: dict[str, Any]) -> None:
        namespace = release["metadata"]["namespace"]
        ready = _condition(release, "Ready")
        current = ready.get("observedGeneration", release.get("status", {}).get("observedGeneration"))
        if (
            namespace.startswith(NAMESPACE_PREFIX)
            and ready.get("status") == "True"
            and current == release["metadata"]["generation"]
        ):
            self.stamp_said(namespace)

    def ready_at(self, namespace: str) -> float | None:
        """When both workloads of the namespace (Deployment and StatefulSet) were first Ready."""
        with self.lock:
            stamps = self.workloads.get(namespace, {})
            return max(stamps.values()) if len(stamps) == 2 else None

    def said_at(self, namespace: str) -> float | None:
        with self.lock:
            return self.said.get(namespace)


# -- contestants -------------------------------------------------------------------------------------------


def tenant(name: str) -> dict[str, Any]:
    """The bench's small Tenant (the e2e tier's: a server and a Redis, small requests, no secretKeyRef)."""
    obj = small_tenant(name)
    obj["metadata"]["labels"] = dict(BENCH_LABEL)
    return obj


def namespace(name: str) -> dict[str, Any]:
    """A tenant's namespace as the operator labels it (Pod Security restricted), for the contestants that need
    it made for them."""
    labels = namespace_labels(name) | BENCH_LABEL
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"tenant-{name}", "labels": labels}}


def as_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


class Contestant:
    """One way of turning N tenants into running workloads. The watcher stamps what `said` reads."""

    name = ""
    note = ""  # what it does not do, for the table
    concurrency_fixed: int | None = None  # set when the harness cannot choose its concurrency

    def __init__(self, cluster: Cluster, watcher: Watcher, workdir: Path) -> None:
        self.cluster, self.watcher, self.workdir = cluster, watcher, workdir

    def start(self, concurrency: int) -> None:
        """Running and ready to take tenants."""

    def create(self, names: list[str]) -> None:
        """Creates the N tenants at once (inside the timed window)."""
        raise NotImplementedError

    def roots(self) -> list[int]:
        """Pids whose trees are the contestant's processes."""
        return []

    def main_pid(self) -> int | None:
        return None

    def processes(self, tree: dict[int, list[int]]) -> list[int]:
        """Its processes now: the roots and their descendants."""
        return [pid for root in self.roots() for pid in (root, *descendants(root, tree))]

    def cpu(self) -> float:
        return cpu_seconds(self.roots())

    def helm_calls(self) -> float | None:
        return None

    def helm_commands(self) -> dict[str, float]:
        """Helm calls by command, where the contestant counts them."""
        return {}

    def api_calls(self) -> dict[str, float]:
        """The contestant's own API requests by call, where it counts them."""
        return {}

    def api_requests(self) -> float | None:
        return None

    def restart(self) -> float | None:
        """Restarts the contestant with its tenants in place; returns the seconds until it knows each of them
        right again (None: not measured for this contestant)."""
        return None

    def cleanup(self, names: list[str], timeout: float) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stopped (after cleanup)."""

    @classmethod
    def prepare(cls, cluster: Cluster) -> None:
        """What the contestant needs in the cluster for the whole bench."""

    @classmethod
    def unprepare(cls, cluster: Cluster) -> None:
        """Takes away what `prepare` made."""


def start_flux(cluster: Cluster) -> str:
    """Flux's controllers running, charts/tenant served at the version the operator's flux backend asks for
    (returned), their peak memory reset."""
    ensure_flux()
    version = chart_version(CHART)
    publish_chart(CHART, version)
    for controller in (HELM_CONTROLLER, SOURCE_CONTROLLER):
        reset_peak(cluster.pid(controller))
    return version


class Ours(Contestant):
    name = "ours"
    note = (
        "operator process (helm backend) as the chart's ServiceAccount; NetworkPolicies by the post-renderer"
    )

    def __init__(self, cluster: Cluster, watcher: Watcher, workdir: Path) -> None:
        super().__init__(cluster, watcher, workdir)
        self.operators: list[Operator] = []
        self.concurrency = 4
        self.tenants = 0

    shards = 1  # operator processes, each with a label selector of its own (settings watch_label_selector)

    # The operator chart with no operator pod, for its ServiceAccount, roles and guard (as the e2e tier does).
    rbac_release, rbac_namespace = "scale-tenant-operator", "scale-operator"
    chart_values: tuple[str, ...] = ()

    @classmethod
    def prepare(cls, cluster: Cluster) -> None:
        """The CRD and the operator chart's RBAC and guard (replicas 0), once per bench."""
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        cluster.kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")
        cluster.kube.helm(
            "upgrade", "--install", cls.rbac_release, str(OPERATOR_CHART), "--namespace", cls.rbac_namespace,
            "--create-namespace", "--skip-crds", "--set", "replicas=0", *cls.chart_values, "--wait",
        )  # fmt: skip

    @classmethod
    def unprepare(cls, cluster: Cluster) -> None:
        cluster.kube.helm(
            "uninstall", cls.rbac_release, "--namespace", cls.rbac_namespace, "--wait", check=False
        )
        cluster.kubectl(
            "delete", "namespace", cls.rbac_namespace, "--ignore-not-found", "--timeout=120s", check=False
        )

    def settings(self, concurrency: int) -> dict[str, str]:
        return {"TENANT_OPERATOR_CONCURRENCY": str(concurrency)}

    def start(self, concurrency: int) -> None:
        self.concurrency = concurrency
        for shard in range(self.shards):
            workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.workdir))
            account = ServiceAccount.of_release(
                self.cluster.kube, self.rbac_release, self.rbac_namespace, workdir
            )
            operator = Operator(self.cluster.kube, workdir, account)
            operator.log_level = "info"
            operator.extra_settings = self.settings(concurrency)
            if self.shards > 1:
                operator.extra_settings |= {
                    "TENANT_OPERATOR_WATCH_LABEL_SELECTOR": f"{SHARD_LABEL}={shard}",
                    "TENANT_OPERATOR_LEASE_NAME": f"{self.rbac_release}-shard-{shard}",
                }
            operator.start()
            self.operators.append(operator)

    def create(self, names: list[str]) -> None:
        self.tenants = len(names)
        tenants = [tenant(name) for name in names]
        if self.shards > 1:  # dealt in turn
            for number, obj in enumerate(tenants):
                obj["metadata"]["labels"][SHARD_LABEL] = str(number % self.shards)
        self.cluster.kubectl("create", "-f", "-", input=as_list(tenants))

    def main_pid(self) -> int | None:
        """The first operator process (its VmHWM is the main peak; the others count in the sampled total)."""
        process = self.operators[0].process if self.operators else None
        return process.pid if process else None

    def roots(self) -> list[int]:
        return [operator.process.pid for operator in self.operators if operator.process]

    def _metric(self, name: str, **labels: str) -> float | None:
        if not self.operators:
            return None
        return sum(operator.metric(name, **labels) for operator in self.operators)

    def helm_calls(self) -> float | None:
        return self._metric("tenant_operator_helm_calls_total")

    def helm_commands(self) -> dict[str, float]:
        return self._by_label("tenant_operator_helm_calls_total", "command")

    def api_calls(self) -> dict[str, float]:
        return self._by_label("tenant_operator_api_requests_total", "function")

    def _by_label(self, metric: str, label: str) -> dict[str, float]:
        """A counter of the operators' /metrics, summed by one of its labels."""
        sums: dict[str, float] = {}
        for operator in self.operators:
            url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            pattern = rf'^{metric}\{{(?:[^}}]*,)?{label}="([^"]+)"[^}}]*\}} (\S+)$'
            for series in re.finditer(pattern, text, re.M):
                sums[series[1]] = sums.get(series[1], 0) + float(series[2])
        return sums

    def api_requests(self) -> float | None:
        return self._metric("tenant_operator_api_requests_total")

    def restart(self) -> float:
        for operator in self.operators:
            operator.stop()
        started = time.monotonic()
        for operator in self.operators:
            operator.start()
        wait_until(
            lambda: (self._metric("tenant_operator_tenants", phase="Running") or 0) >= self.tenants,
            timeout=600,
            every=0.2,
            what="the restarted operator to know every tenant Running",
        )
        return time.monotonic() - started

    def cleanup(self, names: list[str], timeout: float) -> None:
        self.cluster.kubectl("delete", "tenants", "-l", "neurallog.io/bench=scale", "--wait=false")
        wait_until(
            lambda: (
                not self.cluster.kubectl("get", "tenants", "-l", "neurallog.io/bench=scale", "-o", "name")
            ),
            timeout=timeout,
            every=2,
            what="the bench's Tenants to go",
        )
        self.cluster.wait_namespaces_gone(timeout)

    def stop(self) -> None:
        for operator in self.operators:
            operator.stop()
        self.operators = []


class OursSharded(Ours):
    name = "ours-2shards"
    note = (
        "two operator processes (helm backend), each with the settings of `ours` and a label selector of its "
        "own; the Tenants dealt between them by a label"
    )
    shards = 2


class OursFlux(Ours):
    name = "ours-flux"
    note = (
        "operator process, flux backend: each release checked with the post-renderer's code (helm template), "
        "then a HelmRelease that the `flux` contestant's helm-controller installs; CPU and memory: the "
        "operator with Flux's two controllers"
    )
    concurrency_fixed = 4  # Flux's, which installs (see FluxHelmController); the operator's follows it
    rbac_release, rbac_namespace = "scale-flux-tenant-operator", "scale-flux-operator"
    chart_values = (
        "--set", "backend=flux",
        "--set", f"flux.source.name={FLUX_REPOSITORY}",
        "--set", f"flux.source.namespace={FLUX_NAMESPACE}",
    )  # fmt: skip

    def settings(self, concurrency: int) -> dict[str, str]:
        return super().settings(concurrency) | {
            "TENANT_OPERATOR_BACKEND": "flux",
            "TENANT_OPERATOR_FLUX_SOURCE_NAME": FLUX_REPOSITORY,
            "TENANT_OPERATOR_FLUX_SOURCE_NAMESPACE": FLUX_NAMESPACE,
        }

    def start(self, concurrency: int) -> None:
        start_flux(self.cluster)
        super().start(concurrency)

    def flux_pids(self) -> list[int]:
        return [self.cluster.pid(HELM_CONTROLLER), self.cluster.pid(SOURCE_CONTROLLER)]

    def roots(self) -> list[int]:
        return super().roots() + self.flux_pids()


class Floor(Contestant):
    name = "floor"
    note = "N `helm upgrade --install` through the post-renderer (the operator's Helm code), no operator"

    def start(self, concurrency: int) -> None:
        home = Path(tempfile.mkdtemp(prefix="floor-helm-", dir=self.workdir))
        # The floor is `helm upgrade --install` processes: never the operator's helm-worker.
        self.settings = Settings(
            helm=str(STATE / "bin" / "helm"), helm_worker="", helm_home=home, concurrency=concurrency
        )
        self.helm = Helm(self.settings)
        asyncio.run(self.helm.postrender_argument())  # installs the plugin, out of the timed window
        self._children_before = self._children_cpu()
        self.calls = 0

    @staticmethod
    def _children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def create(self, names: list[str]) -> None:
        self.cluster.kubectl("create", "-f", "-", input=as_list([namespace(name) for name in names]))
        self._children_before = self._children_cpu()  # kubectl's own CPU left out
        asyncio.run(self._install(names))

    async def _install(self, names: list[str]) -> None:
        async def one(name: str) -> None:
            values = tenant(name)["spec"]
            for _ in range(3):
                self.calls += 1
                try:
                    await self.helm.upgrade(name, f"tenant-{name}", values)
                except HelmError as error:
                    print(f"  floor: helm failed for {name}: {error}", file=sys.stderr)
                    continue
                self.watcher.stamp_said(f"tenant-{name}")
                return

        await asyncio.gather(*(one(name) for name in names))

    def processes(self, tree: dict[int, list[int]]) -> list[int]:
        return descendants(os.getpid(), tree)  # the Helm processes and their post-renderers

    def cpu(self) -> float:
        return self._children_cpu() - self._children_before

    def helm_calls(self) -> float | None:
        return float(self.calls)

    def cleanup(self, names: list[str], timeout: float) -> None:
        self.cluster.kubectl("delete", "namespaces", "-l", "neurallog.io/bench=scale", "--wait=false")
        self.cluster.wait_namespaces_gone(timeout)


class FluxHelmController(Contestant):
    name = "flux"
    note = (
        "Flux helm-controller, a HelmRelease per tenant (the chart from a HelmRepository); no post-renderer: "
        "no NetworkPolicies"
    )
    concurrency_fixed = 4  # local_cluster.flux starts its controllers with --concurrent=4

    def start(self, concurrency: int) -> None:
        self.version = start_flux(self.cluster)
        self.source = {"kind": "HelmRepository", "name": FLUX_REPOSITORY, "namespace": FLUX_NAMESPACE}

    def helm_release(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "/".join(HELM_RELEASE[:2]),
            "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": f"tenant-{name}", "labels": dict(BENCH_LABEL)},
            "spec": {
                "releaseName": name,
                "interval": "10m",
                "chart": {"spec": {"chart": "tenant", "version": self.version, "sourceRef": self.source}},
                "maxHistory": 5,
                "install": {"disableWait": True},
                "upgrade": {"disableWait": True},
                "values": tenant(name)["spec"],
            },
        }

    def create(self, names: list[str]) -> None:
        objects = [namespace(name) for name in names] + [self.helm_release(name) for name in names]
        self.cluster.kubectl("create", "-f", "-", input=as_list(objects))

    def roots(self) -> list[int]:
        return [self.cluster.pid(HELM_CONTROLLER), self.cluster.pid(SOURCE_CONTROLLER)]

    def main_pid(self) -> int | None:
        return self.cluster.pid(HELM_CONTROLLER)

    def cleanup(self, names: list[str], timeout: float) -> None:
        # HelmReleases first, with the controller running: their finalizer uninstalls.
        self.cluster.kubectl(
            "delete", "helmreleases.helm.toolkit.fluxcd.io", "-A", "-l", "neurallog.io/bench=scale",
            f"--timeout={int(timeout)}s",
        )  # fmt: skip
        self.cluster.kubectl("delete", "namespaces", "-l", "neurallog.io/bench=scale", "--wait=false")
        self.cluster.wait_namespaces_gone(timeout)


class HelmOperatorSdk(Contestant):
    """operator-sdk's helm-operator, through bench/helm_operator.py: its `start(concurrency)` returns a
    handle with `.pid`, `.create(names, spec)` (the namespaces tenant-<name>, labelled, then a twin CR in
    each), `.deployed(name)`, `.cleanup(names)` and `.stop()`. Skipped with a message where that module or
    its binary is missing."""

    name = "helm-operator"
    note = (
        "operator-sdk's helm-operator v1.42.3 (bench/helm_operator.py): a namespaced twin CR in a namespace "
        "the harness makes, dryRunOption server, reconcile period 1m; no post-renderer: no NetworkPolicies"
    )

    def start(self, concurrency: int) -> None:
        try:
            module = importlib.import_module("helm_operator")
        except ImportError as error:
            raise UnavailableError("bench/helm_operator.py has not landed yet") from error
        try:
            self.handle = module.start(concurrency)
        except FileNotFoundError as error:  # its binary (make binaries builds it)
            raise UnavailableError(f"the helm-operator cannot start: {error}") from error

    def create(self, names: list[str]) -> None:
        self.handle.create(names, lambda name: tenant(name)["spec"])
        threading.Thread(target=self._stamp, args=(names,), daemon=True).start()

    def _stamp(self, names: list[str]) -> None:
        waiting, deadline = set(names), time.monotonic() + timeout_for(len(names))
        while waiting and time.monotonic() < deadline:
            for name in [name for name in waiting if self.handle.deployed(name)]:
                self.watcher.stamp_said(f"tenant-{name}")
                waiting.discard(name)
            time.sleep(0.5)

    def roots(self) -> list[int]:
        return [self.handle.pid]

    def main_pid(self) -> int | None:
        return int(self.handle.pid)

    def cleanup(self, names: list[str], timeout: float) -> None:
        self.handle.cleanup(names)
        self.cluster.wait_namespaces_gone(timeout)

    def stop(self) -> None:
        self.handle.stop()


class UnavailableError(Exception):
    """A contestant that cannot run here (yet)."""


CONTESTANTS: dict[str, type[Contestant]] = {
    kind.name: kind for kind in (Ours, OursSharded, OursFlux, Floor, FluxHelmController, HelmOperatorSdk)
}


# -- one run -----------------------------------------------------------------------------------------------


@dataclass
class Run:
    contestant: str
    n: int
    concurrency: int
    repetition: int
    ok: bool = False
    all_running: float | None = None  # s from create until every tenant said done and Ready
    all_ready: float | None = None  # workloads only
    all_said: float | None = None  # the contestant only
    median_running: float | None = None
    lag_median: float | None = None  # said - ready per tenant, s
    lag_p99: float | None = None
    lag_max: float | None = None
    cpu: float = 0.0
    peak_main_mib: float | None = None
    peak_tree_mib: float = 0.0
    helm_calls: float | None = None
    helm_commands: dict[str, float] = field(default_factory=dict)
    operator_api_requests: float | None = None
    operator_api_calls: dict[str, float] = field(default_factory=dict)
    apiserver_requests: float = 0.0
    apiserver_cpu: float = 0.0
    etcd_cpu: float = 0.0
    load_before: float = 0.0
    cleanup_seconds: float = 0.0
    restart: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Counters:
    """The shared costs at one moment: API server requests and CPU, etcd CPU."""

    def __init__(self, cluster: Cluster) -> None:
        self.requests = cluster.api_requests()
        self.apiserver = cpu_seconds([cluster.pid("kube-apiserver")])
        self.etcd = cpu_seconds([cluster.pid("etcd")])

    def since(self, before: Counters) -> tuple[float, float, float]:
        return self.requests - before.requests, self.apiserver - before.apiserver, self.etcd - before.etcd


def quiesce(cluster: Cluster, timeout: float) -> float:
    """Waits until no bench namespace is left and the machine calms down (load below 1, at most a minute);
    returns the 1-minute load average then."""
    cluster.wait_namespaces_gone(timeout)
    deadline = time.monotonic() + 60
    while os.getloadavg()[0] > 1.0 and time.monotonic() < deadline:
        time.sleep(2)
    time.sleep(3)
    return os.getloadavg()[0]


def timeout_for(n: int) -> float:
    return 180 + 3 * n


def timeline(run: Run, started: float, said: list[float | None], ready: list[float | None]) -> None:
    """The run's times from when each tenant was said done and when its workloads were Ready."""
    pairs = [(s, r) for s, r in zip(said, ready, strict=True) if s and r]
    done = [max(s, r) - started for s, r in pairs]
    lags = [s - r for s, r in pairs]
    run.all_running, run.median_running = max(done), statistics.median(done)
    run.all_ready = max(r for _, r in pairs) - started
    run.all_said = max(s for s, _ in pairs) - started
    run.lag_median, run.lag_max = statistics.median(lags), max(lags, key=abs)
    run.lag_p99 = statistics.quantiles(lags, n=100)[98] if len(lags) > 1 else lags[0]


def run_once(
    contestant: Contestant,
    n: int,
    concurrency: int,
    repetition: int,
    *,
    last_phase: bool,
    idle_seconds: float,
) -> Run:
    cluster, watcher = contestant.cluster, contestant.watcher
    run = Run(contestant.name, n, contestant.concurrency_fixed or concurrency, repetition)
    run.load_before = quiesce(cluster, timeout_for(n))
    names = [f"{PREFIX}{uuid.uuid4().hex[:5]}-{index:04d}" for index in range(n)]
    namespaces = [f"tenant-{name}" for name in names]
    contestant.start(concurrency)
    try:
        time.sleep(3)  # started, then quiet for a moment
        cpu_before = contestant.cpu()
        counters = Counters(cluster)
        with TreeSampler(contestant.processes) as sampler:
            started = time.monotonic()
            contestant.create(names)
            deadline = started + timeout_for(n)
            while time.monotonic() < deadline:
                said = [watcher.said_at(ns) for ns in namespaces]
                ready = [watcher.ready_at(ns) for ns in namespaces]
                if all(said) and all(ready):
                    run.ok = True
                    break
                time.sleep(0.5)
        run.cpu = contestant.cpu() - cpu_before
        run.apiserver_requests, run.apiserver_cpu, run.etcd_cpu = Counters(cluster).since(counters)
        run.peak_tree_mib = sampler.peak / 2**20
        main = contestant.main_pid()
        run.peak_main_mib = vm_hwm_bytes(main) / 2**20 if main else None
        run.helm_calls = contestant.helm_calls()
        run.helm_commands = {command: calls for command, calls in contestant.helm_commands().items() if calls}
        run.operator_api_requests = contestant.api_requests()
        run.operator_api_calls = {call: count for call, count in contestant.api_calls().items() if count}
        said = [watcher.said_at(ns) for ns in namespaces]
        ready = [watcher.ready_at(ns) for ns in namespaces]
        if run.ok:
            timeline(run, started, said, ready)
        else:
            run.error = (
                f"timed out after {timeout_for(n):.0f}s: {sum(map(bool, said))}/{n} said done, "
                f"{sum(map(bool, ready))}/{n} workloads Ready"
            )
        if last_phase and run.ok:
            run.restart = restart_phase(contestant)
            run.idle = idle_phase(contestant, idle_seconds) if idle_seconds > 0 else {}
    finally:
        cleaned = time.monotonic()
        contestant.cleanup(names, timeout_for(n))
        run.cleanup_seconds = time.monotonic() - cleaned
        contestant.stop()
    return run


def restart_phase(contestant: Contestant) -> dict[str, Any]:
    """The restart's time, the Helm commands of the new process (by command: a release is an upgrade) and its
    peak memory (VmHWM: listing every kind of N tenants at once is where a new process peaks)."""
    seconds = contestant.restart()
    if seconds is None:
        return {}
    commands = {command: calls for command, calls in contestant.helm_commands().items() if calls}
    pid = contestant.main_pid()
    peak = vm_hwm_bytes(pid) / 2**20 if pid else None
    return {
        "seconds": seconds,
        "helm_calls": contestant.helm_calls(),
        "helm_commands": commands,
        "peak_mib": peak,
    }


def idle_phase(contestant: Contestant, seconds: float) -> dict[str, Any]:
    """CPU and API requests of the contestant left alone with its N running tenants."""
    if not contestant.roots():
        return {}
    time.sleep(5)
    cpu_before, own_before, calls_before, counters = (
        contestant.cpu(),
        contestant.api_requests(),
        contestant.api_calls(),
        Counters(contestant.cluster),
    )
    time.sleep(seconds)
    requests, apiserver_cpu, etcd_cpu = Counters(contestant.cluster).since(counters)
    own = contestant.api_requests()
    calls = {call: count - calls_before.get(call, 0) for call, count in contestant.api_calls().items()}
    return {
        "own_api_calls": {call: count for call, count in calls.items() if count},
        "seconds": seconds,
        "cpu_percent": 100 * (contestant.cpu() - cpu_before) / seconds,
        "own_api_requests": own - own_before if own is not None and own_before is not None else None,
        "apiserver_requests_per_s": requests / seconds,
        "apiserver_cpu_percent": 100 * apiserver_cpu / seconds,
        "etcd_cpu_percent": 100 * etcd_cpu / seconds,
    }


# -- the report --------------------------------------------------------------------------------------------


def machine(cluster: Cluster) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "")
    memory = int(
        next(line for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line).split()[1]
    )
    helm = subprocess.run(
        [str(STATE / "bin" / "helm"), "version", "--short"], capture_output=True, text=True, check=False
    )
    server = json.loads(cluster.kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
    return {
        "cores": f"{len(os.sched_getaffinity(0))} ({model})",
        "memory": f"{memory / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "kubernetes": f"{server} (local cluster: etcd, kube-apiserver, KWOK nodes)",
        "helm": helm.stdout.strip(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _spread(values: list[float], unit: str = "", digits: int = 1) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}{unit}"
    return f"{median:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(runs: list[Run]) -> list[str]:
    rows = [
        "| contestant | N | C | runs ok | all Running s | median tenant s "
        "| said - Ready s (median / p99 / worst) "
        "| CPU s | peak MiB (main / all) | Helm calls | API server requests | API server CPU s "
        "| etcd CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    points: dict[tuple[str, int, int], list[Run]] = {}
    for run in runs:
        points.setdefault((run.contestant, run.n, run.concurrency), []).append(run)
    for (name, n, concurrency), group in sorted(
        points.items(), key=lambda item: (item[0][1], item[0][2], item[0][0])
    ):
        ok = [run for run in group if run.ok]

        def values(attribute: str, runs: list[Run] = ok) -> list[float]:
            return [float(getattr(run, attribute)) for run in runs if getattr(run, attribute) is not None]

        main, tree = values("peak_main_mib"), values("peak_tree_mib")
        lag = " / ".join(_spread(values(key), digits=2) for key in ("lag_median", "lag_p99", "lag_max"))
        rows.append(
            f"| {name} | {n} | {concurrency} | {len(ok)}/{len(group)} | {_spread(values('all_running'))} "
            f"| {_spread(values('median_running'))} | {lag} | {_spread(values('cpu'))} "
            f"| {_spread(main, digits=0) if main else '-'} / {_spread(tree, digits=0)} "
            f"| {_spread(values('helm_calls'), digits=0)} "
            f"| {_spread(values('apiserver_requests'), digits=0)} "
            f"| {_spread(values('apiserver_cpu'))} | {_spread(values('etcd_cpu'))} |"
        )
    return rows


def report(runs: list[Run], arguments: argparse.Namespace, about: dict[str, str]) -> str:
    official = tuple(arguments.n) == FULL_N and arguments.repetitions >= 3
    lines = ["# Scale: N tenants created at once, side by side", ""]
    if not official:
        lines += [
            f"**Smoke run, not the official numbers** (N = {', '.join(map(str, arguments.n))}, "
            f"{arguments.repetitions} repetition(s), idle {arguments.idle_seconds:.0f} s); "
            "`make bench-scale` makes the official ones.",
            "",
        ]
    loads = [run.load_before for run in runs]
    lines += ["Machine: " + "; ".join(f"{key} {value}" for key, value in about.items()), ""]
    if loads:
        lines += [f"1-minute load average before the runs: {min(loads):.2f} to {max(loads):.2f}.", ""]
    lines += [
        "Each cell: median over the repetitions (min-max). *all Running*: from `kubectl create` of the N "
        "objects until every tenant is said done by its contestant **and** its Deployment and StatefulSet "
        "are Ready. *said - Ready*: per tenant, when the contestant said done minus when the workloads were "
        "Ready (positive: it says so after they are). *CPU*: the contestant's processes with their children. "
        "*peak*: VmHWM of the main process / sampled peak of all its processes together. API server requests "
        "count every client of the cluster during the run.",
        "",
        *table(runs),
        "",
    ]
    extra = [run for run in runs if run.restart or run.idle]
    if extra:
        lines += ["At the largest N:", ""]
        for run in extra:
            if run.restart:
                lines.append(
                    f"- {run.contestant}, N={run.n}: restart — every tenant known Running again after "
                    f"{run.restart['seconds']:.1f} s, Helm calls of the new process: "
                    f"{run.restart['helm_calls']:.0f}"
                    + (f" {commands}" if (commands := run.restart.get("helm_commands")) else "")
                    + (f", peak memory {peak:.0f} MiB" if (peak := run.restart.get("peak_mib")) else "")
                )
            if run.idle:
                idle = run.idle
                own = idle["own_api_requests"]
                lines.append(
                    f"- {run.contestant}, N={run.n}: idle {idle['seconds']:.0f} s - CPU "
                    f"{idle['cpu_percent']:.2f}% "
                    f"of a core, own API requests {'-' if own is None else f'{own:.0f}'}, API server "
                    f"{idle['apiserver_requests_per_s']:.2f} requests/s (every client) and "
                    f"{idle['apiserver_cpu_percent']:.2f}% CPU, etcd {idle['etcd_cpu_percent']:.2f}% CPU"
                    + (
                        f" (own requests by call: {idle['own_api_calls']})"
                        if idle.get("own_api_calls")
                        else ""
                    )
                )
        lines.append("")
    failed = [run for run in runs if run.error]
    if failed:
        lines += ["Failed runs:", ""] + [
            f"- {run.contestant} N={run.n} C={run.concurrency}: {run.error}" for run in failed
        ]
        lines.append("")
    notes = {
        kind.name: kind.note for kind in CONTESTANTS.values() if kind.name in {run.contestant for run in runs}
    }
    lines += ["Contestants:", ""] + [f"- **{name}**: {note}" for name, note in notes.items()]
    lines += [
        "",
        "Pods run on KWOK nodes (no containers): Ready as soon as scheduled. Namespaces: the operator makes "
        "its own; for the others the harness makes them, labelled as the operator does, in the same "
        "`kubectl create`. The real node's NetworkPolicy firewall (kube-router) is paused during the runs: "
        "it acts on no KWOK pod, yet re-syncs on every change of the cluster and would take the contestants' "
        "CPU.",
        "",
    ]
    return "\n".join(lines)


def plot(runs: list[Run], concurrency: int, out: Path) -> list[Path]:
    written = []
    for attribute, label, filename in (
        ("all_running", "time until every tenant runs (s)", "scale-time.png"),
        ("peak_tree_mib", "peak memory of all its processes (MiB)", "scale-memory.png"),
    ):
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for name in dict.fromkeys(run.contestant for run in runs):
            points: dict[int, list[float]] = {}
            for run in runs:
                if run.contestant == name and run.ok and run.concurrency == concurrency:
                    points.setdefault(run.n, []).append(float(getattr(run, attribute)))
            if points:
                ns = sorted(points)
                medians = [statistics.median(points[n]) for n in ns]
                low = [m - min(points[n]) for m, n in zip(medians, ns, strict=True)]
                high = [max(points[n]) - m for m, n in zip(medians, ns, strict=True)]
                axes.errorbar(ns, medians, yerr=[low, high], marker="o", capsize=3, label=name)
        axes.set_xscale("log")
        axes.set_xlabel("tenants created at once (N)")
        axes.set_ylabel(label)
        axes.set_title(f"{label.split(' (')[0]}, concurrency {concurrency}")
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(out / filename, dpi=110)
        plt.close(figure)
        written.append(out / filename)
    return written


# -- main --------------------------------------------------------------------------------------------------


def numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def others_running() -> list[str]:
    """Processes that must not share the cluster with the bench: test runs and other operators."""
    found = subprocess.run(
        ["pgrep", "-af", "pytest|tenant_operator"], capture_output=True, text=True, check=False
    ).stdout
    return [
        line for line in found.splitlines() if str(os.getpid()) != line.split()[0] and "pgrep" not in line
    ]


def measure(
    contestants: list[Contestant],
    points: list[tuple[int, int]],
    arguments: argparse.Namespace,
    done: Callable[[Run], None],
) -> None:
    """Every point (N, concurrency), each repetition running the contestants in a rotated order."""
    largest = max(arguments.n)
    skipped: set[str] = set()
    for n, concurrency in points:
        for repetition in range(arguments.repetitions):
            shift = repetition % len(contestants)
            for contestant in contestants[shift:] + contestants[:shift]:
                fixed = contestant.concurrency_fixed
                if contestant.name in skipped or (fixed and fixed != concurrency):
                    continue
                last = n == largest and concurrency == arguments.concurrency and repetition == 0
                print(f"{contestant.name}: N={n} C={concurrency} repetition {repetition + 1}", flush=True)
                try:
                    run = run_once(
                        contestant, n, concurrency, repetition, last_phase=last,
                        idle_seconds=arguments.idle_seconds,
                    )  # fmt: skip
                except UnavailableError as why:
                    print(f"  skipped: {why}", flush=True)
                    skipped.add(contestant.name)
                    continue
                except Exception as error:  # kept as a failed run; its tenants were cleaned up
                    run = Run(
                        contestant.name, n, concurrency, repetition, error=f"{type(error).__name__}: {error}"
                    )
                done(run)


def save(run: Run, runs: list[Run], about: dict[str, str], out: Path) -> None:
    """Keeps a finished run, printed and written to scale.json at once (a long run can be read meanwhile)."""
    runs.append(run)
    print(f"  {json.dumps(asdict(run))}", flush=True)
    document = {"machine": about, "runs": [asdict(each) for each in runs]}
    (out / "scale.json").write_text(json.dumps(document, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", type=numbers, default=(1, 10, 100), help="tenants created at once, comma-separated"
    )
    parser.add_argument(
        "--contestants",
        default="ours,ours-flux,floor,flux,helm-operator",
        help=f"of {', '.join(CONTESTANTS)}",
    )
    parser.add_argument("--repetitions", type=int, default=1, help="runs per point, interleaved")
    parser.add_argument("--concurrency", type=int, default=4, help="the headline concurrency")
    parser.add_argument("--sweep", type=numbers, default=(), help="other concurrencies, at --sweep-n only")
    parser.add_argument("--sweep-n", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--plot-from",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="measure nothing: plot runs made before (each DIR/scale.json) together, into --out",
    )
    arguments = parser.parse_args()
    if arguments.plot_from:
        earlier = [
            Run(**run)
            for directory in arguments.plot_from
            for run in json.loads((directory / "scale.json").read_text())["runs"]
        ]
        arguments.out.mkdir(parents=True, exist_ok=True)
        for path in plot(earlier, arguments.concurrency, arguments.out):
            print(f"wrote {path}")
        return 0
    arguments.n = tuple(sorted(arguments.n))
    chosen = [name.strip() for name in arguments.contestants.split(",") if name.strip()]
    unknown = set(chosen) - set(CONTESTANTS)
    if unknown:
        parser.error(f"unknown contestants {', '.join(sorted(unknown))}: choose of {', '.join(CONTESTANTS)}")
    if others_running():
        sys.exit(
            "tests or another operator use the cluster; run the bench alone:\n" + "\n".join(others_running())
        )
    # The floor's Helm (the operator's Helm code) reads the environment: the local cluster, its tools.
    os.environ["KUBECONFIG"] = str(STATE / "kubeconfig")
    os.environ["PATH"] = f"{STATE / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"

    cluster = Cluster()
    about = machine(cluster)
    print("Machine: " + "; ".join(f"{key} {value}" for key, value in about.items()), flush=True)
    points = [(n, arguments.concurrency) for n in arguments.n]
    points += [(arguments.sweep_n, c) for c in arguments.sweep if c != arguments.concurrency]
    runs: list[Run] = []
    arguments.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as workdir,
        on_kwok(cluster, max(n for n, _ in points)),
        firewall_paused(cluster),
    ):
        watcher = Watcher(cluster, tenants=bool({"ours", "ours-flux"} & set(chosen)), flux="flux" in chosen)
        kinds = [CONTESTANTS[name] for name in chosen]
        try:
            for kind in kinds:
                kind.prepare(cluster)
            contestants = [kind(cluster, watcher, Path(workdir)) for kind in kinds]
            measure(contestants, points, arguments, lambda run: save(run, runs, about, arguments.out))
        finally:
            for kind in kinds:
                kind.unprepare(cluster)
    text = report(runs, arguments, about)
    print(text)
    (arguments.out / "scale.md").write_text(text)
    for path in plot(runs, arguments.concurrency, arguments.out):
        print(f"wrote {path}")
    return 0 if all(run.ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
