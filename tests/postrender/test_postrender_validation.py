"""Every manifest is checked: one test per rule, and all violations are reported together."""

from collections.abc import Callable
from typing import Any

import pytest
from postrender_builders import (
    Manifest,
    container,
    deployment,
    example_release,
    helm_test_hook,
    read_stream,
    server_env,
    to_stream,
)

from tenant_postrender import ValidationFailed, Violation, render
from tenant_postrender.validate import image_repository


def server_container(release: list[Manifest]) -> dict[str, Any]:
    [server] = [obj for obj in release if obj["kind"] == "Deployment"]
    found: dict[str, Any] = server["spec"]["template"]["spec"]["containers"][0]
    return found


def server_pod(release: list[Manifest]) -> dict[str, Any]:
    [server] = [obj for obj in release if obj["kind"] == "Deployment"]
    found: dict[str, Any] = server["spec"]["template"]["spec"]
    return found


def refusals(change: Callable[[list[Manifest]], None], **render_options: Any) -> list[Violation]:
    release = example_release()
    change(release)
    with pytest.raises(ValidationFailed) as refused:
        render(to_stream(release), **render_options)
    return refused.value.violations


def only_refusal(change: Callable[[list[Manifest]], None], **render_options: Any) -> Violation:
    [violation] = refusals(change, **render_options)
    assert violation.fix
    return violation


CONTAINER = "spec.template.spec.containers[server]"


def test_the_guide_example_passes_and_every_untouched_object_is_kept() -> None:
    release = example_release()
    objects = read_stream(render(to_stream(release)))
    assert [obj for obj in objects if obj["kind"] != "NetworkPolicy"] == release[1:]


@pytest.mark.parametrize(
    ("section", "resource"), [("limits", "cpu"), ("limits", "memory"), ("requests", "cpu")]
)
def test_missing_requests_or_limits_are_refused(section: str, resource: str) -> None:
    violation = only_refusal(lambda release: server_container(release)["resources"][section].pop(resource))
    assert violation.subject == "Deployment/neurallog-server"
    assert violation.field == f"{CONTAINER}.resources.{section}.{resource}"
    assert violation.problem == "is not set"


def test_a_container_without_resources_is_refused_for_each_of_them() -> None:
    violations = refusals(lambda release: server_container(release).pop("resources"))
    assert {violation.field.split(".resources.")[1] for violation in violations} == {
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    }


def test_an_invalid_quantity_is_refused() -> None:
    violation = only_refusal(
        lambda release: server_container(release)["resources"]["limits"].update(cpu="lots")
    )
    assert violation.problem == "'lots' is not a quantity"


def test_a_request_above_its_limit_is_refused() -> None:
    violation = only_refusal(
        lambda release: server_container(release)["resources"]["requests"].update(memory="1100Mi")
    )
    assert violation.field == f"{CONTAINER}.resources.requests.memory"
    assert "above the limit 1Gi" in violation.problem


def test_a_privileged_container_is_refused() -> None:
    violation = only_refusal(
        lambda release: server_container(release)["securityContext"].update(privileged=True)
    )
    assert violation.field == f"{CONTAINER}.securityContext.privileged"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation"),
        ({"runAsNonRoot": False}, "runAsNonRoot"),
        ({"runAsUser": 0}, "runAsUser"),
        ({"capabilities": {"drop": ["NET_RAW"]}}, "capabilities.drop"),
        ({"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}, "capabilities.add"),
        ({"seccompProfile": {"type": "Unconfined"}}, "seccompProfile.type"),
    ],
)
def test_a_weakened_security_context_is_refused(change: dict[str, Any], field: str) -> None:
    violation = only_refusal(lambda release: server_container(release)["securityContext"].update(change))
    assert violation.field == f"{CONTAINER}.securityContext.{field}"


def test_pod_level_security_settings_count_for_the_containers() -> None:
    def move_to_pod(release: list[Manifest]) -> None:
        security = server_container(release)["securityContext"]
        server_pod(release)["securityContext"] = {
            key: security.pop(key) for key in ("runAsNonRoot", "runAsUser", "seccompProfile")
        }

    render(to_stream(release := example_release()))
    move_to_pod(release)
    render(to_stream(release))


def test_a_container_without_security_context_gets_every_missing_setting_listed() -> None:
    def strip(release: list[Manifest]) -> None:
        server_container(release).pop("securityContext")
        server_pod(release).pop("securityContext")

    fields = {violation.field.rsplit("securityContext.", 1)[1] for violation in refusals(strip)}
    assert fields == {
        "allowPrivilegeEscalation",
        "capabilities.drop",
        "runAsNonRoot",
        "runAsUser",
        "seccompProfile.type",
    }


@pytest.mark.parametrize("host_namespace", ["hostNetwork", "hostPID", "hostIPC"])
def test_host_namespaces_are_refused(host_namespace: str) -> None:
    violation = only_refusal(lambda release: server_pod(release).update({host_namespace: True}))
    assert violation.field == f"spec.template.spec.{host_namespace}"


