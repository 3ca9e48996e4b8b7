"""The operator's settings: one typed class, read from environment variables prefixed TENANT_OPERATOR_."""

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_PREFIX = "TENANT_OPERATOR_"
REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_CHART = Path("/opt/tenant-operator/charts/tenant")


def default_chart() -> Path:
    """charts/tenant of this checkout when running from the repository, else where the image puts it."""
    repository_chart = REPO_ROOT / "charts" / "tenant"
    return repository_chart if repository_chart.is_dir() else IMAGE_CHART


def default_postrenderer() -> str:
    """The `tenant-postrender` console script installed beside this Python."""
    return str(Path(sys.executable).parent / "tenant-postrender")


def default_helm_home() -> Path:
    """Under $HOME (the image sets HOME=/tmp; a user without a home gets the temporary directory)."""
    return Path(os.environ.get("HOME") or tempfile.gettempdir()) / ".local/share/tenant-operator/helm"


# A Kubernetes label selector: requirements `key`, `!key`, `key=value`, `key==value`, `key!=value`,
# `key in (a,b)`, `key notin (a,b)`, comma-separated (the API server checks the names themselves).
_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_REQUIREMENT = (
    rf"(!?{_LABEL}|{_LABEL}\s*(==|!=|=)\s*{_VALUE}"
    rf"|{_LABEL}\s+(in|notin)\s*\(\s*{_VALUE}(\s*,\s*{_VALUE})*\s*\))"
)
SELECTOR_PATTERN = rf"^$|^\s*{_REQUIREMENT}(\s*,\s*{_REQUIREMENT})*\s*$"

LogLevel = Literal["debug", "info", "warning", "error"]


class Settings(BaseModel):
    """Everything that can be configured; each field `x` is read from TENANT_OPERATOR_X."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    helm: str = Field(default="helm", description="Helm 3 or Helm 4 executable (a path, or a name on PATH).")
    chart: Path = Field(default_factory=default_chart, description="Directory of charts/tenant.")
    postrenderer: str = Field(
        default_factory=default_postrenderer,
        description="The tenant-postrender executable (run by Helm 3, or by the Helm 4 plugin).",
    )
    postrender_plugin: Path = Field(
        default=REPO_ROOT / "postrender",
        description="Directory holding plugin.yaml of the tenant-postrender Helm 4 plugin.",
    )
    helm_home: Path = Field(
        default_factory=default_helm_home,
        description="Data, config and cache of the operator's Helm (Helm 4: the post-renderer plugin too).",
    )
    helm_worker: str = Field(
        default="helm-worker",
        description="The helm-worker executable (operator/helm-worker: Helm 4 as a library in one process) "
        "that installs and upgrades the releases; a name is looked up on PATH, and when it is not there, or "
        "the value is empty, each release runs `helm upgrade --install` of the `helm` executable.",
    )
    helm_timeout: float = Field(default=300, gt=0, description="Seconds one Helm command may take.")
    concurrency: int = Field(
        default=4, ge=1, description="Tenants reconciled (Helm commands run) at the same time."
    )
    api_qps: float = Field(
        default=50,
        gt=0,
        description="Requests per second to the API server, beyond the burst (Kopf's aside); Flux's "
        "controllers default to the same.",
    )
    api_burst: int = Field(default=100, ge=1, description="Requests to the API server allowed at once.")
    health_port: int = Field(default=8080, ge=1, le=65535, description="Port of /healthz.")
    metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="Port of /metrics; 0 turns metrics off."
    )
    log_level: LogLevel = "info"
    log_format: Literal["json", "text"] = "json"
    namespace_poll_seconds: float = Field(
        default=2, gt=0, description="How often deletion checks the namespace."
    )
    secret_recheck_seconds: float = Field(
        default=10, gt=0, description="How soon a missing secretKeyRef Secret is looked for again."
    )
    tenant_role: str = Field(
        default="",
        description="ClusterRole bound in each tenant namespace to the operator's ServiceAccount, before any "
        "Helm call there (the chart's cluster-wide role holds no Secret access); empty: no binding.",
    )
    service_account: str = Field(
        default="",
        pattern=r"^$|^[a-z0-9.-]+/[a-z0-9.-]+$",
        description="The operator's ServiceAccount as namespace/name, the subject of that binding.",
    )
    leader_election_namespace: str = Field(
        default="",
        description="Namespace of the Lease that elects the one replica that acts (the chart sets its own); "
        "empty: no election, for a single operator run by hand.",
    )
    lease_name: str = Field(default="tenant-operator", description="Name of that Lease.")
    watch_label_selector: str = Field(
        default="",
        pattern=SELECTOR_PATTERN,
        description="Only the Tenants this label selector matches are this operator's (as Flux shards its "
        "controllers): operators with selectors that exclude each other split the Tenants between them, e.g. "
        "`neurallog.io/shard=a`, `neurallog.io/shard=b` and `!neurallog.io/shard`; empty: every Tenant.",
    )
    allow_isolation_off: bool = Field(
        default=False,
        description="Whether a Tenant may set networkPolicy.enabled=false (no NetworkPolicy at all); "
        "refused with reason IsolationForbidden when not.",
    )
    allowed_registries: tuple[str, ...] = Field(
        default=(),
        description="Registries (or repository prefixes) the tenants' images must come from, "
        "comma-separated; empty: any. Enforced by the post-renderer.",
    )

    backend: Literal["helm", "flux"] = Field(
        default="helm",
        description="Who installs a tenant's release: `helm` (the operator runs `helm upgrade --install` "
        "through the post-renderer) or `flux` (the operator writes a Flux HelmRelease, which Flux's "
        "helm-controller installs; see flux.py).",
    )
    flux_source_kind: Literal["HelmRepository", "OCIRepository"] = Field(
        default="HelmRepository", description="flux: kind of the Flux source that serves the tenant chart."
    )
    flux_source_name: str = Field(default="", description="flux: name of that source.")
    flux_source_namespace: str = Field(default="", description="flux: namespace of that source.")
    flux_chart: str = Field(default="tenant", description="flux: the chart's name in a HelmRepository.")
    flux_chart_version: str = Field(
        default="",
        description="flux: the chart version the HelmReleases ask for (HelmRepository); empty: the version "
        "of the chart beside the operator followed by +<12 hex digits of its content> (flux.chart_version), "
        "as the project publishes it, so that Flux installs exactly the chart the operator checks.",
    )
    flux_interval: str = Field(
        default="10m",
        pattern=r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$",
        description="flux: how often Flux reconciles each HelmRelease (and corrects drift) on its own.",
    )
    flux_retries: int = Field(
        default=3, ge=0, description="flux: install and upgrade attempts Flux retries (then rolls back)."
    )

    @model_validator(mode="after")
    def _flux_source_given(self) -> "Settings":
        if self.backend == "flux" and not (self.flux_source_name and self.flux_source_namespace):
            raise ValueError(
                "backend flux needs the Flux source of the tenant chart: set "
                "TENANT_OPERATOR_FLUX_SOURCE_NAME and TENANT_OPERATOR_FLUX_SOURCE_NAMESPACE "
                "(operator chart values flux.source)"
            )
        return self

    @field_validator("allowed_registries", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(entry.strip() for entry in value.split(",") if entry.strip())
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """The settings given by TENANT_OPERATOR_* variables, defaults for the others."""
        environ = os.environ if environ is None else environ
        given = {
            name: environ[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in environ
        }
        return cls.model_validate(given)
