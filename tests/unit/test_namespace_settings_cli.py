"""The namespace builder, the settings from TENANT_OPERATOR_* variables and the command line."""

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from tenant_operator.__main__ import Redacting, parse_args, zap_level
from tenant_operator.events import build_event
from tenant_operator.namespace import build_namespace, labels_to_fix
from tenant_operator.settings import Settings

TENANT = {"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": "acme", "uid": "u-1"}}


def test_the_namespace_carries_the_tenant_and_pod_security() -> None:
    namespace = build_namespace("tenant-acme", TENANT)
    labels = namespace["metadata"]["labels"]
    assert namespace["metadata"]["name"] == "tenant-acme"
    assert labels["neurallog.io/tenant"] == "acme"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    owner = namespace["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Tenant",
        "acme",
        "u-1",
        True,
    )


def test_labels_to_fix() -> None:
    good = build_namespace("tenant-acme", TENANT)
    assert labels_to_fix(good, "acme") == {}
    tampered = {
        "metadata": {
            "labels": {**good["metadata"]["labels"], "pod-security.kubernetes.io/enforce": "privileged"}
        }
    }
    assert labels_to_fix(tampered, "acme") == {"pod-security.kubernetes.io/enforce": "restricted"}


def test_settings_from_prefixed_variables() -> None:
    settings = Settings.from_env(
        {
            "TENANT_OPERATOR_HELM": "/usr/bin/helm3",
            "TENANT_OPERATOR_CHART": "/charts/tenant",
            "TENANT_OPERATOR_CONCURRENCY": "8",
            "TENANT_OPERATOR_LOG_LEVEL": "debug",
            "HELM": "ignored without the prefix",
        }
    )
    assert settings.helm == "/usr/bin/helm3"
    assert settings.chart == Path("/charts/tenant")
    assert settings.concurrency == 8
    assert settings.log_level == "debug"
    assert Settings.from_env({}).concurrency == 4


@pytest.mark.parametrize("variable", ["TENANT_OPERATOR_CONCURRENCY", "TENANT_OPERATOR_HEALTH_PORT"])
def test_bad_settings_are_refused(variable: str) -> None:
    with pytest.raises(ValidationError, match=variable.removeprefix("TENANT_OPERATOR_").lower()):
        Settings.from_env({variable: "0" if variable.endswith("CONCURRENCY") else "70000"})


@pytest.mark.parametrize(
    "selector",
    ["", "neurallog.io/shard=a", "!neurallog.io/shard", "shard in (a, b),tier!=gold", "k==v, env"],
)
def test_shard_selectors_are_label_selectors(selector: str) -> None:
    settings = Settings.from_env({"TENANT_OPERATOR_WATCH_LABEL_SELECTOR": selector})
    assert settings.watch_label_selector == selector


@pytest.mark.parametrize("selector", ["=a", "a=b=c", "a in x", "a,,b", "a b", "shard=a;b"])
def test_a_bad_shard_selector_is_refused_by_name(selector: str) -> None:
    with pytest.raises(ValidationError, match="watch_label_selector"):
        Settings.from_env({"TENANT_OPERATOR_WATCH_LABEL_SELECTOR": selector})


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("debug", "debug"),
        ("info", "info"),
        ("warn", "warning"),
        ("error", "error"),
        ("panic", "error"),
        ("2", "debug"),
    ],
)
def test_zap_log_levels(given: str, level: str) -> None:
    assert zap_level(given) == level
    assert parse_args([f"--zap-log-level={given}"]).zap_log_level == level


def test_an_unknown_zap_level_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="unknown level"):
        zap_level("loud")


def test_events_are_filed_where_kubectl_describe_looks() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = build_event(TENANT, "Warning", "SecretNotFound", "API_KEY needs Secret s", now)
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"], "a cluster-scoped object's events name no namespace"
    assert event["involvedObject"] == {
        "apiVersion": "neurallog.io/v1",
        "kind": "Tenant",
        "name": "acme",
        "uid": "u-1",
    }
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "SecretNotFound", 1)
    assert (
        event["metadata"]["name"]
        == build_event(TENANT, "Warning", "SecretNotFound", "API_KEY needs Secret s", now)["metadata"]["name"]
    ), "a repeat has the same name, and is counted"
    assert len(build_event(TENANT, "Normal", "X", "m" * 5000, now)["message"]) <= 1024


def test_log_records_leave_without_secret_values() -> None:
    """kopf's debug records print whole Tenants; the operator's log filter redacts them, tracebacks too."""
    body = {"spec": {"server": {"env": [{"name": "DB_PASSWORD", "value": "hunter2hunter2"}]}}}
    record = logging.LogRecord(
        "kopf.objects", logging.DEBUG, __file__, 1, "Creation is in progress: %r", (body,), None
    )
    try:
        raise RuntimeError("connect redis://app:s3cr3t-pass@redis:6379 failed")
    except RuntimeError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    for kept in (record, failed):
        assert Redacting().filter(kept)
    assert "hunter2hunter2" not in logging.Formatter().format(record)
    assert "DB_PASSWORD" in record.getMessage(), "the names stay, only the values go"
    text = logging.Formatter().format(failed)
    assert "s3cr3t-pass" not in text and "RuntimeError" in text