def test_host_path_volumes_are_refused() -> None:
    violation = only_refusal(
        lambda release: server_pod(release).update(volumes=[{"name": "node", "hostPath": {"path": "/"}}])
    )
    assert violation.field == "spec.template.spec.volumes[node].hostPath"


@pytest.mark.parametrize("image", ["", "Redis:7", "redis:", "redis@sha256:abc", "-bad/image", "a//b", None])
def test_invalid_image_references_are_refused(image: str | None) -> None:
    violation = only_refusal(lambda release: server_container(release).update(image=image))
    assert violation.field == f"{CONTAINER}.image"
    assert "not a valid image reference" in violation.problem


@pytest.mark.parametrize(
    "image",
    [
        "redis",
        "redis:7-alpine",
        "neurallog/server:latest",
        "localhost:5000/neurallog/server:1.2.3",
        "ghcr.io/neurallog/server@sha256:" + "a" * 64,
        "registry.example.com:443/team/app:v1_2.3-rc1",
    ],
)
def test_valid_image_references_pass(image: str) -> None:
    release = example_release()
    server_container(release)["image"] = image
    render(to_stream(release))


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("redis:7-alpine", "docker.io/library/redis"),
        ("neurallog/server:latest", "docker.io/neurallog/server"),
        ("localhost:5000/a/b:1", "localhost:5000/a/b"),
        ("ghcr.io/neurallog/server@sha256:" + "a" * 64, "ghcr.io/neurallog/server"),
    ],
)
def test_image_repository_resolves_like_a_container_runtime(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_the_registry_allow_list_admits_listed_registries_only() -> None:
    render(to_stream(example_release()), allowed_registries=["docker.io"])
    render(to_stream(example_release()), allowed_registries=["docker.io/library", "docker.io/neurallog/"])
    violation = only_refusal(lambda release: None, allowed_registries=["docker.io/library", "ghcr.io"])
    assert violation.field == f"{CONTAINER}.image"
    assert "docker.io/neurallog/server" in violation.problem
    assert "docker.io/library, ghcr.io" in violation.fix


def test_duplicate_env_names_are_refused() -> None:
    violation = only_refusal(
        lambda release: server_container(release)["env"].append({"name": "LOG_LEVEL", "value": "info"})
    )
    assert violation.field == f"{CONTAINER}.env[LOG_LEVEL]"
    assert "set 2 times" in violation.problem


def test_missing_recommended_labels_are_refused_on_objects_and_pod_templates() -> None:
    def unlabel(release: list[Manifest]) -> None:
        del release[2]["metadata"]["labels"]["helm.sh/chart"]
        del server_pod_labels(release)["app.kubernetes.io/component"]

    def server_pod_labels(release: list[Manifest]) -> dict[str, Any]:
        [server] = [obj for obj in release if obj["kind"] == "Deployment"]
        labels: dict[str, Any] = server["spec"]["template"]["metadata"]["labels"]
        return labels

    secret_labels, pod_labels = refusals(unlabel)
    assert (secret_labels.subject, secret_labels.field) == ("Secret/redis-auth", "metadata.labels")
    assert "helm.sh/chart" in secret_labels.problem
    assert pod_labels.field == "spec.template.metadata.labels"
    assert "app.kubernetes.io/component" in pod_labels.problem


def test_init_containers_are_checked_too() -> None:
    def add_init(release: list[Manifest]) -> None:
        init = container("migrate", "neurallog/server:latest", env=server_env())
        init["securityContext"]["privileged"] = True
        server_pod(release)["initContainers"] = [init]

    violation = only_refusal(add_init)
    assert violation.field == "spec.template.spec.initContainers[migrate].securityContext.privileged"


def test_every_violation_is_reported_at_once() -> None:
    def break_everything(release: list[Manifest]) -> None:
        server = server_container(release)
        server["securityContext"]["privileged"] = True
        del server["resources"]["limits"]["memory"]
        server["env"].append({"name": "PORT", "value": "8080"})
        release[-1]["spec"]["template"]["spec"]["hostNetwork"] = True

    problems = {violation.field.rsplit(".", 1)[-1] for violation in refusals(break_everything)}
    assert problems == {"privileged", "memory", "env[PORT]", "hostNetwork"}


def test_hooks_pass_through_untouched_but_are_still_checked() -> None:
    hook = helm_test_hook()
    stream = to_stream([*example_release(), hook])
    assert stream.endswith(render(stream).rsplit("---\n", 1)[1])
    hook["spec"]["hostPID"] = True
    with pytest.raises(ValidationFailed, match=r"Pod/sample-tenant-test-connection spec\.hostPID"):
        render(to_stream([*example_release(), hook]))


def test_workloads_in_a_list_are_checked() -> None:
    bad = deployment()
    bad["spec"]["template"]["spec"]["hostIPC"] = True
    items = {"apiVersion": "v1", "kind": "List", "items": [bad]}
    with pytest.raises(ValidationFailed, match="hostIPC"):
        render(to_stream(example_release()) + to_stream([items]))
