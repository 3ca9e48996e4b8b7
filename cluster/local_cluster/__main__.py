"""``python -m local_cluster up|down|status|destroy|build``: the local cluster from the command line;
``python -m local_cluster flux up|down|status``: Flux on it (local_cluster.flux)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from local_cluster.build import ensure_binaries
from local_cluster.cluster import LocalCluster
from local_cluster.flux import Flux

DEFAULT_STATE = Path(__file__).resolve().parents[2] / ".cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local-cluster", description="A Kubernetes control plane as local processes."
    )
    parser.add_argument("command", choices=["up", "down", "status", "destroy", "build", "flux"])
    parser.add_argument(
        "action",
        nargs="?",
        choices=["up", "down", "status"],
        help="flux: start Flux on the running cluster, stop it, or show its processes (default: status)",
    )
    parser.add_argument(
        "--state", type=Path, default=DEFAULT_STATE, help="state directory (default: %(default)s)"
    )
    parser.add_argument(
        "--clients-only",
        action="store_true",
        help="build: only the clients (kubectl, helm, helm-worker, helm3, ct, netpolicy, helm-docs, "
        "kstatus), for another cluster",
    )
    args = parser.parse_args(argv)
    if args.action and args.command != "flux":
        parser.error(f"{args.command} takes no action argument")
    if args.command == "flux":
        return _flux(args.state, args.action or "status")
    cluster = LocalCluster(args.state)
    if args.command == "up":
        cluster.up()
    elif args.command == "down":
        cluster.down()
    elif args.command == "destroy":
        cluster.destroy()
    elif args.command == "build":
        ensure_binaries(cluster.bin, clients_only=args.clients_only)
    else:
        running = cluster.running()
        for component, pid in running.items():
            print(f"{component:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
        healthy = cluster.api_healthy()
        print(f"{'kube-apiserver /readyz':24} {'ok' if healthy else 'not ready'}")
        print(f"KUBECONFIG={cluster.kubeconfig}")
        return 0 if healthy and all(running.values()) else 1
    return 0


def _flux(state: Path, action: str) -> int:
    flux = Flux(state)
    if action == "up":
        info = flux.ensure()
        print(f"HelmRepository {info.namespace}/{info.repository}: {info.repository_url}")
        for process, url in info.health_urls.items():
            print(f"{process:24} {url}  log {info.logs[process]}")
        return 0
    if action == "down":
        flux.stop()
        return 0
    status = flux.status()
    for process, (pid, healthy) in status.items():
        state_text = f"running, pid {pid}, {'ready' if healthy else 'not ready'}" if pid else "stopped"
        print(f"{process:24} {state_text}")
    return 0 if all(healthy for _pid, healthy in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
