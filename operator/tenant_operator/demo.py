"""`make demo`: the guide's main job on the local cluster, from a fresh clone, in under a minute.

Installs the operator chart (CRD, RBAC, admission guard) into `system`, starts the operator with the chart's
ServiceAccount credentials, applies the guide's example Tenant, shows its progress until it is Running, prints
`kubectl get tenants` and what the tenant got, and leaves it all running for the README's workflows.
`--clean` deletes the Tenant (the operator removes its release and namespace), stops the operator and
uninstalls the chart.

The chart's Deployment is installed with 0 replicas: the operator image cannot run on the local cluster's
KWOK nodes, which run no containers. The operator runs as a local process instead, attached to the cluster
(`make cluster-down` stops it), under the same ServiceAccount, so the chart's least-privilege RBAC is what it
really has.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from local_cluster.cluster import LocalCluster
from tenant_operator.settings import REPO_ROOT

SAMPLE = REPO_ROOT / "tests" / "fixtures" / "sample-tenant.yaml"
OPERATOR_CHART = REPO_ROOT / "charts" / "tenant-operator"
RELEASE, SYSTEM = "tenant-operator", "system"
SERVICE_ACCOUNT = RELEASE  # the chart's full name for release `tenant-operator`
NAME, NAMESPACE = "sample-tenant", "tenant-sample-tenant"
OPERATOR = "tenant-operator"  # the operator's process name in the cluster's run/ and logs/


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(tool: str, *args: str, show: bool = True, check: bool = True, stdin: str | None = None) -> str:
    if show:
        print(f"$ {tool} {' '.join(args)}", flush=True)
    result = subprocess.run([tool, *args], input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"{tool} {' '.join(args)} failed:\n{result.stderr}")
    if show:
        print(result.stdout, end="", flush=True)
    return result.stdout


def kubectl(*args: str, show: bool = True, check: bool = True) -> str:
    return run("kubectl", *args, show=show, check=check)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def install_chart() -> None:
    step(f"Install the operator chart into namespace {SYSTEM}: CRD, ServiceAccount, RBAC, admission guard")
    # Helm installs crds/ on first install only, and refuses a CRD another manager applied (the guide's
    # `kubectl apply -f operator/config/crd/bases`): apply it here, the same way every time.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(OPERATOR_CHART / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")
    run(
        "helm", "upgrade", "--install", RELEASE, str(OPERATOR_CHART), "-n", SYSTEM, "--create-namespace",
        "--skip-crds", "--set", "replicas=0", "--wait",
    )  # fmt: skip


def service_account_kubeconfig(path: Path) -> None:
    """A kubeconfig for the current cluster that authenticates as the chart's ServiceAccount."""
    current = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json", show=False))
    token = kubectl("create", "token", SERVICE_ACCOUNT, "-n", SYSTEM, "--duration=24h", show=False).strip()
    user = f"system:serviceaccount:{SYSTEM}:{SERVICE_ACCOUNT}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": current["clusters"],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": current["clusters"][0]["name"], "user": user}}
        ],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)


def start_operator(cluster: LocalCluster) -> Path:
    cluster.stop(OPERATOR)
    kubeconfig = cluster.state_dir / "tenant-operator.kubeconfig"
    service_account_kubeconfig(kubeconfig)
    log = cluster.logs / f"{OPERATOR}.log"
    step(f"Start the operator (python -m tenant_operator) as ServiceAccount {SYSTEM}/{SERVICE_ACCOUNT}")
    print(f"logs: {log}")
    environment = os.environ | {
        "KUBECONFIG": str(kubeconfig),
        "TENANT_OPERATOR_LOG_FORMAT": "text",
        "TENANT_OPERATOR_SECRET_RECHECK_SECONDS": "2",
    }
    cluster.start(OPERATOR, [sys.executable, "-m", "tenant_operator"], env=environment)
    return log


