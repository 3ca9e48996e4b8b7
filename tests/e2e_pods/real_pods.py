"""Helpers of the real-pod end-to-end tests: the operator chart installed and running in its pod, probe pods,
debug containers, connection checks with a short timeout, Secrets read without being shown, port-forward.

Every connection goes to a pod, a Service or a lab host of ``tests.lab`` on this machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_cluster.images import PROBE_IMAGE
from local_cluster.node import NODE_NAME
from tests.conftest import Kube
from tests.e2e.operator_process import REPO, free_port, wait_until

OPERATOR_CHART = REPO / "charts" / "tenant-operator"
CRD = OPERATOR_CHART / "crds" / "tenants.neurallog.io.yaml"
RELEASE, SYSTEM = "tenant-operator", "system"
OPERATOR_PODS = "control-plane=controller-manager"  # the label the guide's troubleshooting selects on
OPERATOR_IMAGE = (
    "docker.io/neurallog/tenant-operator:latest"  # the chart's default image, as the node lists it
)
CONNECT_SECONDS = 3  # `nc -w`: a connection that a policy drops fails after this long

# Requests and limits of the test's own pods in a tenant namespace: within every tenant budget, and set,
# since the tenant's ResourceQuota admits no pod without them (the LimitRange would give 100m otherwise).
PROBE_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}}
# What Pod Security "restricted" demands of a container (the tenant namespaces enforce it).
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
NOBODY = 65534


def get(kube: Kube, *args: str) -> Any:
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)


# -- the operator in its pod ------------------------------------------------------------------------------


def local_operator_processes() -> list[str]:
    """The command lines of `python -m tenant_operator` processes on this machine (the other end-to-end
    package runs the operator so): one of them acting beside the operator pod would make two operators."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tenant_operator" in argv and b"-m" in argv:
            found.append(" ".join(part.decode(errors="replace") for part in argv if part))
    return found


def operator_pods(kube: Kube) -> list[dict[str, Any]]:
    """Every pod of the operator, in any namespace, but those being deleted."""
    pods: list[dict[str, Any]] = get(kube, "pods", "-A", "-l", OPERATOR_PODS)["items"]
    return [pod for pod in pods if "deletionTimestamp" not in pod["metadata"]]


def operator_report(kube: Kube) -> str:
    described = kube.kubectl("describe", "pods", "-n", SYSTEM, "-l", OPERATOR_PODS, check=False)
    logs = kube.kubectl("logs", "-n", SYSTEM, "-l", OPERATOR_PODS, "--tail=40", check=False)
    return f"{described.stdout}{described.stderr}\noperator log:\n{logs.stdout}{logs.stderr}"


