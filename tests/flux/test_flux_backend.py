"""The flux backend end to end: the guide's scenarios with each Tenant's release in a Flux HelmRelease that
the real helm-controller installs. HelmReleases are read with pytest-helm-charts; its own readiness wait
looks at the first condition only and ignores the generation, so `released` below is the stricter test."""

import json
from typing import Any

import pytest
from pytest_helm_charts.clusters import Cluster
from pytest_helm_charts.flux.helm_release import HelmReleaseCR
from pytest_helm_charts.utils import wait_for_objects_condition

from tests.conftest import Kube
from tests.e2e.operator_process import (
    SMALL_WORKLOAD,
    Tenants,
    create_api_key_secret,
    helm_revision,
    sample_tenant,
    small_tenant,
    unique,
    wait_until,
)
from tests.kstatus import kstatus

pytestmark = pytest.mark.cluster


def released(helm_release: HelmReleaseCR) -> bool:
    """Flux is Ready for the HelmRelease's current generation (Ready stays True from the previous one while an
    upgrade waits)."""
    obj: dict[str, Any] = helm_release.obj
    status = obj.get("status", {})
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"]
    return bool(ready) and status.get("observedGeneration") == obj["metadata"]["generation"]


def wait_released(kube_cluster: Cluster, name: str, timeout: int = 180) -> dict[str, Any]:
    assert kube_cluster.kube_client is not None
    (found,) = wait_for_objects_condition(
        kube_cluster.kube_client, HelmReleaseCR, [name], f"tenant-{name}", released, timeout, False
    )
    obj: dict[str, Any] = found.obj
    return obj


def helm_release(kube_cluster: Cluster, name: str) -> dict[str, Any] | None:
    assert kube_cluster.kube_client is not None
    found = (
        HelmReleaseCR.objects(kube_cluster.kube_client)
        .filter(namespace=f"tenant-{name}")
        .get_or_none(name=name)
    )
    return None if found is None else dict(found.obj)


