"""Tenant.status from what is observed: pure functions of the workloads, their pods and the release.

Workloads are raw Kubernetes objects (JSON dicts) of the tenant's namespace; nothing here calls the cluster.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tenant_operator.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    EnvVar,
    Phase,
    ReleaseStatus,
    TenantStatus,
    WorkloadStatus,
)

Object = Mapping[str, Any]

SERVER_APP = "neurallog-server"
REDIS_APP = "redis"
SERVER_DEPLOYMENT = "neurallog-server"
REDIS_STATEFULSET = "redis"

# Container states from which a pod does not recover by waiting: someone has to change something.
FAILING_WAIT_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def _get(obj: Object | None, *path: str, default: Any = None) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def pod_problem(pod: Object) -> str | None:
    """Why a pod cannot become ready on its own, or None."""
    name = _get(pod, "metadata", "name", default="?")
    statuses = [
        *_get(pod, "status", "initContainerStatuses", default=[]),
        *_get(pod, "status", "containerStatuses", default=[]),
    ]
    for container in statuses:
        waiting = _get(container, "state", "waiting", default={})
        reason = waiting.get("reason", "")
        if reason in FAILING_WAIT_REASONS:
            detail = waiting.get("message", "")
            image = container.get("image", "")
            text = f"pod {name}: container {container.get('name', '?')} ({image}) is {reason}"
            return f"{text}: {detail}" if detail else text
    for condition in _get(pod, "status", "conditions", default=[]):
        unschedulable = condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable"
        # A volume claim that is being bound makes a pod unschedulable for a moment: not a problem.
        binding = "unbound immediate persistentvolumeclaims" in condition.get("message", "").lower()
        if unschedulable and condition.get("status") == "False" and not binding:
            return f"pod {name} cannot be scheduled: {condition.get('message', '')}".rstrip(": ")
    if _get(pod, "status", "phase") == "Failed":
        return f"pod {name} failed: {_get(pod, 'status', 'message', default='')}".rstrip(": ")
    return None


def _workload_problem(workload: Object) -> str | None:
    for condition in _get(workload, "status", "conditions", default=[]):
        kind, status = condition.get("type"), condition.get("status")
        if (kind == "ReplicaFailure" and status == "True") or (
            kind == "Progressing"
            and status == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return str(condition.get("message") or condition.get("reason") or kind)
    return None


def workload_status(title: str, workload: Object | None, pods: Iterable[Object]) -> WorkloadStatus:
    """How a Deployment or StatefulSet is doing; `title` (Server, Redis) starts the messages."""
    if workload is None:
        return WorkloadStatus(phase="Pending", message=f"{title} is not created yet")
    desired = int(_get(workload, "spec", "replicas", default=1))
    ready = int(_get(workload, "status", "readyReplicas", default=0))
    updated = int(_get(workload, "status", "updatedReplicas", default=0))
    observed = int(_get(workload, "status", "observedGeneration", default=0))
    generation = int(_get(workload, "metadata", "generation", default=0))
    problems = [problem for problem in map(pod_problem, pods) if problem]
    workload_problem = _workload_problem(workload)
    if workload_problem:
        problems.insert(0, workload_problem)
    counts = {"ready_replicas": ready, "total_replicas": desired}
    if problems:
        phase = "Failed" if ready == 0 else "Degraded"
        return WorkloadStatus(phase=phase, message=f"{title}: " + "; ".join(problems[:3]), **counts)
    if observed >= generation and ready >= desired and updated >= desired:
        message = f"{title} is running" if desired else f"{title} is scaled to zero"
        return WorkloadStatus(phase="Running", message=message, **counts)
    return WorkloadStatus(
        phase="Provisioning", message=f"{title}: {min(ready, desired)}/{desired} replicas ready", **counts
    )


def pods_of(app: str, pods: Iterable[Object]) -> list[Object]:
    """The pods labelled app=<app>."""
    return [pod for pod in pods if _get(pod, "metadata", "labels", "app") == app]


def referenced_secrets(env: Iterable[EnvVar]) -> dict[str, list[tuple[str, str]]]:
    """Secret name -> [(key, variable)] for every required secretKeyRef of the server's environment."""
    references: dict[str, list[tuple[str, str]]] = {}
    for entry in env:
        selector = entry.value_from.secret_key_ref if entry.value_from else None
        if selector is not None and not selector.optional:
            references.setdefault(selector.name, []).append((selector.key, entry.name))
    return references


