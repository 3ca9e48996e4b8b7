"""Fixtures of the chart tests. Rendering needs only a helm binary; the tests that need a cluster take the
`kube` fixture of tests/conftest.py and are marked `cluster`."""

from collections.abc import Iterator
from typing import Any

import pytest
from chart_support import Helm, find_tool, unique_name


@pytest.fixture(scope="session")
def helm() -> Helm:
    """Helm 4 (the local cluster's, else `helm` on PATH)."""
    binary = find_tool("helm")
    if binary is None:
        pytest.skip("no helm binary: run `make cluster-up` (it builds .cluster/bin/helm) or put helm on PATH")
    return Helm(binary)


@pytest.fixture(scope="session")
def helm_versions(helm: Helm) -> list[Helm]:
    """Every helm the project supports that is here: Helm 4 and, when built, Helm 3 (.cluster/bin/helm3)."""
    helm3 = find_tool("helm3")
    return [helm] + ([Helm(helm3)] if helm3 else [])


@pytest.fixture
def tenant_namespace(kube: Any) -> Iterator[str]:
    """A fresh namespace labelled as the operator labels a tenant's, deleted after the test."""
    name = unique_name("tenant-chart-test")
    kube.kubectl("create", "namespace", name)
    kube.kubectl(
        "label",
        "namespace",
        name,
        f"neurallog.io/tenant={name.removeprefix('tenant-')}",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
