"""The flux backend's pieces (flux.py): a HelmRelease's status read as the Tenant's release status, the
HelmRelease written for a tenant, the chart version Flux is asked for, the settings that choose the backend,
and the check of a release with the real Helm and tenant chart before anything is written."""

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pydantic import ValidationError

from tenant_operator import reconcile
from tenant_operator.drift import foreign_writers
from tenant_operator.flux import (
    FORCE_AT,
    GENERATION_ANNOTATION,
    HASH_ANNOTATION,
    REQUESTED_AT,
    ChartSource,
    Flux,
    chart_version,
    helm_release,
    release_status,
    tenant_generation,
)
from tenant_operator.release import Helm, HelmError
from tenant_operator.schema import RENDERED_POLICIES
from tenant_operator.settings import Settings
from tenant_postrender.render import render
from tests.charts.chart_support import SAMPLE_TENANT, TENANT_CHART, find_tool

FLUX = {"backend": "flux", "flux_source_name": "neurallog", "flux_source_namespace": "flux-system"}


def flux_settings(**given: Any) -> Settings:
    return Settings(helm="helm", **(FLUX | given))


# --- release_status: what a HelmRelease says of the release ------------------------------------------------


def condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def hr(
    *conditions: dict[str, str],
    generation: int = 3,
    observed: int | None = 3,
    annotations: Mapping[str, str] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """A HelmRelease of tenant acme at `generation`, whose status Flux wrote for generation `observed`."""
    found: dict[str, Any] = {"conditions": list(conditions), **status}
    if observed is not None:
        found["observedGeneration"] = observed
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {
            "name": "acme",
            "namespace": "tenant-acme",
            "generation": generation,
            "annotations": {GENERATION_ANNOTATION: "2", HASH_ANNOTATION: "sha256:abc", **(annotations or {})},
        },
        "spec": {"releaseName": "acme"},
        "status": found,
    }


READY = condition(
    "Ready", "True", "UpgradeSucceeded", "Helm upgrade succeeded for release tenant-acme/acme.v4"
)
HISTORY = [
    {"name": "acme", "version": 4, "chartVersion": "0.1.0+0123456789ab", "status": "deployed"},
    {"name": "acme", "version": 3, "chartVersion": "0.1.0+ba9876543210", "status": "superseded"},
]


def test_a_release_ready_at_the_current_generation_is_deployed_with_the_latest_history_entry() -> None:
    status = release_status(hr(READY, history=HISTORY))
    assert status.state == "Deployed"
    assert (status.name, status.revision, status.chart_version) == ("acme", 4, "0.1.0+0123456789ab")
    assert status.applied_hash == "sha256:abc", "from the HelmRelease's annotation"
    assert (status.reason, status.message) == ("", "")


def test_ready_for_an_older_generation_is_still_installing() -> None:
    status = release_status(hr(READY, generation=4, observed=3, history=HISTORY))
    assert status.state == "Installing", "Flux has not handled the new spec yet"
    assert status.revision == 4 and status.applied_hash == "sha256:abc"


@pytest.mark.parametrize(
    ("annotations", "handled", "state"),
    [
        ({REQUESTED_AT: "t2"}, {"lastHandledReconcileAt": "t1"}, "Installing"),
        ({REQUESTED_AT: "t2"}, {}, "Installing"),
        ({REQUESTED_AT: "t2"}, {"lastHandledReconcileAt": "t2"}, "Deployed"),
        ({REQUESTED_AT: "t2", FORCE_AT: "t2"}, {"lastHandledReconcileAt": "t2"}, "Installing"),
        (
            {REQUESTED_AT: "t2", FORCE_AT: "t2"},
            {"lastHandledReconcileAt": "t2", "lastHandledForceAt": "t1"},
            "Installing",
        ),
        (
            {REQUESTED_AT: "t2", FORCE_AT: "t2"},
            {"lastHandledReconcileAt": "t2", "lastHandledForceAt": "t2"},
            "Deployed",
        ),
    ],
)
def test_a_requested_or_forced_reconciliation_counts_once_flux_handled_it(
    annotations: dict[str, str], handled: dict[str, str], state: str
) -> None:
    helm_release = hr(READY, annotations=annotations)
    helm_release["status"] |= handled
    assert release_status(helm_release).state == state