def missing_secret_refs(
    env: Iterable[EnvVar], namespace: str, secret_keys: Mapping[str, frozenset[str] | None]
) -> list[str]:
    """What the server's environment needs that the namespace lacks (secret_keys: name -> keys, or None when
    the Secret does not exist; a Secret left out is unknown and counts as present)."""
    missing = []
    for secret, wanted in referenced_secrets(env).items():
        if secret not in secret_keys:
            continue
        keys = secret_keys[secret]
        for key, variable in wanted:
            if keys is None:
                missing.append(
                    f"{variable} needs Secret {secret} (key {key}), which does not exist in {namespace}"
                )
            elif key not in keys:
                missing.append(
                    f"{variable} needs key {key} of Secret {secret} in {namespace}, which it lacks"
                )
    return missing


@dataclass(frozen=True)
class Observation:
    """Everything the tenant's status is made from."""

    namespace: str
    generation: int
    observed_generation: int
    deleting: bool
    release: ReleaseStatus
    server: WorkloadStatus
    redis: WorkloadStatus
    missing_refs: Sequence[str] = ()
    isolated: bool = True  # spec.networkPolicy.enabled
    handled_request: str | None = None  # the reconcile annotation's value being acted on, if one is


def _phase(seen: Observation) -> tuple[Phase, str, str]:
    """The phase, and the reason and message that explain it."""
    workloads = (seen.server, seen.redis)
    if seen.deleting:
        return "Terminating", "Terminating", "The release and the namespace are being deleted"
    if seen.release.state == "Failed":
        return "Failed", seen.release.reason or "ReleaseFailed", seen.release.message
    if seen.release.state == "Pending" and seen.release.reason:
        return "Pending", seen.release.reason, seen.release.message
    if seen.missing_refs:
        return "Degraded", "SecretNotFound", "; ".join(seen.missing_refs)
    broken = [workload.message for workload in workloads if workload.phase in ("Failed", "Degraded")]
    if broken:
        return "Degraded", "WorkloadsDegraded", "; ".join(broken)
    # An upgrade of a release that is there (revision > 0) leaves the workloads to say how the tenant is: a
    # chart or spec change does not make a running tenant unready before anything changed.
    if seen.release.state != "Deployed" and not (
        seen.release.state == "Installing" and seen.release.revision
    ):
        message = seen.release.message or "Installing the tenant's release"
        return "Provisioning", "Installing", message
    if all(workload.phase == "Running" for workload in workloads):
        return "Running", "AllWorkloadsReady", f"{seen.server.message}; {seen.redis.message}"
    waiting = "; ".join(workload.message for workload in workloads if workload.phase != "Running")
    return "Provisioning", "WaitingForWorkloads", waiting


# Pending for these reasons waits for someone (an administrator must hand the namespace over): stalled, not
# reconciling. Any other Pending reason (Accepted: just seen) is work under way.
STALLED_PENDING_REASONS = frozenset({"NamespaceNotOwned"})


@dataclass(frozen=True)
class Health:
    """The kstatus conditions' truths: why the tenant is reconciling or stalled (at most one of the two)."""

    reconciling: tuple[str, str] | None  # (reason, message)
    stalled: tuple[str, str] | None


