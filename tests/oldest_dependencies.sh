#!/usr/bin/env bash
# The oldest dependencies, tested. Installs the lower bound of each [project].dependencies entry of
# pyproject.toml exactly (">=" read as "==") into a venv in a temporary directory, with the test tools, and runs
# the unit and post-renderer tests (those that need no cluster), the operator's entry point, and what the unit
# tests do not reach: kopf takes every setting of handlers.configure, the kubernetes client makes each call of
# kube.py and leader.py against a small fake API server, /metrics serves every metric once metrics.serve returns
# (and a port in use fails it).
#
# Run by hand (not by `make test`; it touches no .venv): bash tests/oldest_dependencies.sh [SPEC...]
# A SPEC such as kopf==1.44.6 replaces that package's bound, to see what fails just below it.
# About 2 minutes, most of it pip.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"${PYTHON:-python3}" - "$REPO/pyproject.toml" "$@" >"$WORK/requirements.txt" <<'PY'
import re
import sys
import tomllib

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

pins = {}
for requirement in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    found = re.fullmatch(r"([A-Za-z0-9._-]+)\s*>=\s*([^,;\s]+)", requirement)
    assert found, f"{requirement!r}: a lower bound alone (name>=version) is what this script tests"
    pins[key(found[1])] = f"{found[1]}=={found[2]}"
for spec in sys.argv[2:]:
    name = key(re.match(r"[A-Za-z0-9._-]+", spec)[0])
    assert name in pins, f"{spec}: not a dependency of the project"
    pins[name] = spec
print("\n".join(pins.values()))
PY
echo "installing: $(tr '\n' ' ' <"$WORK/requirements.txt")"
"${PYTHON:-python3}" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install --quiet --disable-pip-version-check -r "$WORK/requirements.txt" \
    pytest pytest-asyncio pytest-timeout jsonschema kmock
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e "$REPO" -e "$REPO/cluster"

cat >"$WORK/checks.py" <<'PY'
"""What the unit tests do not reach: kopf's settings and entry points, the kubernetes client against a fake
API server, /metrics."""

import asyncio
import dataclasses
import inspect
import json
import os
import socket
import threading
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import kopf
import kubernetes

from tenant_operator import events, handlers, metrics, namespace
from tenant_operator.context import MEMO_KEY, Context
from tenant_operator.kube import Kube, Rest, load_configuration
from tenant_operator.settings import Settings

KUBECONFIG = os.environ["KUBECONFIG"]  # set by the script (the client reads it when imported), written below


def check_kopf() -> None:
    settings = kopf.OperatorSettings()
    context = Context(settings=Settings(), helm=None, kube=None, reporter=None, events=None, cache=None)  # type: ignore
    handlers.configure(settings, context)
    # A dataclass takes any attribute: what kopf does not declare would be set and silently ignored.
    for part in dataclasses.fields(settings):
        section = getattr(settings, part.name)
        declared = {field.name for field in dataclasses.fields(section)}
        unknown = set(vars(section)) - declared
        assert not unknown, f"kopf has no settings.{part.name}.{', '.join(sorted(unknown))}"
    selectors = settings.watching.label_selectors
    assert selectors["helmreleases"] == "app.kubernetes.io/part-of=neurallog", selectors
    inspect.signature(kopf.run).bind(clusterwide=True, standalone=True, liveness_endpoint="http://x", memo={})
    kopf.configure(debug=False, log_format=kopf.LogFormat.JSON)
    kopf.TemporaryError("x", delay=1)


class FakeApi(BaseHTTPRequestHandler):
    """A small stateful Kubernetes API: objects by path, 404/409/403 as the API server answers them."""

    store: dict[str, dict] = {}
    seen: list[tuple[str, str, str]] = []
    throttled: set[str] = set()

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str) -> None:
        self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                           "message": reason, "code": code})

    def _body(self) -> object:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")

    def _handle(self) -> None:
        path = urlsplit(self.path).path.removesuffix("/status")
        content_type = self.headers.get("Content-Type", "")
        self.seen.append((self.command, self.path, content_type))
        if path.rsplit("/", 1)[-1] == "forbidden":
            return self._status(403, "Forbidden")
        if path.endswith("/throttled") and path not in self.throttled:
            self.throttled.add(path)
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.command == "GET":
            if path in self.store:
                return self._reply(200, self.store[path])
            items = [item for key, item in self.store.items() if key.startswith(path + "/")]
            if path.endswith(("/pods", "/leases")):
                return self._reply(200, {"kind": "List", "items": items})
            return self._status(404, "NotFound")
        body = self._body()
        if self.command == "POST":
            key = f"{path}/{body['metadata']['name']}"
            if key in self.store:
                return self._status(409, "AlreadyExists")
            body["metadata"]["resourceVersion"] = "1"
            self.store[key] = body
            return self._reply(201, body)
        if path not in self.store:
            return self._status(404, "NotFound")
        if self.command == "PATCH":
            if "json-patch" in content_type and not isinstance(body, list):
                return self._status(400, "BadRequest")
            if "strategic" in content_type and path.startswith("/apis/neurallog.io/"):
                return self._status(415, "UnsupportedMediaType")  # custom resources take no strategic merge
            merged = self.store[path]
            for key, value in body.items():
                merged[key] = {**merged.get(key, {}), **value} if key == "metadata" else value
            self.store[path] = merged
            return self._reply(200, self.store[path])
        if self.command == "PUT":
            stored = self.store[path]["metadata"]["resourceVersion"]
            if body["metadata"].get("resourceVersion") != stored:
                return self._status(409, "Conflict")
            body["metadata"]["resourceVersion"] = str(int(stored) + 1)
            self.store[path] = body
            return self._reply(200, body)
        if self.command == "DELETE":
            return self._reply(200, self.store.pop(path))
        return self._status(405, "MethodNotAllowed")

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    def log_message(self, *_: object) -> None:
        return


