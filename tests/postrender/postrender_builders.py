"""Typed builders of streams shaped like what charts/tenant renders (per the contract), for the tests.

The defaults are the guide's example Tenant (sample-tenant): 2 server replicas at 500m/1 CPU and 512Mi/1Gi,
rolled out one extra pod at a time (the chart's strategy), one Redis at 200m/500m and 512Mi/1Gi with 5Gi of
storage, a budget of 2/4 CPU, 4Gi/8Gi memory and 20Gi storage, and its network policy (two allowed
namespaces, one ingress and one egress rule).
"""

import copy
import json
from typing import Any

import yaml

Manifest = dict[str, Any]

RELEASE = "sample-tenant"
NAMESPACE = f"tenant-{RELEASE}"
FILENAME_ANNOTATION = "postrenderer.helm.sh/postrender-filename"

EXAMPLE_NETWORK_POLICY: dict[str, Any] = {
    "enabled": True,
    "allowedNamespaces": ["default", "monitoring"],
    "ingressRules": [
        {
            "description": "Allow monitoring tools",
            "from": {"app": "prometheus"},
            "ports": [{"protocol": "TCP", "port": 3030}],
        }
    ],
    "egressRules": [
        {
            "description": "Allow external API access",
            "to": {"app": "external-api"},
            "ports": [{"protocol": "TCP", "port": 443}],
        }
    ],
}


def object_labels(component: str = "tenant") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tenant",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": "0.1.0",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "neurallog",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": "tenant-0.1.0",
    }


def pod_labels(app: str, component: str) -> dict[str, str]:
    return {"app": app} | object_labels(component)


def metadata(name: str, component: str = "tenant", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": object_labels(component)} | extra


def hardened_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container(
    name: str,
    image: str,
    *,
    cpu: tuple[str, str] = ("500m", "1"),
    memory: tuple[str, str] = ("512Mi", "1Gi"),
    env: list[dict[str, Any]] | None = None,
    port: int = 3030,
) -> dict[str, Any]:
    """A hardened container; cpu and memory are (request, limit)."""
    built: dict[str, Any] = {
        "name": name,
        "image": image,
        "ports": [{"name": name, "containerPort": port}],
        "resources": {
            "requests": {"cpu": cpu[0], "memory": memory[0]},
            "limits": {"cpu": cpu[1], "memory": memory[1]},
        },
        "securityContext": hardened_security(),
    }
    if env is not None:
        built["env"] = env
    return built


def server_env() -> list[dict[str, Any]]:
    """The defaults merged with the example's entries, as the chart renders them."""
    return [
        {"name": "NODE_ENV", "value": "production"},
        {"name": "PORT", "value": "3030"},
        {"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@redis:6379"},
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}},
        {"name": "MAX_CONNECTIONS", "value": "100"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "tenant-secrets", "key": "api-key"}}},
    ]


def pod_spec(*containers: dict[str, Any]) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": list(containers),
    }


# The server's rollout strategy as charts/tenant renders it: one surge pod, none unavailable.
CHART_STRATEGY: dict[str, Any] = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
}


def deployment(
    replicas: int = 2, server: dict[str, Any] | None = None, strategy: dict[str, Any] | None = None
) -> Manifest:
    """The server's Deployment; `strategy` None is the chart's, {} none at all (Kubernetes' default)."""
    labels = pod_labels("neurallog-server", "server")
    spec: dict[str, Any] = {
        "replicas": replicas,
        "strategy": copy.deepcopy(CHART_STRATEGY if strategy is None else strategy),
        "selector": {"matchLabels": {"app": "neurallog-server", "app.kubernetes.io/instance": RELEASE}},
        "template": {
            "metadata": {"labels": labels},
            "spec": pod_spec(server or container("server", "neurallog/server:latest", env=server_env())),
        },
    }
    if not spec["strategy"]:
        del spec["strategy"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata("neurallog-server", "server"),
        "spec": spec,
    }