def health(seen: Observation, phase: Phase, reason: str, message: str) -> Health:
    """Reconciling and Stalled as kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) reads them: Reconciling
    True -> InProgress, Stalled True -> Failed, else Ready True -> Current and Ready False -> InProgress.

    kstatus takes the first of the two that it finds True, so they are never True together. Work under way is
    Reconciling: provisioning, deleting, just accepted, a release being installed or upgraded (which may be
    what fixes a degraded tenant), a generation not reconciled yet (which may fix a failed one). A tenant that
    waits for someone to change something is Stalled: Failed, Degraded, Pending for an administrator. The
    backend (Helm or Flux) only shows through `seen.release`."""
    release = seen.release
    waiting_for_someone = phase in ("Failed", "Degraded") or (
        phase == "Pending" and reason in STALLED_PENDING_REASONS
    )
    if phase in ("Terminating", "Provisioning", "Pending") and not waiting_for_someone:
        return Health(reconciling=(reason, message), stalled=None)
    if release.state == "Installing":
        text = release.message or "Installing the tenant's release"
        return Health(reconciling=(release.reason or "Installing", text), stalled=None)
    if seen.generation != seen.observed_generation:
        text = f"generation {seen.generation} is not reconciled yet (observed: {seen.observed_generation})"
        return Health(reconciling=("LatestGenerationNotObserved", text), stalled=None)
    if waiting_for_someone:
        return Health(reconciling=None, stalled=(reason, message))
    return Health(reconciling=None, stalled=None)


def tenant_status(seen: Observation, previous: TenantStatus, now: datetime) -> TenantStatus:
    """The whole status: phase, workloads and the conditions Ready, Reconciling and Stalled (kstatus's: see
    `health`), Degraded, Isolated and Drifted, each written True or False, never left out."""
    phase, reason, message = _phase(seen)
    kstatus = health(seen, phase, reason, message)

    def condition(kind: ConditionType, status: ConditionStatus, why: str, text: str) -> Condition:
        before = next((known for known in previous.conditions if known.type == kind), None)
        changed_at = before.last_transition_time if before is not None and before.status == status else now
        return Condition(
            type=kind,
            status=status,
            reason=why,
            message=text,
            last_transition_time=changed_at,
            observed_generation=seen.observed_generation,
        )

    def truth(kind: ConditionType, cause: tuple[str, str] | None, otherwise: str) -> Condition:
        return condition(kind, "True", *cause) if cause else condition(kind, "False", otherwise, "")

    degraded = phase in ("Degraded", "Failed")
    stalled_reason = kstatus.stalled[0] if kstatus.stalled else ""
    conditions = [
        condition("Ready", "True" if phase == "Running" else "False", reason, message),
        truth("Reconciling", kstatus.reconciling, stalled_reason or "Reconciled"),
        truth("Stalled", kstatus.stalled, "AsExpected"),
        condition(
            "Degraded",
            "True" if degraded else "False",
            reason if degraded else "AsExpected",
            message if degraded else "",
        ),
        condition(
            "Isolated",
            "True" if seen.isolated else "False",
            "NetworkPoliciesEnabled" if seen.isolated else "NetworkPoliciesDisabled",
            "default-deny and the tenant's rules apply"
            if seen.isolated
            else "spec.networkPolicy.enabled is false: no NetworkPolicy, open to every namespace",
        ),
        # From the moment drift is seen (drift.py) until the release that puts it back is installed.
        condition("Drifted", "True", "DriftDetected", seen.release.message)
        if seen.release.state != "Deployed" and seen.release.reason == "DriftDetected"
        else condition("Drifted", "False", "InSync", ""),
    ]
    return TenantStatus(
        phase=phase,
        namespace=seen.namespace,
        server_status=seen.server,
        redis_status=seen.redis,
        observed_generation=seen.observed_generation,
        conditions=conditions,
        release=seen.release,
        last_handled_reconcile_at=seen.handled_request or previous.last_handled_reconcile_at,
    )


def status_patch(status: TenantStatus) -> dict[str, Any]:
    """The status in its wire form, for a merge patch of the status subresource."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def same_status(left: TenantStatus, right: TenantStatus) -> bool:
    """Whether two statuses say the same thing (transition times aside), so that no patch is needed."""

    def essence(status: TenantStatus) -> dict[str, Any]:
        dumped = status_patch(status)
        for condition in dumped.get("conditions", []):
            condition.pop("lastTransitionTime", None)
        return dumped

    return essence(left) == essence(right)
