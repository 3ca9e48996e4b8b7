"""The operator as a user runs it (`python -m tenant_operator`), a subprocess against the test cluster,
and the helpers that the end-to-end tests share."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.conftest import Kube

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
SAMPLE_TENANT = REPO / "tests" / "fixtures" / "sample-tenant.yaml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], T | None], *, timeout: float = 90, every: float = 0.5, what: str = ""
) -> T:
    """The first truthy result of `check`; AssertionError (with the last result) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or check}: last saw {result!r}"
            )
        time.sleep(every)
        result = check()
    return result


@dataclass(frozen=True)
class ServiceAccount:
    """The operator chart's ServiceAccount: its kubeconfig (a token of it) and the settings naming it."""

    kubeconfig: Path
    settings: dict[str, str]

    @classmethod
    def of_release(cls, kube: Kube, release: str, namespace: str, workdir: Path) -> "ServiceAccount":
        """The account of an installed operator chart (release names containing tenant-operator are the
        chart's full name), with a token valid for the longest test run."""
        token = kube.kubectl("create", "token", release, "--namespace", namespace, "--duration=6h").stdout
        admin = yaml.safe_load(kube.kubeconfig.read_text())
        cluster = admin["clusters"][0]
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": release, "user": {"token": token.strip()}}],
            "contexts": [{"name": release, "context": {"cluster": cluster["name"], "user": release}}],
            "current-context": release,
        }
        path = workdir / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        settings = {
            "TENANT_OPERATOR_TENANT_ROLE": f"{release}-tenant",
            "TENANT_OPERATOR_SERVICE_ACCOUNT": f"{namespace}/{release}",
            "TENANT_OPERATOR_LEADER_ELECTION_NAMESPACE": namespace,
            "TENANT_OPERATOR_LEASE_NAME": release,
        }
        return cls(path, settings)


class Operator:
    """One `python -m tenant_operator` process at a time, with its own Helm home, ports and log file, acting
    as the given ServiceAccount."""

    def __init__(self, kube: Kube, workdir: Path, account: ServiceAccount) -> None:
        self.kube = kube
        self.workdir = workdir
        self.account = account
        self.extra_settings: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "operator.log"
        self.log_level = "debug"  # the tests read kopf's debug lines; a benchmark runs at info
        self.metrics_port = 0

    def start(self) -> None:
        assert self.process is None, "the operator is already running"
        health_port, self.metrics_port = free_port(), free_port()
        env = (
            self.kube.env
            | self.account.settings
            | self.extra_settings
            | {
                "KUBECONFIG": str(self.account.kubeconfig),
                "TENANT_OPERATOR_HELM": str(self.kube.bin / "helm"),
                "TENANT_OPERATOR_HELM_WORKER": str(self.kube.bin / "helm-worker"),
                "TENANT_OPERATOR_HELM_HOME": str(self.workdir / "helm"),
                "TENANT_OPERATOR_HEALTH_PORT": str(health_port),
                "TENANT_OPERATOR_METRICS_PORT": str(self.metrics_port),
                "TENANT_OPERATOR_LOG_FORMAT": "text",
                "TENANT_OPERATOR_SECRET_RECHECK_SECONDS": "2",
            }
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tenant_operator", f"--zap-log-level={self.log_level}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        wait_until(lambda: self._healthy(health_port), timeout=60, what="the operator's /healthz")

    def _healthy(self, port: int) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost node would stop it: nothing is cleaned up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of a metric whose labels include `labels`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            series, value = line.rsplit(" ", 1)
            if series.split("{")[0] == name and all(
                f'{key}="{value}"' in series for key, value in labels.items()
            ):
                total += float(value)
        return total

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def unique(prefix: str) -> str:
    """A name no other test or run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def helm_revision(kube: Kube, name: str) -> int:
    """The revision of tenant `name`'s release; 0 when there is none."""
    result = kube.helm("list", "-n", f"tenant-{name}", "--filter", f"^{name}$", "-o", "json")
    releases: list[dict[str, Any]] = json.loads(result.stdout)
    return int(releases[0]["revision"]) if releases else 0


def sample_tenant(name: str | None = None) -> dict[str, Any]:
    """The guide's example Tenant (tests/fixtures/sample-tenant.yaml), renamed when a name is given."""
    tenant: dict[str, Any] = yaml.safe_load(SAMPLE_TENANT.read_text())
    if name:
        tenant["metadata"]["name"] = name
    return tenant


# Small enough that ten tenants' pods fit on the real node's two cores beside the rest.
SMALL_WORKLOAD = {"cpu": {"request": "20m", "limit": "200m"}, "memory": {"request": "32Mi", "limit": "128Mi"}}


def small_tenant(name: str, **spec: Any) -> dict[str, Any]:
    """A Tenant of one server and one Redis with small requests (the default budget), `spec` over them."""
    return {
        "apiVersion": "neurallog.io/v1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "displayName": name,
            "server": {"resources": SMALL_WORKLOAD},
            "redis": {"resources": SMALL_WORKLOAD, "config": {"maxmemory": "64mb"}},
            **spec,
        },
    }


class Tenants:
    """Creates, reads and deletes Tenants; deletes every Tenant it made when the test ends."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.made: list[str] = []

    def apply(self, *tenants: dict[str, Any]) -> None:
        for tenant in tenants:
            if tenant["metadata"]["name"] not in self.made:
                self.made.append(tenant["metadata"]["name"])
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(tenants))

    def get(self, name: str) -> dict[str, Any] | None:
        result = self.kube.kubectl("get", "tenant", name, "-o", "json", check=False)
        if result.returncode != 0:
            assert "NotFound" in result.stderr, result.stderr
            return None
        tenant: dict[str, Any] = json.loads(result.stdout)
        return tenant

    def status(self, name: str) -> dict[str, Any]:
        tenant = self.get(name)
        status: dict[str, Any] = (tenant or {}).get("status", {})
        return status

    def wait_for_phase(self, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") == phase else None

        return wait_until(
            reached, timeout=timeout, what=f"tenant {name} to be {phase} (status: {self.status(name)})"
        )

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next(c for c in self.status(name).get("conditions", []) if c["type"] == kind)

    def delete(self, *names: str, wait: bool = True, timeout: float = 180) -> None:
        if names:
            self.kube.kubectl("delete", "tenant", *names, "--ignore-not-found", "--wait=false")
        if wait:
            for name in names:
                wait_until(
                    lambda name=name: self.get(name) is None, timeout=timeout, what=f"tenant {name} to go"
                )

    def namespace_exists(self, namespace: str) -> bool:
        result = self.kube.kubectl("get", "namespace", namespace, "-o", "name", check=False)
        return result.returncode == 0

    def events(self, name: str) -> list[dict[str, Any]]:
        result = self.kube.kubectl(
            "get",
            "events",
            "-A",
            "--field-selector",
            f"involvedObject.kind=Tenant,involvedObject.name={name}",
            "-o",
            "json",
        )
        items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
        return items

    def cleanup(self) -> None:
        self.delete(*self.made)


def create_api_key_secret(kube: Kube, tenants: Tenants, namespace: str) -> None:
    """The Secret that the guide's example reads API_KEY from; users create it in the tenant's namespace."""
    wait_until(lambda: tenants.namespace_exists(namespace), what=f"namespace {namespace}")
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "tenant-secrets",
        "-n",
        namespace,
        "--from-literal=api-key=not-a-real-key",
    )
