"""The tenant's Helm release: `helm upgrade --install` of charts/tenant through the post-renderer; uninstall.

Installs and upgrades go to the helm-worker (helm_worker.py: Helm 4 as a library in one process, the
post-renderer answered in this one) when it is there. Else each runs the `helm` executable: Helm 3 runs the
post-renderer as an executable (`--post-renderer /path/to/tenant-postrender`), Helm 4 as a plugin
(`--post-renderer tenant-postrender`), installed from postrender/ into a HELM_PLUGINS directory of the
operator's own. History, rollback and uninstall always run the executable. All that Helm prints passes through
`redact` before it reaches a status, event or log.
"""

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenant_operator import metrics
from tenant_operator.helm_worker import HelmWorker, WorkerUnavailableError
from tenant_operator.settings import Settings
from tenant_postrender.cli import ALLOWED_REGISTRIES_ENV
from tenant_postrender.render import render
from tenant_postrender.violations import ValidationFailed

logger = logging.getLogger(__name__)

PLUGIN_NAME = "tenant-postrender"
MAX_MESSAGE = 4000
HISTORY_MAX = 5


class HelmError(Exception):
    """A Helm command failed: `reason` is one CamelCase word, `message` is redacted, `permanent` means the
    same spec will fail again (only a change of the Tenant can help)."""

    def __init__(self, reason: str, message: str, *, permanent: bool) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class Release:
    """What Helm reports about an installed release."""

    name: str
    revision: int
    chart_version: str
    status: str


# A name whose value is secret: it ends with one of these words (DB_PASSWORD, client_secret, apiKey,
# X-API-KEY, aws_secret_access_key, tls-key-file-pass); secretKeyRef and secretName, which only name a Secret,
# do not.
_SECRET_NAME = (
    r"[\w.-]*?(?:password|passwd|passphrase|secret|token|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|credentials?|requirepass|masterauth|authorization|(?<![a-z])pass)s?(?![\w-])"
)
# Between a name and its value, in YAML, JSON (also JSON quoted again by Go, \"key\":\"value\"), env=value
# and data[key]: value.
_SEPARATOR = r"(?:\\*[\"'])?\]?\s*[:=]\s*"
_QUOTE = r"(?:\\*[\"'])?"
_VALUE = r"(?:(?P<escape>\\+)\"(?:(?!(?P=escape)\").)*(?P=escape)\"|\"[^\"]*\"|'[^']*'|[^\s,;}\]\"'\\]+)"
_SECRET_ASSIGNMENT = re.compile(rf"(?i)({_SECRET_NAME}{_SEPARATOR})({_VALUE})")
# An environment variable as Kubernetes prints it: {"name":"API_KEY","value":"..."} (JSON),
# name: API_KEY / value: ... (YAML), {Name:API_KEY Value:... } (Go).
_SECRET_ENV = re.compile(
    rf"(?i)(\bname{_SEPARATOR}{_QUOTE}{_SECRET_NAME}{_QUOTE}[\s,]*{_QUOTE}value{_SEPARATOR})({_VALUE})"
)
# redis.conf and redis-server arguments: `requirepass x`, `--masterauth x`, `tls-key-file-pass x`.
_REDIS_PASSWORD = re.compile(
    r"(?i)(?<![\w-])(-{0,2}(?:requirepass|masterauth|[a-z-]*-pass))(\s+)(\"[^\"]*\"|'[^']*'|\S+)"
)
# A Redis ACL rule (`user alice on >password ~* +@all`) gives a password after '>'.
_REDIS_ACL_USER = re.compile(r"(?i)\buser\s+\S+[^\n]*")
_REDIS_ACL_PASSWORD = re.compile(r"(?<=\s)>[^\s>=]\S*")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[\w.~+/=-]{8,}")
# user:password@ in a URL; the password may hold '/', ':' and '@' (the last '@' before the host ends it).
_URL_CREDENTIALS = re.compile(
    r"([a-z][a-z0-9+.-]*://)([^\s/?#@:\"'\\]*):([^\s\"'\\]+)@(?=[^\s@\"'\\]*(?:[\s\"'\\]|$))", re.IGNORECASE
)
_BASE64_WORD = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{20,}={0,2}(?![A-Za-z0-9+/=])")


