"""The flux backend: each Tenant becomes a Flux HelmRelease (helm.toolkit.fluxcd.io/v2) named after it in
its namespace, which Flux's helm-controller installs; the HelmRelease's status becomes the Tenant's release
status.

Flux runs no exec post-renderer, so the post-renderer's code runs here first, the one source of the tenant's
policies and checks in both backends: the release is rendered with `helm template` (from the chart packaged
at the very version the HelmRelease asks Flux for) and passed through `tenant_postrender.render`; on any
violation no HelmRelease is written or changed and the Tenant is Failed with the list. The NetworkPolicies it
computed reach the chart as the value `renderedNetworkPolicies`, which the chart writes out verbatim: they
belong to the release like its other objects (pruned with it, covered by Flux's drift detection).

A HelmRelease carries the Tenant generation and the digest it was written for (annotations), so that its
status speaks for the Tenant only while it holds the Tenant's current spec.
"""

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from tenant_operator.api import ReleaseStatus
from tenant_operator.kube import Kube
from tenant_operator.release import CHART_SOURCES, Helm, HelmError, fingerprint, redact, refusal
from tenant_operator.schema import RENDERED_POLICIES
from tenant_operator.settings import Settings
from tenant_postrender.render import render
from tenant_postrender.violations import ValidationFailed

logger = logging.getLogger(__name__)

API_VERSION = "helm.toolkit.fluxcd.io/v2"
KIND = "HelmRelease"
FIELD_MANAGER = "tenant-operator"
GENERATION_ANNOTATION = "neurallog.io/tenant-generation"
HASH_ANNOTATION = "neurallog.io/applied-hash"
# Flux's annotations: reconcile now; with forceAt (of the same value) also upgrade when nothing changed.
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
FORCE_AT = "reconcile.fluxcd.io/forceAt"


def chart_version(chart: Path) -> str:
    """The version under which a chart directory is published for Flux: its Chart.yaml version and, as build
    metadata, 12 hex digits of its content (what shapes manifests), so that any change is a new version."""
    version = yaml.safe_load((chart / "Chart.yaml").read_text())["version"]
    return f"{version}+{fingerprint([(chart, CHART_SOURCES)])[:12]}"


@dataclass(frozen=True)
class ChartSource:
    """Where Flux gets the tenant chart."""

    kind: str  # HelmRepository or OCIRepository
    name: str
    namespace: str
    chart: str
    version: str

    @classmethod
    def of(cls, settings: Settings) -> "ChartSource":
        return cls(
            kind=settings.flux_source_kind,
            name=settings.flux_source_name,
            namespace=settings.flux_source_namespace,
            chart=settings.flux_chart,
            version=settings.flux_chart_version or chart_version(settings.chart),
        )

    def chart_fields(self, interval: str) -> dict[str, Any]:
        """The HelmRelease's `chart` (a HelmRepository's chart at our version) or `chartRef` (an
        OCIRepository, whose own ref chooses the version)."""
        reference = {"kind": self.kind, "name": self.name, "namespace": self.namespace}
        if self.kind == "OCIRepository":
            return {"chartRef": reference}
        spec = {"chart": self.chart, "version": self.version, "sourceRef": reference, "interval": interval}
        return {"chart": {"spec": spec}}


def helm_release(
    name: str,
    namespace: str,
    values: Mapping[str, Any],
    source: ChartSource,
    settings: Settings,
    *,
    generation: int,
    applied_hash: str,
    force_at: str = "",
) -> dict[str, Any]:
    """The HelmRelease of a tenant: release `name` in its namespace, no wait (the Tenant's status follows the
    workloads), remediation by retries and a rollback of a failed upgrade, Flux's drift detection on."""
    annotations = {GENERATION_ANNOTATION: str(generation), HASH_ANNOTATION: applied_hash}
    if force_at:
        annotations |= {REQUESTED_AT: force_at, FORCE_AT: force_at}
    retries = settings.flux_retries
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "neurallog",
                "app.kubernetes.io/managed-by": "tenant-operator",
                "neurallog.io/tenant": name,
            },
            "annotations": annotations,
        },
        "spec": {
            "releaseName": name,
            "interval": settings.flux_interval,
            **source.chart_fields(settings.flux_interval),
            "timeout": f"{int(settings.helm_timeout)}s",
            "maxHistory": 5,
            "install": {"disableWait": True, "remediation": {"retries": retries}},
            "upgrade": {
                "disableWait": True,
                "cleanupOnFail": True,
                "remediation": {"retries": retries, "remediateLastFailure": True, "strategy": "rollback"},
            },
            "driftDetection": {"mode": "enabled"},
            "values": dict(values),
        },
    }


def tenant_generation(helm_release: Mapping[str, Any]) -> int | None:
    """The Tenant generation a HelmRelease was written for (None: not written by this operator)."""
    annotations = helm_release.get("metadata", {}).get("annotations") or {}
    try:
        return int(annotations[GENERATION_ANNOTATION])
    except (KeyError, ValueError):
        return None


