"""The Tenant API (neurallog.io/v1): spec and status as pydantic models, the one source of the CRD schema.

Every rule is written once here and enforced three times: by pydantic (the operator, the tests), by the API
server at `kubectl apply` (the CRD's OpenAPI schema with CEL `x-kubernetes-validations`) and by `helm install`
(charts/tenant/values.schema.json). `schema.py` derives both JSON schemas from these models; `x-values-schema`
holds what plain JSON schema can say where the CRD dialect needs CEL.
"""

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

from tenant_operator.quantity import QUANTITY_PATTERN, parse_quantity

GROUP = "neurallog.io"
VERSION = "v1"
KIND = "Tenant"
PLURAL = "tenants"
SINGULAR = "tenant"
SHORT_NAMES = ["tn"]
NAMESPACE_PREFIX = "tenant-"
# Set to any new value, it makes the operator reconcile the Tenant at once, Helm included; the value acted on
# is kept in status.lastHandledReconcileAt. (Not under neurallog.io/: kopf, which ran the Tenants' handlers
# before, kept its own state there.)
RECONCILE_ANNOTATION = f"tenants.{GROUP}/reconcile"
# The tenant's name names its Helm release, which Helm caps at 53 characters; that also keeps the namespace
# `tenant-<name>` within the 63 characters of a DNS-1123 label.
MAX_TENANT_NAME_LENGTH = 53

DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
REDIS_KEY_PATTERN = r"^[a-z][a-z0-9-]*$"
SINGLE_LINE_PATTERN = r"^[^\r\n]*$"
REDIS_MEMORY_PATTERN = r"^[0-9]+([kKmMgG][bB]?|[bB])?$"

MAXMEMORY_POLICIES = (
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)
# Directives the chart owns: authentication, replication and the data directory follow the tenant's layout.
RESERVED_REDIS_KEYS = (
    "requirepass",
    "masterauth",
    "masteruser",
    "replicaof",
    "slaveof",
    "port",
    "dir",
    "include",
)
DEFAULT_REDIS_CONFIG: dict[str, str] = {"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru"}
DEFAULT_SERVER_ENV: tuple[tuple[str, str], ...] = (
    ("NODE_ENV", "production"),
    ("PORT", "3030"),
    # Kubernetes expands $(REDIS_PASSWORD) (set before it from Secret redis-auth) in the container: Redis
    # requires the password, and it never appears in a manifest.
    ("REDIS_URL", "redis://:$(REDIS_PASSWORD)@redis:6379"),
    ("LOG_LEVEL", "info"),
)

# CEL costs are estimated from the largest possible input: every list, map and string is bounded.
MAX_ENV = 128
MAX_RULES = 32
MAX_PORTS = 16
MAX_LABELS = 16
MAX_NAMESPACES = 64
MAX_REDIS_KEYS = 64


def cel(
    rule: str, message: str = "", *, message_expression: str = "", field_path: str = "", reason: str = ""
) -> JsonDict:
    """One `x-kubernetes-validations` entry."""
    entry: JsonDict = {"rule": rule}
    if message:
        entry["message"] = message
    if message_expression:
        entry["messageExpression"] = message_expression
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True, frozen=True
    )


def _quantity(value: str) -> str:
    parse_quantity(value)
    return value


Quantity = Annotated[
    str,
    AfterValidator(_quantity),
    Field(
        min_length=1,
        max_length=64,
        json_schema_extra={
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-validations": [
                cel("isQuantity(self)", "must be a Kubernetes quantity such as 500m, 2 or 1Gi")
            ],
        },
    ),
]


class ResourceRange(ApiModel):
    """A limit and a request of one resource; the request never exceeds the limit."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!isQuantity(self.request) || !isQuantity(self.limit)"
                    " || quantity(self.request).compareTo(quantity(self.limit)) <= 0",
                    message_expression="'request ' + self.request + ' must not exceed limit ' + self.limit",
                    field_path=".request",
                    reason="FieldValueInvalid",
                )
            ]
        }
    )

    limit: Quantity = Field(description="The most that may be used, e.g. `500m` CPU or `1Gi` memory.")
    request: Quantity = Field(description="The amount reserved, at most the limit.")

    @model_validator(mode="after")
    def _request_within_limit(self) -> Self:
        if parse_quantity(self.request) > parse_quantity(self.limit):
            raise ValueError(f"request {self.request} must not exceed limit {self.limit}")
        return self


def _range(limit: str, request: str) -> Any:
    return Field(default=ResourceRange(limit=limit, request=request))


class TenantResources(ApiModel):
    """The tenant's whole budget (a ResourceQuota on its namespace); its workloads must fit in it."""

    cpu: ResourceRange = _range("2", "1")
    memory: ResourceRange = _range("4Gi", "2Gi")
    storage: ResourceRange = Field(
        default=ResourceRange(limit="10Gi", request="5Gi"),
        description="Persistent storage: the limit is the most that the tenant's volume claims may request.",
    )


