"""The flux tier: the operator's flux backend on the local cluster with real Flux controllers
(source-controller and helm-controller as processes, charts/tenant served over HTTP on 127.0.0.1), the
operator acting as the chart's ServiceAccount. pytest-helm-charts' `kube_cluster` reads the HelmReleases."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from local_cluster.flux import NAMESPACE as FLUX_NAMESPACE
from local_cluster.flux import REPOSITORY, ensure_flux, publish_chart
from tenant_operator.flux import chart_version
from tests.conftest import Kube
from tests.e2e.operator_process import REPO, Operator, ServiceAccount, Tenants

TENANT_CHART = REPO / "charts" / "tenant"
CRD = REPO / "charts" / "tenant-operator" / "crds" / "tenants.neurallog.io.yaml"
RELEASE = "flux-tenant-operator"
RELEASE_NAMESPACE = "flux-operator"
FLUX_SETTINGS = {
    "TENANT_OPERATOR_BACKEND": "flux",
    "TENANT_OPERATOR_FLUX_SOURCE_NAME": REPOSITORY,
    "TENANT_OPERATOR_FLUX_SOURCE_NAMESPACE": FLUX_NAMESPACE,
    "TENANT_OPERATOR_FLUX_INTERVAL": "1m",
}


@pytest.fixture(scope="module")
def kube_config(kube: Kube) -> str:
    """pytest-helm-charts' cluster: the one the other tiers use."""
    return str(kube.kubeconfig)


@pytest.fixture(scope="package")
def flux(kube: Kube) -> str:
    """Flux running, with charts/tenant published at the version the operator asks for: that version."""
    ensure_flux()
    version = chart_version(TENANT_CHART)
    publish_chart(TENANT_CHART, version)
    return version


@pytest.fixture(scope="package")
def account(kube: Kube, flux: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceAccount]:
    """The operator chart's RBAC and admission guard for the flux backend (no operator pod), and a token of
    its ServiceAccount."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")
    kube.helm(
        "upgrade", "--install", RELEASE, str(REPO / "charts" / "tenant-operator"),
        "--namespace", RELEASE_NAMESPACE, "--create-namespace", "--skip-crds", "--set", "replicas=0",
        "--set", "backend=flux", "--set", f"flux.source.name={REPOSITORY}",
        "--set", f"flux.source.namespace={FLUX_NAMESPACE}", "--wait",
    )  # fmt: skip
    yield ServiceAccount.of_release(
        kube, RELEASE, RELEASE_NAMESPACE, Path(tmp_path_factory.mktemp("account"))
    )
    kube.helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False)
    kube.kubectl("delete", "namespace", RELEASE_NAMESPACE, "--ignore-not-found", "--timeout=120s")


@pytest.fixture(scope="package")
def operator(
    kube: Kube, account: ServiceAccount, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator with the flux backend, for the tests of this package (a test may restart it with other
    settings; it gets these back)."""
    process = Operator(kube, Path(tmp_path_factory.mktemp("operator")), account)
    process.extra_settings = dict(FLUX_SETTINGS)
    process.start()
    yield process
    if process.process is not None:
        process.stop()


@pytest.fixture
def tenants(kube: Kube, operator: Operator) -> Iterator[Tenants]:
    """Tenants of one test, deleted through the flux-backend operator when it ends."""
    made = Tenants(kube)
    yield made
    if operator.process is None or operator.extra_settings != FLUX_SETTINGS:
        if operator.process is not None:
            operator.stop()
        operator.extra_settings = dict(FLUX_SETTINGS)
        operator.start()
    made.cleanup()