def _conditions(helm_release: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found = (helm_release.get("status") or {}).get("conditions") or []
    return {str(condition.get("type")): condition for condition in found}


def release_status(helm_release: Mapping[str, Any]) -> ReleaseStatus:
    """What a HelmRelease says of the release: Deployed once Flux is Ready for the HelmRelease's current
    generation, Failed when Flux stalled (retries exhausted and the like: a change is needed), Installing
    otherwise, with Flux's own reason and message."""
    metadata, spec = helm_release.get("metadata", {}), helm_release.get("spec", {})
    status = helm_release.get("status") or {}
    history = status.get("history") or [{}]
    latest = history[0]
    known = {
        "name": str(spec.get("releaseName") or metadata.get("name", "")),
        "revision": int(latest.get("version") or 0),
        "chart_version": str(latest.get("chartVersion") or ""),
        "applied_hash": str((metadata.get("annotations") or {}).get(HASH_ANNOTATION, "")),
    }
    conditions = _conditions(helm_release)
    annotations = metadata.get("annotations") or {}
    # Current: Flux has handled this generation and the last reconciliation (and forced upgrade) asked for.
    asked = [
        (annotations.get(REQUESTED_AT), status.get("lastHandledReconcileAt")),
        (annotations.get(FORCE_AT), status.get("lastHandledForceAt")),
    ]
    current = status.get("observedGeneration") == metadata.get("generation") and all(
        handled == request for request, handled in asked if request
    )
    ready, stalled = conditions.get("Ready", {}), conditions.get("Stalled", {})

    def text(condition: Mapping[str, Any], default: str) -> str:
        return redact(str(condition.get("message") or default))

    if current and stalled.get("status") == "True":
        reason = str(stalled.get("reason") or "Stalled")
        return ReleaseStatus(state="Failed", reason=reason, message=text(stalled, "Flux stalled"), **known)
    if current and ready.get("status") == "True":
        return ReleaseStatus(state="Deployed", **known)
    waiting = "waiting for Flux to install the HelmRelease"
    if not current:  # what Flux says is of an older spec or request
        return ReleaseStatus(state="Installing", message=waiting, **known)
    reason = str(ready.get("reason") or "") if ready.get("status") == "False" else ""
    return ReleaseStatus(state="Installing", reason=reason, message=text(ready, waiting), **known)


class Flux:
    """The flux backend of one operator: renders and checks a tenant's release, writes its HelmRelease."""

    def __init__(self, settings: Settings, helm: Helm, kube: Kube) -> None:
        self.settings = settings
        self.helm = helm
        self.kube = kube
        self.source = ChartSource.of(settings)
        # What the HelmReleases are made of besides the values: a change writes every tenant's again.
        shape = {
            "chart": helm.chart_fingerprint,
            "source": asdict(self.source),
            "interval": settings.flux_interval,
            "retries": settings.flux_retries,
            "timeout": settings.helm_timeout,
        }
        self.fingerprint = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
        self._archive: Path | None = None
        self._packaging = asyncio.Lock()

    async def archive(self) -> Path:
        """The operator's chart packaged at the version Flux is asked for (once), so that the render checked
        here is of the same chart, labels included, that Flux installs."""
        async with self._packaging:
            if self._archive is None or not self._archive.is_file():
                destination = self.settings.helm_home / "charts"
                self._archive = await self.helm.package(self.settings.chart, self.source.version, destination)
            return self._archive

    async def policies(self, name: str, namespace: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The tenant's NetworkPolicies, as the post-renderer computes them from a render of its release;
        HelmError (permanent) listing every violation when the post-renderer refuses the release."""
        rendered = await self.helm.template(name, namespace, await self.archive(), values)
        try:
            checked = await asyncio.to_thread(
                render, rendered, allowed_registries=self.settings.allowed_registries
            )
        except ValidationFailed as failure:
            raise refusal(failure.report()) from None
        documents = [document for document in yaml.safe_load_all(checked) if isinstance(document, dict)]
        return [document for document in documents if document.get("kind") == "NetworkPolicy"]

    async def apply(
        self,
        name: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        generation: int,
        applied_hash: str,
        force: bool = False,
    ) -> ReleaseStatus:
        """Check the release, then write its HelmRelease (server-side apply); `force` asks Flux for an upgrade
        even when nothing changed (to put drift back). The release status that the HelmRelease says now."""
        policies = await self.policies(name, namespace, values)
        body = helm_release(
            name,
            namespace,
            {**values, RENDERED_POLICIES: policies},
            self.source,
            self.settings,
            generation=generation,
            applied_hash=applied_hash,
            force_at=datetime.now(UTC).isoformat() if force else "",
        )
        try:
            applied = await self.kube.apply_helm_release(body, FIELD_MANAGER)
        except Exception as error:
            raise HelmError("HelmReleaseNotWritten", redact(str(error)), permanent=False) from None
        return release_status(applied)


async def observe_generation(kube: Kube, namespace: str, name: str, generation: int) -> None:
    """A new Tenant generation that changes nothing in the release: its HelmRelease now speaks for it (Flux
    does nothing for an annotation)."""
    patch = {"metadata": {"annotations": {GENERATION_ANNOTATION: str(generation)}}}
    await kube.patch_helm_release(namespace, name, patch, FIELD_MANAGER)


async def hand_back(kube: Kube, namespace: str, name: str) -> bool:
    """Detach a tenant's release from the HelmRelease that the flux backend wrote, for the helm backend to
    carry on with (a switch of backends): suspended (Flux then uninstalls nothing), its finalizer dropped, and
    deleted. The release and its objects stay as they are. False when there was no HelmRelease."""
    try:
        if await kube.get_helm_release(namespace, name) is None:
            return False
    except ApiException as error:
        if error.status != 403:
            raise
        # Not readable here (an operator chart from before the flux backend): there is none of ours.
        logger.debug("HelmReleases of %s are not readable: %s", namespace, error.reason)
        return False
    detach = {"spec": {"suspend": True}, "metadata": {"finalizers": None}}
    await kube.patch_helm_release(namespace, name, detach, FIELD_MANAGER)
    await kube.delete_helm_release(namespace, name)
    logger.info("HelmRelease %s/%s handed its release back to Helm", namespace, name)
    return True
