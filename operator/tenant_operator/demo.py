"""`make demo`: the guide's walkthrough on the cluster of KUBECONFIG, end to end, in a couple of minutes.

Installs the CRD, starts the operator (`python -m tenant_operator`), applies the guide's example Tenant,
creates the Secret its API_KEY refers to, waits until it runs, shows what it got, scales it, deletes it.
`--keep` leaves the Tenant and the operator running (stop it with the printed command).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tenant_operator.settings import REPO_ROOT

SAMPLE = REPO_ROOT / "tests" / "fixtures" / "sample-tenant.yaml"
CRD = REPO_ROOT / "operator" / "config" / "crd" / "bases"
NAME, NAMESPACE = "sample-tenant", "tenant-sample-tenant"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def kubectl(*args: str, show: bool = True, check: bool = True) -> str:
    if show:
        print("$ kubectl " + " ".join(args), flush=True)
    result = subprocess.run(["kubectl", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    if show:
        print(result.stdout, end="", flush=True)
    return result.stdout


def wait_for(what: str, check: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1)


def phase() -> str:
    output = kubectl("get", "tenant", NAME, "-o", "jsonpath={.status.phase}", show=False, check=False)
    return output.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tenant_operator.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--keep", action="store_true", help="leave the Tenant and the operator running")
    parser.add_argument(
        "--log", type=Path, default=Path("tenant-operator-demo.log"), help="operator log file"
    )
    options = parser.parse_args(argv)

    step("Install the CRD (kubectl apply -f operator/config/crd/bases)")
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")

    step(f"Run the operator locally (python -m tenant_operator), logging to {options.log}")
    environment = os.environ | {
        "TENANT_OPERATOR_LOG_FORMAT": "text",
        "TENANT_OPERATOR_SECRET_RECHECK_SECONDS": "2",
    }
    with options.log.open("ab") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "tenant_operator"], env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        step("Create the guide's example Tenant")
        kubectl("apply", "-f", str(SAMPLE))
        wait_for(
            f"namespace {NAMESPACE}", lambda: bool(kubectl("get", "ns", NAMESPACE, show=False, check=False))
        )
        step("Its API_KEY comes from Secret tenant-secrets, which users create in the tenant's namespace")
        kubectl(
            "create", "secret", "generic", "tenant-secrets", "-n", NAMESPACE, "--from-literal=api-key=demo"
        )
        wait_for("the tenant to be Running", lambda: phase() == "Running")
        kubectl("get", "tenants")
        kubectl("get", "tenant", NAME, "-o", "jsonpath={.status}")
        print()
        kubectl("get", "deployments,statefulsets,services,networkpolicies,resourcequotas", "-n", NAMESPACE)

        step("Scale the server to 3 replicas")
        kubectl(
            "patch", "tenant", NAME, "--type=merge", "-p", json.dumps({"spec": {"server": {"replicas": 3}}})
        )

        def scaled() -> bool:
            ready = kubectl(
                "get", "tenant", NAME, "-o", "jsonpath={.status.serverStatus.readyReplicas}", show=False
            )
            return ready.strip() == "3" and phase() == "Running"

        wait_for("3 ready server replicas", scaled)
        kubectl("get", "tenants", "-o", "wide")
        kubectl("describe", "tenant", NAME)
        if options.keep:
            step(f"Left running: the Tenant, and the operator (stop it with: kill {operator.pid})")
            return 0
        step("Delete the Tenant: the operator uninstalls the release and deletes the namespace")
        kubectl("delete", "tenant", NAME, "--timeout=180s")
        kubectl("get", "namespace", NAMESPACE, check=False)
    finally:
        if not options.keep:
            operator.terminate()
            operator.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