def statefulset(replicas: int = 1, storage: str = "5Gi", redis: dict[str, Any] | None = None) -> Manifest:
    labels = pod_labels("redis", "redis")
    default_redis = container("redis", "redis:7-alpine", cpu=("200m", "500m"), port=6379)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata("redis", "redis"),
        "spec": {
            "replicas": replicas,
            "serviceName": "redis-headless",
            "selector": {"matchLabels": {"app": "redis", "app.kubernetes.io/instance": RELEASE}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec(redis or default_redis)},
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": storage}},
                    },
                }
            ],
        },
    }


def resource_quota(
    cpu: tuple[str, str] = ("2", "4"), memory: tuple[str, str] = ("4Gi", "8Gi"), storage: str = "20Gi"
) -> Manifest:
    """cpu and memory are (request, limit)."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata("tenant-quota"),
        "spec": {
            "hard": {
                "requests.cpu": cpu[0],
                "limits.cpu": cpu[1],
                "requests.memory": memory[0],
                "limits.memory": memory[1],
                "requests.storage": storage,
            }
        },
    }


def carrier(network_policy: dict[str, Any] | None = None) -> Manifest:
    values = EXAMPLE_NETWORK_POLICY if network_policy is None else network_policy
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            "tenant-network-policy",
            "network-policy",
            annotations={"neurallog.io/postrender-input": "network-policy"},
        ),
        "data": {"networkPolicy.json": json.dumps(values, separators=(",", ":"))},
    }


def service(name: str, app: str, port: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, app),
        "spec": {"selector": {"app": app}, "ports": [{"name": app, "port": port, "targetPort": port}]},
    }


def secret() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata("redis-auth", "redis"),
        "type": "Opaque",
        "data": {"password": "c2VjcmV0"},
    }


def example_release(
    *, server_replicas: int = 2, network_policy: dict[str, Any] | None = None
) -> list[Manifest]:
    """The guide's example tenant as charts/tenant renders it, in Helm's install order."""
    return [
        carrier(network_policy),
        resource_quota(),
        secret(),
        service("redis-headless", "redis", 6379),
        service("redis", "redis", 6379),
        service("neurallog-server", "neurallog-server", 3030),
        deployment(server_replicas),
        statefulset(),
    ]


def helm_test_hook() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata("sample-tenant-test-connection", "test", annotations={"helm.sh/hook": "test"}),
        "spec": {
            "restartPolicy": "Never",
            **pod_spec(container("probe", "busybox:1.36", cpu=("10m", "50m"), memory=("16Mi", "32Mi"))),
        },
    }


def with_filenames(objects: list[Manifest]) -> list[Manifest]:
    """Annotate each object with its template file, as Helm 4 does before post-rendering."""
    annotated = []
    for original in objects:
        obj = copy.deepcopy(original)
        filename = f"tenant/templates/{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        obj["metadata"].setdefault("annotations", {})[FILENAME_ANNOTATION] = filename
        annotated.append(obj)
    return annotated


def to_stream(objects: list[Manifest]) -> str:
    """A stream the way Helm 3 hands it over: `---` and a `# Source:` comment before each document."""
    return "".join(
        f"---\n# Source: tenant/templates/{obj['kind'].lower()}.yaml\n"
        + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
        for obj in objects
    )


def read_stream(text: str) -> list[Manifest]:
    return [document for document in yaml.safe_load_all(text) if document is not None]


def by_kind_and_name(objects: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def policies(objects: list[Manifest]) -> dict[str, Manifest]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "NetworkPolicy"}


# The policies injected for the guide's example, in the order the post-renderer writes them.
EXAMPLE_POLICIES = (
    "default-deny",
    "allow-dns",
    "server-to-redis",
    "redis-replication",
    "allow-namespaces",
    "ingress-0",
    "ingress-0-peers",
    "egress-0",
    "egress-0-peers",
    "helm-test",
    "helm-test-redis",
    "helm-test-server",
)
