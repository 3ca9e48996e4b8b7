"""Checks every object must pass before it reaches a tenant namespace.

They restate the Pod Security `restricted` profile the namespace enforces, plus what the tenant contract adds
(requests and limits everywhere, valid and allowed images, one value per env name, the recommended labels).
Checking here rather than waiting for admission means the user sees every problem at once, before Helm has
applied half a release.
"""

import re
from collections import Counter
from collections.abc import Collection
from typing import Any

from tenant_postrender.quantity import parse_quantity
from tenant_postrender.stream import Manifest, labels_of, subject_of
from tenant_postrender.violations import Violation
from tenant_postrender.workloads import PodTemplate, containers, pod_template

# Helm's recommended labels (helm.sh/docs chart_best_practices/labels) on every object, so that
# `kubectl get all -l app.kubernetes.io/instance=<tenant>` finds the whole release; pods also say what they
# are and what they belong to, which the tenant's selectors and dashboards use.
OBJECT_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
POD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
)
RESOURCES = ("cpu", "memory")
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
SECCOMP_TYPES = ("RuntimeDefault", "Localhost")

# The grammar of a container image reference (distribution/reference): [domain[:port]/]path[:tag][@digest].
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE = re.compile(
    rf"(?:(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?/)?"
    rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def image_repository(image: str) -> str:
    """The fully qualified repository as a container runtime resolves it: redis -> docker.io/library/redis."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return name
    return f"docker.io/{name}" if rest else f"docker.io/library/{name}"


def _is_allowed(image: str, allowed_registries: Collection[str]) -> bool:
    repository = image_repository(image)
    return any(
        repository == entry or repository.startswith(entry + "/")
        for entry in (registry.rstrip("/") for registry in allowed_registries)
    )


class _Checker:
    """Collects the violations of one object."""

    def __init__(self, manifest: Manifest, allowed_registries: Collection[str]) -> None:
        self.subject = subject_of(manifest)
        self.allowed_registries = allowed_registries
        self.violations: list[Violation] = []

    def refuse(self, field: str, problem: str, fix: str) -> None:
        self.violations.append(Violation(self.subject, field, problem, fix))

    def labels(self, field: str, labels: dict[str, Any], required: tuple[str, ...]) -> None:
        missing = [label for label in required if not labels.get(label)]
        if missing:
            self.refuse(
                field,
                f"lacks the recommended label{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                "add the missing labels (the chart's labels helpers render every one)",
            )

    def pod(self, template: PodTemplate) -> None:
        spec, field = template.spec, template.spec_field
        if template.field:
            self.labels(f"{template.field}.metadata.labels", template.labels, POD_LABELS)
        for host_namespace in HOST_NAMESPACES:
            if spec.get(host_namespace) is True:
                self.refuse(
                    f"{field}.{host_namespace}",
                    "shares a host namespace with the node",
                    f"remove {host_namespace} (tenant pods never see the node's network or processes)",
                )
        volumes = spec.get("volumes")
        for volume in volumes if isinstance(volumes, list) else []:
            if isinstance(volume, dict) and "hostPath" in volume:
                self.refuse(
                    f"{field}.volumes[{volume.get('name')}].hostPath",
                    "mounts a directory of the node",
                    "use a persistentVolumeClaim, configMap, secret or emptyDir volume instead",
                )
        pod_security = spec.get("securityContext")
        for container_field, container in containers(spec):
            self.container(
                f"{field}.{container_field}",
                container,
                pod_security if isinstance(pod_security, dict) else {},
            )

    def container(self, field: str, container: dict[str, Any], pod_security: dict[str, Any]) -> None:
        self.resources(f"{field}.resources", container.get("resources"))
        security = container.get("securityContext")
        self.security(
            f"{field}.securityContext", security if isinstance(security, dict) else {}, pod_security
        )
        self.image(f"{field}.image", container.get("image"))
        env = container.get("env")
        names = (
            Counter(entry.get("name") for entry in env if isinstance(entry, dict))
            if isinstance(env, list)
            else Counter()
        )
        for name, count in names.items():
            if count > 1:
                self.refuse(
                    f"{field}.env[{name}]",
                    f"is set {count} times; Kubernetes keeps only the last, silently",
                    f"keep a single {name} entry (tenant env entries replace the defaults by name)",
                )

    def resources(self, field: str, resources: object) -> None:
        sections = resources if isinstance(resources, dict) else {}
        amounts: dict[tuple[str, str], Any] = {}
        for section in ("requests", "limits"):
            values = sections.get(section)
            for resource in RESOURCES:
                value = values.get(resource) if isinstance(values, dict) else None
                if value is None:
                    self.refuse(
                        f"{field}.{section}.{resource}",
                        "is not set",
                        f"set resources.{section}.{resource}; the tenant's quota admits no pod without it",
                    )
                    continue
                try:
                    amounts[section, resource] = parse_quantity(value)
                except ValueError:
                    self.refuse(
                        f"{field}.{section}.{resource}",
                        f"{value!r} is not a quantity",
                        "write a Kubernetes quantity such as 500m, 1, 512Mi or 1Gi",
                    )
        for resource in RESOURCES:
            request, limit = amounts.get(("requests", resource)), amounts.get(("limits", resource))
            if request is not None and limit is not None and request > limit:
                self.refuse(
                    f"{field}.requests.{resource}",
                    f"{sections['requests'][resource]} is above the limit {sections['limits'][resource]}",
                    "lower the request or raise the limit",
                )

    def security(self, field: str, security: dict[str, Any], pod_security: dict[str, Any]) -> None:
        def effective(key: str) -> Any:
            return security[key] if key in security else pod_security.get(key)

        if security.get("privileged") is True:
            self.refuse(
                f"{field}.privileged",
                "is true: the container would hold every power of the node",
                "remove privileged (tenant containers never run privileged)",
            )
        if security.get("allowPrivilegeEscalation") is not False:
            self.refuse(
                f"{field}.allowPrivilegeEscalation",
                "is not false",
                "set allowPrivilegeEscalation: false",
            )
        capabilities = security.get("capabilities")
        capabilities = capabilities if isinstance(capabilities, dict) else {}
        if capabilities.get("add"):
            self.refuse(
                f"{field}.capabilities.add",
                f"adds {capabilities['add']}",
                "remove capabilities.add; tenant containers run with no capabilities",
            )
        drop = capabilities.get("drop")
        if not isinstance(drop, list) or "ALL" not in drop:
            self.refuse(f"{field}.capabilities.drop", "does not drop ALL", "set capabilities.drop: [ALL]")
        if effective("runAsNonRoot") is not True:
            self.refuse(
                f"{field}.runAsNonRoot",
                "is not true (on the container or the pod)",
                "set runAsNonRoot: true",
            )
        user = effective("runAsUser")
        if isinstance(user, bool) or not isinstance(user, int) or user <= 0:
            self.refuse(
                f"{field}.runAsUser",
                "is 0 (root)" if user == 0 else "is not set (on the container or the pod)",
                "set runAsUser to a non-zero UID, e.g. 1000",
            )
        seccomp = effective("seccompProfile")
        if not isinstance(seccomp, dict) or seccomp.get("type") not in SECCOMP_TYPES:
            self.refuse(
                f"{field}.seccompProfile.type",
                "is not RuntimeDefault or Localhost (on the container or the pod)",
                "set seccompProfile: {type: RuntimeDefault}",
            )

    def image(self, field: str, image: object) -> None:
        if not isinstance(image, str) or len(image) > 255 or not _IMAGE.fullmatch(image):
            self.refuse(
                field,
                f"{image!r} is not a valid image reference",
                "write [registry/]repository[:tag][@digest], e.g. redis:7-alpine",
            )
        elif self.allowed_registries and not _is_allowed(image, self.allowed_registries):
            self.refuse(
                field,
                f"{image} ({image_repository(image)}) is not from an allowed registry",
                f"use an image from {', '.join(sorted(self.allowed_registries))}",
            )


def check_object(manifest: Manifest, allowed_registries: Collection[str] = ()) -> list[Violation]:
    """Every violation of one object: labels, and for workloads their pods and containers."""
    checker = _Checker(manifest, allowed_registries)
    template = pod_template(manifest)
    # A bare Pod is its own template: its labels answer for both.
    is_pod = template is not None and not template.field
    required = tuple(dict.fromkeys(OBJECT_LABELS + POD_LABELS)) if is_pod else OBJECT_LABELS
    checker.labels("metadata.labels", labels_of(manifest), required)
    if template is not None:
        checker.pod(template)
    return checker.violations
