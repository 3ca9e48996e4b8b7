"""Flux on the local cluster, on demand: its real source-controller and helm-controller as local processes,
and a Helm repository over HTTP that serves our charts to them.

``ensure_flux()`` starts what is not running yet (and reuses what runs and answers), applies Flux's CRDs and
the HelmRepository ``flux-system/neurallog`` that points at the chart server; ``publish_chart()`` packages a
chart with an exact version into that repository and waits until Flux has fetched the new index
(``unpublish_chart()`` takes one out again); ``stop_flux()`` stops the processes. The processes are attached
to the cluster (pid files in its run directory, logs beside its other logs), so ``python -m local_cluster
down`` stops them too and ``destroy`` deletes their state (``<state>/flux``).

The controllers talk to the API server with the cluster's admin kubeconfig (no RBAC to set up), watch every
namespace, and listen on 127.0.0.1 only: their health and metrics endpoints, source-controller's artifact
storage (which helm-controller downloads charts from) and the chart server each get a free port, chosen once
and kept while free.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from local_cluster.build import ensure_binaries, tool_files
from local_cluster.cluster import LocalCluster

NAMESPACE = "flux-system"
REPOSITORY = "neurallog"  # the HelmRepository serving our charts
FIELD_MANAGER = "local-cluster-flux"
SOURCE_CONTROLLER = "flux-source-controller"
HELM_CONTROLLER = "flux-helm-controller"
CHART_SERVER = "flux-chart-server"
PROCESSES = (CHART_SERVER, SOURCE_CONTROLLER, HELM_CONTROLLER)
BINARIES = {SOURCE_CONTROLLER: "source-controller", HELM_CONTROLLER: "helm-controller"}
START_TIMEOUT = 60.0
FETCH_TIMEOUT = 60.0


def default_state() -> Path:
    """The checkout's local cluster: ``.cluster`` beside ``cluster/``."""
    return Path(__file__).resolve().parents[2] / ".cluster"


