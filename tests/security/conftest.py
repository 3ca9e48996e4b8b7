"""Fixtures of the guard-rail tests: a tenant namespace made and installed as the operator makes it, and the
operator chart installed (paused) for its ServiceAccount. Both are removed after the module."""

import json
import time
from collections.abc import Iterator

import pytest
import yaml

from tenant_operator.api import TenantSpec
from tenant_operator.namespace import namespace_labels
from tenant_operator.release import upgrade_args
from tests.charts.chart_support import OPERATOR_CHART, unique_name
from tests.conftest import Kube
from tests.postrender.postrender_helm import CHART, HELM4, POSTRENDERER, IsolatedHelm


def wait_for_quota(kube: Kube, namespace: str, name: str = "tenant-quota", timeout: float = 60) -> None:
    """Until the quota controller has computed the quota: before that, the API server refuses every object the
    quota counts with "status unknown for quota", which would hide what the tests look for."""
    deadline = time.monotonic() + timeout
    while True:
        quota = json.loads(kube.kubectl("get", "resourcequota", name, "-n", namespace, "-o", "json").stdout)
        if quota.get("status", {}).get("hard") == quota["spec"]["hard"]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"quota {name} in {namespace} not computed within {timeout}s: {quota}")
        time.sleep(1)


@pytest.fixture(scope="module")
def tenant_namespace(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The namespace `tenant-<name>` with the operator's labels and charts/tenant installed in it by
    `helm upgrade --install` through the post-renderer, with the operator's arguments.

    No replicas: what is tested is admission, and no pod of the release needs to run for it."""
    name = unique_name("guard-rails")
    namespace = f"tenant-{name}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": namespace_labels(name)},
    }
    kube.kubectl("create", "-f", "-", input=yaml.safe_dump(manifest))
    home = tmp_path_factory.mktemp("helm")
    helm = IsolatedHelm(HELM4, home, kube.env)
    values = TenantSpec.model_validate(
        {"displayName": name, "server": {"replicas": 0}, "redis": {"replicas": 0}}
    ).to_values()
    values_file = home / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    try:
        helm.run(
            *upgrade_args(
                name=name,
                namespace=namespace,
                chart=CHART,
                values_file=values_file,
                postrenderer=POSTRENDERER,
                timeout=300,
            )
        )
        wait_for_quota(kube, namespace)
        yield namespace
    finally:
        helm.run("uninstall", name, "-n", namespace, check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def operator_account(kube: Kube) -> Iterator[str]:
    """`system:serviceaccount:<namespace>:<name>` of the operator chart's Deployment, installed paused
    (replicas=0) under a release name of this module; the CRD is left out (RBAC does not need it)."""
    release = unique_name("guard-rails")
    namespace = release
    try:
        kube.helm(
            "install",
            release,
            str(OPERATOR_CHART),
            "-n",
            namespace,
            "--create-namespace",
            "--skip-crds",
            "--set",
            "replicas=0",
        )
        deployments = json.loads(
            kube.kubectl(
                "get",
                "deployments",
                "-n",
                namespace,
                "-l",
                f"app.kubernetes.io/instance={release}",
                "-o",
                "json",
            ).stdout
        )["items"]
        assert len(deployments) == 1, [item["metadata"]["name"] for item in deployments]
        account = deployments[0]["spec"]["template"]["spec"]["serviceAccountName"]
        yield f"system:serviceaccount:{namespace}:{account}"
    finally:
        kube.helm("uninstall", release, "-n", namespace, check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)
