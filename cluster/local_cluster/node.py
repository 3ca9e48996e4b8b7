"""The local cluster's real node: pods whose containers really run, on this machine.

containerd 2 with runc runs the containers; the CNI bridge gives every pod an address in ``POD_CIDR`` on the
bridge ``rn0``; the kubelet registers the node ``real-node``; kube-proxy (iptables) makes Services work;
kube-router, its firewall alone, enforces NetworkPolicies; CoreDNS runs as a pod of ``kube-system`` so
that tenants' DNS policies select it as they would on any cluster. Images come from ``images.py``: nothing
is pulled.

The node's address ``NODE_IP`` lives on one end of a veth pair (the kubelet refuses a loopback node IP and
this kernel has no dummy links): the API server listens there, so pods reach it through the ``kubernetes``
Service like on any cluster.
Pod traffic stays on this machine: a guard chain drops whatever a pod sends to
an address that is neither a pod, a Service, the node nor ``LAB_CIDR`` (where tests make their own
"outside" hosts in network namespaces), containerd's registry hosts point at a closed local port, and
CoreDNS forwards nothing.

Every change to the host is recorded with its undo (``host.HostJournal``) before it is made.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from local_cluster.host import HostJournal, run, sysctl, unmount_under
from local_cluster.images import COREDNS_IMAGE, PAUSE_IMAGE, ensure_images
from local_cluster.pki import ensure_client_certificate

if TYPE_CHECKING:
    from local_cluster.cluster import LocalCluster

NODE_NAME = "real-node"
NODE_IP = "10.250.250.1"
NODE_LINK, NODE_LINK_PEER = "rn-node0", "rn-node0p"
BRIDGE = "rn0"
POD_CIDR = "10.245.0.0/24"
LAB_CIDR = "10.250.251.0/24"
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
GUARD_CHAIN = "NEURALLOG-POD-GUARD"
GUARD_JUMP = ["PREROUTING", "-i", BRIDGE, "-s", POD_CIDR, "-j", GUARD_CHAIN]  # raw table
PROCESSES = ("containerd", "kubelet", "kube-proxy", "kube-router")

# Kernel settings the node's components change: restored by ``down``.
SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)
# Host paths the kubelet, containerd and CNI create whatever their configuration says; removed by ``down``
# when they did not exist before.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/run/nri",
    "/var/lib/cni",
)


class RealNode:
    """The real node of one local cluster; its files live under ``<state>/node``."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.dir = cluster.state_dir / "node"
        self.journal = HostJournal(cluster.run_dir / "host-changes.json")
        self.containerd_socket = self.dir / "containerd" / "containerd.sock"
        self.started = 0.0  # when this boot started the node: older statuses are the previous boot's

    # -- host --------------------------------------------------------------------------------------------

    def prepare_host(self) -> None:
        """The node's address, kernel settings and the pod traffic guard; before the API server starts,
        since it listens on the node's address."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._clear_leftovers()
        for name in SYSCTLS:
            self.journal.record(f"sysctl {name}", ["sysctl", "-w", f"{name}={sysctl(name)}"])
        for path in HOST_PATHS:
            if not Path(path).exists():
                self.journal.record(f"host path {path}", ["rm", "-rf", path])
        remove_cgroups = (
            "find /sys/fs/cgroup -depth -type d -name 'kubepods*' -exec rmdir {} + 2>/dev/null; true"
        )
        self.journal.record("kubepods cgroups", ["sh", "-c", remove_cgroups])
        run(["sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"])
        self.journal.change(
            "node address link",
            ["ip", "link", "add", NODE_LINK, "type", "veth", "peer", "name", NODE_LINK_PEER],
            ["ip", "link", "del", NODE_LINK],
        )
        run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK])
        run(["ip", "link", "set", NODE_LINK_PEER, "up"])
        run(["ip", "link", "set", NODE_LINK, "up"])
        self.journal.record("pod bridge", ["ip", "link", "del", BRIDGE])
        self._guard_pod_traffic()

    def _clear_leftovers(self) -> None:
        """A cluster whose processes were killed without ``down`` (a crash, a reboot of the session, another
        checkout's cluster) leaves the node's links and guard behind: remove them by their names."""
        run(["ip", "link", "del", NODE_LINK], check=False)
        run(["ip", "link", "del", BRIDGE], check=False)
        while run(["iptables", "-t", "raw", "-D", *GUARD_JUMP], check=False).returncode == 0:
            pass
        run(["iptables", "-t", "raw", "-F", GUARD_CHAIN], check=False)
        run(["iptables", "-t", "raw", "-X", GUARD_CHAIN], check=False)

    def _guard_pod_traffic(self) -> None:
        """Pods may send only to pods, Services, the node and the tests' lab range; in the raw table, so
        that no ACCEPT of kube-proxy or kube-router comes first."""
        self.journal.change(
            "pod guard chain",
            ["iptables", "-t", "raw", "-N", GUARD_CHAIN],
            ["iptables", "-t", "raw", "-X", GUARD_CHAIN],
        )
        self.journal.record("pod guard rules", ["iptables", "-t", "raw", "-F", GUARD_CHAIN])
        for destination in (POD_CIDR, self.cluster.service_cidr, f"{NODE_IP}/32", LAB_CIDR):
            run(["iptables", "-t", "raw", "-A", GUARD_CHAIN, "-d", destination, "-j", "RETURN"])
        run(["iptables", "-t", "raw", "-A", GUARD_CHAIN, "-j", "DROP"])
        self.journal.change(
            "pod guard jump",
            ["iptables", "-t", "raw", "-I", *GUARD_JUMP],
            ["iptables", "-t", "raw", "-D", *GUARD_JUMP],
        )

    # -- processes ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """containerd with the local images, then the kubelet, kube-proxy, kube-router and CoreDNS."""
        self.started = time.time()
        self._start_containerd()
        self.cluster.wait(self.containerd_socket.exists, "the containerd socket")
        self.load_images()
        self._start_kubelet()
        # kube-router finds its node by name when it starts.
        self.cluster.wait(self._registered, f"the kubelet to register node {NODE_NAME}")
        self._start_kube_proxy()
        self._start_kube_router()
        self._apply_coredns()

    def load_images(self) -> None:
        """Builds what changed among the local images and imports into containerd those not imported yet
        (so that an edit of the operator reaches the node at the next ``up``, even on a running cluster)."""
        record = self.dir / "images-loaded.json"
        loaded = set(json.loads(record.read_text())) if record.exists() else set()
        for image in ensure_images(self.cluster.bin):
            if str(image.archive) not in loaded:
                self._ctr("images", "import", "--platform", "linux/amd64", str(image.archive))
                loaded.add(str(image.archive))
                record.write_text(json.dumps(sorted(loaded)))

    def _ctr(self, *args: str) -> str:
        return run(
            [str(self.cluster.bin / "ctr"), "-a", str(self.containerd_socket), "-n", "k8s.io", *args]
        ).stdout

    def _start_containerd(self) -> None:
        state = self.dir / "containerd"
        hosts = self.dir / "registry-hosts" / "_default"
        hosts.mkdir(parents=True, exist_ok=True)
        # Every registry resolves to a closed local port: a pull fails at once and nothing leaves the host.
        (hosts / "hosts.toml").write_text('server = "https://127.0.0.1:9"\n\n[host."https://127.0.0.1:9"]\n')
        cni = self.dir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-realnode.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = self.dir / "containerd.toml"
        config.write_text(
            CONTAINERD_CONFIG.format(
                state=state,
                pause=PAUSE_IMAGE,
                cni_bin=self.cluster.bin / "cni",
                cni_conf=cni,
                hosts=hosts.parent,
            )
        )
        env = {**os.environ, "PATH": f"{self.cluster.bin}:/usr/sbin:/usr/bin:/sbin:/bin"}
        self.cluster.start(
            "containerd", [str(self.cluster.bin / "containerd"), f"--config={config}"], env=env
        )

    def _cni_config(self) -> dict[str, object]:
        return {
            "cniVersion": "1.0.0",
            "name": "realnode",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,  # no NAT: pod traffic has nowhere to go but this machine
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _kubeconfig(self, name: str, subject: str) -> Path:
        ensure_client_certificate(self.cluster.pki, name, subject)
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(json.dumps(self.cluster.kubeconfig_for(name)))
        path.chmod(0o600)
        return path

    def _start_kubelet(self) -> None:
        kubeconfig = self._kubeconfig("kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}")
        config = self.dir / "kubelet.yaml"
        config.write_text(json.dumps(self._kubelet_config(), indent=2))
        self.cluster.start(
            "kubelet",
            [
                str(self.cluster.bin / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--node-labels=node.neurallog.io/real=true",
                "--v=1",
            ],
        )

    def _kubelet_config(self) -> dict[str, object]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            # cgroup v1 here; the kubelet refuses it since 1.35 unless told to accept it.
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.cluster.pki / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.dir / "pod-logs"),
            # No upstream resolver: pods with dnsPolicy Default resolve nothing, nothing is forwarded.
            "resolvConf": "",
            "clusterDNS": [CLUSTER_DNS],
            "clusterDomain": CLUSTER_DOMAIN,
            "imageGCHighThresholdPercent": 100,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "maxPods": 60,
        }

    def _start_kube_proxy(self) -> None:
        kubeconfig = self._kubeconfig("kube-proxy", "/CN=system:kube-proxy")
        config = self.dir / "kube-proxy.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfig)},
                    "mode": "iptables",
                    "hostnameOverride": NODE_NAME,
                    "clusterCIDR": POD_CIDR,
                    "bindAddress": NODE_IP,
                    "healthzBindAddress": "127.0.0.1:10256",
                    "metricsBindAddress": "127.0.0.1:10249",
                    "nodePortAddresses": [f"{NODE_IP}/32"],
                    # Leave the host's conntrack settings alone.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                    "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
                },
                indent=2,
            )
        )
        self.journal.record("kube-proxy rules", [str(self.cluster.bin / "kube-proxy"), "--cleanup"])
        self.cluster.start(
            "kube-proxy", [str(self.cluster.bin / "kube-proxy"), f"--config={config}", "--v=1"]
        )

    def _start_kube_router(self) -> None:
        # Its rules and ipsets are swept by ``stop``: kube-router's own --cleanup-config panics in v2.1.0 when
        # its service proxy never ran.
        self.cluster.start(
            "kube-router",
            [
                str(self.cluster.bin / "kube-router"),
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--health-port=0",
                "--metrics-port=0",
                "--enable-ipv6=false",
                f"--service-cluster-ip-range={self.cluster.service_cidr}",
                "--v=1",
            ],
        )

    def _apply_coredns(self) -> None:
        result = self.cluster.kubectl(
            "apply", "--server-side", "-f", "-", stdin=json.dumps(coredns_objects())
        )
        if result.returncode != 0:
            raise RuntimeError(f"applying CoreDNS failed: {result.stderr}")

    # -- health ------------------------------------------------------------------------------------------

    def _registered(self) -> bool:
        return self.cluster.kubectl("get", "node", NODE_NAME).returncode == 0

    def ready(self) -> bool:
        """The kubelet of this boot reported the node Ready, and the cluster DNS answers through its Service
        (statuses left in etcd by the previous boot say nothing: the checks are live)."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:10248/healthz", timeout=2) as response:
                if response.status != 200:
                    return False
        except OSError:
            return False
        result = self.cluster.kubectl(
            "get", "node", NODE_NAME, "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status} '
            '{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}',
        )  # fmt: skip
        status, _, heartbeat = result.stdout.partition(" ")
        if status != "True" or not heartbeat:
            return False
        reported = datetime.datetime.fromisoformat(heartbeat.replace("Z", "+00:00")).timestamp()
        return reported >= self.started - 1 and dns_answers(f"kubernetes.default.svc.{CLUSTER_DOMAIN}")

    # -- teardown ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the node's processes and containers and unmounts what they mounted."""
        for component in ("kube-router", "kube-proxy", "kubelet"):
            self.cluster.stop(component)
        self._kill_containers()
        self.cluster.stop("containerd")
        unmount_under(self.dir)

    def undo_host_changes(self) -> None:
        """Undoes every change to the host, in reverse order, and sweeps what the node's components made;
        once the API server, which listens on the node's address, has stopped."""
        self.journal.undo_all()
        sweep_iptables("KUBE-")  # the kubelet's canaries, kube-router's firewall
        for ipset in run(["ipset", "list", "-n"], check=False).stdout.split():
            if ipset.upper().startswith("KUBE-"):
                run(["ipset", "destroy", ipset], check=False)

    def _kill_containers(self) -> None:
        """Containers outlive containerd (their shims are daemons): kill every process of a pod's cgroup and
        every shim of this node."""
        shim = (self.cluster.bin / "containerd-shim-runc-v2").resolve()
        for attempt in range(50):
            victims = []
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if (
                        "/kubepods" in (proc / "cgroup").read_text()
                        or Path(os.readlink(proc / "exe")) == shim
                    ):
                        victims.append(int(proc.name))
                except OSError:
                    continue
            if not victims:
                return
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1 if attempt < 10 else 0.5)


