"""The guide's raw-manifest install (`kubectl apply -f operator/config/{crd/bases,rbac,manager}`), generated
from charts/tenant-operator by `make manifests`, works on a real API server."""

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cluster

CONFIG = Path(__file__).resolve().parents[2] / "operator" / "config"


def test_the_guides_install_commands_run_the_operator_in_system(kube: Any) -> None:
    for folder in ("crd/bases", "rbac", "manager"):
        kube.kubectl("apply", "-f", str(CONFIG / folder))
    try:
        kube.kubectl("wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s")
        kube.kubectl("rollout", "status", "deployment/controller-manager", "-n", "system", "--timeout=120s")
        pods = kube.kubectl(
            "get", "pods", "-n", "system", "-l", "control-plane=controller-manager", "-o", "name"
        ).stdout.split()
        assert len(pods) == 1
        operator = "--as=system:serviceaccount:system:tenant-operator"
        allowed = kube.kubectl("auth", "can-i", "create", "namespaces", operator, check=False)
        assert allowed.stdout.strip() == "yes"
        denied = kube.kubectl("auth", "can-i", "create", "clusterroles", operator, check=False)
        assert denied.stdout.strip() == "no"
    finally:
        # The CRD stays: other tests' Tenants may still use it.
        kube.kubectl("delete", "-f", str(CONFIG / "manager"), "-f", str(CONFIG / "rbac"), "--wait=true",
                     "--ignore-not-found")  # fmt: skip
