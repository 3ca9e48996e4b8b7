"""A Tenant's life with the operator running: the guide's example, updates, deletion, restart, failures."""

import json
import re

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import (
    Operator,
    Tenants,
    create_api_key_secret,
    helm_revision,
    sample_tenant,
    small_tenant,
    unique,
    wait_until,
)

pytestmark = pytest.mark.cluster


def test_the_guides_example_runs(kube: Kube, tenants: Tenants) -> None:
    tenants.delete("sample-tenant")  # left over from an interrupted run or the demo
    tenants.apply(sample_tenant())
    create_api_key_secret(kube, tenants, "tenant-sample-tenant")
    status = tenants.wait_for_phase("sample-tenant", "Running")
    assert status["namespace"] == "tenant-sample-tenant"
    assert status["serverStatus"] == {
        "phase": "Running",
        "readyReplicas": 2,
        "totalReplicas": 2,
        "message": "Server is running",
    }
    assert status["redisStatus"] == {
        "phase": "Running",
        "readyReplicas": 1,
        "totalReplicas": 1,
        "message": "Redis is running",
    }
    assert tenants.condition("sample-tenant", "Ready")["status"] == "True"
    assert status["release"]["name"] == "sample-tenant"
    assert status["release"]["revision"] == 1
    assert status["observedGeneration"] == tenants.get("sample-tenant")["metadata"]["generation"]  # type: ignore[index]
    table = kube.kubectl("get", "tenants", "sample-tenant").stdout
    assert re.search(r"^NAME\s+STATUS\s+NAMESPACE\s+AGE\s*$", table, re.MULTILINE), table
    assert re.search(r"^sample-tenant\s+Running\s+tenant-sample-tenant\s+\S+\s*$", table, re.MULTILINE), table
    namespace = json.loads(kube.kubectl("get", "namespace", "tenant-sample-tenant", "-o", "json").stdout)
    assert namespace["metadata"]["labels"]["neurallog.io/tenant"] == "sample-tenant"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    reasons = {event["reason"] for event in tenants.events("sample-tenant")}
    assert {"NamespaceCreated", "Installing", "Installed", "AllWorkloadsReady"} <= reasons, reasons
    described = kube.kubectl("describe", "tenant", "sample-tenant").stdout
    assert re.search(r"Normal\s+Installed\s+.*Release sample-tenant revision 1", described), described
    assert "Type:                  Ready" in described or re.search(r"Type:\s+Ready", described), described