class ServerResources(ApiModel):
    """CPU and memory of each server container."""

    cpu: ResourceRange = _range("500m", "100m")
    memory: ResourceRange = _range("512Mi", "128Mi")


class RedisResources(ApiModel):
    """CPU and memory of each Redis container."""

    cpu: ResourceRange = _range("300m", "100m")
    memory: ResourceRange = _range("256Mi", "128Mi")


ReferenceName = Annotated[str, Field(min_length=1, max_length=253)]


class SecretKeySelector(ApiModel):
    """A key of a Secret in the tenant's namespace."""

    name: ReferenceName = Field(description="Name of the Secret in namespace tenant-<name>.")
    key: str = Field(min_length=1, max_length=253, description="Key in the Secret.")
    optional: bool | None = Field(
        default=None, description="Start the pod even if the Secret or key is missing."
    )


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the tenant's namespace."""

    name: ReferenceName = Field(description="Name of the ConfigMap in namespace tenant-<name>.")
    key: str = Field(min_length=1, max_length=253, description="Key in the ConfigMap.")
    optional: bool | None = Field(
        default=None, description="Start the pod even if the ConfigMap or key is missing."
    )


class ObjectFieldSelector(ApiModel):
    """A field of the pod, such as metadata.name or status.podIP."""

    api_version: str | None = Field(default=None, max_length=64, description="Defaults to v1.")
    field_path: str = Field(
        min_length=1, max_length=256, description="Path of the field, e.g. metadata.name."
    )


class ResourceFieldSelector(ApiModel):
    """A resource limit or request of a container, such as limits.memory."""

    container_name: str | None = Field(
        default=None, max_length=63, description="Defaults to the container itself."
    )
    resource: str = Field(min_length=1, max_length=64, description="e.g. limits.cpu or requests.memory.")
    divisor: Quantity | None = Field(default=None, description="Unit of the exposed value, e.g. 1m or 1Mi.")


class EnvVarSource(ApiModel):
    """Where the value comes from (Kubernetes EnvVarSource): exactly one of the four sources."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef),"
                    " has(self.resourceFieldRef)].filter(x, x).size() == 1",
                    "exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef must be set",
                )
            ],
            "x-values-schema": {
                "oneOf": [
                    {"required": ["secretKeyRef"]},
                    {"required": ["configMapKeyRef"]},
                    {"required": ["fieldRef"]},
                    {"required": ["resourceFieldRef"]},
                ]
            },
        }
    )

    secret_key_ref: SecretKeySelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        sources = [self.secret_key_ref, self.config_map_key_ref, self.field_ref, self.resource_field_ref]
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                "exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef must be set"
            )
        return self


class EnvVar(ApiModel):
    """An environment variable of the server: a literal value or a reference (valueFrom), never both."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.value) != has(self.valueFrom)", "exactly one of value or valueFrom must be set")
            ],
            "x-values-schema": {"oneOf": [{"required": ["value"]}, {"required": ["valueFrom"]}]},
        }
    )

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN, description="Variable name.")
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="Value read from a Secret, ConfigMap or field."
    )

    @model_validator(mode="after")
    def _value_or_reference(self) -> Self:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("exactly one of value or valueFrom must be set")
        return self


Image = Annotated[
    str,
    Field(min_length=1, max_length=512, pattern=r"^\S+$", description="Container image reference."),
]
Replicas = Annotated[int, Field(ge=0, le=1000)]


