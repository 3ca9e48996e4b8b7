"""`make demo`: the guide's main job on the local cluster, with the operator running in its pod.

Installs the operator chart into `system` (CRD, RBAC, admission guard and the operator Deployment), waits
for the operator pod to be Ready on the cluster's real node, applies the guide's example Tenant, follows its
progress until it is Running, prints `kubectl get tenants`, its pods and how to reach them, and leaves it all
running for the README's workflows. `--clean` deletes the Tenant (the operator removes its release and
namespace), waits for its namespace to go and uninstalls the chart. `--backend flux` runs the operator's
flux backend: Flux's controllers start beside the cluster, charts/tenant is published to them, and each
Tenant's release is a Flux HelmRelease (run it on a cluster with the helm backend's demo to switch backends).

The operator image is not pulled: `make cluster-up` builds it from operator/Dockerfile and loads it into the
real node, and the chart is installed with `image.pullPolicy=Never`, so a missing image fails at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_cluster.cluster import LocalCluster
from local_cluster.flux import NAMESPACE as FLUX_NAMESPACE
from local_cluster.flux import REPOSITORY, ensure_flux, publish_chart
from tenant_operator.flux import chart_version  # the operator's own rule for the version it asks Flux for

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "fixtures" / "sample-tenant.yaml"
OPERATOR_CHART = REPO / "charts" / "tenant-operator"
TENANT_CHART = REPO / "charts" / "tenant"
RELEASE, SYSTEM = "tenant-operator", "system"
# The chart's default image (neurallog/tenant-operator:latest) by the full name the node lists it under.
OPERATOR_IMAGE = "docker.io/neurallog/tenant-operator:latest"
OPERATOR_PODS = "control-plane=controller-manager"  # the label the guide's troubleshooting selects on
NAME, NAMESPACE = "sample-tenant", "tenant-sample-tenant"
KWOK_NODE = "kwok.x-k8s.io/node"  # the annotation of the nodes KWOK fakes; every other node runs containers
IMAGE_ERRORS = ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName")

# A line that says where something is, and whether it got there.
Progress = tuple[str, bool]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(tool: str, *args: str, show: bool = True, check: bool = True) -> str:
    if show:
        print(f"$ {tool} {' '.join(args)}", flush=True)
    result = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"{tool} {' '.join(args)} failed:\n{result.stderr}")
    if show:
        print(result.stdout, end="", flush=True)
    return result.stdout


def kubectl(*args: str, show: bool = True, check: bool = True) -> str:
    return run("kubectl", *args, show=show, check=check)


def get(*args: str) -> dict[str, Any]:
    """`kubectl get ... -o json`, or {} when there is no such object."""
    output = kubectl("get", *args, "-o", "json", "--ignore-not-found", show=False)
    return json.loads(output) if output.strip() else {}


def follow(what: str, progress: Callable[[], Progress], timeout: float, explain: Callable[[], str]) -> None:
    """Prints each new progress line until it says done; after `timeout` seconds, fails with `explain()`."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        line, done = progress()
        if line != last:
            print(f"  {time.strftime('%H:%M:%S')} {line}", flush=True)
            last = line
        if done:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not done after {timeout:.0f}s.\n{explain()}")
        time.sleep(1)