def test_ready_unknown_is_installing() -> None:
    progressing = condition("Ready", "Unknown", "Progressing", "Fulfilling prerequisites")
    status = release_status(hr(progressing, condition("Reconciling", "True", "Progressing")))
    assert status.state == "Installing"
    assert status.message == "Fulfilling prerequisites"
    assert status.reason == "", "Unknown is no failure"


def test_flux_retrying_is_installing_with_its_reason_and_redacted_message() -> None:
    failed = condition(
        "Ready",
        "False",
        "InstallFailed",
        "Helm install failed for release acme: password: hunter2xyz refused",
    )
    retrying = condition("Reconciling", "True", "ProgressingWithRetry", "Detecting drift")
    status = release_status(hr(failed, retrying, condition("Stalled", "False")))
    assert (status.state, status.reason) == ("Installing", "InstallFailed")
    assert status.message.startswith("Helm install failed for release acme")
    assert "hunter2xyz" not in status.message


def test_stalled_is_failed_with_flux_reason_and_redacted_message() -> None:
    message = "Failed to install after 4 attempt(s): values password: hunter2xyz rejected"
    stalled = condition("Stalled", "True", "RetriesExceeded", message)
    ready = condition("Ready", "False", "InstallFailed", "Helm install failed")
    status = release_status(hr(ready, stalled, history=HISTORY))
    assert (status.state, status.reason) == ("Failed", "RetriesExceeded")
    assert status.message.startswith("Failed to install after 4 attempt(s)")
    assert "hunter2xyz" not in status.message
    assert status.revision == 4 and status.chart_version == "0.1.0+0123456789ab"


def test_stalled_for_an_older_generation_is_not_failed_yet() -> None:
    stalled = condition("Stalled", "True", "RetriesExceeded", "Failed to upgrade after 4 attempt(s)")
    assert release_status(hr(stalled, generation=4, observed=3)).state == "Installing"


def test_an_empty_status_is_installing_and_knows_only_the_metadata() -> None:
    fresh = hr(observed=None, generation=1)
    fresh["status"] = {}
    status = release_status(fresh)
    assert status.state == "Installing"
    assert (status.name, status.revision, status.chart_version) == ("acme", 0, "")
    assert status.applied_hash == "sha256:abc"
    assert status.reason == "" and status.message == "waiting for Flux to install the HelmRelease"
    del fresh["status"]
    assert release_status(fresh).state == "Installing"


def test_tenant_generation_is_the_annotation_and_none_without_it() -> None:
    assert tenant_generation(hr()) == 2
    assert tenant_generation({"metadata": {}}) is None
    assert tenant_generation({"metadata": {"annotations": {GENERATION_ANNOTATION: "x"}}}) is None


# --- helm_release: the HelmRelease of a tenant ----------------------------------------------------------


def build(settings: Settings, source: ChartSource, *, force_at: str = "") -> dict[str, Any]:
    return helm_release(
        "acme",
        "tenant-acme",
        {"displayName": "Acme"},
        source,
        settings,
        generation=7,
        applied_hash="sha256:abc",
        force_at=force_at,
    )


HELM_REPOSITORY = ChartSource("HelmRepository", "neurallog", "flux-system", "tenant", "0.1.0+0123456789ab")
OCI_REPOSITORY = ChartSource("OCIRepository", "tenant-chart", "flux-system", "tenant", "0.1.0+0123456789ab")


