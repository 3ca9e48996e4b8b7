"""Does the release fit the tenant's budget, and can it roll out within it?

The ResourceQuota admits pods one at a time, so a release that overflows it installs "successfully" and
then leaves pods that never get created (the ReplicaSet retries forever with `exceeded quota` events).
Adding up what the workloads need here (replicas x what each pod is charged) refuses such a release before
anything is applied.

A rolling update runs more pods than the replicas: a Deployment starts up to maxSurge new pods before it
stops old ones. A release that fits only without them installs, and then every later rollout stalls: the
quota refuses the surge pod, and with maxUnavailable 0 (what Kubernetes' 25% default resolves to for up to
three replicas) no old pod is stopped to make room. So the budget counts the surge of the strategy each
workload renders, which is the one that runs: what is checked is what a rollout needs, and an accepted
release can always roll out. (The quota also charges an old pod while it shuts down, so with more than one
replica a new pod may be refused for those seconds; the ReplicaSet retries and the rollout goes on once the
old pod is gone: a delay, not a stall.)

Hooks are not counted: they come and go (a `helm test` pod is charged only while it runs, one at a time),
and counting them as if they ran forever would refuse a release that just fits its budget.
"""

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from tenant_postrender.quantity import format_bytes, format_cpu, parse_quantity
from tenant_postrender.stream import Manifest, subject_of
from tenant_postrender.violations import Violation
from tenant_postrender.workloads import containers, pod_template

QUOTA_NAME = "tenant-quota"

# Quota key -> the Tenant field that sets it, named in the fix. `cpu` and `memory` are the API's short forms
# of the request keys.
TENANT_FIELDS = {
    "requests.cpu": "resources.cpu.request",
    "limits.cpu": "resources.cpu.limit",
    "requests.memory": "resources.memory.request",
    "limits.memory": "resources.memory.limit",
    "requests.storage": "resources.storage.limit",
}
# The quota's count of pods: not a Tenant field, but a quota that sets it limits the rollout's pods too.
PODS = "pods"
_SHORT_FORMS = {"cpu": "requests.cpu", "memory": "requests.memory", "count/pods": PODS}
_VERBS = {"requests": "request", "limits": "are limited to"}
_NAMES = {
    "requests.cpu": "CPU request",
    "limits.cpu": "CPU limit",
    "requests.memory": "memory request",
    "limits.memory": "memory limit",
}

# kind -> (the spec field of its update strategy, the maxSurge the API server defaults a rolling update to).
# A rolling update runs at most replicas + maxSurge pods (k8s.io/kubernetes pkg/controller/deployment/util,
# NewRSNewReplicas), maxSurge as a number or a percentage of the replicas rounded up (apimachinery intstr,
# GetScaledValueFromIntOrPercent). Every other kind adds nothing: a StatefulSet has no maxSurge, it deletes
# a pod and creates its successor under the same name once the old one is gone (pkg/controller/statefulset),
# and Recreate or OnDelete stop old pods before new ones start.
_ROLLING_UPDATES: dict[str, tuple[str, int | str]] = {
    "Deployment": ("strategy", "25%"),
    "DaemonSet": ("updateStrategy", 0),
}
_PERCENT = re.compile(r"[0-9]+%")


class Charge(NamedTuple):
    """What one object costs against one quota key: `pods` running, `surge` more during a rollout."""

    subject: str
    pods: int
    each: Decimal
    surge: int = 0

    @property
    def total(self) -> Decimal:
        """What the running pods cost."""
        return self.pods * self.each

    @property
    def rollout_total(self) -> Decimal:
        """What the pods cost during a rollout, its surge pods included."""
        return (self.pods + self.surge) * self.each


