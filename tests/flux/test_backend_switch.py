"""Switching backends on a running cluster: ten running tenants go from the helm backend to the flux backend
and back. Flux finds each release under its name and upgrades it once at most; the way back hands each
release from its HelmRelease to the operator's Helm. No pod is recreated on the way."""

import json
from typing import Any

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import Operator, Tenants, helm_revision, small_tenant, unique, wait_until
from tests.flux.conftest import FLUX_SETTINGS

pytestmark = pytest.mark.cluster
COUNT = 10


def pods(kube: Kube, name: str) -> dict[str, str]:
    """Pod name -> uid in the tenant's namespace."""
    listed = json.loads(kube.kubectl("get", "pods", "-n", f"tenant-{name}", "-o", "json").stdout)["items"]
    return {pod["metadata"]["name"]: pod["metadata"]["uid"] for pod in listed}


def helm_releases(kube: Kube, names: list[str]) -> dict[str, dict[str, Any]]:
    """The HelmReleases of these tenants, by tenant."""
    listed = json.loads(kube.kubectl("get", "helmreleases", "-A", "-o", "json").stdout)["items"]
    return {item["metadata"]["name"]: item for item in listed if item["metadata"]["name"] in names}


def released_for(tenants: Tenants, helm_release: dict[str, Any]) -> bool:
    """Flux is Ready for the HelmRelease's generation and the Tenant reports the revision Flux installed."""
    status = helm_release.get("status", {})
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    if not ready or status.get("observedGeneration") != helm_release["metadata"]["generation"]:
        return False
    revision = (status.get("history") or [{}])[0].get("version")
    return bool(
        tenants.status(helm_release["metadata"]["name"]).get("release", {}).get("revision") == revision
    )


def restart(operator: Operator, settings: dict[str, str]) -> None:
    operator.stop()
    operator.extra_settings = dict(settings)
    operator.start()


def all_deployed_by(tenants: Tenants, names: list[str], revisions: dict[str, int], kube: Kube) -> bool:
    """Every tenant Running with a Deployed release no older than before the switch."""
    for name in names:
        status: dict[str, Any] = tenants.status(name)
        release = status.get("release", {})
        if status.get("phase") != "Running" or release.get("state") != "Deployed":
            return False
        if release.get("revision", 0) < revisions[name]:
            return False
    return True


def test_ten_running_tenants_switch_to_flux_and_back(
    kube: Kube, tenants: Tenants, operator: Operator, flux: str
) -> None:
    names = [unique(f"switch{index}") for index in range(COUNT)]
    restart(operator, {"TENANT_OPERATOR_BACKEND": "helm"})
    tenants.apply(*(small_tenant(name) for name in names))
    for name in names:
        tenants.wait_for_phase(name, "Running", timeout=300)
    helm_at = {name: helm_revision(kube, name) for name in names}
    pods_at = {name: pods(kube, name) for name in names}
    assert set(helm_at.values()) == {1}
    assert not helm_releases(kube, names)

    # To flux: every tenant gets a HelmRelease; Flux upgrades each release at most once.
    restart(operator, FLUX_SETTINGS)
    wait_until(
        lambda: (
            len(found := helm_releases(kube, names)) == COUNT
            and all(released_for(tenants, helm_release) for helm_release in found.values())
            and all_deployed_by(tenants, names, helm_at, kube)
        ),
        timeout=400,
        what="every tenant to be deployed through its HelmRelease",
    )
    flux_at = {name: helm_revision(kube, name) for name in names}
    for name in names:
        assert helm_at[name] <= flux_at[name] <= helm_at[name] + 1, (name, helm_at[name], flux_at[name])
        assert tenants.status(name)["release"]["revision"] == flux_at[name]
        assert pods(kube, name) == pods_at[name], f"pods of {name} were recreated by the switch to flux"

    # And back to helm: the HelmReleases go without an uninstall; Helm upgrades each release once at most.
    restart(operator, {"TENANT_OPERATOR_BACKEND": "helm"})
    wait_until(
        lambda: not helm_releases(kube, names) and all_deployed_by(tenants, names, flux_at, kube),
        timeout=400,
        what="every tenant to be deployed by the operator's Helm again",
    )
    for name in names:
        back = helm_revision(kube, name)
        assert flux_at[name] <= back <= flux_at[name] + 1, (name, flux_at[name], back)
        assert pods(kube, name) == pods_at[name], f"pods of {name} were recreated by the switch back"
        assert tenants.status(name)["phase"] == "Running"