def test_a_helm_repository_source_gives_the_chart_at_our_version() -> None:
    body = build(flux_settings(flux_interval="5m"), HELM_REPOSITORY)
    spec = body["spec"]
    assert spec["chart"] == {
        "spec": {
            "chart": "tenant",
            "version": "0.1.0+0123456789ab",
            "sourceRef": {"kind": "HelmRepository", "name": "neurallog", "namespace": "flux-system"},
            "interval": "5m",
        }
    }
    assert "chartRef" not in spec
    assert spec["interval"] == "5m"


def test_an_oci_repository_source_gives_a_chart_ref_only() -> None:
    spec = build(flux_settings(flux_source_kind="OCIRepository"), OCI_REPOSITORY)["spec"]
    assert spec["chartRef"] == {"kind": "OCIRepository", "name": "tenant-chart", "namespace": "flux-system"}
    assert "chart" not in spec


def test_the_helm_release_installs_without_wait_retries_rolls_back_and_corrects_drift() -> None:
    body = build(flux_settings(flux_retries=5, helm_timeout=120), HELM_REPOSITORY)
    assert (body["apiVersion"], body["kind"]) == ("helm.toolkit.fluxcd.io/v2", "HelmRelease")
    assert (body["metadata"]["name"], body["metadata"]["namespace"]) == ("acme", "tenant-acme")
    spec = body["spec"]
    assert spec["releaseName"] == "acme"
    assert spec["timeout"] == "120s"
    assert spec["install"]["disableWait"] is True
    assert spec["install"]["remediation"]["retries"] == 5
    assert spec["upgrade"]["disableWait"] is True
    assert spec["upgrade"]["remediation"]["retries"] == 5
    assert spec["upgrade"]["remediation"]["strategy"] == "rollback"
    assert spec["driftDetection"] == {"mode": "enabled"}
    assert spec["values"] == {"displayName": "Acme"}
    labels = body["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "neurallog"
    assert labels["neurallog.io/tenant"] == "acme"


def test_the_helm_release_carries_generation_and_hash_and_asks_for_force_only_when_forced() -> None:
    plain = build(flux_settings(), HELM_REPOSITORY)["metadata"]["annotations"]
    assert plain == {GENERATION_ANNOTATION: "7", HASH_ANNOTATION: "sha256:abc"}
    forced = build(flux_settings(), HELM_REPOSITORY, force_at="2026-01-01T00:00:00+00:00")
    annotations = forced["metadata"]["annotations"]
    assert annotations[REQUESTED_AT] == annotations[FORCE_AT] == "2026-01-01T00:00:00+00:00"
    assert annotations[GENERATION_ANNOTATION] == "7"
    assert tenant_generation(forced) == 7


# --- chart_version: the version under which the chart is published for Flux ------------------------------


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tenant"
    shutil.copytree(TENANT_CHART, copy)
    return copy


def test_chart_version_is_the_chart_version_and_twelve_hex_of_its_content(chart_copy: Path) -> None:
    version = chart_version(TENANT_CHART)
    declared = yaml.safe_load((TENANT_CHART / "Chart.yaml").read_text())["version"]
    base, _, build_metadata = version.partition("+")
    assert base == declared
    assert len(build_metadata) == 12 and all(c in "0123456789abcdef" for c in build_metadata)
    assert chart_version(chart_copy) == version, "the same content, wherever it lies"


def test_a_template_change_is_a_new_chart_version_and_a_readme_change_is_not(chart_copy: Path) -> None:
    before = chart_version(chart_copy)
    (chart_copy / "README.md").write_text("# Another README\n")
    assert chart_version(chart_copy) == before
    template = next(iter(sorted((chart_copy / "templates").glob("*.yaml"))))
    template.write_text(template.read_text() + "\n# changed\n")
    assert chart_version(chart_copy) != before


def test_the_chart_source_asks_for_the_given_version_or_that_of_the_chart() -> None:
    assert ChartSource.of(flux_settings()).version == chart_version(TENANT_CHART)
    assert ChartSource.of(flux_settings(flux_chart_version="1.2.3")).version == "1.2.3"
    source = ChartSource.of(flux_settings(flux_source_kind="OCIRepository", flux_chart="tenant-chart"))
    assert (source.kind, source.name, source.namespace, source.chart) == (
        "OCIRepository",
        "neurallog",
        "flux-system",
        "tenant-chart",
    )


# --- Settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [{}, {"flux_source_name": "neurallog"}, {"flux_source_namespace": "flux-system"}],
)
def test_backend_flux_without_its_source_is_refused(given: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="TENANT_OPERATOR_FLUX_SOURCE_NAME"):
        Settings(helm="helm", backend="flux", **given)