def is_ready(conditions: list[dict[str, str]]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def holds_operator_image(node: dict[str, Any]) -> bool:
    return any(OPERATOR_IMAGE in (image.get("names") or []) for image in node["status"].get("images") or [])


def real_node() -> str:
    """The Ready node that runs containers and holds the operator image; a clear failure otherwise."""
    found, problem = "", ""

    def check() -> Progress:
        nonlocal found, problem
        nodes = get("nodes").get("items", [])
        real = [n for n in nodes if KWOK_NODE not in n["metadata"].get("annotations", {})]
        ready = [n for n in real if is_ready(n["status"].get("conditions", []))]
        if not ready:
            names = ", ".join(n["metadata"]["name"] for n in real) or "none"
            problem = f"the cluster has no Ready node that runs containers (nodes other than KWOK's: {names})"
            return problem, False
        found = next((n["metadata"]["name"] for n in ready if holds_operator_image(n)), "")
        if found:
            return f"node {found} is Ready and holds {OPERATOR_IMAGE}", True
        names = ", ".join(n["metadata"]["name"] for n in ready)
        problem = f"the operator image {OPERATOR_IMAGE} is missing from the real node ({names})"
        return problem, False

    step("The real node that runs the operator")
    # The kubelet lists a node's images in its status every few seconds: give a node that just started time.
    follow(
        "the real node",
        check,
        timeout=60,
        explain=lambda: (
            f"{problem}.\n`make cluster-up` starts the real node and loads the operator image, built from "
            "operator/Dockerfile, into it; `make cluster-status` shows what runs."
        ),
    )
    return found


def operator_logs() -> str:
    logs = kubectl("logs", "-n", SYSTEM, "-l", OPERATOR_PODS, "--tail=30", show=False, check=False)
    return f"operator log:\n{logs}"


def operator_progress() -> Progress:
    pods = [
        pod
        for pod in get("pods", "-n", SYSTEM, "-l", OPERATOR_PODS).get("items", [])
        if "deletionTimestamp" not in pod["metadata"]
    ]
    if not pods:
        return "waiting for the operator pod", False
    pod = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
    status = pod.get("status", {})
    waiting = [
        state["waiting"].get("reason", "")
        for state in (c.get("state", {}) for c in status.get("containerStatuses", []))
        if "waiting" in state
    ]
    if any(reason in IMAGE_ERRORS for reason in waiting):
        raise SystemExit(
            f"the operator pod cannot start: {', '.join(waiting)} for {OPERATOR_IMAGE}.\n"
            "`make cluster-up` loads the operator image into the real node; nothing is pulled from outside."
        )
    ready = is_ready(status.get("conditions", []))
    line = (
        f"pod {pod['metadata']['name']} node={pod['spec'].get('nodeName', '-')} "
        f"phase={status.get('phase', '-')} ready={ready} {' '.join(waiting)}"
    )
    return line.rstrip(), ready


def operator_pod_report() -> str:
    return (
        kubectl("describe", "pods", "-n", SYSTEM, "-l", OPERATOR_PODS, show=False, check=False)
        + "\n"
        + operator_logs()
    )


def start_flux() -> list[str]:
    """Flux's controllers running beside the cluster and charts/tenant published to them at the version the
    operator asks for; the operator chart's values that point the flux backend at them."""
    step("Start Flux's source-controller and helm-controller, publish charts/tenant to them")
    info = ensure_flux()
    version = chart_version(TENANT_CHART)
    publish_chart(TENANT_CHART, version)
    print(
        f"  chart tenant {version} served at {info.repository_url} "
        f"(HelmRepository {FLUX_NAMESPACE}/{REPOSITORY})"
    )
    return [
        "--set", "backend=flux",
        "--set", f"flux.source.name={REPOSITORY}",
        "--set", f"flux.source.namespace={FLUX_NAMESPACE}",
    ]  # fmt: skip


def install_operator(backend: str = "helm") -> None:
    node = real_node()
    values = start_flux() if backend == "flux" else []
    step(
        f"Install the operator chart into namespace {SYSTEM} ({backend} backend): CRD, RBAC, admission "
        "guard, the operator"
    )
    # Helm installs crds/ on first install only, and refuses a CRD another manager applied (the guide's
    # `kubectl apply -f operator/config/crd/bases`): apply it here, the same way every time.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(OPERATOR_CHART / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")
    # The chart's defaults (one replica of its image) with the image the node holds, on the node that runs it.
    run(
        "helm", "upgrade", "--install", RELEASE, str(OPERATOR_CHART), "-n", SYSTEM, "--create-namespace",
        "--skip-crds", "--reset-values", "--set", "image.pullPolicy=Never",
        "--set-string", f"nodeSelector.kubernetes\\.io/hostname={node}", *values,
    )  # fmt: skip
    step("The operator pod starts")
    follow("the operator pod", operator_progress, timeout=180, explain=operator_pod_report)
    kubectl("get", "pods", "-n", SYSTEM, "-l", OPERATOR_PODS, "-o", "wide")


def tenant_progress() -> Progress:
    """Where the tenant is, as the operator reports it in the Tenant's status."""
    tenant = get("tenant", NAME)
    if not tenant:
        return "waiting for the Tenant", False
    status = tenant.get("status", {})
    if not status:
        return "waiting for the operator", False
    server, redis = status.get("serverStatus", {}), status.get("redisStatus", {})
    ready = {c["type"]: c for c in status.get("conditions", [])}.get("Ready", {})
    line = (
        f"phase={status.get('phase', '-')} "
        f"server={server.get('readyReplicas', 0)}/{server.get('totalReplicas', 0)} "
        f"redis={redis.get('readyReplicas', 0)}/{redis.get('totalReplicas', 0)} "
        f"ready={ready.get('status', '-')} {ready.get('message', '')}"
    )
    return line.rstrip(), status.get("phase") == "Running"


def deletion_progress() -> Progress:
    tenant = get("tenant", NAME)
    namespace = get("namespace", NAMESPACE)
    tenant_phase = tenant.get("status", {}).get("phase", "-") if tenant else "gone"
    namespace_phase = namespace.get("status", {}).get("phase", "-") if namespace else "gone"
    return f"tenant={tenant_phase} namespace={namespace_phase}", not tenant and not namespace


def demo(cluster: LocalCluster, backend: str) -> None:
    started = time.monotonic()
    install_operator(backend)

    step("Create the guide's example Tenant")
    kubectl("apply", "-f", str(SAMPLE))
    follow(
        f"namespace {NAMESPACE}",
        lambda: ("waiting for the operator to create the namespace", bool(get("namespace", NAMESPACE))),
        timeout=120,
        explain=operator_logs,
    )
    step("Its API_KEY comes from Secret tenant-secrets, which users create in the tenant's namespace")
    if not get("secret", "tenant-secrets", "-n", NAMESPACE):
        kubectl(
            "create", "secret", "generic", "tenant-secrets", "-n", NAMESPACE, "--from-literal=api-key=demo"
        )

    step("Progress, as the operator reports it in the Tenant's status")
    follow(f"Tenant {NAME}", tenant_progress, timeout=300, explain=operator_logs)

    step("The tenant")
    kubectl("get", "tenants")
    kubectl("get", "tenants", "-o", "wide")
    step(f"Its pods and what else it got in {NAMESPACE}")
    kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide")
    kubectl(
        "get", "deployments,statefulsets,services,persistentvolumeclaims,networkpolicies,resourcequotas",
        "-n", NAMESPACE,
    )  # fmt: skip
    if backend == "flux":
        step("Its release, installed by Flux from the HelmRelease the operator wrote")
        kubectl("get", "helmreleases", "-n", NAMESPACE)
    step(f"Done in {time.monotonic() - started:.0f}s. The tenant and the operator keep running:")
    print(
        f"  export KUBECONFIG={cluster.kubeconfig} PATH={cluster.bin}:$PATH\n"
        f"  kubectl -n {NAMESPACE} port-forward svc/neurallog-server 3030:3030   # then localhost:3030\n"
        f"  kubectl logs -n {SYSTEM} -l {OPERATOR_PODS}          # the operator's logs\n"
        f"  kubectl describe tenant {NAME}                  # conditions and events\n"
        "  (the README walks through updating, troubleshooting and deleting it)\n"
        "Clean up:\n"
        "  make demo-clean     # delete the Tenant (the operator removes its namespace), uninstall\n"
        "                      # the operator chart\n"
        "  make cluster-down   # stop the local cluster (make cluster-destroy also deletes its state)"
    )


def clean() -> None:
    if get("tenant", NAME):
        if not operator_progress()[1]:
            step("The Tenant's finalizer needs the operator")
            install_operator()
        step("Delete the Tenant: the operator uninstalls its release and deletes its namespace")
        kubectl("delete", "tenant", NAME, "--wait=false")
    if get("tenant", NAME) or get("namespace", NAMESPACE):
        follow(f"deleting Tenant {NAME}", deletion_progress, timeout=180, explain=operator_logs)
    step("Uninstall the operator chart (Helm keeps the CRD)")
    run("helm", "uninstall", RELEASE, "-n", SYSTEM, "--ignore-not-found", "--wait")
    follow("the operator pod to stop", operator_gone, timeout=120, explain=operator_logs)


def operator_gone() -> Progress:
    pods = get("pods", "-n", SYSTEM, "-l", OPERATOR_PODS).get("items", [])
    return (f"{len(pods)} operator pod(s) stopping", False) if pods else ("the operator has stopped", True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_cluster.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove what the demo made")
    parser.add_argument(
        "--backend",
        choices=["helm", "flux"],
        default="helm",
        help="who installs the tenant's release: the operator's Helm, or Flux from a HelmRelease",
    )
    parser.add_argument(
        "--state", type=Path, default=REPO / ".cluster", help="the local cluster's state directory"
    )
    options = parser.parse_args(argv)
    cluster = LocalCluster(options.state)
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    os.environ["PATH"] = f"{cluster.bin}{os.pathsep}{os.environ['PATH']}"
    if options.clean:
        clean()
    else:
        demo(cluster, options.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