def progress() -> str:
    """One line that says where the tenant is."""
    output = kubectl("get", "tenant", NAME, "-o", "json", show=False, check=False)
    if not output:
        return "waiting for the operator"
    status = json.loads(output).get("status", {})
    server, redis = status.get("serverStatus", {}), status.get("redisStatus", {})
    ready = {c["type"]: c for c in status.get("conditions", [])}.get("Ready", {})
    return (
        f"phase={status.get('phase', '-')} "
        f"server={server.get('readyReplicas', 0)}/{server.get('totalReplicas', 0)} "
        f"redis={redis.get('readyReplicas', 0)}/{redis.get('totalReplicas', 0)} "
        f"ready={ready.get('status', '-')} {ready.get('message', '')}".rstrip()
    )


def follow_until_running(operator_log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while not last.startswith("phase=Running"):
        line = progress()
        if line != last:
            print(f"  {time.strftime('%H:%M:%S')} {line}", flush=True)
            last = line
        if time.monotonic() > deadline:
            tail = operator_log.read_text().splitlines()[-20:]
            raise SystemExit(
                f"the tenant is not Running after {timeout:.0f}s; operator log:\n" + "\n".join(tail)
            )
        time.sleep(0.5)


def demo(cluster: LocalCluster) -> None:
    started = time.monotonic()
    install_chart()
    operator_log = start_operator(cluster)

    step("Create the guide's example Tenant")
    kubectl("apply", "-f", str(SAMPLE))
    wait_for(f"namespace {NAMESPACE}", lambda: bool(kubectl("get", "ns", NAMESPACE, show=False, check=False)))
    step("Its API_KEY comes from Secret tenant-secrets, which users create in the tenant's namespace")
    if not kubectl("get", "secret", "tenant-secrets", "-n", NAMESPACE, show=False, check=False):
        kubectl(
            "create", "secret", "generic", "tenant-secrets", "-n", NAMESPACE, "--from-literal=api-key=demo"
        )

    step("Progress, as the operator reports it in the Tenant's status")
    follow_until_running(operator_log)

    step("The tenant")
    kubectl("get", "tenants")
    kubectl("get", "tenants", "-o", "wide")
    step(f"What it got in {NAMESPACE}")
    kubectl(
        "get", "deployments,statefulsets,pods,services,persistentvolumeclaims,networkpolicies,resourcequotas",
        "-n", NAMESPACE,
    )  # fmt: skip
    step(f"Done in {time.monotonic() - started:.0f}s. The tenant and the operator keep running:")
    print(
        f"  export KUBECONFIG={cluster.kubeconfig} PATH={cluster.bin}:$PATH\n"
        f"  kubectl describe tenant {NAME}           # conditions and events\n"
        f"  tail -f {operator_log}\n"
        "  (the README walks through updating, troubleshooting and deleting it)\n"
        "Clean up:\n"
        "  make demo-clean     # delete the Tenant (the operator removes its namespace), stop the operator,\n"
        "                      # uninstall the chart\n"
        "  make cluster-down   # stop the local cluster (make cluster-destroy also deletes its state)"
    )


def clean(cluster: LocalCluster) -> None:
    if kubectl("get", "tenant", NAME, "--ignore-not-found", show=False, check=False).strip():
        if cluster.pid(OPERATOR) is None:  # the finalizer needs the operator
            start_operator(cluster)
        step("Delete the Tenant: the operator uninstalls its release and deletes its namespace")
        kubectl("delete", "tenant", NAME, "--timeout=180s")
    step("Stop the operator and uninstall its chart (Helm keeps the CRD)")
    cluster.stop(OPERATOR)
    run("helm", "uninstall", RELEASE, "-n", SYSTEM, "--ignore-not-found", "--wait")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tenant_operator.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clean", action="store_true", help="remove what the demo made")
    parser.add_argument(
        "--state", type=Path, default=REPO_ROOT / ".cluster", help="the local cluster's state directory"
    )
    options = parser.parse_args(argv)
    cluster = LocalCluster(options.state)
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    os.environ["PATH"] = f"{cluster.bin}{os.pathsep}{os.environ['PATH']}"
    if options.clean:
        clean(cluster)
    else:
        demo(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