def test_the_helm_backend_is_the_default_and_needs_no_flux_source() -> None:
    settings = Settings(helm="helm")
    assert settings.backend == "helm"
    assert settings.flux_source_name == ""


def test_the_backend_and_flux_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "TENANT_OPERATOR_HELM": "helm",
            "TENANT_OPERATOR_BACKEND": "flux",
            "TENANT_OPERATOR_FLUX_SOURCE_KIND": "OCIRepository",
            "TENANT_OPERATOR_FLUX_SOURCE_NAME": "tenant-chart",
            "TENANT_OPERATOR_FLUX_SOURCE_NAMESPACE": "flux-system",
            "TENANT_OPERATOR_FLUX_CHART": "neurallog-tenant",
            "TENANT_OPERATOR_FLUX_CHART_VERSION": "1.2.3",
            "TENANT_OPERATOR_FLUX_INTERVAL": "1h30m",
            "TENANT_OPERATOR_FLUX_RETRIES": "0",
        }
    )
    assert settings.backend == "flux"
    assert (settings.flux_source_kind, settings.flux_source_name, settings.flux_source_namespace) == (
        "OCIRepository",
        "tenant-chart",
        "flux-system",
    )
    assert (settings.flux_chart, settings.flux_chart_version) == ("neurallog-tenant", "1.2.3")
    assert (settings.flux_interval, settings.flux_retries) == ("1h30m", 0)
    with pytest.raises(ValidationError, match="TENANT_OPERATOR_FLUX_SOURCE_NAME"):
        Settings.from_env({"TENANT_OPERATOR_BACKEND": "flux"})


