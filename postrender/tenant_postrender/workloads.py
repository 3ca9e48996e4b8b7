"""Where each kind of workload keeps its pod template and how many pods it runs."""

from typing import Any, NamedTuple

from tenant_postrender.stream import Manifest

# kind -> (path to the pod template, path to the pod count). A DaemonSet runs one pod per node, which the
# manifest cannot tell; it counts once, the least it can cost.
_WORKLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "Pod": ((), None),
    "Deployment": (("spec", "template"), ("spec", "replicas")),
    "ReplicaSet": (("spec", "template"), ("spec", "replicas")),
    "StatefulSet": (("spec", "template"), ("spec", "replicas")),
    "ReplicationController": (("spec", "template"), ("spec", "replicas")),
    "DaemonSet": (("spec", "template"), None),
    "Job": (("spec", "template"), ("spec", "parallelism")),
    "CronJob": (("spec", "jobTemplate", "spec", "template"), ("spec", "jobTemplate", "spec", "parallelism")),
}


class PodTemplate(NamedTuple):
    """A workload's pods: `field` is the path of the template in the object, for messages."""

    field: str
    labels: dict[str, Any]
    spec: dict[str, Any]
    replicas: int

    @property
    def spec_field(self) -> str:
        return f"{self.field}.spec" if self.field else "spec"


def _get(manifest: Manifest, path: tuple[str, ...]) -> object:
    node: object = manifest
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def pod_template(manifest: Manifest) -> PodTemplate | None:
    """The pods this object runs, or None when it runs none."""
    kind = manifest.get("kind")
    if not isinstance(kind, str) or kind not in _WORKLOADS:
        return None
    template_path, replicas_path = _WORKLOADS[kind]
    template = _get(manifest, template_path)
    if not isinstance(template, dict):
        return None
    metadata, spec = template.get("metadata"), template.get("spec")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    # An absent count means one pod for every kind here, as the API server defaults it.
    replicas = _get(manifest, replicas_path) if replicas_path else 1
    return PodTemplate(
        field=".".join(template_path),
        labels=labels if isinstance(labels, dict) else {},
        spec=spec if isinstance(spec, dict) else {},
        replicas=replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1,
    )


def containers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field, container) for the pod's containers and init containers."""
    found = []
    for key in ("initContainers", "containers"):
        entries = spec.get(key)
        for index, container in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(container, dict):
                found.append((f"{key}[{container.get('name', index)}]", container))
    return found
