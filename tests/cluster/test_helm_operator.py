"""operator-sdk's helm-operator (v1.42.3, the scale benchmark's peer, bench/helm_operator.py) on the local
cluster: it installs charts/tenant for a namespaced twin of the Tenant, keeps the release at revision 1 over
several reconcile periods because its watch sets `dryRunOption: server` (as the control shows, without it
every reconcile upgrades: the chart's `lookup` of the Redis password), and uninstalls when the resource goes.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.conftest import REPO, STATE, Kube

sys.path.append(str(REPO / "bench"))
from helm_operator import HelmOperator, small_spec

pytestmark = pytest.mark.cluster

PERIOD = 5  # seconds between the helm-operator's periodic reconciles here
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last saw {result!r}")
        time.sleep(0.5)
    return result


def releases(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(kube.helm("list", "-n", namespace, "-o", "json").stdout)
    return listed


def revision(kube: Kube, name: str) -> int | None:
    found = [r for r in releases(kube, f"tenant-{name}") if r["name"] == name]
    return int(found[0]["revision"]) if found else None


def redis_password(kube: Kube, namespace: str) -> str:
    encoded = kube.kubectl("get", "secret", "redis-auth", "-n", namespace, "-o", "jsonpath={.data.password}")
    return base64.b64decode(encoded.stdout).decode()


def reconciles(operator: HelmOperator, name: str) -> int:
    """How many reconciles of this resource found its release installed (log records of the helm-operator)."""
    return sum(
        1
        for record in operator.log_records()
        if record.get("name") == name and record.get("msg") in ("Reconciled release", "Upgraded release")
    )


@pytest.fixture
def operator(kube: Kube) -> Iterator[HelmOperator]:
    if kube.kubeconfig.resolve() != (STATE / "kubeconfig").resolve():
        pytest.skip("the helm-operator runs only beside the local cluster, whose KWOK node takes the pods")
    if not (STATE / "bin" / "helm-operator").exists():
        pytest.skip("no .cluster/bin/helm-operator: run `make binaries`")
    operator = HelmOperator(reconcile_period=f"{PERIOD}s", kwok=True)
    yield operator
    try:
        operator.cleanup(timeout=120)
    finally:
        operator.stop()
        operator.remove_placement_policy()
        print(f"helm-operator log: {operator.log}")


def test_helm_operator_installs_keeps_revision_one_and_uninstalls(kube: Kube, operator: HelmOperator) -> None:
    name = f"ho-{uuid.uuid4().hex[:6]}"
    namespace = f"tenant-{name}"
    operator.start(concurrency=2)
    operator.create([name])

    wait_for(lambda: operator.deployed(name) or operator.failed(name), f"{name} deployed")
    assert operator.failed(name) is None, operator.failed(name)
    [release] = releases(kube, namespace)
    assert (release["name"], release["revision"], release["status"]) == (name, "1", "deployed")
    assert release["chart"] == "tenant-0.1.0"
    kube.kubectl("get", "deployment/neurallog-server", "statefulset/redis", "-n", namespace)
    status = operator.get(name)
    assert status is not None
    assert "kind: Deployment" in status["status"]["deployedRelease"]["manifest"]

    # No post-renderer: the chart's carrier of the policy values stays, and no NetworkPolicy is made.
    kube.kubectl("get", "configmap/tenant-network-policy", "-n", namespace)
    assert kube.kubectl("get", "networkpolicies", "-n", namespace, "-o", "name").stdout.strip() == ""

    # The pods went to the KWOK node (the placement policy on the namespace) and run there.
    def running_pods() -> list[dict[str, Any]] | None:
        pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        running = [pod for pod in pods if pod["status"].get("phase") == "Running"]
        return running if len(running) >= 2 else None

    pods = wait_for(running_pods, "the tenant's two pods running")
    kwok_nodes = kube.kubectl("get", "nodes", "-l", "type=kwok", "-o", "name").stdout.split()
    assert {f"node/{pod['spec']['nodeName']}" for pod in pods} <= set(kwok_nodes), pods

    # Three reconcile periods: every periodic reconcile renders a server-side dry-run upgrade, in which
    # `lookup` finds the password, so nothing differs and nothing is upgraded.
    password = redis_password(kube, namespace)
    before = reconciles(operator, name)
    time.sleep(3 * PERIOD + 1)
    assert reconciles(operator, name) >= before + 2, operator.log_tail()
    assert revision(kube, name) == 1, operator.log_tail()
    assert redis_password(kube, namespace) == password

    # Deleting the resource: the helm-operator uninstalls the release, then lets the resource go.
    operator.delete([name], wait=90)
    assert releases(kube, namespace) == []
    wait_for(
        lambda: (
            kube.kubectl(
                "get", "deployment/neurallog-server", "-n", namespace, "--ignore-not-found", "-o", "name"
            ).stdout.strip()
            == ""
        ),
        "the Deployment to go",
    )


def test_without_server_side_dry_run_every_reconcile_upgrades(kube: Kube, operator: HelmOperator) -> None:
    """The control: the same watch without `dryRunOption` (a client-side dry run, operator-sdk's default).
    Its dry run cannot `lookup` the Redis password, renders a new random one, finds the manifest changed and
    upgrades for real; the real upgrade reads the password back (so it stays), and the release Secret it
    writes wakes the resource again: revision after revision, well within one reconcile period."""
    operator.dry_run_option = ""
    name = f"ho-{uuid.uuid4().hex[:6]}"
    operator.start(concurrency=2)
    operator.create([name], small_spec(name))
    wait_for(lambda: revision(kube, name), f"{name} installed")
    password = redis_password(kube, f"tenant-{name}")
    started = time.monotonic()
    wait_for(lambda: (revision(kube, name) or 0) >= 3, "two upgrades", timeout=3 * PERIOD)
    print(f"revision 3 after {time.monotonic() - started:.1f}s without dryRunOption: server")
    assert redis_password(kube, f"tenant-{name}") == password
