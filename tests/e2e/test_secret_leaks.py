"""Secrets never leak: values planted where the operator could leak them appear in no Tenant status, no Event
and no line of the operator's log (which runs at debug level), neither as written nor in base64; also after
Helm failed and printed what the post-renderer or the API server said.

Planted: the Redis password that the chart generates; a value of a Secret that the spec references through
server.env[].valueFrom.secretKeyRef; a password that someone writes straight into the tenant's Deployment
(drift, which the operator watches and repairs); literal values of the spec under secret-looking names (an
env var DB_PASSWORD, a password in an env var's URL, the redis.conf directive tls-key-file-pass).
"""

import base64
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import SMALL_WORKLOAD, Operator, Tenants, small_tenant, unique, wait_until

pytestmark = pytest.mark.cluster

# A record of the operator's text log starts with "[2026-01-02 03:04:05,678] logger.name [LEVEL   ] ";
# the lines that follow without that header belong to it.
LOG_RECORD = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \S+\s+\[(\w+)\s*\]")


def planted(prefix: str) -> str:
    """A value found nowhere unless it leaked."""
    return f"{prefix}-{secrets.token_urlsafe(18)}"


def encodings(value: str) -> list[str]:
    """The value and its base64 forms: the characters that encode it whatever bytes come before and after it
    (a value on its own, as in a Secret's data, or inside a longer encoded text)."""
    data = value.encode()
    forms = [value]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        first, end = -(-8 * offset // 6), 8 * (offset + len(data)) // 6
        forms.append(encoded[first:end])
    return forms


class LeakError(AssertionError):
    """A planted value was found where it must not be."""


@dataclass
class LogRecord:
    level: str
    text: str


def log_records(operator: Operator) -> list[LogRecord]:
    records: list[LogRecord] = []
    for line in operator.log.read_text(errors="replace").splitlines():
        header = LOG_RECORD.match(line)
        if header or not records:
            records.append(LogRecord(header.group(1) if header else "", line))
        else:
            records[-1].text += "\n" + line
    return records


@dataclass
class Told:
    """What the operator has told about a tenant: its status, every Event of the cluster (the Tenants' in
    namespace default, and those of the tenant namespaces) and the records of the operator's log."""

    tenant: str
    status: str
    events: str
    log: list[LogRecord]

    @classmethod
    def now(cls, kube: Kube, tenants: Tenants, operator: Operator, name: str) -> "Told":
        events = json.loads(kube.kubectl("get", "events", "--all-namespaces", "-o", "json").stdout)["items"]
        log = log_records(operator)
        # Else this operator was not the one that handled the tenant (another one held the leadership).
        assert any(f"tenant {name}: Installing" in record.text for record in log), operator.log_tail()
        return cls(name, json.dumps(tenants.status(name)), json.dumps(events), log)

    def assert_not_told(self, what: str, value: str) -> None:
        """`value` (`what`) is in no form in the status, in no Event and in no log record, debug included."""
        records = self.log
        for form in encodings(value):
            if form in self.status:
                raise LeakError(f"{what} ({form}) is in the status of {self.tenant}: {self.status}")
            if form in self.events:
                raise LeakError(f"{what} ({form}) is in an Event")
            leaked = [record.text for record in records if form in record.text]
            if leaked:
                raise LeakError(f"{what} ({form}) is in the operator's log:\n" + "\n".join(leaked[:3]))


def release_failure(tenants: Tenants, name: str, reason: str) -> dict[str, Any]:
    """The release status of tenant `name` once a Helm call failed with `reason`."""
    return wait_until(
        lambda: (release := tenants.status(name).get("release", {})).get("reason") == reason and release,
        what=f"a {reason} failure of tenant {name} (status: {tenants.status(name)})",
    )


def get_json(kube: Kube, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kube.kubectl("get", *args, "-o", "json").stdout)
    return result


def server_env(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    """The environment of the tenant's server Deployment, by variable name."""
    deployment = get_json(kube, "deployment", "neurallog-server", "-n", namespace)
    return {entry["name"]: entry for entry in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_secrets_and_secret_looking_values_never_leak_through_drift_and_failures(
    kube: Kube, tenants: Tenants, operator: Operator
) -> None:
    name = unique("leak")
    namespace = f"tenant-{name}"
    api_key, db_password, url_password = planted("apikey"), planted("dbpass"), planted("urlpass")
    env = [
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "tenant-secrets", "key": "api-key"}}},
        {"name": "DB_PASSWORD", "value": db_password},
        {"name": "DATABASE_URL", "value": f"postgres://neurallog:{url_password}@db.example.com:5432/logs"},
    ]
    tenant = small_tenant(name, server={"resources": SMALL_WORKLOAD, "env": env})
    tenants.apply(tenant)
    wait_until(lambda: tenants.namespace_exists(namespace), what=f"namespace {namespace}")
    secret = f"--from-literal=api-key={api_key}"
    kube.kubectl("create", "secret", "generic", "tenant-secrets", "-n", namespace, secret)
    tenants.wait_for_phase(name, "Running", timeout=180)

    # Planted for real: the Secrets hold the values, the server runs with them (a missing one would keep it
    # from starting), and Helm rendered the literals into the Deployment.
    redis_data = get_json(kube, "secret", "redis-auth", "-n", namespace)["data"]
    redis_password = base64.b64decode(redis_data["password"]).decode()
    assert len(redis_password) >= 16, redis_password
    api_data = get_json(kube, "secret", "tenant-secrets", "-n", namespace)["data"]
    assert base64.b64decode(api_data["api-key"]).decode() == api_key
    rendered = server_env(kube, namespace)
    assert rendered["DB_PASSWORD"]["value"] == db_password
    assert url_password in rendered["DATABASE_URL"]["value"]
    assert rendered["API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "tenant-secrets"

    # Someone writes a password straight into the Deployment: the operator, which watches it, reports the
    # drift and puts the spec's value back.
    hotfix = planted("hotfix")
    kube.kubectl("set", "env", "deployment/neurallog-server", "-n", namespace, f"DB_PASSWORD={hotfix}")
    wait_until(
        lambda: any(event["reason"] == "DriftDetected" for event in tenants.events(name)),
        what=f"a DriftDetected event of tenant {name}",
    )
    wait_until(
        lambda: server_env(kube, namespace)["DB_PASSWORD"].get("value") == db_password,
        what="the spec's DB_PASSWORD put back",
    )

    # Helm fails in the post-renderer, which refuses a budget too small for the workloads (the stream it
    # refused held the redis-auth Secret with the password, and the literals).
    tenant["spec"]["resources"] = {"cpu": {"limit": "300m", "request": "30m"}}
    tenants.apply(tenant)
    refused = release_failure(tenants, name, "BudgetExceeded")
    assert "quota allows 30m" in refused["message"], refused
    assert any(event["reason"] == "BudgetExceeded" for event in tenants.events(name))

    told = Told.now(kube, tenants, operator, name)
    told.assert_not_told("the Redis password", redis_password)
    told.assert_not_told("the Secret's API key", api_key)
    told.assert_not_told("the password written into the Deployment", hotfix)
    # The literals are the spec's own: kopf's debug records of the Tenant carry them, redacted.
    told.assert_not_told("the DB_PASSWORD literal", db_password)
    told.assert_not_told("the URL's password", url_password)


def test_a_line_separator_in_a_redis_value_stays_inside_its_line(
    kube: Kube, tenants: Tenants, operator: Operator
) -> None:
    """An attacker's input: a line separator (U+2028, which YAML takes for a line break) in a redis.config
    value once ended the chart's redis.conf block in the ConfigMap, adding fields that the API server refused
    by printing redis.conf back, tls-key-file-pass and its value included (redact now hides that echo: see the
    unit tests). The chart writes redis.conf as one escaped string, so the value stays in its line."""
    name = unique("leakconf")
    passphrase = planted("tlspass")
    tenant = small_tenant(name)
    tenant["spec"]["redis"]["config"] |= {
        "appendonly": "no\u2028immutable: yes",
        "tls-key-file-pass": passphrase,
    }
    tenants.apply(tenant)
    namespace = f"tenant-{name}"
    wait_until(
        lambda: (
            kube.kubectl("get", "configmap", "redis-config", "-n", namespace, check=False).returncode == 0
        ),
        what="the redis-config ConfigMap",
    )
    configmap = get_json(kube, "configmap", "redis-config", "-n", namespace)
    assert list(configmap["data"]) == ["redis.conf"], "the value added fields to the ConfigMap"
    lines = configmap["data"]["redis.conf"].split("\n")
    assert "appendonly no\u2028immutable: yes" in lines, "the value left its line"
    assert f"tls-key-file-pass {passphrase}" in lines
    assert "immutable" not in configmap, "the value added a field to the ConfigMap"
    Told.now(kube, tenants, operator, name).assert_not_told("the TLS key passphrase", passphrase)


def test_literal_spec_values_stay_out_of_the_debug_log(
    kube: Kube, tenants: Tenants, operator: Operator
) -> None:
    name = unique("leakdebug")
    db_password = planted("dbpass")
    tenant = small_tenant(
        name, server={"resources": SMALL_WORKLOAD, "env": [{"name": "DB_PASSWORD", "value": db_password}]}
    )
    tenants.apply(tenant)
    wait_until(lambda: tenants.status(name).get("release", {}).get("state"), what=f"tenant {name} handled")
    Told.now(kube, tenants, operator, name).assert_not_told("the DB_PASSWORD literal", db_password)
