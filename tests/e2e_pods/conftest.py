"""Fixtures of the real-pod end-to-end tests: the operator chart installed and running in its pod.

This package is apart from tests/e2e on purpose: tests/e2e runs the operator as a local subprocess
(a package-scoped fixture that lives until that package's last test), and two operators must never act on
the same Tenants. pytest finishes tests/e2e, stopping its subprocess, before this package starts; the
fixture below also refuses to start while such a process runs, and uninstalls the chart at the end.
"""

from collections.abc import Iterator

import pytest

from tests.conftest import REPO, Kube
from tests.e2e.operator_process import Tenants
from tests.e2e_pods.real_pods import install_operator, local_operator_processes, uninstall_operator


@pytest.fixture(scope="module", autouse=True)
def local_only(kube: Kube) -> None:
    """The real node, its preloaded images and the lab hosts are the local cluster's."""
    if kube.kubeconfig != REPO / ".cluster" / "kubeconfig":
        pytest.skip("the real node and its preloaded images are part of the local cluster")


@pytest.fixture(scope="module")
def operator_pod(kube: Kube, local_only: None) -> Iterator[None]:
    """The operator chart installed into `system`, its operator running in its pod on the real node, for the
    tests of the module; uninstalled at the end (the tests delete their Tenants first)."""
    others = local_operator_processes()
    assert not others, f"an operator already runs on this machine; two must never act at once: {others}"
    try:
        install_operator(kube)
    except BaseException:
        uninstall_operator(kube)  # a chart that failed to come up is not left behind
        raise
    yield
    uninstall_operator(kube)


@pytest.fixture
def tenants(kube: Kube, operator_pod: None) -> Iterator[Tenants]:
    """Tenants of one test; deleted (by the operator in its pod) when it ends."""
    made = Tenants(kube)
    yield made
    made.cleanup()
