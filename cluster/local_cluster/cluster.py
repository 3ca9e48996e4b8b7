"""A real Kubernetes control plane run as local processes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the binaries a cluster runs; a
real node (``node.py``: kubelet, containerd, kube-proxy, kube-router, CoreDNS) runs pods for real; KWOK
plays the kubelet of fake nodes, tainted so that only pods that ask for them land there (scale work
without containers); a small volume provisioner binds PersistentVolumeClaims. Everything lives under one
state directory (``.cluster`` in the checkout): the kubeconfig, certificates, etcd data, logs, pid files
and links to the binaries.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from local_cluster import node
from local_cluster.build import ensure_binaries
from local_cluster.pki import ensure_pki

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
# Pod addresses KWOK hands out: a range that overlaps neither the service range nor loopback.
POD_CIDR = "10.244.0.0/16"
NODE_NAMES = ("kwok-node-0",)
# Only pods tolerating this taint land on the KWOK nodes; all others go to the real node.
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
STORAGE_CLASS = "local"
PROVISIONER_NAME = "local-cluster.neurallog.io/volume"
BOOT_TIMEOUT = 90.0

COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "volume-provisioner",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    kwok: int

    @classmethod
    def load_or_choose(cls, path: Path) -> Ports:
        """Ports are chosen once, at first boot, and kept with the cluster's state."""
        if path.exists():
            return cls(**json.loads(path.read_text()))
        ports = cls(_free_port(), _free_port(), _free_port(), _free_port())
        path.write_text(json.dumps(ports.__dict__))
        return ports


def real_node_default() -> bool:
    """A real node needs root (links, iptables, mounts); ``LOCAL_CLUSTER_REAL_NODE=0`` leaves it out."""
    return os.geteuid() == 0 and os.environ.get("LOCAL_CLUSTER_REAL_NODE", "1") != "0"


class ComponentExitedError(RuntimeError):
    """A process of the cluster ended while the cluster waited for something; the end of its log."""

    def __init__(self, component: str, what: str, pid_file: Path, logs: Path) -> None:
        log = logs / f"{component}.log"
        super().__init__(
            f"{component} exited while waiting for {what} ({pid_file}: {pid_file.read_text()!r}); see {log}"
        )
        self.component = component
        with log.open("rb") as file:
            file.seek(max(0, log.stat().st_size - 16384))
            self.log_tail = file.read().decode(errors="replace")