def surge_pods(manifest: Manifest, replicas: int) -> int:
    """How many pods a rollout of the workload runs beside its `replicas` pods (0 when it rolls without)."""
    kind = manifest.get("kind")
    if not isinstance(kind, str) or kind not in _ROLLING_UPDATES:
        return 0
    field, default = _ROLLING_UPDATES[kind]
    spec = manifest.get("spec")
    strategy = spec.get(field) if isinstance(spec, dict) else None
    strategy = strategy if isinstance(strategy, dict) else {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    rolling = strategy.get("rollingUpdate")
    written = rolling.get("maxSurge") if isinstance(rolling, dict) else None
    surge = _scaled(written, replicas)
    if surge is None:
        # Absent, or invalid (then the API server refuses the object): the default.
        surge = _scaled(default, replicas) or 0
    # New pods replace old ones: a rollout never runs more new pods than the replicas.
    return max(0, min(surge, replicas))


def _scaled(value: object, replicas: int) -> int | None:
    """maxSurge in pods: an integer as written, a percentage of the replicas rounded up; None if invalid."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _PERCENT.fullmatch(value):
        return -(-int(value[:-1]) * replicas // 100)
    return None


def _amount(resources: object, section: str, resource: str) -> Decimal:
    # Missing or malformed amounts are reported by the container checks; here they cost nothing.
    values = resources.get(section) if isinstance(resources, dict) else None
    value = values.get(resource) if isinstance(values, dict) else None
    try:
        return parse_quantity(value) if value is not None else Decimal(0)
    except ValueError:
        return Decimal(0)


def pod_charge(spec: dict[str, Any], section: str, resource: str) -> Decimal:
    """What the quota charges one pod: its containers together, or its largest init container if more
    (init containers run one at a time, before the others)."""
    regular, init = Decimal(0), Decimal(0)
    for field, container in containers(spec):
        amount = _amount(container.get("resources"), section, resource)
        if field.startswith("initContainers"):
            init = max(init, amount)
        else:
            regular += amount
    return max(regular, init)


def _storage_charges(manifest: Manifest) -> list[Charge]:
    subject = subject_of(manifest)
    spec = manifest.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    if manifest.get("kind") == "PersistentVolumeClaim":
        return [Charge(subject, 1, _amount(spec.get("resources"), "requests", "storage"))]
    claims = spec.get("volumeClaimTemplates") if manifest.get("kind") == "StatefulSet" else None
    template = pod_template(manifest)
    if not isinstance(claims, list) or template is None:
        return []
    each = sum(
        (
            _amount(claim["spec"].get("resources"), "requests", "storage")
            for claim in claims
            if isinstance(claim, dict) and isinstance(claim.get("spec"), dict)
        ),
        Decimal(0),
    )
    return [Charge(subject, template.replicas, each)]


def charges(manifests: list[Manifest], key: str) -> list[Charge]:
    """What each object of the release costs against the quota key (`requests.cpu`, `requests.storage`,
    `pods`...), running and during a rollout. Volume claims do not surge: a Deployment's pods share theirs."""
    section, _, resource = key.partition(".")
    found: list[Charge] = []
    for manifest in manifests:
        if resource == "storage":
            found += _storage_charges(manifest)
            continue
        template = pod_template(manifest)
        if template is not None:
            each = Decimal(1) if key == PODS else pod_charge(template.spec, section, resource)
            surge = surge_pods(manifest, template.replicas)
            found.append(Charge(subject_of(manifest), template.replicas, each, surge))
    return [charge for charge in found if charge.rollout_total > 0]


def _count(amount: Decimal) -> str:
    return str(int(amount))


def _breakdown(costs: list[Charge], show: Callable[[Decimal], str]) -> str:
    """`Deployment/neurallog-server (2 + 1 surge) x 500m = 1500m; StatefulSet/redis 1 x 200m = 200m`."""
    described = []
    for charge in costs:
        pods = f"({charge.pods} + {charge.surge} surge)" if charge.surge else str(charge.pods)
        described.append(f"{charge.subject} {pods} x {show(charge.each)} = {show(charge.rollout_total)}")
    return "; ".join(described)


def _exceeded(written_key: str, key: str, allowed: Decimal, costs: list[Charge]) -> tuple[str, str]:
    """(problem, fix) of a quota key the workloads exceed, with the numbers."""
    section, _, resource = key.partition(".")
    show = _count if key == PODS else format_cpu if resource == "cpu" else format_bytes
    needed = sum((charge.rollout_total for charge in costs), Decimal(0))
    running = sum((charge.total for charge in costs), Decimal(0))
    extra_pods = sum(charge.surge for charge in costs)
    if key == PODS:
        verb, what = "run", f"{_count(needed)} pods"
        fix = f"lower replicas, or raise spec.hard.{written_key} to at least {_count(needed)}"
    else:
        verb = "claim" if resource == "storage" else _VERBS[section]
        what = show(needed)
        lower = "the storage each claims" if resource == "storage" else f"the per-pod {_NAMES[key]}"
        fix = f"lower replicas or {lower}, or raise the tenant's {TENANT_FIELDS[key]} to at least {what}"
    if not extra_pods:
        return (
            f"the workloads {verb} {what} in total but the quota allows {show(allowed)} "
            f"({_breakdown(costs, show)})",
            fix,
        )
    plural = "pod" if extra_pods == 1 else "pods"
    return (
        f"the workloads {verb} {what} during a rollout but the quota allows {show(allowed)}: "
        f"{show(running)} for the running pods and {show(needed - running)} for the {extra_pods} extra "
        f"{plural} a rolling update starts before it stops old ones ({_breakdown(costs, show)})",
        fix,
    )


def check_budget(quota: Manifest, manifests: list[Manifest]) -> list[Violation]:
    """Every quota key the release exceeds, running or during a rollout, with the numbers behind it."""
    subject = subject_of(quota)
    spec = quota.get("spec")
    hard = spec.get("hard") if isinstance(spec, dict) else None
    violations = []
    for written_key, written_value in (hard if isinstance(hard, dict) else {}).items():
        key = _SHORT_FORMS.get(written_key, written_key)
        if key not in TENANT_FIELDS and key != PODS:
            continue
        try:
            allowed = parse_quantity(written_value)
        except ValueError:
            violations.append(
                Violation(
                    subject,
                    f"spec.hard.{written_key}",
                    f"{written_value!r} is not a quantity",
                    "write a Kubernetes quantity such as 2, 500m or 4Gi",
                )
            )
            continue
        costs = charges(manifests, key)
        if sum((charge.rollout_total for charge in costs), Decimal(0)) <= allowed:
            continue
        problem, fix = _exceeded(written_key, key, allowed, costs)
        violations.append(Violation(subject, f"spec.hard.{written_key}", problem, fix))
    return violations