class ServerSpec(ApiModel):
    """The NeuralLog server: a Deployment with a Service on port 3030."""

    replicas: Replicas = Field(default=1, description="Number of server replicas.")
    image: Image = "neurallog/server:latest"
    resources: ServerResources = ServerResources()
    env: list[EnvVar] = Field(
        default=[],
        max_length=MAX_ENV,
        description=(
            "Environment variables. REDIS_PASSWORD (from Secret redis-auth), NODE_ENV=production, PORT=3030, "
            "REDIS_URL=redis://:$(REDIS_PASSWORD)@redis:6379 and LOG_LEVEL=info are always set; an entry "
            "with the same name replaces the default. A valueFrom reference names a Secret or ConfigMap in "
            "namespace tenant-<name>."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("env")
    @classmethod
    def _unique_names(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [entry.name for entry in env]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate environment variable names: {', '.join(duplicates)}")
        return env

    def effective_env(self) -> list[EnvVar]:
        """The default variables with the user's merged over them by name; the user's own ones come last."""
        user = {entry.name: entry for entry in self.env}
        merged = [user.pop(name, EnvVar(name=name, value=value)) for name, value in DEFAULT_SERVER_ENV]
        return merged + [entry for entry in self.env if entry.name in user]


_REDIS_CONFIG_RULES: list[JsonValue] = [
    cel(
        "!('maxmemory-policy' in self) || self['maxmemory-policy'] in " + repr(list(MAXMEMORY_POLICIES)),
        "maxmemory-policy must be one of " + ", ".join(MAXMEMORY_POLICIES),
        field_path="['maxmemory-policy']",
        reason="FieldValueInvalid",
    ),
    cel(
        "self.all(k, k != 'maxmemory' || self[k].matches(r'" + REDIS_MEMORY_PATTERN + "'))",
        "maxmemory must be a size such as 256mb, 1gb or 1048576",
        field_path=".maxmemory",
    ),
    cel(
        "self.all(k, k.matches(r'" + REDIS_KEY_PATTERN + "'))",
        "keys must be redis.conf directives in lower case, such as appendonly",
    ),
    cel(
        "self.all(k, !(k in " + repr(list(RESERVED_REDIS_KEYS)) + "))",
        "the chart manages " + ", ".join(RESERVED_REDIS_KEYS) + "; they cannot be set here",
    ),
]

RedisConfigValue = Annotated[str, Field(max_length=1024, pattern=SINGLE_LINE_PATTERN)]


class RedisSpec(ApiModel):
    """Redis: a StatefulSet with a volume per replica and a Service on port 6379; pod 0 is the primary."""

    # A StatefulSet's volume claim templates cannot change, and volumes cannot shrink: a new size would fail
    # the release after the fact. It is refused at `kubectl apply` instead, with what to do.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(oldSelf.storage) || !has(self.storage) || self.storage == oldSelf.storage"
                    " || (isQuantity(self.storage) && isQuantity(oldSelf.storage)"
                    " && quantity(self.storage).compareTo(quantity(oldSelf.storage)) == 0)",
                    message_expression="'spec.redis.storage cannot change after creation (from '"
                    " + oldSelf.storage + ' to ' + self.storage + '): the volumes of a StatefulSet are fixed"
                    " when it is made; create a new Tenant to move the data to larger volumes'",
                    field_path=".storage",
                    reason="FieldValueForbidden",
                )
            ]
        }
    )

    replicas: Replicas = Field(
        default=1, description="Number of Redis pods; more than one adds read replicas."
    )
    image: Image = "redis:7-alpine"
    resources: RedisResources = RedisResources()
    storage: Quantity = Field(default="1Gi", description="Size of each replica's volume.")
    config: dict[str, RedisConfigValue] = Field(
        default=DEFAULT_REDIS_CONFIG,
        max_length=MAX_REDIS_KEYS,
        description=(
            "redis.conf directives; keys given here are merged over the defaults "
            "(maxmemory 256mb, maxmemory-policy allkeys-lru)."
        ),
        json_schema_extra={
            "x-kubernetes-validations": _REDIS_CONFIG_RULES,
            "x-values-schema": {
                "properties": {
                    "maxmemory": {"type": "string", "pattern": REDIS_MEMORY_PATTERN},
                    "maxmemory-policy": {"type": "string", "enum": list(MAXMEMORY_POLICIES)},
                },
                "propertyNames": {"pattern": REDIS_KEY_PATTERN, "not": {"enum": list(RESERVED_REDIS_KEYS)}},
            },
        },
    )

    @field_validator("config")
    @classmethod
    def _merge_config(cls, config: dict[str, str]) -> dict[str, str]:
        for key, value in config.items():
            if not re.match(REDIS_KEY_PATTERN, key):
                raise ValueError(f"config key {key!r}: keys must be redis.conf directives in lower case")
            if key in RESERVED_REDIS_KEYS:
                raise ValueError(f"config key {key!r} is managed by the chart and cannot be set")
            if key == "maxmemory-policy" and value not in MAXMEMORY_POLICIES:
                raise ValueError(f"maxmemory-policy must be one of {', '.join(MAXMEMORY_POLICIES)}")
            if key == "maxmemory" and not re.match(REDIS_MEMORY_PATTERN, value):
                raise ValueError("maxmemory must be a size such as 256mb, 1gb or 1048576")
        return {**DEFAULT_REDIS_CONFIG, **config}