@pytest.mark.parametrize(
    "given",
    [
        {"backend": "argo"},
        {"flux_interval": "ten minutes"},
        {"flux_retries": -1},
        {"flux_source_kind": "GitRepository"},
    ],
)
def test_bad_flux_settings_are_refused(given: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        flux_settings(**given)


def test_the_flux_fingerprint_follows_what_shapes_the_helm_releases() -> None:
    def fingerprint(**given: Any) -> str:
        settings = flux_settings(**given)
        return Flux(settings, Helm(settings), cast(Any, None)).fingerprint

    base = fingerprint()
    assert base == fingerprint(), "stable"
    assert base != Helm(flux_settings()).chart_fingerprint
    for change in (
        {"flux_interval": "5m"},
        {"flux_retries": 1},
        {"flux_source_name": "other"},
        {"flux_chart_version": "9.9.9"},
        {"allowed_registries": "registry.example.com/neurallog"},
    ):
        assert fingerprint(**change) != base, change


def test_the_writers_of_flux_and_of_the_operator_are_not_drift() -> None:
    written = {
        "metadata": {
            "managedFields": [
                {"manager": "tenant-operator", "operation": "Apply"},
                {"manager": "helm-controller", "operation": "Update"},
                {"manager": "helm-controller", "operation": "Update", "subresource": "status"},
            ]
        }
    }
    assert foreign_writers(written) == []
    written["metadata"]["managedFields"].append({"manager": "kubectl-edit", "operation": "Update"})
    assert foreign_writers(written) == ["kubectl-edit"]


# --- Flux.policies / apply with the real Helm and tenant chart ------------------------------------------


@pytest.fixture(scope="module")
def helm_binary() -> Path:
    binary = find_tool("helm")
    if binary is None:
        message = "no helm binary: run `make cluster-up` (it builds .cluster/bin/helm) or put helm on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


class CapturingKube:
    """The API as far as Flux.apply uses it: the HelmReleases applied, returned as the API server would
    (a new object at generation 1, no status yet)."""

    def __init__(self) -> None:
        self.applied: list[tuple[dict[str, Any], str]] = []

    async def apply_helm_release(self, body: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        self.applied.append((json.loads(json.dumps(body)), field_manager))
        return {**body, "metadata": {**body["metadata"], "generation": 1}}


def sample_values(**changes: Any) -> dict[str, Any]:
    """The values of the guide's example Tenant (named acme), with `changes` over its spec."""
    spec = yaml.safe_load(SAMPLE_TENANT.read_text())["spec"] | changes
    return reconcile.parse_spec("acme", spec).to_values()


def real_flux(helm: Path, home: Path, **given: Any) -> tuple[Flux, CapturingKube]:
    settings = Settings(helm=str(helm), helm_home=home / "helm", **(FLUX | given))
    kube = CapturingKube()
    return Flux(settings, Helm(settings), cast(Any, kube)), kube


class HelmCli:
    """helm template of the tenant chart as published at `version`, run here apart from the operator."""

    def __init__(self, helm: Path, home: Path, version: str) -> None:
        self.helm, self.home = helm, home
        self.env = {"PATH": os.environ.get("PATH", "")} | {
            f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("DATA", "CONFIG", "CACHE")
        }
        packaged = self.run("package", str(TENANT_CHART), "--version", version, "--destination", str(home))
        assert packaged.returncode == 0, packaged.stderr
        self.archive = home / f"tenant-{version}.tgz"
        assert self.archive.is_file()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.helm), *args], capture_output=True, text=True, env=self.env, check=False, timeout=120
        )

    def template(self, values: Mapping[str, Any]) -> str:
        values_file = self.home / "values.json"
        values_file.write_text(json.dumps(values))
        args = ("template", "acme", str(self.archive), "--namespace", "tenant-acme", "--values")
        rendered = self.run(*args, str(values_file))
        assert rendered.returncode == 0, rendered.stderr
        return rendered.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if isinstance(document, dict)]


def by_kind_and_name(found: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(document["kind"], document["metadata"]["name"]): document for document in found}


def test_the_applied_helm_release_carries_the_policies_the_post_renderer_makes(
    helm_binary: Path, tmp_path: Path
) -> None:
    flux, kube = real_flux(helm_binary, tmp_path)
    values = sample_values()
    status = asyncio.run(flux.apply("acme", "tenant-acme", values, generation=2, applied_hash="sha256:abc"))
    assert status.state == "Installing"
    assert status.applied_hash == "sha256:abc"

    [(body, manager)] = kube.applied
    assert manager == "tenant-operator"
    assert body["metadata"]["annotations"][GENERATION_ANNOTATION] == "2"
    assert body["spec"]["chart"]["spec"]["version"] == chart_version(TENANT_CHART)
    applied = dict(body["spec"]["values"])
    policies = applied.pop(RENDERED_POLICIES)
    assert applied == values, "the values are the spec's, plus the policies"

    cli = HelmCli(helm_binary, tmp_path / "cli", chart_version(TENANT_CHART))
    expected = [doc for doc in documents(render(cli.template(values))) if doc["kind"] == "NetworkPolicy"]
    assert policies == expected
    names = {policy["metadata"]["name"] for policy in policies}
    assert {"default-deny", "allow-dns", "server-to-redis", "ingress-0", "egress-0"} <= names
    assert all(policy["kind"] == "NetworkPolicy" for policy in policies), "no carrier ConfigMap among them"

    # What Flux will install from those values: the post-renderer's output, no carrier (the Redis password
    # aside, which the chart draws at random each time).
    installed = by_kind_and_name(documents(cli.template(body["spec"]["values"])))
    post_rendered = by_kind_and_name(documents(render(cli.template(values))))
    assert ("ConfigMap", "tenant-network-policy") not in installed
    assert set(installed) == set(post_rendered)
    differing = {key for key in installed if installed[key] != post_rendered[key]}
    assert differing <= {("Secret", "redis-auth")}


