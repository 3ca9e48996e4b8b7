"""End-to-end fixtures: the CRD, the operator subprocess, and Tenants cleaned up after each test."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import REPO, Operator, Tenants

CRD = REPO / "charts" / "tenant-operator" / "crds" / "tenants.neurallog.io.yaml"


@pytest.fixture(scope="package")
def crd(kube: Kube) -> None:
    """The Tenant CRD as generated, installed (or updated) and established."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")


@pytest.fixture(scope="package")
def operator(kube: Kube, crd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator, running for the tests of this package (a test may stop and start it again)."""
    process = Operator(kube, Path(tmp_path_factory.mktemp("operator")))
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