Protocol = Literal["TCP", "UDP", "SCTP"]


class Port(ApiModel):
    """A port and its protocol."""

    protocol: Protocol = Field(default="TCP", description="TCP, UDP or SCTP.")
    port: int = Field(ge=1, le=65535, description="Port number, 1 to 65535.")


_LABELS_RULES: list[JsonValue] = [
    cel(
        "self.all(k, size(k) <= 317 && k.matches(r'" + LABEL_KEY_PATTERN + "'))",
        "keys must be label keys such as app or example.com/role",
    )
]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


def _label_keys(labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        if len(key) > 317 or not re.match(LABEL_KEY_PATTERN, key):
            raise ValueError(f"{key!r} is not a label key such as app or example.com/role")
    return labels


Labels = Annotated[dict[str, LabelValue], AfterValidator(_label_keys)]


def _labels(description: str, alias: str | None = None) -> Any:
    return Field(
        default={},
        alias=alias,
        max_length=MAX_LABELS,
        description=description,
        json_schema_extra={
            "x-kubernetes-validations": _LABELS_RULES,
            "x-values-schema": {"propertyNames": {"maxLength": 317, "pattern": LABEL_KEY_PATTERN}},
        },
    )


Ports = Annotated[list[Port], Field(default=[], max_length=MAX_PORTS, description="Ports; empty means all.")]


class IngressRule(ApiModel):
    """Traffic allowed into the tenant's server pods from pods with these labels, in the tenant's namespace
    and in the allowedNamespaces; both ends of the path are opened."""

    description: str = Field(default="", max_length=256, description="What the rule is for.")
    from_: Labels = _labels(
        "Labels of the pods allowed in (tenant's namespace and allowedNamespaces); empty means every pod "
        "there.",
        alias="from",
    )
    ports: Ports


class EgressRule(ApiModel):
    """Traffic allowed out of the tenant's server pods to pods with these labels, in the tenant's namespace
    and in the allowedNamespaces; both ends of the path are opened."""

    description: str = Field(default="", max_length=256, description="What the rule is for.")
    to: Labels = _labels(
        "Labels of the pods reached (tenant's namespace and allowedNamespaces); empty means every pod there."
    )
    ports: Ports


Namespace = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS1123_LABEL_PATTERN)]