def test_with_isolation_off_flux_installs_what_the_post_renderer_makes(
    helm_binary: Path, tmp_path: Path
) -> None:
    flux, kube = real_flux(helm_binary, tmp_path, allow_isolation_off=True)
    values = sample_values(networkPolicy={"enabled": False})
    asyncio.run(flux.apply("acme", "tenant-acme", values, generation=2, applied_hash="sha256:abc"))
    [(body, _)] = kube.applied
    assert body["spec"]["values"][RENDERED_POLICIES] == []
    cli = HelmCli(helm_binary, tmp_path / "cli", chart_version(TENANT_CHART))
    installed = by_kind_and_name(documents(cli.template(body["spec"]["values"])))
    post_rendered = by_kind_and_name(documents(render(cli.template(values))))
    assert set(installed) == set(post_rendered), "the carrier ConfigMap would be installed as a ConfigMap"


def test_a_release_over_its_budget_is_refused_and_nothing_is_applied(
    helm_binary: Path, tmp_path: Path
) -> None:
    flux, kube = real_flux(helm_binary, tmp_path)
    spec = yaml.safe_load(SAMPLE_TENANT.read_text())["spec"]
    values = sample_values(server=spec["server"] | {"replicas": 10})
    with pytest.raises(HelmError) as refused:
        asyncio.run(flux.apply("acme", "tenant-acme", values, generation=2, applied_hash="sha256:abc"))
    assert refused.value.reason == "BudgetExceeded"
    assert refused.value.permanent
    assert "resources.cpu.request" in refused.value.message
    assert kube.applied == []


def test_an_image_outside_the_allowed_registries_is_refused_and_nothing_is_applied(
    helm_binary: Path, tmp_path: Path
) -> None:
    flux, kube = real_flux(helm_binary, tmp_path, allowed_registries="registry.example.com/neurallog")
    with pytest.raises(HelmError) as refused:
        asyncio.run(
            flux.apply("acme", "tenant-acme", sample_values(), generation=2, applied_hash="sha256:abc")
        )
    assert refused.value.reason == "ImageNotAllowed"
    assert refused.value.permanent
    assert "registry.example.com/neurallog" in refused.value.message
    assert kube.applied == []


def test_the_chart_is_packaged_once_at_the_version_flux_is_asked_for(
    helm_binary: Path, tmp_path: Path
) -> None:
    flux, _ = real_flux(helm_binary, tmp_path)

    async def twice() -> tuple[Path, Path]:
        return await flux.archive(), await flux.archive()

    first, second = asyncio.run(twice())
    assert first == second == tmp_path / "helm" / "charts" / f"tenant-{chart_version(TENANT_CHART)}.tgz"
    assert first.is_file()


def test_a_forced_apply_asks_flux_to_upgrade(helm_binary: Path, tmp_path: Path) -> None:
    flux, kube = real_flux(helm_binary, tmp_path)
    values = sample_values()
    asyncio.run(flux.apply("acme", "tenant-acme", values, generation=2, applied_hash="h"))
    asyncio.run(flux.apply("acme", "tenant-acme", values, generation=2, applied_hash="h", force=True))
    plain, forced = (body["metadata"]["annotations"] for body, _ in kube.applied)
    assert REQUESTED_AT not in plain and FORCE_AT not in plain
    assert forced[REQUESTED_AT] == forced[FORCE_AT] != ""
