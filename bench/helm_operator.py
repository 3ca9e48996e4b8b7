"""operator-sdk's Helm operator on the local cluster, as the scale benchmark's peer (issue 10).

The helm-operator (v1.42.3, built by `make binaries` from cluster/tools/helm-operator) runs as a local
process with the admin's kubeconfig and installs charts/tenant, the chart our operator installs, for each
custom resource of a namespaced twin of the Tenant (bench/helm_operator/crd.yaml: TenantRelease,
bench.neurallog.io/v1): release `<name>` in namespace `tenant-<name>`, values = the resource's spec. What it
therefore does not do, next to ours: no NetworkPolicies (it runs no post-renderer: the release keeps the
carrier ConfigMap `tenant-network-policy` instead), no cluster-scoped Tenant and no namespace of its own
making (the bench creates the labelled namespace first), no budget or image checks before Helm, and
"deployed" means the Helm call returned, not that the workloads are Ready. Its status holds the whole
rendered manifest (status.deployedRelease.manifest, 15 KB a tenant here), the Secret `redis-auth` with its
password included: whoever may read the resource reads the password.

The chart's Redis password comes from `lookup` or a random string; the helm-operator decides on every
reconcile whether to upgrade by a dry-run upgrade, so bench/helm_operator/watches.yaml sets
`dryRunOption: server` (without it, every reconcile is a real upgrade: a new revision each time, seen
2-3 s apart whatever the reconcile period; the real upgrade reads the password back, so it stays).

    from helm_operator import HelmOperator
    operator = HelmOperator(reconcile_period="1m", kwok=True)
    operator.start(concurrency=4)             # CRD applied, process started, its workers running
    operator.create(["a", "b"], spec)         # namespaces tenant-a, tenant-b, then TenantRelease a, b in them
    operator.deployed("a")                    # Deployed=True in a's status (from one watch, no request)
    operator.cleanup(["a", "b"])              # CRs deleted (it uninstalls), then the namespaces
    operator.stop()

`start(concurrency)` at module level is the hook of bench/scale.py (whose own admission policy places the
pods); `kwok=True` makes this module place them itself. Needs the local cluster up (`make cluster-up`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # the e2e tier's small tenant, as bench/scale.py uses it

import yaml  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from local_cluster.cluster import KWOK_TAINT  # noqa: E402
from tests.e2e.operator_process import small_tenant  # noqa: E402

ASSETS = Path(__file__).resolve().with_name("helm_operator")
CRD = ASSETS / "crd.yaml"
WATCHES = ASSETS / "watches.yaml"
STATE = REPO / ".cluster"
GROUP, VERSION, PLURAL, KIND = "bench.neurallog.io", "v1", "tenantreleases", "TenantRelease"
RESOURCE = f"{PLURAL}.{GROUP}"
# Set on every namespace and TenantRelease this module makes; cleanup finds them by it.
MADE_BY = {"bench.neurallog.io/made-by": "helm-operator"}
# A namespace with this label gets its pods placed on the cluster's KWOK node(s) (with `kwok=True`).
PLACEMENT_LABEL = {"bench.neurallog.io/placement": "kwok"}
PLACEMENT_POLICY = "bench-helm-operator-kwok"
KWOK_NODE_SELECTOR = {"type": "kwok"}  # the label local_cluster gives its KWOK nodes

# The labels our operator gives a tenant namespace (tenant_operator.namespace.namespace_labels), so that the
# same Pod Security level applies to both.
POD_SECURITY = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


def small_spec(name: str) -> dict[str, Any]:
    """The bench's small tenant (the e2e tier's): a server and a Redis, small requests, no secretKeyRef."""
    spec: dict[str, Any] = small_tenant(name)["spec"]
    return spec


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((dict(c) for c in conditions if c.get("type") == kind), {})


def is_deployed(obj: Mapping[str, Any]) -> bool:
    """What the helm-operator writes once its install (or upgrade) of the release returned: condition Deployed
    True (reason InstallSuccessful or UpgradeSuccessful) and no ReleaseFailed True. The workloads may not be
    Ready yet: it waits for nothing."""
    deployed = _condition(obj, "Deployed")
    return (
        deployed.get("status") == "True"
        and deployed.get("reason") in ("InstallSuccessful", "UpgradeSuccessful")
        and _condition(obj, "ReleaseFailed").get("status") != "True"
    )


def placement_policy() -> list[dict[str, Any]]:
    """Pods created in namespaces labelled PLACEMENT_LABEL go to the cluster's KWOK node(s): a toleration of
    their taint and a nodeSelector added at admission (the tenant chart has neither value, and the
    helm-operator runs no post-renderer that could add them). JSON patches: an apply configuration may not
    change the atomic nodeSelector and tolerations of a pod."""
    toleration = ", ".join(f'{key}: "{value}"' for key, value in {**KWOK_TAINT, "operator": "Equal"}.items())
    toleration = f"Object.spec.tolerations{{{toleration}}}"
    [(label, value)] = KWOK_NODE_SELECTOR.items()
    expression = f"""[
  has(object.spec.nodeSelector)
    ? JSONPatch{{op: "add", path: "/spec/nodeSelector/{label}", value: "{value}"}}
    : JSONPatch{{op: "add", path: "/spec/nodeSelector", value: {{"{label}": "{value}"}}}},
  has(object.spec.tolerations)
    ? JSONPatch{{op: "add", path: "/spec/tolerations/-", value: {toleration}}}
    : JSONPatch{{op: "add", path: "/spec/tolerations", value: [{toleration}]}}
]"""
    rule = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": PLACEMENT_POLICY, "labels": dict(MADE_BY)},
            "spec": {
                "matchConstraints": {"resourceRules": [rule]},
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": expression}}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": PLACEMENT_POLICY, "labels": dict(MADE_BY)},
            "spec": {
                "policyName": PLACEMENT_POLICY,
                "matchResources": {"namespaceSelector": {"matchLabels": dict(PLACEMENT_LABEL)}},
            },
        },
    ]


def _as_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


class HelmOperator:
    """One helm-operator process for TenantReleases of charts/tenant, and the objects the bench gives it.

    - concurrency: `--max-concurrent-reconciles` (its default is the number of CPUs);
    - reconcile_period: `--reconcile-period`, a Go duration: "1m" as shipped, "0s" for none (as ours);
    - dry_run_option: the watch's `dryRunOption`; "server" (the setting this chart needs) unless a test shows
      what happens without it ("");
    - kwok: place the tenants' pods on the cluster's KWOK node(s) (a MutatingAdmissionPolicy on the namespaces
      this object labels); leave it off where the caller places them (bench/scale.py);
    - labels: more labels on every namespace and TenantRelease made.
    """

    def __init__(
        self,
        *,
        reconcile_period: str = "1m",
        dry_run_option: str = "server",
        kwok: bool = False,
        labels: Mapping[str, str] | None = None,
        state: Path = STATE,
        workdir: Path | None = None,
    ) -> None:
        self.reconcile_period = reconcile_period
        self.dry_run_option = dry_run_option
        self.kwok = kwok
        self.labels = {**MADE_BY, **(labels or {})}
        self.binary = state / "bin" / "helm-operator"
        self.kubectl_binary = state / "bin" / "kubectl"
        self.kubeconfig = state / "kubeconfig"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="helm-operator-"))
        self.log = self.workdir / "helm-operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.concurrency = 0
        self._seen: Follower | None = None
        self._log_start = 0
        self.metrics_port = self.health_port = 0

    # -- the process ---------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the helm-operator is not running")
        return self.process.pid

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [str(self.kubectl_binary), *args],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            timeout=1800,
            check=False,
        )
        if check and result.returncode:
            raise RuntimeError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def watches_file(self) -> Path:
        """The shipped watches.yaml with the chart's absolute path and this object's dryRunOption."""
        watches = yaml.safe_load(WATCHES.read_text())
        for entry in watches:
            entry["chart"] = str((WATCHES.parent / entry["chart"]).resolve())
            if self.dry_run_option:
                entry["dryRunOption"] = self.dry_run_option
            else:
                entry.pop("dryRunOption", None)
        path = self.workdir / "watches.yaml"
        path.write_text(yaml.safe_dump(watches, sort_keys=False))
        return path

    def command(self, concurrency: int) -> list[str]:
        return [
            str(self.binary),
            "run",
            f"--watches-file={self.watches_file()}",
            f"--max-concurrent-reconciles={concurrency}",
            f"--reconcile-period={self.reconcile_period}",
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
            "--leader-elect=false",
            "--zap-log-level=info",
        ]

    def install_crd(self) -> None:
        """The twin CRD, established (the helm-operator exits at start when its kind is unknown)."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{RESOURCE}")

    def start(self, concurrency: int = 4, timeout: float = 60) -> None:
        """CRD (and placement policy) applied, the process started; returns once its controller's workers
        run (log line "Starting workers") and /readyz answers."""
        if self.process is not None:
            raise RuntimeError("the helm-operator is running already")
        if not self.binary.exists():
            raise RuntimeError(f"{self.binary} is missing: run `make binaries` (or `make cluster-up`)")
        self.install_crd()
        if self.kwok:
            self.kubectl("apply", "--server-side", "-f", "-", input=_as_list(placement_policy()))
        self._seen = follower(self.kubeconfig)
        self.concurrency = concurrency
        self.metrics_port, self.health_port = _free_port(), _free_port()
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(concurrency),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not (self._workers_started() and self._ready()):
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise RuntimeError(f"the helm-operator exited {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the helm-operator was not ready in {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.2)
        if self.kwok:
            time.sleep(1)  # a new admission policy is in force once the API server has loaded it

    def _workers_started(self) -> bool:
        try:
            with self.log.open("rb") as log:
                log.seek(self._log_start)
                return b"Starting workers" in log.read()
        except OSError:
            return False

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        """The process's JSON log records (zap's production encoder), other lines left out."""
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def stop(self, grace: float = 15) -> None:
        """SIGTERM (controller-runtime shuts down cleanly), SIGKILL after `grace` seconds."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- the twin resources -------------------------------------------------------------------------------

    def namespace(self, name: str) -> dict[str, Any]:
        """Namespace `tenant-<name>`, labelled as ours labels a tenant's (Pod Security restricted)."""
        labels = {"neurallog.io/tenant": name, **POD_SECURITY, "app.kubernetes.io/part-of": "neurallog"}
        labels |= self.labels | (PLACEMENT_LABEL if self.kwok else {})
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": f"tenant-{name}", "labels": labels},
        }

    def resource(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": f"tenant-{name}", "labels": dict(self.labels)},
            "spec": dict(spec),
        }

    def create(
        self,
        names: list[str],
        spec: Mapping[str, Any] | Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        """In one `kubectl create`: the namespaces tenant-<name>, then a TenantRelease <name> in each.
        `spec` is one spec for all, a function of the name, or the bench's small tenant."""

        def spec_of(name: str) -> Mapping[str, Any]:
            if spec is None:
                return small_spec(name)
            return spec(name) if callable(spec) else spec

        objects = [self.namespace(name) for name in names]
        objects += [self.resource(name, spec_of(name)) for name in names]
        self.kubectl("create", "-f", "-", input=_as_list(objects))

    def get(self, name: str) -> dict[str, Any] | None:
        """The TenantRelease `name` as the watch last saw it (None: not seen, or deleted)."""
        if self._seen is None:
            self._seen = follower(self.kubeconfig)
        return self._seen.get(f"tenant-{name}", name)

    def deployed(self, name: str) -> bool:
        """Whether the helm-operator says the release of tenant `name` is deployed (is_deployed)."""
        obj = self.get(name)
        return obj is not None and is_deployed(obj)

    def failed(self, name: str) -> str | None:
        """The message of a ReleaseFailed or Irreconcilable condition that is True, if any."""
        obj = self.get(name) or {}
        for kind in ("ReleaseFailed", "Irreconcilable"):
            condition = _condition(obj, kind)
            if condition.get("status") == "True":
                return f"{kind}/{condition.get('reason')}: {condition.get('message')}"
        return None

    def delete(self, names: list[str], *, wait: float = 300) -> None:
        """Deletes the TenantReleases (the helm-operator uninstalls each release, then drops its finalizer);
        with `wait`, until they are gone."""
        stubs = [self.resource(name, {}) for name in names]
        self.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", input=_as_list(stubs))
        if wait:
            seen = self._seen or follower(self.kubeconfig)
            deadline = time.monotonic() + wait
            while left := [name for name in names if seen.get(f"tenant-{name}", name) is not None]:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{len(left)} TenantReleases still there after {wait:.0f}s, e.g. {left[0]}:\n"
                        + self.log_tail()
                    )
                time.sleep(1)

    def _listed(self) -> set[tuple[str, str]]:
        selector = ",".join(f"{k}={v}" for k, v in MADE_BY.items())
        out = self.kubectl(
            "get", RESOURCE, "-A", "-l", selector, "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
        )  # fmt: skip
        pairs = (line.split("/", 1) for line in out.split() if "/" in line)
        return {(namespace, name) for namespace, name in pairs}

    def _namespaces_made(self) -> list[str]:
        """The tenant names of the namespaces this module made (label MADE_BY)."""
        selector = ",".join(f"{k}={v}" for k, v in MADE_BY.items())
        out = self.kubectl("get", "namespaces", "-l", selector, "-o", "name")
        return [line.removeprefix("namespace/tenant-") for line in out.split()]

    def cleanup(self, names: list[str] | None = None, timeout: float = 600) -> None:
        """The TenantReleases (all this module made when `names` is None) deleted through the helm-operator,
        which uninstalls their releases; without a running helm-operator their finalizers are dropped
        instead. Then their namespaces are deleted (not waited for)."""
        if names is None:
            names = sorted({name for _ns, name in self._listed()} | set(self._namespaces_made()))
        if not names:
            return
        if self.process is None or self.process.poll() is not None:
            for name in names:
                self.kubectl(
                    "patch", RESOURCE, name, "-n", f"tenant-{name}", "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False,
                )  # fmt: skip
        self.delete(names, wait=timeout)
        namespaces = [f"namespace/tenant-{name}" for name in names]
        for start in range(0, len(namespaces), 200):
            self.kubectl("delete", "--ignore-not-found", "--wait=false", *namespaces[start : start + 200])

    def remove_placement_policy(self) -> None:
        self.kubectl("delete", "--ignore-not-found", "-f", "-", input=_as_list(placement_policy()))