@dataclass(frozen=True)
class FluxPorts:
    storage: int
    source_health: int
    source_metrics: int
    helm_health: int
    helm_metrics: int
    charts: int

    @classmethod
    def load_or_choose(cls, path: Path) -> FluxPorts:
        """The ports of the last start while none is taken by another process, else a fresh free set."""
        with contextlib.suppress(FileNotFoundError, TypeError, ValueError):
            ports = cls(**json.loads(path.read_text()))
            if all(_port_free(port) for port in asdict(ports).values()):
                return ports
        sockets = [socket.socket() for _ in range(6)]
        try:
            for sock in sockets:  # all bound at once, so that the six differ
                sock.bind(("127.0.0.1", 0))
            ports = cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()
        path.write_text(json.dumps(asdict(ports)))
        return ports

    @classmethod
    def load(cls, path: Path) -> FluxPorts | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class FluxInfo:
    """Where the running Flux is and how to reach it."""

    repository_url: str  # the chart server, as the HelmRepository names it
    namespace: str  # of the HelmRepository (flux-system)
    repository: str  # the HelmRepository's name (neurallog)
    storage_url: str  # source-controller's artifact storage
    health_urls: dict[str, str]  # process -> its readiness URL
    logs: dict[str, Path]  # process -> its log file
    kubeconfig: Path


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Flux:
    """Flux of the local cluster whose state lives in ``state_dir``."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.cluster = LocalCluster(state_dir or default_state())
        self.dir = self.cluster.state_dir / "flux"
        self.charts = self.dir / "charts"  # the Helm repository the chart server serves
        self.artifacts = self.dir / "artifacts"  # source-controller's storage
        self.ports_file = self.dir / "ports.json"

    # -- what and where ----------------------------------------------------------------------------------

    def _urls(self, ports: FluxPorts) -> dict[str, str]:
        """Each process's readiness URL: the controllers' /readyz, the chart server's root."""
        return {
            CHART_SERVER: f"http://127.0.0.1:{ports.charts}/",
            SOURCE_CONTROLLER: f"http://127.0.0.1:{ports.source_health}/readyz",
            HELM_CONTROLLER: f"http://127.0.0.1:{ports.helm_health}/readyz",
        }

    def info(self, ports: FluxPorts) -> FluxInfo:
        return FluxInfo(
            repository_url=f"http://127.0.0.1:{ports.charts}",
            namespace=NAMESPACE,
            repository=REPOSITORY,
            storage_url=f"http://127.0.0.1:{ports.storage}/",
            health_urls=self._urls(ports),
            logs={process: self.cluster.logs / f"{process}.log" for process in PROCESSES},
            kubeconfig=self.cluster.kubeconfig,
        )

    def _alive(self, process: str) -> bool:
        """The process of the pid file runs. Asked three times: a live process has been seen as gone once (see
        ``LocalCluster.wait``)."""
        for attempt in range(3):
            if self.cluster.pid(process) is not None:
                return True
            if not (self.cluster.run_dir / f"{process}.pid").exists():
                return False
            time.sleep(0.05 * (attempt + 1))
        return False

    def healthy(self, process: str, ports: FluxPorts) -> bool:
        """Runs and answers (source-controller also on its storage address)."""
        if not self._alive(process) or not _answers(self._urls(ports)[process]):
            return False
        return process != SOURCE_CONTROLLER or _answers(f"http://127.0.0.1:{ports.storage}/")

    def status(self) -> dict[str, tuple[int | None, bool]]:
        """Process -> (pid or None, healthy)."""
        ports = FluxPorts.load(self.ports_file)
        return {
            process: (self.cluster.pid(process), ports is not None and self.healthy(process, ports))
            for process in PROCESSES
        }

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One caller at a time starts, stops or publishes (two test runs may share the cluster)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def ensure(self) -> FluxInfo:
        """Flux running against the (running) local cluster, with its CRDs and our HelmRepository. Idempotent:
        processes that run and answer are kept."""
        with self._locked():
            return self._ensure()

    def _ensure(self) -> FluxInfo:
        if not self.cluster.api_healthy():
            raise RuntimeError(
                f"the local cluster in {self.cluster.state_dir} is not up; start it first (make cluster-up)"
            )
        started = time.monotonic()
        if not all((self.cluster.bin / binary).exists() for binary in BINARIES.values()) or not all(
            tool_files(self.cluster.bin, tool, "crds").is_dir() for tool in BINARIES
        ):
            ensure_binaries(self.cluster.bin)
        for directory in (self.charts, self.artifacts, self.dir / "home", self.cluster.logs):
            directory.mkdir(parents=True, exist_ok=True)
        self._apply_crds()  # before the controllers start: they exit when their kinds are unknown
        ports = FluxPorts.load(self.ports_file)
        reused = ports is not None and all(self.healthy(process, ports) for process in PROCESSES)
        if ports is None or not reused:
            # Anything missing or not answering: start the three afresh, on ports that are free now.
            for process in reversed(PROCESSES):
                self.cluster.stop(process)
            ports = FluxPorts.load_or_choose(self.ports_file)
            self._apply_repository(ports)  # first: a HelmRepository left by an earlier start names old ports
            self._start(ports)
        else:
            self._apply_repository(ports)
        if not reused:
            print(f"flux up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        return self.info(ports)

    def _start(self, ports: FluxPorts) -> None:
        # The index names the server's URL: written again for this port (an empty index before any publish).
        self._helm("repo", "index", str(self.charts), "--url", f"http://127.0.0.1:{ports.charts}")
        self.cluster.start(
            CHART_SERVER,
            [
                sys.executable, "-m", "http.server",
                "--bind", "127.0.0.1", "--directory", str(self.charts), str(ports.charts),
            ],
        )  # fmt: skip
        # Answering before the controllers start, so that their first fetch of the index succeeds.
        self._wait(
            lambda: self.healthy(CHART_SERVER, ports),
            "the chart server to answer",
            START_TIMEOUT,
            (CHART_SERVER,),
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir / "home"),
            "KUBECONFIG": str(self.cluster.kubeconfig),  # the only way to name it: there is no --kubeconfig
            "TUF_ROOT": str(self.dir / "home" / "tuf"),
        }
        common = ["--enable-leader-election=false", "--concurrent=4", "--log-encoding=console"]
        storage = f"127.0.0.1:{ports.storage}"
        self.cluster.start(
            SOURCE_CONTROLLER,
            [
                str(self.cluster.bin / BINARIES[SOURCE_CONTROLLER]),
                f"--storage-path={self.artifacts}",
                f"--storage-addr={storage}",
                f"--storage-adv-addr={storage}",
                f"--health-addr=127.0.0.1:{ports.source_health}",
                f"--metrics-addr=127.0.0.1:{ports.source_metrics}",
                *common,
            ],
            env=env,
        )
        self.cluster.start(
            HELM_CONTROLLER,
            [
                str(self.cluster.bin / BINARIES[HELM_CONTROLLER]),
                f"--health-addr=127.0.0.1:{ports.helm_health}",
                f"--metrics-addr=127.0.0.1:{ports.helm_metrics}",
                *common,
            ],
            env=env,
        )
        self._wait(
            lambda: all(self.healthy(process, ports) for process in PROCESSES),
            "Flux's controllers and the chart server to answer",
            START_TIMEOUT,
        )

    def _wait(
        self, condition: Callable[[], bool], what: str, timeout: float, processes: tuple[str, ...] = PROCESSES
    ) -> None:
        """Waits for ``condition``; fails early when one of ``processes`` exits meanwhile."""
        deadline = time.monotonic() + timeout
        suspects: dict[str, int] = {}
        while not condition():
            for process in processes:
                suspects[process] = 0 if self._alive(process) else suspects.get(process, 0) + 1
            gone = [process for process, count in suspects.items() if count >= 4]  # four checks in a row
            if gone:
                logs = ", ".join(str(self.cluster.logs / f"{process}.log") for process in gone)
                raise RuntimeError(f"{', '.join(gone)} exited while waiting for {what}; see {logs}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.cluster.logs}"
                )
            time.sleep(0.2)

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = self.cluster.kubectl(*args, stdin=stdin)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _apply_crds(self) -> None:
        """Flux's seven CRDs, applied server-side and waited for until Established."""
        # Each file named: kubectl does not descend into a linked directory.
        files = [
            f"--filename={path}"
            for tool in BINARIES
            for path in sorted(tool_files(self.cluster.bin, tool, "crds").glob("*.yaml"))
        ]
        if len(files) != 7:
            raise RuntimeError(
                f"expected Flux's 7 CRD files under {self.cluster.bin / 'crds'}, found {len(files)}"
            )
        applied = self._kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "-o",
            "name",
            *files,
        ).split()
        self._kubectl("wait", "--for=condition=Established", "--timeout=60s", *applied)

    def _apply_repository(self, ports: FluxPorts) -> None:
        objects = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "HelmRepository",
                "metadata": {"name": REPOSITORY, "namespace": NAMESPACE},
                "spec": {"interval": "1m", "url": f"http://127.0.0.1:{ports.charts}"},
            },
        ]
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        self._kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "-f",
            "-",
            stdin=manifest,
        )

    def stop(self) -> None:
        """Stops the controllers and the chart server; their state (artifacts, charts) and objects stay."""
        with self._locked():
            for process in reversed(PROCESSES):
                self.cluster.stop(process)

    # -- charts ------------------------------------------------------------------------------------------

    def _helm(self, *args: str) -> str:
        """The cluster's helm, with its cache, config and data under the flux state, not the user's home."""
        home = self.dir / "helm"
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        result = subprocess.run(
            [str(self.cluster.bin / "helm"), *args], capture_output=True, text=True, env=env, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _repository(self) -> dict[str, object]:
        out = self._kubectl(
            "get", "helmrepositories.source.toolkit.fluxcd.io", REPOSITORY, "-n", NAMESPACE, "-o", "json"
        )
        repository: dict[str, object] = json.loads(out)
        return repository

    def publish(self, chart_dir: Path, version: str) -> str:
        """Packages ``chart_dir`` as exactly ``version`` into the repository, indexes it again and waits until
        the HelmRepository has fetched that index (a reconcile requested now was handled, Ready, a new
        artifact). Returns the HelmRepository's new artifact revision."""
        with self._locked():
            info = self._ensure()
            self._helm("package", str(chart_dir), "--version", version, "--destination", str(self.charts))
            return self._reindex(info, f"the index with {version}")

    def unpublish(self, chart: str, version: str) -> str:
        """Takes ``chart`` at ``version`` out of the repository again (a test's leftover), and waits as
        ``publish`` does. Returns the HelmRepository's new artifact revision."""
        with self._locked():
            info = self._ensure()
            package = self.charts / f"{chart}-{version}.tgz"
            if not package.is_file():
                raise FileNotFoundError(f"{package} was never published")
            package.unlink()
            return self._reindex(info, f"the index without {chart} {version}")

    def _reindex(self, info: FluxInfo, what: str) -> str:
        """Indexes the repository again and has the HelmRepository fetch the new index."""
        before = _artifact_revision(self._repository())
        self._helm("repo", "index", str(self.charts), "--url", info.repository_url)
        token = f"{time.time_ns()}"
        self._kubectl(
            "annotate",
            "--overwrite",
            f"--namespace={NAMESPACE}",
            f"helmrepositories.source.toolkit.fluxcd.io/{REPOSITORY}",
            f"reconcile.fluxcd.io/requestedAt={token}",
        )
        fetched: list[dict[str, object]] = []

        def handled() -> bool:
            repository = self._repository()
            fetched[:] = [repository]
            status = repository.get("status")
            return (
                isinstance(status, dict)
                and status.get("lastHandledReconcileAt") == token
                and _condition(repository, "Ready") == "True"
                and _artifact_revision(repository) not in (None, before)
            )

        self._wait(handled, f"HelmRepository {NAMESPACE}/{REPOSITORY} to fetch {what}", FETCH_TIMEOUT)
        revision = _artifact_revision(fetched[0])
        assert revision is not None
        return revision


def _condition(obj: dict[str, object], kind: str) -> str | None:
    status = obj.get("status")
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def _artifact_revision(obj: dict[str, object]) -> str | None:
    status = obj.get("status")
    artifact = status.get("artifact") if isinstance(status, dict) else None
    revision = artifact.get("revision") if isinstance(artifact, dict) else None
    return str(revision) if revision else None


def ensure_flux(state_dir: Path | None = None) -> FluxInfo:
    """Flux running on the local cluster (see ``Flux.ensure``)."""
    return Flux(state_dir).ensure()


def publish_chart(chart_dir: Path, version: str, state_dir: Path | None = None) -> str:
    """Serves ``chart_dir`` as ``version`` to Flux (see ``Flux.publish``); returns the index's revision."""
    return Flux(state_dir).publish(chart_dir, version)


def unpublish_chart(chart: str, version: str, state_dir: Path | None = None) -> str:
    """Takes ``chart`` at ``version`` out of the served repository (see ``Flux.unpublish``)."""
    return Flux(state_dir).unpublish(chart, version)


def stop_flux(state_dir: Path | None = None) -> None:
    """Stops Flux's processes (``python -m local_cluster down`` does too)."""
    Flux(state_dir).stop()
