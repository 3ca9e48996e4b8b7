"""End-to-end fixtures: the CRD, the operator chart's RBAC, the operator subprocess acting as the chart's
ServiceAccount (not as the cluster's admin), and Tenants cleaned up after each test."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import REPO, Operator, ServiceAccount, Tenants

CRD = REPO / "charts" / "tenant-operator" / "crds" / "tenants.neurallog.io.yaml"


@pytest.fixture(scope="package")
def crd(kube: Kube) -> None:
    """The Tenant CRD as generated, installed (or updated) and established."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")


# The operator chart, installed with no operator pod (replicas 0) for its RBAC and admission guard only.
RBAC_RELEASE = "e2e-tenant-operator"
RBAC_NAMESPACE = "e2e-operator"


@pytest.fixture(scope="package")
def account(kube: Kube, crd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceAccount]:
    """The chart's ServiceAccount, roles and guard, and a kubeconfig holding a token of that account."""
    chart = REPO / "charts" / "tenant-operator"
    kube.helm(
        "upgrade", "--install", RBAC_RELEASE, str(chart), "--namespace", RBAC_NAMESPACE,
        "--create-namespace", "--skip-crds", "--set", "replicas=0", "--wait",
    )  # fmt: skip
    workdir = Path(tmp_path_factory.mktemp("account"))
    yield ServiceAccount.of_release(kube, RBAC_RELEASE, RBAC_NAMESPACE, workdir)
    kube.helm("uninstall", RBAC_RELEASE, "--namespace", RBAC_NAMESPACE, "--wait", check=False)
    # Waited for: a next session would find it terminating and could not install into it.
    kube.kubectl("delete", "namespace", RBAC_NAMESPACE, "--ignore-not-found", "--timeout=120s")


@pytest.fixture(scope="package")
def operator(
    kube: Kube, account: ServiceAccount, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator, running for the tests of this package (a test may stop and start it again), with
    exactly the rights the chart gives it."""
    process = Operator(kube, Path(tmp_path_factory.mktemp("operator")), account)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def tenants(kube: Kube, operator: Operator) -> Iterator[Tenants]:
    """Tenants of one test; deleted (through the operator) when it ends."""
    made = Tenants(kube)
    yield made
    if operator.process is None:
        operator.start()
    made.cleanup()


@pytest.fixture(scope="module")
def tenants_for_module(kube: Kube, operator: Operator) -> Iterator[Tenants]:
    """Tenants that the tests of one module share; deleted when the module ends."""
    made = Tenants(kube)
    yield made
    if operator.process is None:
        operator.start()
    made.cleanup()
