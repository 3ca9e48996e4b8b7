"""Hosts the tests make themselves: network namespaces on this machine, reachable from the real node's pods.

A lab host stands for "a host outside the cluster": it has an address outside the cluster's pod and Service
ranges and serves HTTP from inside its own network namespace. No test sends traffic anywhere else.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from local_cluster.node import LAB_CIDR

LAB_PREFIX = LAB_CIDR.rsplit(".", 1)[0]  # 10.250.251


@dataclass(frozen=True)
class LabHost:
    address: str
    port: int


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def lab_host(network: str = LAB_PREFIX, host: int = 2, port: int = 8080) -> Iterator[LabHost]:
    """A network namespace at ``<network>.<host>`` (gateway ``<network>.1`` on this machine) serving HTTP on
    ``port``; removed on exit. ``network`` outside ``LAB_CIDR`` makes a host the pods must not reach."""
    tag = uuid.uuid4().hex[:6]
    namespace, outer, inner = f"lab-{tag}", f"lab{tag}o", f"lab{tag}i"
    address = f"{network}.{host}"
    _ip("netns", "add", namespace)
    server = None
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", namespace)
        _ip("addr", "add", f"{network}.1/24", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", namespace, "link", "set", inner, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "route", "add", "default", "via", f"{network}.1")
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, "python3", "-m", "http.server", str(port), "--bind", address],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["ip", "netns", "exec", namespace, "python3", "-c",
                 f"import socket; socket.create_connection(('{address}', {port}), 1)"],
                capture_output=True, check=False,
            )  # fmt: skip
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        yield LabHost(address, port)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