class NetworkPolicySpec(ApiModel):
    """Network isolation: everything is denied except DNS, server to Redis, and what is allowed here."""

    enabled: bool = Field(default=True, description="Whether network policies are enabled.")
    allowed_namespaces: list[Namespace] = Field(
        default=[],
        max_length=MAX_NAMESPACES,
        description="Namespaces whose pods may reach the server on port 3030.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    ingress_rules: list[IngressRule] = Field(default=[], max_length=MAX_RULES)
    egress_rules: list[EgressRule] = Field(default=[], max_length=MAX_RULES)


class TenantSpec(ApiModel):
    """The desired state of a tenant: its budget, server, Redis and network isolation."""

    display_name: str = Field(max_length=256, description="Human-readable name of the tenant.")
    description: str = Field(default="", max_length=4096, description="What the tenant is for.")
    resources: TenantResources = TenantResources()
    server: ServerSpec = ServerSpec()
    redis: RedisSpec = RedisSpec()
    network_policy: NetworkPolicySpec = NetworkPolicySpec()

    def to_values(self) -> dict[str, Any]:
        """The Helm values of charts/tenant: the spec itself, in its wire form."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Phase = Literal["Pending", "Provisioning", "Running", "Degraded", "Failed", "Terminating"]
WorkloadPhase = Literal["Pending", "Provisioning", "Running", "Degraded", "Failed"]
# Ready, Reconciling and Stalled are kstatus's (sigs.k8s.io/cli-utils): what GitOps tools read (status.py).
ConditionType = Literal["Ready", "Reconciling", "Stalled", "Degraded", "Isolated", "Drifted"]
CONDITION_TYPES: frozenset[str] = frozenset(get_args(ConditionType))
ConditionStatus = Literal["True", "False", "Unknown"]


class WorkloadStatus(ApiModel):
    """How one workload (the server Deployment or the Redis StatefulSet) is doing."""

    phase: WorkloadPhase = "Pending"
    ready_replicas: int = Field(default=0, ge=0)
    total_replicas: int = Field(default=0, ge=0)
    message: str = Field(default="", max_length=4096)


class Condition(ApiModel):
    """A condition in the Kubernetes API conventions."""

    type: ConditionType
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


ReleaseState = Literal["Pending", "Installing", "Deployed", "Failed"]


class ReleaseStatus(ApiModel):
    """The Helm release of charts/tenant that holds the tenant's objects."""

    name: str = ""
    revision: int = Field(default=0, ge=0)
    chart_version: str = ""
    state: ReleaseState = Field(default="Pending", description="Where the last `helm upgrade --install` got.")
    reason: str = Field(
        default="", max_length=128, description="Why the last Helm command failed, in one word."
    )
    message: str = Field(default="", max_length=32768, description="What went wrong, secrets redacted.")
    applied_hash: str = Field(default="", description="Digest of the values and chart last installed.")


class TenantStatus(ApiModel):
    """The observed state of a tenant."""

    phase: Phase = "Pending"
    namespace: str = ""
    server_status: WorkloadStatus = WorkloadStatus()
    redis_status: WorkloadStatus = WorkloadStatus()
    observed_generation: int = Field(default=0, ge=0)
    conditions: list[Condition] = Field(
        default=[],
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    release: ReleaseStatus = ReleaseStatus()
    last_handled_reconcile_at: str | None = Field(
        default=None,
        max_length=256,
        description="The value of the annotation tenants.neurallog.io/reconcile last acted on.",
    )

    @field_validator("conditions", mode="before")
    @classmethod
    def _known_types_only(cls, conditions: Any) -> Any:
        """Conditions of types this version does not write (Progressing, which Reconciling replaced) are left
        out when a status is read, so that the rest of it (the release, its applied hash) still counts."""
        if isinstance(conditions, list):
            return [c for c in conditions if not isinstance(c, dict) or c.get("type") in CONDITION_TYPES]
        return conditions


def namespace_for(tenant_name: str) -> str:
    """The namespace that holds a tenant's objects."""
    return NAMESPACE_PREFIX + tenant_name


def tenant_of(namespace: str | None) -> str | None:
    """The tenant whose namespace this is (namespace_for's inverse); None for any other namespace."""
    if not namespace or not namespace.startswith(NAMESPACE_PREFIX):
        return None
    return namespace.removeprefix(NAMESPACE_PREFIX)


def tenant_name_problem(name: str) -> str | None:
    """Why `name` cannot be a tenant's name, or None."""
    if len(name) > MAX_TENANT_NAME_LENGTH:
        return (
            f"name must be at most {MAX_TENANT_NAME_LENGTH} characters"
            f" (the Helm release takes the tenant's name; the namespace is {NAMESPACE_PREFIX}<name>)"
        )
    if not re.match(DNS1123_LABEL_PATTERN, name):
        return "name must be a DNS-1123 label: lower case letters, digits and '-'"
    return None


ROOT_RULES: list[JsonValue] = [
    cel(
        f"size(self.metadata.name) <= {MAX_TENANT_NAME_LENGTH}",
        f"metadata.name must be at most {MAX_TENANT_NAME_LENGTH} characters,"
        f" (the Helm release takes the tenant's name; the namespace is {NAMESPACE_PREFIX}<name>)",
        reason="FieldValueInvalid",
    ),
    cel(
        "self.metadata.name.matches(r'" + DNS1123_LABEL_PATTERN + "')",
        "metadata.name must be a DNS-1123 label (lower case letters, digits and '-'; no '.'),"
        f" so that {NAMESPACE_PREFIX}<name> is a namespace name",
        reason="FieldValueInvalid",
    ),
]
