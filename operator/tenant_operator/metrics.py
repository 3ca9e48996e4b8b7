"""Prometheus metrics of the operator, served on settings.metrics_port at /metrics."""

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "tenant_operator_reconciles_total", "Reconciliations of Tenants, by outcome.", ["outcome"]
)
RECONCILE_SECONDS = Histogram(
    "tenant_operator_reconcile_duration_seconds",
    "How long a reconciliation of a Tenant took.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
HELM_CALLS = Counter(
    "tenant_operator_helm_calls_total", "Helm commands run, by command and outcome.", ["command", "outcome"]
)
HELM_SECONDS = Histogram(
    "tenant_operator_helm_duration_seconds",
    "How long Helm commands took.",
    ["command"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
API_REQUESTS = Counter(
    "tenant_operator_api_requests_total",
    "Requests of the operator's own API client (kube.Kube, rate-limited; Kopf's watches aside), by function.",
    ["function"],
)
TENANTS = Gauge("tenant_operator_tenants", "Tenants known to the operator, by phase.", ["phase"])
PHASES = ("Pending", "Provisioning", "Running", "Degraded", "Failed", "Terminating")

_phases: dict[str, str] = {}


def serve(port: int) -> None:
    """Serve /metrics (in a thread of its own); port 0 serves nothing."""
    if port:
        start_http_server(port)


@asynccontextmanager
async def helm_call(command: str) -> AsyncIterator[list[str]]:
    """Time a Helm command; the caller appends its outcome to the yielded list."""
    outcome: list[str] = []
    started = time.monotonic()
    try:
        yield outcome
    finally:
        HELM_SECONDS.labels(command).observe(time.monotonic() - started)
        HELM_CALLS.labels(command, outcome[-1] if outcome else "error").inc()


@asynccontextmanager
async def reconcile() -> AsyncIterator[None]:
    """Count and time one reconciliation; an exception is its outcome."""
    started = time.monotonic()
    try:
        yield
    except BaseException as error:
        RECONCILES.labels(type(error).__name__).inc()
        raise
    else:
        RECONCILES.labels("success").inc()
    finally:
        RECONCILE_SECONDS.observe(time.monotonic() - started)


def set_phase(tenant: str, phase: str | None) -> None:
    """Record a tenant's phase (None: the tenant is gone) and update the by-phase gauge."""
    if phase is None:
        _phases.pop(tenant, None)
    else:
        _phases[tenant] = phase
    _publish(_phases.values())


def _publish(phases: Iterable[str]) -> None:
    counts = dict.fromkeys(PHASES, 0)
    for phase in phases:
        counts[phase] = counts.get(phase, 0) + 1
    for phase, count in counts.items():
        TENANTS.labels(phase).set(count)
