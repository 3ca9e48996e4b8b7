"""Fixtures of the local cluster's tests."""

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Kube


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    name = f"cluster-test-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