def _looks_encoded(match: re.Match[str]) -> str:
    """Base64 (a Secret's data) mixes cases and digits; paths and words such as install/upgrade do not."""
    word = match.group(0)
    mixed = (
        any(c.isdigit() for c in word) and any(c.isupper() for c in word) and any(c.islower() for c in word)
    )
    return "<redacted>" if mixed else word


def _acl_passwords(match: re.Match[str]) -> str:
    return _REDIS_ACL_PASSWORD.sub("><redacted>", match.group(0))


def redact(text: str, secrets: Iterable[str] = (), limit: int | None = MAX_MESSAGE) -> str:
    """`text` without secret values: values of secret-looking names (assigned, as environment variables or
    as redis.conf directives), Redis ACL passwords, bearer tokens, URL passwords, base64 blobs and the given
    strings; shortened to `limit` characters (None: not shortened)."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    text = _REDIS_ACL_USER.sub(_acl_passwords, text)
    text = _BEARER.sub(r"\1\2<redacted>", text)
    text = _SECRET_ENV.sub(r"\1<redacted>", text)
    text = _SECRET_ASSIGNMENT.sub(r"\1<redacted>", text)
    text = _REDIS_PASSWORD.sub(r"\1\2<redacted>", text)
    text = _URL_CREDENTIALS.sub(r"\1\2:<redacted>@", text)
    text = _BASE64_WORD.sub(_looks_encoded, text)
    text = text.strip()
    suffix = " ... (truncated)"
    return text if limit is None or len(text) <= limit else text[: limit - len(suffix)] + suffix


def refusal(report: str) -> HelmError:
    """The post-renderer refused the release for the reasons its `report` lists: a change of the Tenant is
    needed."""
    lowered = report.lower()
    if "not from an allowed registry" in lowered:
        reason = "ImageNotAllowed"
    elif "budget" in lowered or "quota" in lowered:
        reason = "BudgetExceeded"
    else:
        reason = "ManifestsRejected"
    return HelmError(reason, redact(report) or "the post-renderer refused the release", permanent=True)


def classify(stderr: str) -> HelmError:
    """The failure that Helm's error output describes."""
    message = redact(stderr) or "helm failed without a message"
    lowered = stderr.lower()
    if "post-render" in lowered or "post render" in lowered or "postrender" in lowered:
        return refusal(stderr)
    if "don't meet the specifications of the schema" in lowered:
        return HelmError("InvalidValues", message, permanent=True)
    if "another operation (install/upgrade/rollback) is in progress" in lowered:
        return HelmError("ReleaseBusy", message, permanent=False)
    if "has no deployed releases" in lowered:
        return HelmError("NoDeployedRelease", message, permanent=False)
    if "exceeded quota" in lowered:
        return HelmError("BudgetExceeded", message, permanent=True)
    if " is invalid" in lowered or "admission webhook" in lowered:
        return HelmError("InstallRejected", message, permanent=True)
    return HelmError("HelmFailed", message, permanent=False)


# What shapes a release's manifests: in a chart, its metadata, values, schema, templates, CRDs and subcharts
# (not its README or ci/ values); in the post-renderer, its Python code.
CHART_SOURCES = (
    "Chart.yaml",
    "values.yaml",
    "values.schema.json",
    "templates/**/*",
    "crds/**/*",
    "charts/**/*",
)
POSTRENDERER_SOURCES = ("**/*.py",)


def fingerprint(sources: Iterable[tuple[Path, Iterable[str]]], extra: bytes = b"") -> str:
    """A digest of the files that the patterns match under each directory (their relative names and
    contents), and `extra`: what decides whether a release must be installed again."""
    digest = hashlib.sha256(extra)
    for root, patterns in sources:
        files = {path for pattern in patterns for path in root.glob(pattern) if path.is_file()}
        for path in sorted(files):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def postrenderer_sources() -> Path:
    """The directory of the tenant_postrender package (its code shapes the manifests as much as the chart)."""
    spec = importlib.util.find_spec("tenant_postrender")
    if spec is None or spec.origin is None:
        raise RuntimeError("the tenant_postrender package is not installed")
    return Path(spec.origin).parent


