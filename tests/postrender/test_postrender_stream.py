"""The stream: what the post-renderer does not change passes verbatim; bad input is a clear refusal."""

import pytest
from postrender_builders import (
    EXAMPLE_POLICIES,
    example_release,
    helm_test_hook,
    read_stream,
    to_stream,
    with_filenames,
)

from tenant_postrender import ValidationFailed, Violation, render


def only_refusal(text: str) -> Violation:
    with pytest.raises(ValidationFailed) as refused:
        render(text)
    [violation] = refused.value.violations
    return violation


def test_untouched_documents_pass_byte_for_byte_in_order() -> None:
    stream = to_stream(example_release())
    carrier_end = stream.index("---\n", 1)
    result = render(stream)
    # Everything after the carrier (quota, secret, services, workloads) is the input text, comments included.
    assert result.endswith(stream[carrier_end:])
    assert result.count("# Source: tenant/templates/") == len(example_release()) - 1


def test_helm4_filename_annotations_are_kept() -> None:
    release = with_filenames(example_release())
    objects = read_stream(render(to_stream(release)))
    assert [obj for obj in objects if obj["kind"] != "NetworkPolicy"] == release[1:]


def test_quoting_and_flow_style_are_not_rewritten() -> None:
    stream = to_stream(example_release()) + (
        "---\n# Source: tenant/templates/extra.yaml\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: tenant-sample-tenant\n"
        "  labels: {app.kubernetes.io/name: tenant, app.kubernetes.io/instance: sample-tenant,"
        ' app.kubernetes.io/managed-by: Helm, helm.sh/chart: "tenant-0.1.0"}\n'
        "data:\n  appendonly: 'yes'   # kept as written\n"
    )
    assert render(stream).endswith("data:\n  appendonly: 'yes'   # kept as written\n")


def test_a_stream_of_hooks_only_passes_without_tenant_settings() -> None:
    # Helm 4 with --post-render-strategy separate post-renders the hooks on their own.
    stream = to_stream([helm_test_hook()])
    assert render(stream) == stream


def test_document_markers_with_content_and_end_markers_are_understood() -> None:
    stream = to_stream(example_release()).replace("---\n", "--- ", 1) + "...\n"
    assert len(read_stream(render(stream))) == len(example_release()) - 1 + len(EXAMPLE_POLICIES)


def test_empty_documents_are_dropped() -> None:
    stream = "---\n# Source: tenant/templates/empty.yaml\n\n" + to_stream(example_release()) + "---\n"
    assert not render(stream).startswith("---\n# Source: tenant/templates/empty.yaml")


@pytest.mark.parametrize("text", ["", "\n\n", "---\n# Source: tenant/templates/nothing.yaml\n---\n"])
def test_empty_input_is_refused(text: str) -> None:
    violation = only_refusal(text)
    assert (violation.subject, violation.field, violation.problem) == (
        "input",
        "stream",
        "holds no Kubernetes objects",
    )


def test_malformed_yaml_is_refused_with_its_line() -> None:
    stream = to_stream(example_release())
    opening_line = stream.count("\n") + 4
    violation = only_refusal(stream + "---\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n")
    assert violation.subject == "input"
    # The parser notices at the end of the input, and says where the sequence began.
    assert violation.field == f"line {opening_line + 1}"
    assert violation.problem.startswith("is not valid YAML (did not find expected ',' or ']'")
    assert f"while parsing a flow sequence at line {opening_line}" in violation.problem


def test_a_document_that_is_not_an_object_is_refused() -> None:
    violation = only_refusal(to_stream(example_release()) + "---\n- just\n- a list\n")
    assert "is not a Kubernetes object" in violation.problem


def test_a_release_without_the_carrier_is_refused() -> None:
    violation = only_refusal(to_stream(example_release()[1:]))
    assert violation.field == "ConfigMap tenant-network-policy"
    assert "network policies cannot be built" in violation.problem


def test_two_carriers_are_refused() -> None:
    release = example_release()
    violation = only_refusal(to_stream([release[0], *release]))
    assert violation.problem == "is a second network-policy carrier"


def test_the_report_lists_every_violation_with_its_fix() -> None:
    with pytest.raises(ValidationFailed) as refused:
        render(to_stream(example_release(server_replicas=10)) + "---\n: : :\n")
    report = str(refused.value)
    assert report.startswith("tenant-postrender refused the release (5 violations); nothing was applied:\n")
    assert report.count("\n- ") == 5
    assert report.count("\n    fix: ") == 5
