"""Helm calls of the operator: arguments, output, error classification, redaction; Helm itself faked by a
script, so that no cluster is needed."""

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tenant_operator.release import (
    CHART_SOURCES,
    Helm,
    HelmError,
    Release,
    classify,
    desired_hash,
    fingerprint,
    parse_release,
    redact,
    upgrade_args,
)
from tenant_operator.settings import Settings


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("password: hunter2-long", "hunter2-long"),
        ('{"apiKey": "abcd-efgh"}', "abcd-efgh"),
        ("requirepass s3cr3tvalue", "s3cr3tvalue"),
        ("REDIS_URL=redis://:pa55word@redis:6379", "pa55word"),
        ("data:\n  password: c3VwZXJzZWNyZXRwYXNzd29yZDEyMzQ=", "c3VwZXJzZWNyZXRwYXNzd29yZDEyMzQ="),
        ("data:\n  api: c3VwZXJzZWNyZXRwYXNzd29yZDEyMzQ=", "c3VwZXJzZWNyZXRwYXNzd29yZDEyMzQ="),
        ("token=abc.def.ghi", "abc.def.ghi"),
    ],
)
def test_redact_hides_secrets(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "<redacted>" in redact(text)


# What Helm and the API server print, with a secret in it. The first is Helm 4's against Kubernetes 1.37: a
# redis.config value holding U+2028, which the CRD admits, broke out of redis.conf into the ConfigMap.
HELM_ECHOES = [
    (
        "Error: UPGRADE FAILED: server-side apply failed for object tenant-t/redis-config /v1, "
        "Kind=ConfigMap: failed to create typed patch object (tenant-t/redis-config; /v1, Kind=ConfigMap): "
        ".immutable: expected boolean, got &{yes maxmemory 256mb tls-key-file-pass tlspass-zxER0_WGBl dir "
        "/data port 6379}",
        "tlspass-zxER0_WGBl",
    ),
    ('{"name":"API_KEY","value":"sk-live-abc123"}', "sk-live-abc123"),
    ('[{\\"name\\":\\"DB_PASSWORD\\",\\"value\\":\\"dbpw-abc123\\"}]', "dbpw-abc123"),
    ("- name: API_KEY\n  value: sk-live-abc123\n", "sk-live-abc123"),
    ("{Name:SESSION_SECRET Value:ses-abc123 ValueFrom:nil}", "ses-abc123"),
    ('{\\"apiKey\\":\\"abcd-efgh\\"}', "abcd-efgh"),
    ("env[API_KEY]=hunter2", "hunter2"),
    ("DB_PASSWORD=hunter2hunter", "hunter2hunter"),
    ("REDIS_PASSWORD: hunter2hunter", "hunter2hunter"),
    ("client_secret=abc123", "abc123"),
    ("aws_secret_access_key = abcDEF123", "abcDEF123"),
    ("X-API-KEY: k-123456", "k-123456"),
    ("privateKey: pk-1234", "pk-1234"),
    ('exec redis-server --requirepass "pass phrase"', "phrase"),
    ("user app on >S3cret-pass ~* +@all", "S3cret-pass"),
    ("Authorization: Bearer abcdef123456", "abcdef123456"),
    ("redis://:ab/cd@redis:6379", "ab/cd"),
    ("postgres://neurallog:p@ss:w0rd@db.example.com:5432/logs", "ss:w0rd"),
]


@pytest.mark.parametrize(("text", "secret"), HELM_ECHOES)
def test_redact_hides_secrets_as_helm_and_kubernetes_print_them(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret in text
    assert secret not in redacted
    assert "<redacted>" in redacted


@pytest.mark.parametrize(
    "kept",
    [
        'StatefulSet.apps "redis" is invalid: spec.volumeClaimTemplates: Invalid value: [{"name":"data",'
        '"Spec":{"Resources":{"Requests":{"storage":"2Gi"}}}}]: field is immutable',
        'env[0].valueFrom.secretKeyRef.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain',
        'Error: secrets "tenant-secrets" not found',
        'Apply failed with 1 conflict: conflict with "kubectl" using v1: .data.password',
        'User "system:serviceaccount:a:b" cannot list resource "secrets" in the namespace "t": <nil>',
        "the workloads request 40m in total but the quota allows 30m (Deployment/neurallog-server 1 x 20m)",
        "yaml: line 3: found character that cannot start any token",
        "https://example.com/charts/tenant",
    ],
)
def test_redact_keeps_what_explains_a_failure(kept: str) -> None:
    assert redact(kept) == kept


def test_redact_hides_given_values_and_keeps_the_rest() -> None:
    assert redact("Error: budget exceeded by the value xyzzy-42", ["xyzzy-42"]) == (
        "Error: budget exceeded by the value <redacted>"
    )
    for kept in (
        "Error: limits.cpu 3 exceeds tenant budget 2",
        "another operation (install/upgrade/rollback) is in progress",
        "charts/tenant/templates/server-deployment.yaml",
    ):
        assert redact(kept) == kept
    assert len(redact("x" * 10000)) <= 4000


@pytest.mark.parametrize(
    ("stderr", "reason", "permanent"),
    [
        ("Error: error while running post render on files: budget: limits.cpu 3 > 2", "BudgetExceeded", True),
        (
            "Error: error while running post render on files: plugin exited with error",
            "ManifestsRejected",
            True,
        ),
        (
            "Error: values don't meet the specifications of the schema(s): at '/server/replicas'",
            "InvalidValues",
            True,
        ),
        (
            "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress",
            "ReleaseBusy",
            False,
        ),
        ('Error: Deployment "x" is invalid: spec.template', "InstallRejected", True),
        ('Error: UPGRADE FAILED: "t" has no deployed releases', "NoDeployedRelease", False),
        ("Error: Kubernetes cluster unreachable: connection refused", "HelmFailed", False),
        ("", "HelmFailed", False),
    ],
)
def test_classify(stderr: str, reason: str, permanent: bool) -> None:
    error = classify(stderr)
    assert (error.reason, error.permanent) == (reason, permanent)


def test_desired_hash_follows_values_and_chart() -> None:
    values = {"server": {"replicas": 1}, "displayName": "x"}
    assert desired_hash(values, "chart-a") == desired_hash(dict(reversed(values.items())), "chart-a")
    assert desired_hash(values, "chart-a") != desired_hash(values, "chart-b")
    assert desired_hash(values, "chart-a") != desired_hash({**values, "displayName": "y"}, "chart-a")


def test_fingerprint_follows_what_shapes_the_manifests_only(tmp_path: Path) -> None:
    (tmp_path / "templates" / "tests").mkdir(parents=True)
    (tmp_path / "ci").mkdir()
    for name in (
        "Chart.yaml",
        "values.yaml",
        "templates/a.yaml",
        "templates/tests/t.yaml",
        "README.md",
        "ci/x.yaml",
    ):
        (tmp_path / name).write_text("a")

    def digest() -> str:
        return fingerprint([(tmp_path, CHART_SOURCES)])

    before = digest()
    assert digest() == before
    for docs_only in ("README.md", "ci/x.yaml"):
        (tmp_path / docs_only).write_text("changed")
        assert digest() == before, f"{docs_only} does not shape a manifest"
    for shaping in ("values.yaml", "templates/a.yaml", "templates/tests/t.yaml"):
        (tmp_path / shaping).write_text("changed")
        assert digest() != before, shaping
        before = digest()
    assert fingerprint([(tmp_path, CHART_SOURCES)], b"registries") != before


def test_upgrade_arguments() -> None:
    args = upgrade_args(
        name="t",
        namespace="tenant-t",
        chart=Path("/charts/tenant"),
        values_file=Path("/tmp/v.json"),
        postrenderer="tenant-postrender",
        timeout=300,
    )
    assert args[:4] == ["upgrade", "--install", "t", "/charts/tenant"]
    assert args[args.index("--namespace") + 1] == "tenant-t"
    assert args[args.index("--post-renderer") + 1] == "tenant-postrender"
    assert args[args.index("--output") + 1] == "json"
    assert "--wait" not in args


def test_parse_release_keeps_no_manifest() -> None:
    output = {
        "name": "t",
        "version": 3,
        "info": {"status": "deployed"},
        "chart": {"metadata": {"version": "0.1.0"}},
        "manifest": "kind: Secret\ndata:\n  password: c2VjcmV0",
    }
    release = parse_release(json.dumps(output))
    assert (release.name, release.revision, release.chart_version, release.status) == (
        "t",
        3,
        "0.1.0",
        "deployed",
    )
    assert "c2VjcmV0" not in repr(release)


FAKE_HELM = """#!/bin/sh
echo "$@" >> "{log}"
case "$1" in
  version) echo "v{major}.3.1" ;;
  plugin) mkdir -p "$HELM_DATA_HOME/plugins/p" && cp "$3/plugin.yaml" "$HELM_DATA_HOME/plugins/p/" ;;
  upgrade)
    values=$(sed -n 's/.*--values \\([^ ]*\\).*/\\1/p' "{log}" | tail -1)
    cp "$values" "{log}.values"
    {upgrade} ;;
  uninstall) echo 'Error: uninstall: Release not loaded: t: release: not found' >&2; exit 1 ;;
esac
"""
RELEASE = {
    "name": "t",
    "version": 1,
    "info": {"status": "deployed"},
    "chart": {"metadata": {"version": "0.1.0"}},
}
UPGRADE_OK = f"echo '{json.dumps(RELEASE)}'"
UPGRADE_FAILS = (
    "echo 'Error: error while running post render on files: tenant budget: requests.cpu 3 > 2; "
    "password: hunter22' >&2; exit 1"
)


def fake_helm(tmp_path: Path, *, major: int, upgrade: str = UPGRADE_OK) -> tuple[Helm, Path]:
    log = tmp_path / "helm.log"
    script = tmp_path / "helm"
    script.write_text(FAKE_HELM.format(log=log, major=major, upgrade=upgrade))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "plugin.yaml").write_text("name: tenant-postrender\ntype: postrenderer/v1\n")
    settings = Settings(
        helm=str(script),
        chart=tmp_path,
        postrenderer="/opt/venv/bin/tenant-postrender",
        postrender_plugin=plugin,
        helm_home=tmp_path / "home",
        helm_worker="",
    )
    return Helm(settings), log


def test_helm4_installs_the_plugin_once_and_uses_it(tmp_path: Path) -> None:
    helm, log = fake_helm(tmp_path, major=4)
    release = asyncio.run(helm.upgrade("t", "tenant-t", {"displayName": "T"}))
    assert release.revision == 1
    release = asyncio.run(helm.upgrade("t", "tenant-t", {"displayName": "T"}))
    calls = log.read_text().splitlines()
    assert [call.split()[0] for call in calls] == ["version", "plugin", "upgrade", "upgrade"]
    assert "--post-renderer tenant-postrender " in calls[2]
    assert "--force-conflicts" in calls[2].split(), "Helm 4 takes back fields someone else wrote"
    assert "--disable-openapi-validation" in calls[2].split(), "the API server validates, not Helm"
    assert helm.env["GOGC"] == os.environ.get("GOGC", "400")
    assert json.loads((tmp_path / "helm.log.values").read_text()) == {"displayName": "T"}
    assert helm.env["HELM_DATA_HOME"] == str(tmp_path / "home" / "data")
    assert "HELM_PLUGINS" not in helm.env
    assert helm.env["PATH"].startswith("/opt/venv/bin" + os.pathsep)


def test_the_first_releases_at_once_set_helm_up_once(tmp_path: Path) -> None:
    """Four first releases at the same moment (an operator starting with many Tenants) ask Helm's version
    and install the plugin once, not once each. (Not at the operator's start: a restart with nothing to
    install makes no Helm call at all.)"""
    helm, log = fake_helm(tmp_path, major=4)

    async def four() -> None:
        await asyncio.gather(*(helm.upgrade(f"t{i}", f"tenant-t{i}", {}) for i in range(4)))

    asyncio.run(four())
    commands = [call.split()[0] for call in log.read_text().splitlines()]
    assert commands == ["version", "plugin", "upgrade", "upgrade", "upgrade", "upgrade"]


def test_helm3_runs_the_postrenderer_executable(tmp_path: Path) -> None:
    helm, log = fake_helm(tmp_path, major=3)
    asyncio.run(helm.upgrade("t", "tenant-t", {}))
    assert "--post-renderer /opt/venv/bin/tenant-postrender " in log.read_text()
    assert "--force-conflicts" not in log.read_text(), "Helm 3 has no server-side apply"
    assert "--disable-openapi-validation" not in log.read_text(), "Helm 3 validates on the client only"


def test_a_failed_upgrade_is_classified_and_redacted(tmp_path: Path) -> None:
    helm, _ = fake_helm(tmp_path, major=3, upgrade=UPGRADE_FAILS)
    with pytest.raises(HelmError) as failure:
        asyncio.run(helm.upgrade("t", "tenant-t", {}))
    assert failure.value.permanent
    assert failure.value.reason == "BudgetExceeded"
    assert "requests.cpu 3 > 2" in failure.value.message
    assert "hunter22" not in failure.value.message


def test_uninstalling_a_missing_release_is_not_an_error(tmp_path: Path) -> None:
    helm, _ = fake_helm(tmp_path, major=3)
    assert asyncio.run(helm.uninstall("t", "tenant-t")) is False


def test_a_timed_out_helm_leaves_no_process_behind(tmp_path: Path) -> None:
    """Helm timed out while its post-renderer ran: both are gone, not only Helm."""
    child = tmp_path / "postrenderer.pid"
    stuck = f"sh -c 'echo $$ > \"{child}\"; exec sleep 300' & wait"
    helm, _ = fake_helm(tmp_path, major=3, upgrade=stuck)
    helm.settings = helm.settings.model_copy(update={"helm_timeout": 1})

    async def upgrade() -> None:
        await helm.major_version()
        await helm._run("upgrade", "--values", "x", timeout=1)

    with pytest.raises(HelmError, match="HelmTimeout"):
        asyncio.run(upgrade())
    pid = int(child.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the post-renderer's process {pid} outlived the timed-out Helm")


# A helm-worker that speaks the protocol (operator/helm-worker/main.go) without Helm: it logs each request and
# the post-rendered manifests it is given, asks the post-render question with MANIFESTS, and answers as Helm's
# library does. On the request numbered EXIT_AT (counted over its runs) it exits instead.
FAKE_WORKER = """#!{python}
import json, sys
from pathlib import Path
log = Path("{log}")
runs = log.with_suffix(".runs")
runs.write_text(runs.read_text() + "run\\n" if runs.exists() else "run\\n")
if {fail_start}:
    print("Error: could not get server version from Kubernetes: connection refused", file=sys.stderr)
    sys.exit(1)
print(json.dumps({{"type": "ready"}}), flush=True)
for line in sys.stdin:
    message = json.loads(line)
    with log.open("a") as out:
        out.write(line)
    if message["op"] == "upgrade":
        if len(log.read_text().splitlines()) == {exit_at}:
            sys.exit(3)
        question = {{"id": message["id"], "type": "postrender", "manifests": {manifests!r}}}
        print(json.dumps(question), flush=True)
    elif "error" in message:
        stderr = "Error: error while running post render on files: " + message["error"]
        print(json.dumps({{"id": message["id"], "type": "error", "stderr": stderr}}), flush=True)
    else:
        chart = {{"metadata": {{"version": "0.1.0"}}}}
        release = {{"name": "t", "version": 2, "info": {{"status": "deployed"}}, "chart": chart}}
        print(json.dumps({{"id": message["id"], "type": "result", "release": release}}), flush=True)
"""
FOREIGN_IMAGE = """apiVersion: apps/v1
kind: Deployment
metadata: {name: s, namespace: tenant-t}
spec:
  selector: {matchLabels: {app: s}}
  template:
    metadata: {labels: {app: s}}
    spec: {containers: [{name: s, image: elsewhere.example/s:1}]}
"""


def fake_worker(
    tmp_path: Path,
    *,
    manifests: str = "kind: ConfigMap\n",
    exit_at: int = 0,
    fail_start: bool = False,
    allowed_registries: tuple[str, ...] = (),
) -> tuple[Helm, Path, Path]:
    """A Helm whose releases go to the fake worker; the fake `helm` executable logs any call made instead."""
    helm, helm_log = fake_helm(tmp_path, major=4)
    log = tmp_path / "worker.log"
    script = tmp_path / "helm-worker"
    script.write_text(
        FAKE_WORKER.format(
            python=sys.executable, log=log, manifests=manifests, exit_at=exit_at, fail_start=fail_start
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    settings = helm.settings.model_copy(
        update={"helm_worker": str(script), "allowed_registries": allowed_registries}
    )
    return Helm(settings), log, helm_log


async def upgrade_and_close(helm: Helm, name: str, values: dict[str, Any]) -> Release:
    try:
        return await helm.upgrade(name, f"tenant-{name}", values)
    finally:
        await helm.close()


def requests_of(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_worker_installs_through_the_operators_postrenderer(tmp_path: Path) -> None:
    helm, log, helm_log = fake_worker(tmp_path)
    assert helm.worker is not None
    helm.worker.postrender = lambda text: (text.upper(), "")
    release = asyncio.run(upgrade_and_close(helm, "t", {"displayName": "T"}))
    assert (release.name, release.revision, release.status) == ("t", 2, "deployed")
    request, answer = requests_of(log)
    assert request["op"] == "upgrade"
    assert (request["name"], request["namespace"], request["values"]) == (
        "t",
        "tenant-t",
        {"displayName": "T"},
    )
    assert request["chart"] == str(helm.settings.chart)
    assert (request["timeout_seconds"], request["history_max"]) == (300, 5)
    assert answer == {"id": request["id"], "op": "postrendered", "manifests": "KIND: CONFIGMAP\n"}
    assert not helm_log.exists(), "no helm process: neither `helm version` nor the plugin's install"


def test_the_worker_runs_releases_side_by_side_in_one_process(tmp_path: Path) -> None:
    helm, log, _ = fake_worker(tmp_path)
    assert helm.worker is not None
    helm.worker.postrender = lambda text: (text, "")

    async def four() -> list[Release]:
        try:
            return await asyncio.gather(*(helm.upgrade(f"t{i}", f"tenant-t{i}", {}) for i in range(4)))
        finally:
            await helm.close()

    assert [release.revision for release in asyncio.run(four())] == [2, 2, 2, 2]
    assert log.with_suffix(".runs").read_text() == "run\n"
    assert sorted(r["namespace"] for r in requests_of(log) if r["op"] == "upgrade") == [
        f"tenant-t{i}" for i in range(4)
    ]


def test_a_release_the_postrenderer_refuses_fails_for_good(tmp_path: Path) -> None:
    """The worker's post-render question is answered by tenant_postrender itself: its report is the error."""
    helm, log, _ = fake_worker(tmp_path, manifests=FOREIGN_IMAGE, allowed_registries=("registry.local",))
    with pytest.raises(HelmError) as failure:
        asyncio.run(upgrade_and_close(helm, "t", {}))
    assert failure.value.reason == "ImageNotAllowed"
    assert failure.value.permanent
    assert "elsewhere.example/s:1" in failure.value.message
    assert "not from an allowed registry" in requests_of(log)[1]["error"]


def test_a_worker_that_exits_fails_the_release_and_starts_again(tmp_path: Path) -> None:
    helm, log, _ = fake_worker(tmp_path, exit_at=1)
    assert helm.worker is not None
    helm.worker.postrender = lambda text: (text, "")

    async def twice() -> Release:
        with pytest.raises(HelmError) as failure:
            await helm.upgrade("t", "tenant-t", {})
        assert failure.value.reason == "HelmUnavailable"
        assert not failure.value.permanent
        return await upgrade_and_close(helm, "t", {})

    assert asyncio.run(twice()).revision == 2
    assert log.with_suffix(".runs").read_text() == "run\nrun\n"


def test_a_worker_that_cannot_start_says_why(tmp_path: Path) -> None:
    helm, _, _ = fake_worker(tmp_path, fail_start=True)
    with pytest.raises(HelmError) as failure:
        asyncio.run(helm.upgrade("t", "tenant-t", {}))
    assert failure.value.reason == "HelmUnavailable"
    assert "connection refused" in failure.value.message


def test_without_a_worker_each_release_runs_helm(tmp_path: Path) -> None:
    helm, log = fake_helm(tmp_path, major=4)
    named = Helm(helm.settings.model_copy(update={"helm_worker": "no-such-helm-worker"}))
    assert named.worker is None
    asyncio.run(named.upgrade("t", "tenant-t", {}))
    assert "upgrade" in [call.split()[0] for call in log.read_text().splitlines()]