# -- one watch on every TenantRelease, shared by every HelmOperator of a cluster ---------------------------


class Follower:
    """The cluster's TenantReleases as last seen: a list, then a watch from its version, in a daemon thread
    (the bench asks `deployed` of every tenant twice a second: from memory, not from the API server)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name) -> object
        self.lock = threading.Lock()
        self.listed = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self.listed.wait(30):
            raise RuntimeError("could not list the TenantReleases")

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((namespace, name))
            return dict(obj) if obj is not None else None

    def _list(self, **kwargs: Any) -> Any:
        return self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)

    def _run(self) -> None:
        version = ""
        while True:
            try:
                if not version:
                    listed = self._list()
                    with self.lock:
                        self.objects = {
                            (o["metadata"]["namespace"], o["metadata"]["name"]): o for o in listed["items"]
                        }
                    version = listed["metadata"]["resourceVersion"]
                    self.listed.set()
                for event in watch.Watch().stream(self._list, resource_version=version, timeout_seconds=300):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = ""  # most likely expired: list again
                        break
                    version = obj["metadata"]["resourceVersion"]
                    key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.objects.pop(key, None)
                        else:
                            self.objects[key] = obj
            except ApiException as error:
                if error.status == 410:
                    version = ""  # expired: list again
                else:
                    time.sleep(1)
            except Exception:  # a dropped connection: watch again from where it was
                time.sleep(1)


_FOLLOWERS: dict[Path, Follower] = {}
_FOLLOWERS_LOCK = threading.Lock()


def follower(kubeconfig: Path) -> Follower:
    """The one Follower of this cluster (the TenantRelease CRD must exist)."""
    with _FOLLOWERS_LOCK:
        if kubeconfig not in _FOLLOWERS:
            _FOLLOWERS[kubeconfig] = Follower(kubeconfig)
        return _FOLLOWERS[kubeconfig]


def start(concurrency: int, reconcile_period: str = "1m") -> HelmOperator:
    """The hook of bench/scale.py: a started helm-operator whose namespaces carry the harness's label
    (neurallog.io/bench=scale, as its other contestants'); the harness places the pods itself."""
    operator = HelmOperator(reconcile_period=reconcile_period, labels={"neurallog.io/bench": "scale"})
    operator.start(concurrency)
    return operator