def dns_answers(name: str) -> bool:
    """Whether the cluster DNS answers an A query for ``name`` with an address (one UDP query, 1 s)."""
    query = struct.pack(">HHHHHH", 0x4E4C, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(1)
        try:
            client.sendto(query, (CLUSTER_DNS, 53))
            answer = client.recv(512)
        except OSError:
            return False
    identifier, flags, _, answers = struct.unpack(">HHHH", answer[:8])
    return bool(identifier == 0x4E4C and flags & 0xF == 0 and answers > 0)


def sweep_iptables(prefix: str) -> None:
    """Deletes the rules jumping to chains named ``prefix``* and those chains, in every table (the kubelet's
    canaries and whatever kube-proxy or kube-router left)."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            listing = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False)
            chains = []
            for line in listing.stdout.splitlines():
                words = shlex.split(line)  # comments are quoted
                if words[:1] == ["-N"] and words[1].startswith(prefix):
                    chains.append(words[1])
                    continue
                target = words[words.index("-j") + 1] if "-j" in words else ""
                if words[:1] == ["-A"] and target.startswith(prefix) and not words[1].startswith(prefix):
                    subprocess.run([tool, "-t", table, "-D", *words[1:]], capture_output=True, check=False)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-F", chain], capture_output=True, check=False)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-X", chain], capture_output=True, check=False)


def coredns_objects() -> dict[str, object]:
    """CoreDNS as a Deployment of kube-system behind the Service kube-dns, as kubeadm lays it out."""
    labels = {"k8s-app": "kube-dns"}
    corefile = f"""\
.:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        ttl 30
    }}
    cache 30
}}
"""
    meta = {"namespace": "kube-system"}
    items: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", **meta},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", **meta, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": COREDNS_IMAGE,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", **meta, "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


CONTAINERD_CONFIG = """\
version = 3
root = "{state}/root"
state = "{state}/state"
temp = "{state}/tmp"
plugin_dir = "{state}/plugins"

[grpc]
  address = "{state}/containerd.sock"

[ttrpc]
  address = "{state}/containerd.sock.ttrpc"

[debug]
  level = "warn"

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.internal.v1.opt']
  path = "{state}/opt"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{pause}'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '{hosts}'

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # This host's root lacks CAP_SYS_RESOURCE: runc may not lower a container's oom_score_adj below its own.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '/usr/sbin/runc'
        Root = '{state}/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{cni_bin}']
    conf_dir = '{cni_conf}'
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""
