"""Does the release fit the tenant's budget?

The ResourceQuota admits pods one at a time, so a release that overflows it installs "successfully" and
then leaves pods that never get created (the ReplicaSet retries forever with `exceeded quota` events).
Adding up the steady state here (replicas x what each pod is charged) refuses such a release before anything
is applied. Hooks are not counted: they come and go (a `helm test` pod is charged only while it runs, one
at a time), and counting them as if they ran forever would refuse a release that just fits its budget.
"""

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
_SHORT_FORMS = {"cpu": "requests.cpu", "memory": "requests.memory"}
_VERBS = {"requests": "request", "limits": "are limited to"}
_NAMES = {
    "requests.cpu": "CPU request",
    "limits.cpu": "CPU limit",
    "requests.memory": "memory request",
    "limits.memory": "memory limit",
}


class Charge(NamedTuple):
    """What one object costs against one quota key."""

    subject: str
    pods: int
    each: Decimal

    @property
    def total(self) -> Decimal:
        return self.pods * self.each


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
    """What each object of the release costs against the quota key (`requests.cpu`, `requests.storage`...)."""
    section, _, resource = key.partition(".")
    found: list[Charge] = []
    for manifest in manifests:
        if resource == "storage":
            found += _storage_charges(manifest)
            continue
        template = pod_template(manifest)
        if template is not None:
            found.append(
                Charge(subject_of(manifest), template.replicas, pod_charge(template.spec, section, resource))
            )
    return [charge for charge in found if charge.total > 0]


def check_budget(quota: Manifest, manifests: list[Manifest]) -> list[Violation]:
    """Every quota key the release exceeds, with the numbers that add up to it."""
    subject = subject_of(quota)
    spec = quota.get("spec")
    hard = spec.get("hard") if isinstance(spec, dict) else None
    violations = []
    for written_key, written_value in (hard if isinstance(hard, dict) else {}).items():
        key = _SHORT_FORMS.get(written_key, written_key)
        if key not in TENANT_FIELDS:
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
        needed = sum((charge.total for charge in costs), Decimal(0))
        if needed <= allowed:
            continue
        section, _, resource = key.partition(".")
        show = format_cpu if resource == "cpu" else format_bytes
        verb = "claim" if resource == "storage" else _VERBS[section]
        lower = "the storage each claims" if resource == "storage" else f"the per-pod {_NAMES[key]}"
        breakdown = "; ".join(
            f"{charge.subject} {charge.pods} x {show(charge.each)} = {show(charge.total)}" for charge in costs
        )
        violations.append(
            Violation(
                subject,
                f"spec.hard.{written_key}",
                f"the workloads {verb} {show(needed)} in total but the quota allows {show(allowed)} "
                f"({breakdown})",
                f"lower replicas or {lower}, or raise the tenant's {TENANT_FIELDS[key]} "
                f"to at least {show(needed)}",
            )
        )
    return violations
