"""The cluster every test tier shares.

``KUBECONFIG`` is used when it points at a reachable cluster (kind in a user's CI); otherwise the local
cluster of ``cluster/`` boots once per test session and stops at the end, unless it was already running
before.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from local_cluster.build import ensure_binaries
from local_cluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".cluster"


def run_tool(
    argv: list[str], env: dict[str, str], input: str | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Runs a command line tool; with ``check``, a failure fails the test with the tool's output."""
    result = subprocess.run(
        argv, input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass
class Kube:
    """A reachable cluster and the tools that talk to it."""

    kubeconfig: Path
    bin: Path
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return run_tool([str(self.bin / tool), *args], self.env, input=input, check=check, timeout=timeout)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, input=input, check=check, timeout=timeout)


def _reachable(kubeconfig: str) -> bool:
    try:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "version", "--request-timeout=5s"],
            capture_output=True,
            timeout=15,
            env={**os.environ, "PATH": f"{STATE / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    external = os.environ.get("KUBECONFIG")
    if external and Path(external).resolve() != (STATE / "kubeconfig").resolve():
        ensure_binaries(STATE / "bin", clients_only=True)
        if _reachable(external):
            yield Kube(Path(external), STATE / "bin")
            return
    cluster = LocalCluster(STATE)
    already_up = cluster.is_up()
    cluster.up()
    yield Kube(cluster.kubeconfig, cluster.bin)
    if not already_up:
        cluster.down()
