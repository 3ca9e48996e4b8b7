"""``python -m local_cluster up|down|status|destroy|build``: the local cluster from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from local_cluster.build import ensure_binaries
from local_cluster.cluster import LocalCluster

DEFAULT_STATE = Path(__file__).resolve().parents[2] / ".cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local-cluster", description="A Kubernetes control plane as local processes."
    )
    parser.add_argument("command", choices=["up", "down", "status", "destroy", "build"])
    parser.add_argument(
        "--state", type=Path, default=DEFAULT_STATE, help="state directory (default: %(default)s)"
    )
    parser.add_argument(
        "--clients-only",
        action="store_true",
        help="build: only the clients (kubectl, helm, helm3, ct, netpolicy, helm-docs, kstatus), for another "
        "cluster",
    )
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