def install_operator(kube: Kube) -> None:
    """The operator chart in `system`, as `make demo` installs it: the CRD applied server-side first (Helm
    installs crds/ only once), the chart's defaults with the image the real node holds (never pulled), the
    pod on the real node; returns once the operator pod is Ready."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")
    installed = kube.helm(
        "upgrade", "--install", RELEASE, str(OPERATOR_CHART), "-n", SYSTEM, "--create-namespace",
        "--skip-crds", "--reset-values", "--set", "image.pullPolicy=Never",
        "--set-string", f"nodeSelector.kubernetes\\.io/hostname={NODE_NAME}",
        check=False,
    )  # fmt: skip
    assert installed.returncode == 0, f"helm install failed:\n{installed.stdout}{installed.stderr}"

    def ready() -> bool:
        pods = operator_pods(kube)
        return len(pods) == 1 and any(
            c["type"] == "Ready" and c["status"] == "True" for c in pods[0]["status"].get("conditions", [])
        )

    try:
        wait_until(ready, timeout=180, every=2, what="the operator pod to be Ready")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{operator_report(kube)}") from None


def uninstall_operator(kube: Kube) -> None:
    kube.helm("uninstall", RELEASE, "-n", SYSTEM, "--ignore-not-found", "--wait", "--timeout", "120s")
    wait_until(lambda: not operator_pods(kube), timeout=120, what="the operator pod to go")


# -- pods of the tests -------------------------------------------------------------------------------------


def probe_pod(
    name: str, labels: dict[str, str], *, listen: tuple[int, ...] = (), restricted: bool = True
) -> dict[str, Any]:
    """A pod of the probe image (busybox: nc, wget, nslookup) that runs as nobody and sleeps until deleted,
    serving HTTP (busybox httpd) on each port of ``listen``. Restricted, it passes Pod Security
    "restricted" and a tenant's ResourceQuota. Ports under 1024 are opened to its non-root user by the
    namespaced sysctl net.ipv4.ip_unprivileged_port_start, which Pod Security allows."""
    serve = "".join(f"httpd -p {port} -h /tmp/www && " for port in listen)
    script = f"mkdir -p /tmp/www && echo {name} > /tmp/www/index.html && {serve}exec sleep 100000"
    container: dict[str, Any] = {
        "name": "probe",
        "image": PROBE_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": {"runAsUser": NOBODY, "runAsNonRoot": True},
    }
    pod_security: dict[str, Any] = {}
    if restricted:
        container["securityContext"] |= RESTRICTED_CONTAINER
        container["resources"] = PROBE_RESOURCES
    if any(port < 1024 for port in listen):
        pod_security["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": pod_security,
            "containers": [container],
        },
    }


def apply(kube: Kube, namespace: str, *objects: dict[str, Any]) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def wait_ready(kube: Kube, namespace: str, *pods: str, timeout: int = 120) -> None:
    kube.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", f"--timeout={timeout}s",
        *(f"pod/{p}" for p in pods), timeout=timeout + 30,
    )  # fmt: skip


def pod_names(kube: Kube, namespace: str, selector: str) -> list[str]:
    pods = get(kube, "pods", "-n", namespace, "-l", selector)["items"]
    return sorted(p["metadata"]["name"] for p in pods if "deletionTimestamp" not in p["metadata"])


def pod_ip(kube: Kube, namespace: str, pod: str) -> str:
    address = kube.kubectl(
        "get", "pod", pod, "-n", namespace, "-o", "jsonpath={.status.podIP}"
    ).stdout.strip()
    assert address, f"pod {namespace}/{pod} has no address"
    return address


def service_ip(kube: Kube, namespace: str, service: str) -> str:
    return kube.kubectl("get", "service", service, "-n", namespace, "-o", "jsonpath={.spec.clusterIP}").stdout


class ProbeError(RuntimeError):
    """A connection check that could not be made (not a refused connection)."""


@dataclass(frozen=True)
class Probe:
    """A container to run commands and connections from: a probe pod's, a debug container's or a
    container of the tenant's own pods (whose images have busybox)."""

    kube: Kube
    namespace: str
    pod: str
    container: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod}[{self.container}]"

    def run(
        self, *command: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        stdin = ("-i",) if input is not None else ()
        return self.kube.kubectl(
            "exec", *stdin, "-n", self.namespace, self.pod, "-c", self.container, "--", *command,
            input=input, check=check, timeout=60,
        )  # fmt: skip

    def connects(self, host: str, port: int) -> bool:
        """Whether a TCP connection to ``host:port`` opens within CONNECT_SECONDS. Debian's busybox nc has
        no `-z`: `-e true` runs `true` once connected and closes, which is the same check.
        Fails, rather than answering False, when the probe itself cannot run or the name does not resolve:
        a refusal must come from the network."""
        script = f'nc -w {CONNECT_SECONDS} "$0" "$1" -e true; echo "nc exited $?"'
        result = self.run("sh", "-c", script, host, str(port), check=False)
        exited = re.search(r"^nc exited (\d+)$", result.stdout, re.MULTILINE)
        if exited is None or "bad address" in result.stderr:
            raise ProbeError(f"cannot probe {host}:{port} from {self}:\n{result.stdout}{result.stderr}")
        return exited.group(1) == "0"

    def reaches(self, host: str, port: int, timeout: float = 60) -> bool:
        """Connects, allowing the enforcer a sync to program a new pod's policies."""
        try:
            wait_until(lambda: self.connects(host, port), timeout=timeout, every=1, what="")
        except AssertionError:
            return False
        return True

    def is_blocked(self, host: str, port: int, timeout: float = 45) -> bool:
        """Refused or dropped, and still so on a second try: a new pod may get through until the enforcer
        has programmed its policies, so the first refusal is waited for, then it must hold."""
        try:
            wait_until(lambda: not self.connects(host, port), timeout=timeout, every=1, what="")
        except AssertionError:
            return False
        return not self.connects(host, port)


def debug_container(
    kube: Kube, namespace: str, pod: str, name: str, *, target: str | None = None, command: str = ""
) -> Probe:
    """An ephemeral container of the probe image in ``pod`` (`kubectl debug`, Pod Security's "restricted"
    profile): it shares the pod's network namespace, so its connections are the pod's, subject to the
    policies that select the pod; with ``target``, it also sees that container's processes. ``command``
    runs before it sleeps."""
    script = f"{command + ' && ' if command else ''}exec sleep 100000"
    kube.kubectl(
        "debug", "-n", namespace, f"pod/{pod}", "-c", name, f"--image={PROBE_IMAGE}",
        "--image-pull-policy=Never", "--profile=restricted", *((f"--target={target}",) if target else ()),
        "--", "sh", "-c", script,
    )  # fmt: skip

    def running() -> bool:
        status = get(kube, "pod", pod, "-n", namespace)["status"]
        states = [s for s in status.get("ephemeralContainerStatuses", []) if s["name"] == name]
        if states and "terminated" in states[0]["state"]:
            raise AssertionError(f"debug container {name} of {namespace}/{pod} ended: {states[0]['state']}")
        return bool(states) and "running" in states[0]["state"]

    wait_until(running, timeout=60, what=f"debug container {name} of {namespace}/{pod} to run")
    return Probe(kube, namespace, pod, name)


# -- secrets, ports, files -----------------------------------------------------------------------------------


def secret_value(kube: Kube, namespace: str, secret: str, key: str) -> str:
    """A Secret's value, read with kubectl and never shown (not even in a failure's message)."""
    result = kube.kubectl(
        "get", "secret", secret, "-n", namespace, "-o", f"jsonpath={{.data.{key}}}", check=False
    )
    assert result.returncode == 0 and result.stdout, f"cannot read key {key} of Secret {namespace}/{secret}"
    return base64.b64decode(result.stdout).decode()


def local_port(preferred: int) -> int:
    """``preferred`` when it is free on 127.0.0.1, else a free port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


@contextlib.contextmanager
def port_forward(kube: Kube, namespace: str, target: str, ports: str) -> Iterator[subprocess.Popen[str]]:
    """`kubectl -n <namespace> port-forward <target> <ports>` running until the block ends."""
    process = subprocess.Popen(
        [str(kube.bin / "kubectl"), "-n", namespace, "port-forward", target, ports],
        env=kube.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def proc_status(probe: Probe, pid: int = 1) -> dict[str, str]:
    """/proc/<pid>/status as seen from ``probe``: Uid, CapEff, NoNewPrivs, Seccomp..."""
    text = probe.run("cat", f"/proc/{pid}/status").stdout
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in fields}


def effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A security setting of a container as Kubernetes applies it: the container's, else the pod's."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod["spec"].get("securityContext", {}).get(key)


def wait_for_new_pod(kube: Kube, namespace: str, pod: str, old_uid: str, timeout: float = 180) -> None:
    """Until ``pod`` exists again under another uid and is Ready."""

    def replaced() -> bool:
        found = kube.kubectl("get", "pod", pod, "-n", namespace, "-o", "json", check=False)
        if found.returncode != 0:
            return False
        new = json.loads(found.stdout)
        return new["metadata"]["uid"] != old_uid and any(
            c["type"] == "Ready" and c["status"] == "True" for c in new["status"].get("conditions", [])
        )

    wait_until(replaced, timeout=timeout, every=1, what=f"pod {namespace}/{pod} to be back and Ready")