def check_kubernetes() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(KUBECONFIG, "w") as file:
        json.dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }, file)
    store = FakeApi.store
    store["/apis/neurallog.io/v1/tenants/acme"] = {"metadata": {"name": "acme"}, "spec": {}}
    store["/api/v1/namespaces/tenant-acme/secrets/db"] = {"metadata": {"name": "db"}, "data": {"url": "eA=="}}
    store["/apis/apps/v1/namespaces/tenant-acme/deployments/server"] = {"metadata": {"name": "server"}}
    store["/apis/apps/v1/namespaces/tenant-acme/statefulsets/redis"] = {"metadata": {"name": "redis"}}

    tenant = {"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": "acme", "uid": "u-1"}}

    async def calls() -> None:
        kube = Kube(load_configuration())
        written = await kube.patch_tenant_status("acme", {"phase": "Running"})
        assert store["/apis/neurallog.io/v1/tenants/acme"]["status"] == {"phase": "Running"}
        assert written["metadata"]["name"] == "acme" and written["status"] == {"phase": "Running"}, written
        assert await kube.patch_tenant_status("gone", {"phase": "Running"}) is None
        event = events.build_event(tenant, "Normal", "Installed", "hello", datetime.now(UTC))
        assert await kube.create_event(event) is True
        assert await kube.create_event(event) is False
        name = event["metadata"]["name"]
        assert store[f"/api/v1/namespaces/default/events/{name}"]["involvedObject"]["uid"] == "u-1"
        await kube.patch_event("default", name, {"count": 2, "lastTimestamp": event["lastTimestamp"]})
        assert store[f"/api/v1/namespaces/default/events/{name}"]["count"] == 2
        assert await kube.get_namespace("tenant-acme") is None
        assert await kube.create_namespace(namespace.build_namespace("tenant-acme", tenant)) is True
        assert await kube.create_namespace(namespace.build_namespace("tenant-acme", tenant)) is False
        found = await kube.get_namespace("tenant-acme")
        await kube.patch_namespace_metadata("tenant-acme", namespace.adoption_patch(found, tenant))
        labels = (await kube.get_namespace("tenant-acme"))["metadata"]["labels"]
        assert labels == namespace.namespace_labels("acme"), labels
        binding = namespace.role_binding("tenant-acme", "tenant-role", "system/tenant-operator")
        assert await kube.create_role_binding(binding) is True
        assert await kube.create_role_binding(binding) is False
        assert (await kube.get_object("StatefulSet", "tenant-acme", "redis"))["metadata"]["name"] == "redis"
        for kind in ("NetworkPolicy", "ResourceQuota", "LimitRange", "Service", "Deployment", "StatefulSet"):
            assert await kube.get_object(kind, "tenant-acme", "nope") is None
        assert (await kube.get_object("Deployment", "tenant-acme", "server"))["metadata"]["name"] == "server"
        assert await kube.get_object("Service", "tenant-acme", "throttled") is None  # a 429, then a 404
        keys = await kube.secret_keys("tenant-acme", ["db", "missing", "forbidden"])
        assert keys == {"db": frozenset({"url"}), "missing": None}, keys
        await kube.delete_namespace("tenant-acme")
        await kube.delete_namespace("tenant-acme")

    asyncio.run(calls())
    try:
        from tenant_operator import leader
    except ImportError:
        leader = None
    if leader is not None:
        api = leader.LeaseApi(Rest(load_configuration()), "system", "lease")
        elector = leader.Elector(api, "me")
        assert elector.try_acquire() and elector.try_acquire()
        assert leader.Elector(api, "other").try_acquire() is False
        elector.release()
        assert leader.Elector(api, "other").try_acquire() is True
    bad = [seen for seen in FakeApi.seen if seen[0] == "PATCH" and "json-patch" in seen[2]]
    assert not bad, bad
    server.shutdown()


def check_metrics() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.serve(port)
    try:  # bound before serve returns: a port in use stops the operator at start, not silently in a thread
        metrics.serve(port)
    except OSError:
        pass
    else:
        raise AssertionError("metrics.serve went on with its port in use")

    async def work() -> None:
        async with metrics.helm_call("upgrade") as outcome:
            outcome.append("success")
        async with metrics.reconcile():
            pass

    asyncio.run(work())
    metrics.set_phase("acme", "Running")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for sample in (
        'tenant_operator_reconciles_total{outcome="success"} 1.0',
        'tenant_operator_helm_calls_total{command="upgrade",outcome="success"} 1.0',
        'tenant_operator_helm_duration_seconds_bucket{command="upgrade",le="0.1"} 1.0',
        'tenant_operator_reconcile_duration_seconds_count 1.0',
        'tenant_operator_tenants{phase="Running"} 1.0',
        'tenant_operator_api_requests_total{function="read_namespace"} 3.0',
    ):
        assert sample in text.splitlines(), f"/metrics lacks {sample}:\n{text}"


check_kopf()
check_kubernetes()
check_metrics()
print("checks passed: kopf settings and entry points, kubernetes client calls, /metrics")
PY

cd "$REPO"
"$PY" -c "import tenant_operator.__main__, tenant_operator.handlers"
"$PY" -m tenant_operator --help >/dev/null
KUBECONFIG="$WORK/kubeconfig" "$PY" "$WORK/checks.py"
"$PY" -m pytest tests/unit tests/postrender -q -p no:cacheprovider -m "not cluster"
echo "the oldest dependencies work ($(tr '\n' ' ' <"$WORK/requirements.txt")): ${SECONDS}s"
