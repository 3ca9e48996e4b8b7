"""The operator's security rules with the operator running under the chart's RBAC: the RoleBinding it makes,
no adoption of a foreign namespace, isolation off refused unless allowed, and the image allow-list."""

import json
from collections.abc import Iterator

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import Operator, Tenants, small_tenant, unique, wait_until

pytestmark = pytest.mark.cluster


def event_reasons(tenants: Tenants, name: str) -> set[str]:
    return {event["reason"] for event in tenants.events(name)}


def test_the_operator_binds_its_tenant_role_and_no_more(kube: Kube, tenants: Tenants) -> None:
    name = unique("rbac")
    tenants.apply(small_tenant(name))
    tenants.wait_for_phase(name, "Running")
    binding = json.loads(
        kube.kubectl("get", "rolebinding", "tenant-operator", "-n", f"tenant-{name}", "-o", "json").stdout
    )
    assert binding["roleRef"]["name"] == "e2e-tenant-operator-tenant"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "e2e-tenant-operator", "namespace": "e2e-operator"}
    ]
    account = "--as=system:serviceaccount:e2e-operator:e2e-tenant-operator"
    for namespace, allowed in ((f"tenant-{name}", "yes"), ("default", "no"), ("kube-system", "no")):
        answer = kube.kubectl("auth", "can-i", "get", "secrets", "-n", namespace, account, check=False)
        assert answer.stdout.strip() == allowed, namespace


@pytest.fixture
def foreign_namespace(kube: Kube) -> Iterator[str]:
    """A namespace `tenant-<name>` made by someone else before the Tenant, with a ConfigMap of theirs."""
    name = unique("foreign")
    kube.kubectl("create", "namespace", f"tenant-{name}")
    kube.kubectl("create", "configmap", "theirs", "-n", f"tenant-{name}", "--from-literal=keep=me")
    yield name
    kube.kubectl("delete", "namespace", f"tenant-{name}", "--ignore-not-found", "--wait=false")


def test_a_foreign_namespace_is_neither_taken_nor_deleted(
    kube: Kube, tenants: Tenants, foreign_namespace: str
) -> None:
    name, namespace = foreign_namespace, f"tenant-{foreign_namespace}"
    tenants.apply(small_tenant(name))
    status = tenants.wait_for_phase(name, "Pending")
    ready = tenants.condition(name, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NamespaceNotOwned")
    assert "neurallog.io/adopt" in ready["message"]
    assert status["release"]["revision"] == 0
    wait_until(lambda: "NamespaceNotOwned" in event_reasons(tenants, name), what="a NamespaceNotOwned event")
    labels = json.loads(kube.kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"].get(
        "labels", {}
    )
    assert "neurallog.io/tenant" not in labels, "the operator labelled a namespace it does not own"
    assert kube.helm("list", "-n", namespace, "-q").stdout.strip() == "", "a release in a foreign namespace"

    tenants.delete(name)
    assert tenants.namespace_exists(namespace), "deleting the Tenant deleted a namespace it did not own"
    kept = kube.kubectl("get", "configmap", "theirs", "-n", namespace, "-o", "jsonpath={.data.keep}")
    assert kept.stdout == "me"


def test_an_annotated_namespace_is_adopted(kube: Kube, tenants: Tenants, foreign_namespace: str) -> None:
    name, namespace = foreign_namespace, f"tenant-{foreign_namespace}"
    tenants.apply(small_tenant(name))
    tenants.wait_for_phase(name, "Pending")
    kube.kubectl("annotate", "namespace", namespace, "neurallog.io/adopt=true")
    tenants.wait_for_phase(name, "Running", timeout=180)  # looked at again within 30 s
    metadata = json.loads(kube.kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"]
    assert metadata["labels"]["neurallog.io/tenant"] == name
    assert [owner["name"] for owner in metadata["ownerReferences"]] == [name]
    assert "NamespaceAdopted" in event_reasons(tenants, name)
    tenants.delete(name)
    wait_until(lambda: not tenants.namespace_exists(namespace), what=f"the adopted {namespace} to go")


def test_isolation_off_is_refused_and_nothing_is_made(tenants: Tenants) -> None:
    name = unique("open")
    tenants.apply(small_tenant(name, networkPolicy={"enabled": False}))
    status = tenants.wait_for_phase(name, "Failed")
    assert status["release"]["reason"] == "IsolationForbidden"
    assert "spec.networkPolicy.enabled" in status["release"]["message"]
    assert not tenants.namespace_exists(f"tenant-{name}"), "a refused Tenant got its namespace"
    wait_until(
        lambda: "IsolationForbidden" in event_reasons(tenants, name), what="an IsolationForbidden event"
    )

    tenants.apply(small_tenant(name))  # isolation back on: it runs
    tenants.wait_for_phase(name, "Running")
    assert tenants.condition(name, "Isolated")["status"] == "True"


@pytest.fixture
def restarted_with(operator: Operator) -> Iterator[Operator]:
    """The operator restarted with the settings a test gives (`extra_settings`), and back to none after."""
    yield operator
    operator.stop()
    operator.extra_settings = {}
    operator.start()


def restart(operator: Operator, settings: dict[str, str]) -> None:
    operator.stop()
    operator.extra_settings = settings
    operator.start()


def test_isolation_off_when_allowed_is_visible(
    kube: Kube, tenants: Tenants, restarted_with: Operator
) -> None:
    restart(restarted_with, {"TENANT_OPERATOR_ALLOW_ISOLATION_OFF": "true"})
    name = unique("allowed-open")
    tenants.apply(small_tenant(name, networkPolicy={"enabled": False}))
    tenants.wait_for_phase(name, "Running")
    isolated = tenants.condition(name, "Isolated")
    assert (isolated["status"], isolated["reason"]) == ("False", "NetworkPoliciesDisabled")
    policies = kube.kubectl("get", "networkpolicies", "-n", f"tenant-{name}", "-o", "name").stdout
    assert policies.strip() == ""
    wide = kube.kubectl("get", "tenant", name, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-1] == "ISOLATED" and wide[1].split()[-1] == "False", wide


def test_an_image_from_outside_the_allow_list_fails_naming_it(
    kube: Kube, tenants: Tenants, restarted_with: Operator
) -> None:
    restart(restarted_with, {"TENANT_OPERATOR_ALLOWED_REGISTRIES": "docker.io/library"})
    name = unique("registry")
    tenants.apply(small_tenant(name))  # the server image is docker.io/neurallog/server
    status = tenants.wait_for_phase(name, "Failed")
    release = status["release"]
    assert release["reason"] == "ImageNotAllowed"
    assert "neurallog/server:latest" in release["message"]
    assert "docker.io/library" in release["message"]
    assert kube.helm("list", "-n", f"tenant-{name}", "-q").stdout.strip() == "", "installed all the same"

    restart(restarted_with, {"TENANT_OPERATOR_ALLOWED_REGISTRIES": "docker.io/library,docker.io/neurallog"})
    tenants.wait_for_phase(name, "Running", timeout=180)