class LocalCluster:
    """The local cluster whose state lives in ``state_dir``; with ``real_node``, pods really run."""

    service_cidr = SERVICE_CIDR

    def __init__(self, state_dir: Path, real_node: bool | None = None) -> None:
        self.real_node = real_node_default() if real_node is None else real_node
        # With a real node the API server listens on the node's address, so that pods reach it.
        self.api_host = node.NODE_IP if self.real_node else "127.0.0.1"
        self.state_dir = state_dir.resolve()
        self.bin = self.state_dir / "bin"
        self.pki = self.state_dir / "pki"
        self.logs = self.state_dir / "logs"
        self.run_dir = self.state_dir / "run"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.node = node.RealNode(self)

    # -- processes ---------------------------------------------------------------------------------------

    def _pid_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.pid"

    def pid(self, component: str) -> int | None:
        """The pid of a running component, or None."""
        try:
            pid = int(self._pid_file(component).read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        # A pid can be reused by an unrelated process after a reboot: check that it still names our state dir
        # in its command line or its environment (a KUBECONFIG of this cluster).
        try:
            process = Path(f"/proc/{pid}")
            identity = (process / "cmdline").read_bytes() + (process / "environ").read_bytes()
        except OSError:
            return None
        return pid if str(self.state_dir).encode() in identity else None

    def start(self, component: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Starts a process attached to the cluster: logged to logs/<component>.log, stopped by ``down``."""
        log = (self.logs / f"{component}.log").open("ab")
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the command that started it, like a service
            cwd=self.state_dir,
            env=env,
        )
        self._pid_file(component).write_text(str(process.pid))

    def stop(self, component: str, grace: float = 10.0) -> None:
        """Stops one process of the cluster: SIGTERM, then SIGKILL after ``grace`` seconds."""

        pid = self.pid(component)
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.pid(component) is not None:
                _reap(pid)
                time.sleep(0.1)
            if self.pid(component) is not None:
                os.killpg(pid, signal.SIGKILL)
                while self.pid(component) is not None:
                    _reap(pid)
                    time.sleep(0.05)
        self._pid_file(component).unlink(missing_ok=True)

    @property
    def components(self) -> tuple[str, ...]:
        return COMPONENTS + (node.PROCESSES if self.real_node else ())

    def running(self) -> dict[str, int | None]:
        return {component: self.pid(component) for component in self.components}

    # -- health ------------------------------------------------------------------------------------------

    def _api_url(self) -> str:
        ports = Ports.load_or_choose(self.state_dir / "ports.json")
        return f"https://{self.api_host}:{ports.apiserver}"

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def api_healthy(self) -> bool:
        if not (self.pki / "admin.crt").exists():
            return False
        try:
            with urllib.request.urlopen(
                f"{self._api_url()}/readyz", context=self._ssl_context(), timeout=2
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def is_up(self) -> bool:
        return all(self.running().values()) and self.api_healthy()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def up(self) -> None:
        """Boots the cluster; does nothing when it already runs. Idempotent."""
        if self.is_up():
            if self.real_node:
                self.node.load_images()
            print(f"local cluster already up: KUBECONFIG={self.kubeconfig}", file=sys.stderr)
            return
        try:
            self._boot()
        except ComponentExitedError as exited:
            # KWOK v0.8.0 sometimes dies as it starts: its node and pod controllers build their first CEL
            # environments at once, and easycel caches type traits in a map without a lock ("fatal error:
            # concurrent map writes"; 1 boot in 32 here). Once past that moment it runs on.
            if exited.component != "kwok" or "concurrent map writes" not in exited.log_tail:
                raise
            print(f"{exited}; booting again", file=sys.stderr)
            self._boot()

    def _boot(self) -> None:
        self.down()  # a partial cluster (a crashed component) is restarted whole
        for directory in (self.bin, self.logs, self.run_dir, self.state_dir / "volumes"):
            directory.mkdir(parents=True, exist_ok=True)
        ensure_binaries(self.bin)
        started = time.monotonic()
        ports = Ports.load_or_choose(self.state_dir / "ports.json")
        ensure_pki(self.pki, (SERVICE_IP, node.NODE_IP))
        self.kubeconfig.write_text(json.dumps(self.kubeconfig_for("admin"), indent=2))
        self.kubeconfig.chmod(0o600)
        if self.real_node:
            self.node.prepare_host()
        self._start_etcd(ports)
        self._start_apiserver(ports)
        self.wait(self.api_healthy, "kube-apiserver /readyz")
        self._start_controllers()
        self._start_kwok(ports)
        self._start_provisioner()
        self._apply_cluster_objects()
        self.wait(self._kwok_nodes_ready, "the KWOK nodes to be Ready")
        self.wait(self._default_service_account_exists, "the default service account")
        if self.real_node:
            self.node.start()
            self.wait(self.node.ready, "the real node and its DNS to be Ready", timeout=180)
        print(
            f"local cluster up in {time.monotonic() - started:.1f}s: KUBECONFIG={self.kubeconfig}",
            file=sys.stderr,
        )

    def down(self) -> None:
        """Stops every process of the cluster, those attached to it first (see ``start``). Keeps its state."""
        attached = sorted({path.stem for path in self.run_dir.glob("*.pid")} - set(self.components))
        for component in attached:
            self.stop(component)
        if self.real_node:
            self.node.stop()
        for component in reversed(COMPONENTS):
            self.stop(component)
        if self.real_node:
            self.node.undo_host_changes()

    def restart(self, component: str) -> None:
        """Stops one process of the control plane (``etcd`` or ``kube-apiserver``) and starts it again as
        ``up`` does, then waits until the API server is ready again (its /readyz checks etcd too). A fault
        for tests: the other processes keep running."""
        starters: dict[str, Callable[[Ports], None]] = {
            "etcd": self._start_etcd,
            "kube-apiserver": self._start_apiserver,
        }
        if component not in starters:
            raise ValueError(f"cannot restart {component!r}: only {', '.join(starters)}")
        ports = Ports.load_or_choose(self.state_dir / "ports.json")
        try:
            self.stop(component)
        finally:
            starters[component](ports)
        self.wait(self.api_healthy, f"kube-apiserver /readyz after restarting {component}")

    def destroy(self) -> None:
        """Stops the cluster and deletes its state (etcd data, certificates, volumes); keeps the binaries."""
        self.down()
        for child in (
            "etcd",
            "pki",
            "volumes",
            "logs",
            "run",
            "node",
            "kubeconfig",
            "ports.json",
            "kwok.yaml",
            "flux",  # local_cluster.flux: its ports, artifacts and chart repository
        ):
            path = self.state_dir / child
            if path.is_dir():
                subprocess.run(["rm", "-rf", str(path)], check=True)
            else:
                path.unlink(missing_ok=True)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        suspects: dict[str, int] = {}
        while not condition():
            for component, pid in self.running().items():
                if pid is None and self._pid_file(component).exists():  # started, then exited?
                    suspects[component] = suspects.get(component, 0) + 1
                    # Gone in four checks in a row (a second): CI once saw a live process as gone, once.
                    if suspects[component] >= 4:
                        raise ComponentExitedError(component, what, self._pid_file(component), self.logs)
                else:
                    suspects.pop(component, None)
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.logs}")
            time.sleep(0.25)

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )

    def _kwok_nodes_ready(self) -> bool:
        result = self.kubectl(
            "get", "nodes", "--selector=type=kwok", "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        )  # fmt: skip
        return result.returncode == 0 and result.stdout.split() == ["True"] * len(NODE_NAMES)

    def _default_service_account_exists(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0

    # -- components --------------------------------------------------------------------------------------

    def kubeconfig_for(self, user: str) -> dict[str, object]:
        """A kubeconfig for the client certificate ``pki/<user>.crt``."""
        ports = Ports.load_or_choose(self.state_dir / "ports.json")
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": f"https://{self.api_host}:{ports.apiserver}",
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(self.pki / f"{user}.crt"),
                        "client-key": str(self.pki / f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }

    def _start_etcd(self, ports: Ports) -> None:
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        self.start(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=local",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                # A throwaway test cluster: durability is not worth an fsync per write on a shared disk.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, ports: Ports) -> None:
        pki = self.pki
        self.start(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
                f"--bind-address={self.api_host}",
                f"--advertise-address={self.api_host}",
                f"--secure-port={ports.apiserver}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # The default admission plugins (Pod Security, ResourceQuota, LimitRanger...) stay on.
                "--allow-privileged=true",
                # The `kubernetes` Service points at the real node's address; without a real node it would
                # point at 127.0.0.1, which Endpoints may not hold.
                f"--endpoint-reconciler-type={'lease' if self.real_node else 'none'}",
                # Logs, exec and port-forward reach the kubelet by the node's address, never by a DNS lookup.
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
            ],
        )

    def _start_controllers(self) -> None:
        # Both talk to the API server as the admin and serve nothing themselves.
        common = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
        ]
        self.start(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                *common,
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allocate-node-cidrs=false",
                "--controllers=*,-nodeipam",
                "--concurrent-gc-syncs=10",
                "--concurrent-namespace-syncs=10",
            ],
        )
        self.start("kube-scheduler", [str(self.bin / "kube-scheduler"), *common])

    def _start_kwok(self, ports: Ports) -> None:
        stages = Path(__file__).with_name("kwok-stages.yaml")
        self.start(
            "kwok",
            [
                str(self.bin / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--node-port={ports.kwok}",
                # Heartbeats through node status (kwok-stages.yaml), not leases: a lease left by the previous
                # boot's KWOK would make this one treat the node as someone else's until it expires.
                "--node-lease-duration-seconds=0",
                f"--tls-cert-file={self.pki / 'admin.crt'}",
                f"--tls-private-key-file={self.pki / 'admin.key'}",
                f"--server-address=127.0.0.1:{ports.kwok}",
            ],
        )

    def _start_provisioner(self) -> None:
        self.start(
            "volume-provisioner",
            [
                sys.executable,
                "-m",
                "local_cluster.provisioner",
                f"--kubeconfig={self.kubeconfig}",
                f"--volumes={self.state_dir / 'volumes'}",
                f"--provisioner={PROVISIONER_NAME}",
            ],
        )

    def _apply_cluster_objects(self) -> None:
        """The fake nodes and the default StorageClass."""
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                "spec": {"taints": [KWOK_TAINT] if self.real_node else []},
            }
            for name in NODE_NAMES
        ]
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER_NAME,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": [*nodes, storage_class]})
        result = self.kubectl("apply", "--server-side", "-f", "-", stdin=manifest)
        if result.returncode != 0:
            raise RuntimeError(f"applying the nodes and the StorageClass failed: {result.stderr}")


def _reap(pid: int) -> None:
    """Collects a child that exited, so that it does not linger as a zombie of this process."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