def names_of(kube: Kube, kind: str, namespace: str) -> set[str]:
    listed = json.loads(kube.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
    return {item["metadata"]["name"] for item in listed}


def test_the_guides_example_runs_through_a_helm_release(
    kube: Kube, tenants: Tenants, kube_cluster: Cluster, flux: str
) -> None:
    name = unique("flux")
    tenants.apply(sample_tenant(name))
    create_api_key_secret(kube, tenants, f"tenant-{name}")
    # Every state the Tenant goes through on its way to Running, as GitOps tools would read it.
    verdicts: dict[str, set[str]] = {}

    def running() -> dict[str, Any] | None:
        tenant = tenants.get(name) or {}
        phase = tenant.get("status", {}).get("phase")
        if phase:
            verdicts.setdefault(phase, set()).add(kstatus(tenant))
        return tenant["status"] if phase == "Running" else None

    try:
        status = wait_until(running, timeout=240, every=0.2, what=f"tenant {name} to run")
    except AssertionError as error:
        raise AssertionError(f"{error}; seen {verdicts}; now {tenants.status(name)}") from None
    assert verdicts.get("Provisioning") == {"InProgress"}, verdicts
    assert verdicts.get("Running") == {"Current"}, verdicts

    hr = wait_released(kube_cluster, name)
    assert hr["spec"]["releaseName"] == name
    assert hr["spec"]["chart"]["spec"]["version"] == flux
    assert hr["spec"]["install"]["disableWait"] and hr["spec"]["upgrade"]["disableWait"]
    assert status["release"]["state"] == "Deployed"
    assert (
        status["release"]["revision"]
        == hr["status"]["history"][0]["version"]
        == helm_revision(kube, name)
        == 1
    )
    assert status["release"]["chartVersion"] == flux
    assert status["observedGeneration"] == 1
    assert kstatus(tenants.get(name) or {}) == "Current"
    # The NetworkPolicies computed by the post-renderer's code belong to the release; no carrier ConfigMap.
    policies = {policy["metadata"]["name"] for policy in hr["spec"]["values"]["renderedNetworkPolicies"]}
    assert {"default-deny", "allow-dns", "server-to-redis"} <= policies, policies
    assert names_of(kube, "networkpolicies", f"tenant-{name}") == policies
    assert "tenant-network-policy" not in names_of(kube, "configmaps", f"tenant-{name}")
    manifest = kube.helm("get", "manifest", name, "-n", f"tenant-{name}").stdout
    assert manifest.count("kind: NetworkPolicy") == len(policies)
    reasons = {event["reason"] for event in tenants.events(name)}
    assert {"NamespaceCreated", "Installing", "Installed"} <= reasons, reasons
    tenants.delete(name, timeout=240)


def test_updates_roll_through_the_helm_release_and_delete_leaves_nothing(
    kube: Kube, tenants: Tenants, kube_cluster: Cluster
) -> None:
    name = unique("flux-update")
    tenants.apply(small_tenant(name, server={"replicas": 2, "resources": SMALL_WORKLOAD}))
    tenants.wait_for_phase(name, "Running", timeout=240)
    wait_released(kube_cluster, name)
    assert helm_revision(kube, name) == 1

    # An update rolls through the HelmRelease: a new generation, one more revision.
    patch = '{"spec":{"server":{"replicas":1}}}'
    patched = json.loads(
        kube.kubectl("patch", "tenant", name, "--type=merge", "-p", patch, "-o", "json").stdout
    )
    # The new generation, not yet observed: in progress for every GitOps tool.
    assert patched["metadata"]["generation"] == 2 and patched["status"]["observedGeneration"] == 1
    assert kstatus(patched) == "InProgress"
    wait_until(
        lambda: (
            s
            if (s := tenants.status(name)).get("observedGeneration") == 2 and s["phase"] == "Running"
            else None
        ),
        timeout=240,
        what="the update to run",
    )
    hr = wait_released(kube_cluster, name)
    assert hr["metadata"]["generation"] == 2
    assert helm_revision(kube, name) == tenants.status(name)["release"]["revision"] == 2
    replicas = kube.kubectl("get", "deployment", "neurallog-server", "-n", f"tenant-{name}", "-o", "json")
    assert json.loads(replicas.stdout)["spec"]["replicas"] == 1

    # Over budget: Failed with the numbers, and the HelmRelease is not touched.
    kube.kubectl("patch", "tenant", name, "--type=merge", "-p", '{"spec":{"server":{"replicas":80}}}')
    failed = tenants.wait_for_phase(name, "Failed", timeout=120)
    assert failed["release"]["reason"] == "BudgetExceeded", failed["release"]
    assert "request 1640m during a rollout but the quota allows 1" in failed["release"]["message"]
    assert failed["observedGeneration"] == 3
    assert kstatus(tenants.get(name) or {}) == "Failed"
    untouched = helm_release(kube_cluster, name)
    assert untouched is not None and untouched["metadata"]["generation"] == 2
    assert untouched["spec"]["values"]["server"]["replicas"] == 1
    assert helm_revision(kube, name) == 2

    # Deletion: Flux uninstalls, then the namespace goes; nothing is left.
    tenants.delete(name, timeout=240)
    assert not tenants.namespace_exists(f"tenant-{name}")
    releases = json.loads(kube.helm("list", "-A", "-o", "json").stdout)
    assert name not in {release["name"] for release in releases}


def test_a_helm_release_deleted_behind_the_operator_is_put_back(
    kube: Kube, tenants: Tenants, kube_cluster: Cluster
) -> None:
    """Flux uninstalls the release of a deleted HelmRelease; the operator writes it again and Flux installs
    the release again: the tenant runs."""
    name = unique("flux-drift")
    tenants.apply(small_tenant(name))
    tenants.wait_for_phase(name, "Running", timeout=240)
    before = wait_released(kube_cluster, name)
    kube.kubectl("delete", "helmrelease", name, "-n", f"tenant-{name}", "--wait=false")
    wait_until(
        lambda: (
            (hr := helm_release(kube_cluster, name)) is not None
            and hr["metadata"]["uid"] != before["metadata"]["uid"]
            and released(HelmReleaseCR(kube_cluster.kube_client, hr))
        ),
        timeout=180,
        what="the HelmRelease to be put back and released",
    )
    tenants.wait_for_phase(name, "Running", timeout=120)
    assert "DriftDetected" in {event["reason"] for event in tenants.events(name)}