def test_a_missing_secret_is_reported_until_it_exists(kube: Kube, tenants: Tenants) -> None:
    name = unique("nosecret")
    tenants.apply(sample_tenant(name))

    def reported() -> bool:
        status = tenants.status(name)
        return status.get("phase") == "Degraded" and status["release"]["state"] == "Deployed"

    wait_until(reported, what="the release installed and the missing secret reported")
    degraded = tenants.condition(name, "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "SecretNotFound"
    assert "API_KEY needs Secret tenant-secrets (key api-key)" in degraded["message"]
    warnings = [event for event in tenants.events(name) if event["type"] == "Warning"]
    assert any(event["reason"] == "SecretNotFound" for event in warnings), warnings
    create_api_key_secret(kube, tenants, f"tenant-{name}")
    tenants.wait_for_phase(name, "Running")


def test_updates_reach_the_cluster_and_unchanged_specs_make_no_revision(kube: Kube, tenants: Tenants) -> None:
    name = unique("update")
    namespace = f"tenant-{name}"
    tenant = small_tenant(name, server={"replicas": 1, "env": [{"name": "GREETING", "value": "hello"}]})
    tenants.apply(tenant)
    tenants.wait_for_phase(name, "Running")
    assert helm_revision(kube, name) == 1

    tenant["spec"]["server"] = {"replicas": 2, "env": [{"name": "GREETING", "value": "bonjour"}]}
    tenant["spec"]["redis"] = {"config": {"maxmemory": "128mb"}}
    tenants.apply(tenant)
    status = wait_until(
        lambda: (
            (s := tenants.status(name)).get("phase") == "Running"
            and s["serverStatus"]["readyReplicas"] == 2
            and s
        ),
        timeout=120,
        what="the update to reach the status",
    )
    assert status["serverStatus"]["totalReplicas"] == 2
    assert status["release"]["revision"] == 2
    deployment = json.loads(
        kube.kubectl("get", "deployment", "neurallog-server", "-n", namespace, "-o", "json").stdout
    )
    assert deployment["spec"]["replicas"] == 2
    env = {
        entry["name"]: entry.get("value")
        for entry in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["GREETING"] == "bonjour"
    assert env["LOG_LEVEL"] == "info"
    redis_conf = kube.kubectl("get", "configmap", "redis-config", "-n", namespace, "-o", "json").stdout
    assert "maxmemory 128mb" in json.loads(redis_conf)["data"]["redis.conf"]

    # A spec written differently that means the same (a default spelled out): a new generation that the
    # operator handles (it reports observedGeneration) without a Helm call.
    before = tenants.get(name)["metadata"]["generation"]  # type: ignore[index]
    tenant["spec"]["redis"]["config"]["maxmemory-policy"] = "allkeys-lru"
    tenants.apply(tenant)
    generation = tenants.get(name)["metadata"]["generation"]  # type: ignore[index]
    assert generation == before + 1
    wait_until(
        lambda: tenants.status(name).get("observedGeneration") == generation,
        what=f"the operator to handle generation {generation}",
    )
    assert helm_revision(kube, name) == 2
    assert tenants.status(name)["release"]["revision"] == 2


def test_delete_removes_release_namespace_and_tenant(kube: Kube, tenants: Tenants) -> None:
    name = unique("delete")
    tenants.apply(small_tenant(name))
    tenants.wait_for_phase(name, "Running")
    tenants.delete(name)
    assert not tenants.namespace_exists(f"tenant-{name}")
    assert helm_revision(kube, name) == 0


def test_delete_while_the_operator_is_stopped(kube: Kube, tenants: Tenants, operator: Operator) -> None:
    name = unique("offline")
    tenants.apply(small_tenant(name))
    tenants.wait_for_phase(name, "Running")
    operator.stop()
    try:
        tenants.delete(name, wait=False)
        tenant = tenants.get(name)
        assert tenant is not None and "deletionTimestamp" in tenant["metadata"], (
            "the finalizer keeps the Tenant"
        )
        assert "neurallog.io/finalizer" in tenant["metadata"]["finalizers"]
    finally:
        operator.start()
    tenants.delete(name)
    assert not tenants.namespace_exists(f"tenant-{name}")


def test_a_restarted_operator_makes_no_helm_call(kube: Kube, tenants: Tenants, operator: Operator) -> None:
    names = [unique(f"restart{index}") for index in range(10)]
    tenants.apply(*(small_tenant(name) for name in names))
    for name in names:
        tenants.wait_for_phase(name, "Running", timeout=240)
    revisions = {name: tenants.status(name)["release"]["revision"] for name in names}

    operator.stop()
    operator.start()
    wait_until(
        lambda: operator.metric("tenant_operator_tenants", phase="Running") >= 10, what="statuses reviewed"
    )
    assert operator.metric("tenant_operator_helm_calls_total") == 0, operator.log_tail()
    for name in names:
        status = tenants.status(name)
        assert status["phase"] == "Running"
        assert status["release"]["revision"] == revisions[name] == helm_revision(kube, name)
    tenants.delete(*names)


def test_a_budget_too_small_fails_until_it_is_raised(tenants: Tenants) -> None:
    name = unique("budget")
    tenant = small_tenant(name, resources={"cpu": {"limit": "300m", "request": "30m"}})
    tenants.apply(tenant)
    status = tenants.wait_for_phase(name, "Failed")
    degraded = tenants.condition(name, "Degraded")
    assert degraded["status"] == "True"
    assert tenants.condition(name, "Ready")["status"] == "False"
    assert "cpu" in degraded["message"].lower(), degraded
    assert status["release"]["state"] == "Failed"
    assert any(event["type"] == "Warning" for event in tenants.events(name))

    tenant["spec"]["resources"] = {"cpu": {"limit": "2", "request": "1"}}
    tenants.apply(tenant)
    tenants.wait_for_phase(name, "Running")
    assert tenants.condition(name, "Degraded")["status"] == "False"


def test_pods_that_never_become_ready_degrade_until_the_image_is_fixed(tenants: Tenants) -> None:
    name = unique("unpullable")
    tenant = small_tenant(name, server={"image": "neurallog/server:unpullable"})
    tenants.apply(tenant)
    status = tenants.wait_for_phase(name, "Degraded")
    assert status["serverStatus"]["phase"] in ("Failed", "Degraded")
    degraded = tenants.condition(name, "Degraded")
    assert degraded["reason"] == "WorkloadsDegraded"
    assert "neurallog/server:unpullable" in degraded["message"]
    assert re.search(r"ImagePullBackOff|ErrImagePull", degraded["message"]), degraded

    tenant["spec"]["server"] = {"image": "neurallog/server:latest"}
    tenants.apply(tenant)
    tenants.wait_for_phase(name, "Running")


def test_a_deleted_workload_is_put_back(kube: Kube, tenants: Tenants) -> None:
    name = unique("repair")
    namespace = f"tenant-{name}"
    tenants.apply(small_tenant(name))
    tenants.wait_for_phase(name, "Running")
    kube.kubectl("delete", "deployment", "neurallog-server", "-n", namespace)
    wait_until(
        lambda: (
            tenants.status(name)["release"]["revision"] == 2 and tenants.status(name)["phase"] == "Running"
        ),
        what="the release installed again and the tenant running",
    )
    kube.kubectl("get", "deployment", "neurallog-server", "-n", namespace)
    assert "DriftDetected" in {event["reason"] for event in tenants.events(name)}