def desired_hash(values: Mapping[str, Any], chart_fingerprint: str) -> str:
    """What decides whether Helm has work to do: the values, and the chart and post-renderer they pass."""
    document = json.dumps(
        {"values": values, "chart": chart_fingerprint}, sort_keys=True, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(document.encode()).hexdigest()


def upgrade_args(
    *,
    name: str,
    namespace: str,
    chart: Path,
    values_file: Path,
    postrenderer: str,
    timeout: float,
    server_side: bool = False,
) -> list[str]:
    """The arguments of `helm upgrade --install` of a tenant (no --wait: the status follows the workloads).
    `server_side` (Helm 4, server-side apply): --force-conflicts, the release takes back fields that someone
    else wrote, as the Tenant is what decides them (drift.py; without it such a field fails every later
    upgrade); and --disable-openapi-validation: the API server checks every field itself (Helm sends
    fieldValidation=Strict), while Helm's own check parses the server's whole OpenAPI document on every call,
    half of its CPU per release (measured)."""
    return [
        "upgrade",
        "--install",
        name,
        str(chart),
        "--namespace",
        namespace,
        "--values",
        str(values_file),
        "--post-renderer",
        postrenderer,
        "--timeout",
        f"{int(timeout)}s",
        "--history-max",
        str(HISTORY_MAX),
        "--output",
        "json",
        *(["--force-conflicts", "--disable-openapi-validation"] if server_side else []),
    ]


def parse_release(output: str) -> Release:
    """The release that `helm ... --output json` printed (its manifest, which holds Secrets, is not kept)."""
    document = json.loads(output)
    return Release(
        name=str(document.get("name", "")),
        revision=int(document.get("version", 0)),
        chart_version=str(document.get("chart", {}).get("metadata", {}).get("version", "")),
        status=str(document.get("info", {}).get("status", "")),
    )


class Helm:
    """The Helm executable of the settings, with the environment and post-renderer it needs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._concurrency = asyncio.Semaphore(settings.concurrency)
        self._major: int | None = None
        self._setup = asyncio.Lock()  # Helm's version and the plugin, found out and installed once
        # One Helm command per release at a time (what makes a pending release found here a dead one).
        self._releases: dict[str, asyncio.Lock] = {}
        # What the release passes through: the chart, the post-renderer and the allow-list it enforces (a
        # changed list checks every tenant again).
        registries = ",".join(sorted(settings.allowed_registries)).encode()
        self.chart_fingerprint = fingerprint(
            [(settings.chart, CHART_SOURCES), (postrenderer_sources(), POSTRENDERER_SOURCES)], registries
        )
        bin_dir = str(Path(settings.postrenderer).parent)
        # A Helm home of the operator's own: the user's Helm configuration and plugins stay out of it. Helm
        # 4.3 installs a local plugin into $HELM_DATA_HOME/plugins whatever HELM_PLUGINS says: left unset.
        environ = {key: value for key, value in os.environ.items() if key != "HELM_PLUGINS"}
        self.env = environ | {
            "PATH": f"{bin_dir}{os.pathsep}{environ.get('PATH', '')}",
            ALLOWED_REGISTRIES_ENV: ",".join(settings.allowed_registries),
            "HELM_DATA_HOME": str(settings.helm_home / "data"),
            "HELM_CONFIG_HOME": str(settings.helm_home / "config"),
            "HELM_CACHE_HOME": str(settings.helm_home / "cache"),
            # Helm is short-lived: collecting garbage less often saves 10-20% of its CPU per release for
            # about 16 MiB more at its peak (measured); a GOGC of the environment wins.
            "GOGC": environ.get("GOGC", "400"),
        }
        self.plugins = settings.helm_home / "data" / "plugins"
        worker = shutil.which(settings.helm_worker) if settings.helm_worker else None
        # A long-running Go process is better off with Go's default garbage collection (100).
        worker_env = self.env | {"GOGC": environ.get("GOGC", "100")}
        self.worker = HelmWorker(worker, worker_env, self._postrender) if worker else None
        if not worker:
            logger.info("no helm-worker (%r): each release runs %s", settings.helm_worker, settings.helm)

    async def close(self) -> None:
        """End the helm-worker, if one runs (after the releases under way)."""
        if self.worker is not None:
            await self.worker.close()

    def _postrender(self, manifests: str) -> tuple[str, str]:
        """What the post-renderer plugin does to a release's manifests, for the worker: (manifests, "") or
        ("", the report of why they are refused)."""
        try:
            return render(manifests, allowed_registries=list(self.settings.allowed_registries)), ""
        except ValidationFailed as failure:
            return "", failure.report()

    async def _run(self, *args: str, timeout: float | None = None) -> tuple[int, str, str]:
        command = args[0]
        async with self._concurrency, metrics.helm_call(command) as outcome:
            # A process group of its own: a timeout ends Helm and the post-renderer it started, together.
            process = await asyncio.create_subprocess_exec(
                self.settings.helm,
                *args,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            try:
                stdout, stderr = await asyncio.wait_for(
                    process.communicate(), timeout=timeout or self.settings.helm_timeout + 30
                )
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
                outcome.append("timeout")
                raise HelmError("HelmTimeout", f"helm {command} took too long", permanent=False) from None
            outcome.append("ok" if process.returncode == 0 else "error")
            return process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")

    async def major_version(self) -> int:
        """3 or 4."""
        if self._major is None:
            async with self._setup:
                if self._major is None:
                    code, stdout, stderr = await self._run("version", "--template", "{{.Version}}")
                    if code != 0:
                        raise HelmError("HelmUnavailable", redact(stderr), permanent=False)
                    match = re.match(r"v?(\d+)", stdout.strip())
                    self._major = int(match.group(1)) if match else 3
        return self._major

    async def postrender_argument(self) -> str:
        """What follows --post-renderer: the executable (Helm 3) or the installed plugin's name (Helm 4)."""
        if await self.major_version() < 4:
            return self.settings.postrenderer
        if not self.plugin_installed():
            async with self._setup:  # the first releases, all at once, install it once
                if not self.plugin_installed():
                    await self._install_plugin()
        return PLUGIN_NAME

    async def _install_plugin(self) -> None:
        code, _, stderr = await self._run("plugin", "install", str(self.settings.postrender_plugin))
        if code != 0 and not self.plugin_installed():
            raise HelmError("PostRendererUnavailable", redact(stderr), permanent=False)
        logger.info("installed the Helm plugin %s into %s", PLUGIN_NAME, self.plugins)

    def plugin_installed(self) -> bool:
        """Whether the post-renderer plugin is in the operator's Helm home (checked without running Helm)."""
        manifests = self.plugins.glob("*/plugin.yaml") if self.plugins.is_dir() else []
        return any(f"name: {PLUGIN_NAME}" in manifest.read_text().splitlines() for manifest in manifests)

    def _release_lock(self, name: str, namespace: str) -> asyncio.Lock:
        return self._releases.setdefault(f"{namespace}/{name}", asyncio.Lock())

    async def upgrade(self, name: str, namespace: str, values: Mapping[str, Any]) -> Release:
        """`helm upgrade --install` of the tenant chart; HelmError when it fails."""
        async with self._release_lock(name, namespace):
            return await self._upgrade(name, namespace, values)

    async def _upgrade(self, name: str, namespace: str, values: Mapping[str, Any]) -> Release:
        if self.worker is not None:
            code, stdout, stderr = await self._upgrade_in_worker(self.worker, name, namespace, values)
        else:
            code, stdout, stderr = await self._upgrade_in_process(name, namespace, values)
        if code != 0:
            error = classify(stderr)
            if error.reason == "ReleaseBusy":
                await self.unstick(name, namespace)
            elif error.reason == "NoDeployedRelease":  # a first install that failed half-way: start over
                await self._uninstall(name, namespace)
            raise error
        return parse_release(stdout)

    async def _upgrade_in_worker(
        self, worker: HelmWorker, name: str, namespace: str, values: Mapping[str, Any]
    ) -> tuple[int, str, str]:
        async with self._concurrency, metrics.helm_call("upgrade") as outcome:
            try:
                result = await worker.upgrade(
                    name=name,
                    namespace=namespace,
                    chart=self.settings.chart,
                    values=values,
                    timeout=self.settings.helm_timeout,
                    history_max=HISTORY_MAX,
                )
            except TimeoutError:
                outcome.append("timeout")
                raise HelmError("HelmTimeout", "helm upgrade took too long", permanent=False) from None
            except WorkerUnavailableError as gone:
                outcome.append("error")
                raise HelmError("HelmUnavailable", redact(gone.stderr), permanent=False) from None
            outcome.append("ok" if result[0] == 0 else "error")
            return result

    async def _upgrade_in_process(
        self, name: str, namespace: str, values: Mapping[str, Any]
    ) -> tuple[int, str, str]:
        postrenderer = await self.postrender_argument()
        with tempfile.TemporaryDirectory(prefix="tenant-values-") as directory:
            values_file = Path(directory) / "values.json"
            values_file.write_text(json.dumps(values), encoding="utf-8")
            values_file.chmod(0o600)
            args = upgrade_args(
                name=name,
                namespace=namespace,
                chart=self.settings.chart,
                values_file=values_file,
                postrenderer=postrenderer,
                timeout=self.settings.helm_timeout,
                server_side=await self.major_version() >= 4,
            )
            return await self._run(*args)

    async def template(self, name: str, namespace: str, chart: Path, values: Mapping[str, Any]) -> str:
        """`helm template` of a tenant: the release's manifests as Helm renders them, without a cluster (so a
        `lookup` finds nothing: never to be applied as such); HelmError when the chart refuses the values."""
        with tempfile.TemporaryDirectory(prefix="tenant-values-") as directory:
            values_file = Path(directory) / "values.json"
            values_file.write_text(json.dumps(values), encoding="utf-8")
            values_file.chmod(0o600)
            code, stdout, stderr = await self._run(
                "template", name, str(chart), "--namespace", namespace, "--values", str(values_file)
            )
        if code != 0:
            raise classify(stderr)
        return stdout

    async def package(self, chart: Path, version: str, destination: Path) -> Path:
        """`helm package` of a chart directory at `version`: the archive's path."""
        destination.mkdir(parents=True, exist_ok=True)
        code, _, stderr = await self._run(
            "package", str(chart), "--version", version, "--destination", str(destination)
        )
        if code != 0:
            raise HelmError("ChartUnavailable", redact(stderr), permanent=False)
        archives = sorted(destination.glob(f"*-{version}.tgz"))
        if len(archives) != 1:
            raise HelmError(
                "ChartUnavailable", f"helm package left {archives} in {destination}", permanent=False
            )
        return archives[0]

    async def history(self, name: str, namespace: str) -> list[Mapping[str, Any]]:
        """The release's revisions, oldest first; [] when there is no release."""
        code, stdout, stderr = await self._run("history", name, "--namespace", namespace, "--output", "json")
        if code != 0:
            if "not found" in stderr.lower():
                return []
            raise classify(stderr)
        revisions: list[Mapping[str, Any]] = json.loads(stdout or "[]")
        return revisions

    async def unstick(self, name: str, namespace: str) -> None:
        """Free a release left pending by an interrupted Helm (operator stopped mid-install): roll back to
        the last deployed revision, or uninstall when there is none. One operator runs, one Helm command per
        tenant at a time, so a pending release here is always a dead one."""
        revisions = await self.history(name, namespace)
        if not revisions or not str(revisions[-1].get("status", "")).startswith("pending"):
            return
        deployed: Sequence[Mapping[str, Any]] = [
            r for r in revisions if r.get("status") in ("deployed", "superseded")
        ]
        if deployed:
            target = str(deployed[-1].get("revision"))
            logger.warning(
                "release %s/%s is stuck pending; rolling back to revision %s", namespace, name, target
            )
            await self._run("rollback", name, target, "--namespace", namespace)
        else:
            logger.warning(
                "release %s/%s is stuck pending its first install; uninstalling it", namespace, name
            )
            await self._uninstall(name, namespace)

    async def uninstall(self, name: str, namespace: str) -> bool:
        """`helm uninstall`; False when there was no release."""
        async with self._release_lock(name, namespace):
            return await self._uninstall(name, namespace)

    async def _uninstall(self, name: str, namespace: str) -> bool:
        code, _, stderr = await self._run("uninstall", name, "--namespace", namespace)
        if code == 0:
            return True
        if "not found" in stderr.lower():
            return False
        raise classify(stderr)
