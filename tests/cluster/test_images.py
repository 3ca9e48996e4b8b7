"""The real node's images: OCI archives containerd imports under the charts' names, and what runs in them.

Containers run with runc directly, as the node would run them for the charts: the image's root filesystem
read-only, a non-root user, no capabilities, on the host's network so that only 127.0.0.1 is used. The
operator image takes minutes to build cold (it is cached after); its test builds it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from local_cluster import images
from local_cluster.build import cache_root
from local_cluster.images import LocalImage
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("runc", "apt-get", "go", "gcc", "busybox")),
    reason="the images are built and run as root with runc, apt-get, go, gcc and busybox",
)

FAST = (images.PAUSE, images.PROBE, images.REDIS, images.SERVER)


@pytest.fixture(scope="module")
def built() -> dict[str, LocalImage]:
    """The images that take seconds to build (cold), by name."""
    bin_dir = REPO / ".cluster" / "bin"
    return {recipe.name: images._ensure(recipe, bin_dir) for recipe in FAST}


@dataclass
class Unpacked:
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    rootfs: Path


def unpack(archive: Path, target: Path) -> Unpacked:
    """Checks the OCI layout (every blob is named by its digest) and unpacks the image's root filesystem."""
    with tarfile.open(archive) as opened:
        names = [member.name.removeprefix("./") for member in opened]
        assert "oci-layout" in names
        blobs: dict[str, bytes] = {}
        for member in opened:
            name = member.name.removeprefix("./")
            if name.startswith("blobs/sha256/") and member.isfile():
                stream = opened.extractfile(member)
                assert stream is not None
                data = stream.read()
                assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], name
                blobs["sha256:" + name.rsplit("/", 1)[1]] = data
        index: dict[str, Any] = images.read_index(archive)
    (entry,) = index["manifests"]
    manifest = json.loads(blobs[entry["digest"]])
    config = json.loads(blobs[manifest["config"]["digest"]])
    layer_digests = [layer["digest"] for layer in manifest["layers"]]
    uncompressed = []
    target.mkdir(parents=True, exist_ok=True)
    for layer, digest in zip(manifest["layers"], layer_digests, strict=True):
        data = blobs[digest]
        layer_file = target.parent / (target.name + ".layer")
        layer_file.write_bytes(data)
        if layer["mediaType"].endswith("+gzip"):
            raw = subprocess.run(["gzip", "-dc", str(layer_file)], capture_output=True, check=True).stdout
        else:
            raw = data
        uncompressed.append("sha256:" + hashlib.sha256(raw).hexdigest())
        subprocess.run(["tar", "-xf", str(layer_file), "-C", str(target)], check=True)
        layer_file.unlink()
    assert config["rootfs"]["diff_ids"] == uncompressed
    return Unpacked(index, manifest, config, target)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def redis_command(port: int, *args: str) -> bytes:
    """One RESP exchange per command on a fresh connection: the reply's first line."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as client:
        reply = b""
        for command in (args,):
            wire = f"*{len(command)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in command)
            client.sendall(wire.encode())
            while not reply.endswith(b"\r\n"):
                chunk = client.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.strip()


class Container:
    """A container run by runc from an unpacked image, in a state directory of the test's own."""

    def __init__(self, state: Path, container_id: str, log: Path) -> None:
        self.state, self.id, self.log = state, container_id, log

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runc", "--root", str(self.state), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def exec(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        flags = [f"--env={key}={value}" for key, value in (env or {}).items()]
        return self.runc("exec", *flags, self.id, *argv, check=False)

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def run_container(
    image: Unpacked,
    tmp: Path,
    args: list[str] | None = None,
    *,
    command: list[str] | None = None,
    uid: int | None = None,
    env: dict[str, str] | None = None,
    mounts: dict[str, Path] | None = None,
    tmpfs: tuple[str, ...] = (),
) -> Iterator[Container]:
    """Runs the image as the charts do: read-only root, non-root, no capabilities, no privilege escalation."""
    bundle = tmp / f"bundle-{uuid.uuid4().hex[:8]}"
    bundle.mkdir()
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    config = image.config["config"]
    assert isinstance(config, dict)
    user = str(config.get("User") or "0:0")
    image_uid, _, image_gid = user.partition(":")
    run_uid = int(image_uid) if uid is None else uid
    process = spec["process"]
    process["terminal"] = False
    process["args"] = command or (config.get("Entrypoint") or []) + (
        args if args is not None else config.get("Cmd") or []
    )
    process["env"] = list(config.get("Env", [])) + [f"{k}={v}" for k, v in (env or {}).items()]
    process["cwd"] = config.get("WorkingDir") or "/"
    process["user"] = {"uid": run_uid, "gid": run_uid if uid is not None else int(image_gid or 0)}
    process["capabilities"] = {key: [] for key in process["capabilities"]}
    process["noNewPrivileges"] = True
    spec["root"] = {"path": str(image.rootfs), "readonly": True}
    # The host's network namespace: the tests talk to 127.0.0.1 only.
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
    for destination, source in (mounts or {}).items():
        spec["mounts"].append(
            {"destination": destination, "type": "bind", "source": str(source), "options": ["rbind", "rw"]}
        )
    for destination in tmpfs:
        spec["mounts"].append(
            {"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        )
    (bundle / "config.json").write_text(json.dumps(spec))
    state = tmp / "runc-state"
    container_id = f"images-test-{uuid.uuid4().hex[:8]}"
    log = bundle / "output.log"
    container = Container(state, container_id, log)
    with log.open("w") as output:
        subprocess.run(
            ["runc", "--root", str(state), "run", "--detach", "--bundle", str(bundle), container_id],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            check=True,
            timeout=30,
        )
    try:
        yield container
    finally:
        container.runc("kill", container_id, "KILL", check=False)
        container.runc("delete", "--force", container_id, check=False)


def normalized(reference: str) -> str:
    """The name containerd's CRI stores for an image reference of a pod spec."""
    first, _, rest = reference.partition("/")
    if not rest:
        reference = f"docker.io/library/{reference}"
    elif "." not in first and ":" not in first and first != "localhost":
        reference = f"docker.io/{reference}"
    return reference if ":" in reference.rsplit("/", 1)[-1] else reference + ":latest"


# --- archives ---------------------------------------------------------------------------------------------


def test_the_charts_default_images_are_the_ones_built() -> None:
    tenant = yaml.safe_load((REPO / "charts/tenant/values.yaml").read_text())
    operator = yaml.safe_load((REPO / "charts/tenant-operator/values.yaml").read_text())
    image = operator["image"]
    operator_reference = f"{image['repository']}:{image.get('tag') or 'latest'}"
    assert normalized(tenant["redis"]["image"]) == images.REDIS_IMAGE
    assert normalized(tenant["server"]["image"]) == images.SERVER_IMAGE
    assert normalized(operator_reference) == images.OPERATOR_IMAGE
    assert [recipe.name for recipe in images.NODE_IMAGES] == [
        images.PAUSE_IMAGE,
        images.PROBE_IMAGE,
        images.REDIS_IMAGE,
        images.SERVER_IMAGE,
        images.COREDNS_IMAGE,
        images.OPERATOR_IMAGE,
    ]


@pytest.mark.parametrize("recipe", FAST, ids=lambda recipe: recipe.slug)
def test_archive_is_an_oci_layout_containerd_names_after_the_image(
    recipe: images.Recipe, built: dict[str, LocalImage], tmp_path: Path
) -> None:
    image = built[recipe.name]
    assert image.archive.is_file()
    assert image.archive.parent.parent == cache_root() / "images"
    unpacked = unpack(image.archive, tmp_path / "rootfs")
    (entry,) = unpacked.index["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert entry["annotations"] == {
        "io.containerd.image.name": recipe.name,
        "org.opencontainers.image.ref.name": recipe.name.rsplit(":", 1)[1],
    }
    assert unpacked.config["architecture"] == "amd64"
    assert unpacked.config["os"] == "linux"


def test_a_warm_run_builds_nothing_and_says_nothing(
    built: dict[str, LocalImage], capfd: pytest.CaptureFixture[str]
) -> None:
    again = {recipe.name: images._ensure(recipe, REPO / ".cluster" / "bin") for recipe in FAST}
    assert again == built
    captured = capfd.readouterr()
    assert captured.out == captured.err == ""
    # The operator's key (the slow image) is computed again the same, without building anything.
    bin_dir = REPO / ".cluster" / "bin"
    assert images._cached_name(images.OPERATOR, bin_dir) == images._cached_name(images.OPERATOR, bin_dir)


def test_the_cache_key_follows_the_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = REPO / ".cluster" / "bin"
    before = images._cached_name(images.PAUSE, bin_dir)
    source = tmp_path / "cluster/images/pause"
    shutil.copytree(images.IMAGES_DIR / "pause", source)
    (source / "pause.c").write_text((source / "pause.c").read_text() + "\n/* changed */\n")
    monkeypatch.setattr(images, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(images, "IMAGES_DIR", tmp_path / "cluster/images")
    assert images._cached_name(images.PAUSE, bin_dir) != before


# --- pause and the probe image ----------------------------------------------------------------------------


def test_pause_waits_and_exits_on_sigterm(built: dict[str, LocalImage], tmp_path: Path) -> None:
    image = unpack(built[images.PAUSE_IMAGE].archive, tmp_path / "rootfs")
    assert image.config["config"]["Entrypoint"] == ["/pause"]
    pause = subprocess.Popen([str(image.rootfs / "pause")], stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    assert pause.poll() is None, "pause exited on its own"
    pause.send_signal(signal.SIGTERM)
    assert pause.wait(timeout=5) == 0


def test_probe_image_runs_busybox_as_nobody(built: dict[str, LocalImage], tmp_path: Path) -> None:
    image = unpack(built[images.PROBE_IMAGE].archive, tmp_path / "rootfs")
    with run_container(image, tmp_path, ["sh", "-c", "sleep 30"]) as container:
        tools = ("nc", "wget", "nslookup", "sleep", "ip", "ping")
        found = container.exec("which", *tools)
        assert len(found.stdout.split()) == len(tools), found.stdout + found.stderr
        result = container.exec("sh", "-c", "id -u; id -g; touch /x 2>&1 || echo read-only")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[:2] == ["65534", "65534"]
        assert "read-only" in result.stdout


# --- Redis ------------------------------------------------------------------------------------------------


def test_redis_image_holds_redis_and_busybox(built: dict[str, LocalImage], tmp_path: Path) -> None:
    image = unpack(built[images.REDIS_IMAGE].archive, tmp_path / "rootfs")
    for path in ("usr/bin/redis-server", "usr/bin/redis-cli", "bin/sh", "usr/bin/wget", "usr/bin/nc"):
        assert os.path.lexists(image.rootfs / path), path
    assert "redis:x:999:999:" in (image.rootfs / "etc/passwd").read_text()
    assert (image.rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (image.rootfs / "data").stat().st_uid == 999
    # Every library the binaries need is in the image (the loader resolves them inside the root).
    for binary in ("usr/bin/redis-check-rdb", "usr/bin/redis-cli"):
        result = subprocess.run(
            ["chroot", str(image.rootfs), "/lib64/ld-linux-x86-64.so.2", "--list", "/" + binary],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "not found" not in result.stdout


def test_redis_runs_as_the_tenant_chart_runs_it(built: dict[str, LocalImage], tmp_path: Path) -> None:
    image = unpack(built[images.REDIS_IMAGE].archive, tmp_path / "rootfs")
    port = free_port()
    password = secrets.token_urlsafe(24)
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 999, 999)  # fsGroup 999 does this on the node
    config = tmp_path / "config"
    config.mkdir()
    # The chart's ConfigMap, with a free port and the bind address of a test on the host's network.
    (config / "redis.conf").write_text(f"maxmemory 64mb\ndir /data\nport {port}\nbind 127.0.0.1\n")
    command = (
        "set -e\n"
        'set -- /etc/redis/redis.conf --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"\n'
        'exec redis-server "$@"\n'
    )
    env = {"POD_NAME": "redis-0", "REDIS_PASSWORD": password, "REDISCLI_AUTH": password}
    with run_container(
        image, tmp_path, ["sh", "-c", command], uid=999, env=env, mounts={"/data": data, "/etc/redis": config}
    ) as container:
        wait_port(port)
        # The chart's readiness probe, with this port.
        probe = container.exec(
            "sh",
            "-c",
            f"redis-cli -h 127.0.0.1 -p {port} ping | grep -q PONG",
            env={"REDISCLI_AUTH": password},
        )
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert redis_command(port, "PING").startswith(b"-NOAUTH")
        whoami = container.exec("sh", "-c", "id -u; touch /forbidden 2>&1 || echo read-only")
        assert whoami.stdout.split()[0] == "999"
        assert "read-only" in whoami.stdout
        saved = container.exec(
            "sh",
            "-c",
            f"redis-cli -p {port} set k v && redis-cli -p {port} save",
            env={"REDISCLI_AUTH": password},
        )
        assert saved.stdout.split() == ["OK", "OK"], saved.stdout + saved.stderr
        assert (data / "dump.rdb").is_file()
        assert "Ready to accept connections" in container.output()


# --- the stand-in server ----------------------------------------------------------------------------------


@pytest.fixture
def redis_rootfs(built: dict[str, LocalImage], tmp_path: Path) -> Path:
    return unpack(built[images.REDIS_IMAGE].archive, tmp_path / "redis-rootfs").rootfs


@contextmanager
def host_redis(rootfs: Path, port: int, password: str) -> Iterator[subprocess.Popen[bytes]]:
    """The image's redis-server on the host, on 127.0.0.1 only, with a password."""
    argv = [str(rootfs / "usr/bin/redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--requirepass", password, "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(
        argv,
        env={"LD_LIBRARY_PATH": str(rootfs / "usr/lib/x86_64-linux-gnu")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield redis
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def get(port: int, path: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_health(port: int, status: int, path: str = "/health") -> dict[str, str]:
    deadline = time.monotonic() + 10
    while True:
        code, body = get(port, path)
        if code == status or time.monotonic() > deadline:
            assert code == status, body
            return body
        time.sleep(0.1)


@contextmanager
def stand_in(binary: Path, env: dict[str, str]) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log = binary.parent.parent / f"server-{port}.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(binary)], env={"PORT": str(port), "HOST": "127.0.0.1", **env}, stdout=output, stderr=output
        )
    try:
        wait_port(port)
        yield port, log
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0


def test_stand_in_server_is_healthy_only_while_redis_answers(
    built: dict[str, LocalImage], redis_rootfs: Path, tmp_path: Path
) -> None:
    image = unpack(built[images.SERVER_IMAGE].archive, tmp_path / "server-rootfs")
    entrypoint = image.config["config"]["Entrypoint"]
    binary = image.rootfs / entrypoint[0].lstrip("/")
    password = "pw-" + secrets.token_hex(12)
    redis_port = free_port()
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}", "REDIS_PASSWORD": password}
    with stand_in(binary, env) as (port, log):
        body = wait_health(port, 503)
        assert body["status"] == "unavailable"
        assert "connection refused" in body["reason"]
        with host_redis(redis_rootfs, redis_port, password):
            assert wait_health(port, 200) == {"status": "ok", "redis": "ok"}
            assert wait_health(port, 200, "/healthz")["status"] == "ok"
        # Redis is gone: the next check finds out.
        assert wait_health(port, 503)["redis"] == "down"
    output = log.read_text()
    assert password not in output
    assert f"redis 127.0.0.1:{redis_port} db 0 user default, password from REDIS_PASSWORD" in output
    assert "health: 503" in output
    assert "health: 200" in output
    assert f"redis: connected to 127.0.0.1:{redis_port}" in output


def test_stand_in_server_takes_the_password_from_the_url_and_reports_a_wrong_one(
    built: dict[str, LocalImage], redis_rootfs: Path, tmp_path: Path
) -> None:
    binary = unpack(built[images.SERVER_IMAGE].archive, tmp_path / "server-rootfs").rootfs
    binary = binary / "usr/local/bin/neurallog-server-standin"
    password = "p/w@" + secrets.token_hex(12)  # as $(REDIS_PASSWORD) expands it: not URL-escaped
    redis_port = free_port()
    with host_redis(redis_rootfs, redis_port, password):
        # The chart's default: REDIS_URL=redis://:$(REDIS_PASSWORD)@redis:6379, beside REDIS_PASSWORD.
        env = {"REDIS_URL": f"redis://:{password}@127.0.0.1:{redis_port}/0", "REDIS_PASSWORD": password}
        with stand_in(binary, env) as (port, log):
            assert wait_health(port, 200)["status"] == "ok"
        output = log.read_text()
        assert "password from REDIS_URL" in output
        assert password not in output
        wrong = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}", "REDIS_PASSWORD": "wrong-" + password}
        with stand_in(binary, wrong) as (port, log):
            reason = wait_health(port, 503)["reason"]
            assert "WRONGPASS" in reason
            assert "AUTH" in reason
        assert password not in log.read_text()


def test_stand_in_server_runs_as_a_chart_user_with_a_read_only_root(
    built: dict[str, LocalImage], tmp_path: Path
) -> None:
    image = unpack(built[images.SERVER_IMAGE].archive, tmp_path / "rootfs")
    port = free_port()
    env = {"PORT": str(port), "HOST": "127.0.0.1", "REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    with run_container(image, tmp_path, [], uid=1000, env=env, tmpfs=("/tmp",)) as container:
        wait_port(port)
        assert wait_health(port, 503)["status"] == "unavailable"
        assert f"listening on 127.0.0.1:{port}" in container.output()


# --- the operator -----------------------------------------------------------------------------------------


@pytest.mark.timeout(1800)
@pytest.mark.skipif(
    not shutil.which("buildah") or not shutil.which("mmdebstrap"), reason="needs buildah and mmdebstrap"
)
def test_operator_image_holds_the_pinned_helm_and_renders_a_tenant(tmp_path: Path) -> None:
    bin_dir = REPO / ".cluster" / "bin"
    if not (bin_dir / "helm").exists():
        pytest.skip("the pinned helm is not built (make binaries)")
    image = images._ensure(images.OPERATOR, bin_dir)
    unpacked = unpack(image.archive, tmp_path / "rootfs")
    (entry,) = unpacked.index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == images.OPERATOR_IMAGE
    config = unpacked.config["config"]
    assert isinstance(config, dict)
    assert config["Entrypoint"] == ["tenant-operator"]
    assert config["User"] == "65532:65532"
    environment = dict(item.split("=", 1) for item in config["Env"])
    assert environment["TENANT_OPERATOR_HELM"] == "/usr/local/bin/helm"
    assert environment["TENANT_OPERATOR_HELM_WORKER"] == "/usr/local/bin/helm-worker"
    assert environment["TENANT_OPERATOR_CHART"] == "/opt/tenant-operator/charts/tenant"
    root = unpacked.rootfs
    assert (root / "opt/tenant-operator/charts/tenant/Chart.yaml").is_file()
    assert (root / "opt/tenant-operator/postrender/plugin.yaml").is_file()
    assert not list(root.glob("opt/venv/lib/python3*/site-packages/local_cluster"))
    for binary in ("helm", "helm-worker"):
        assert (root / "usr/local/bin" / binary).read_bytes() == (bin_dir / binary).resolve().read_bytes()
    # As the chart runs it: uid 65532, read-only root, HOME=/tmp on a volume. Helm 4 installs the plugin
    # from postrender/ and renders a tenant through tenant-postrender, as the operator does.
    script = (
        "set -e; helm version --short; tenant-operator --help >/dev/null;"
        # Kopf names its identity after the user: uid 65532 must have an entry.
        " python3 -c \"import getpass; assert getpass.getuser() == 'tenant-operator'\";"
        " export HELM_DATA_HOME=/tmp/helm/data;"
        " helm plugin install $TENANT_OPERATOR_POSTRENDER_PLUGIN >/dev/null;"
        " helm template t $TENANT_OPERATOR_CHART -n tenant-t --post-renderer tenant-postrender"
    )
    with run_container(unpacked, tmp_path, command=["sleep", "300"], tmpfs=("/tmp",)) as container:
        result = container.exec("/bin/sh", "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr
    version = subprocess.run(
        [str(bin_dir / "helm"), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[0] == version.stdout.strip()
    assert "kind: NetworkPolicy" in result.stdout  # added by the post-renderer


# --- containerd -------------------------------------------------------------------------------------------

CONTAINERD_CONFIG = """
version = 3
root = "{scratch}/root"
state = "{scratch}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"]
[grpc]
  address = "{scratch}/containerd.sock"
[ttrpc]
  address = "{scratch}/containerd.sock.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "{scratch}/opt"
"""

IMPORT_SCRIPT = """
containerd --config "$SCRATCH/containerd.toml" >"$SCRATCH/containerd.log" 2>&1 &
containerd=$!
trap 'kill $containerd; wait $containerd' EXIT
i=0
until ctr -a "$SCRATCH/containerd.sock" version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.1
done
for archive in "$@"; do
    ctr -a "$SCRATCH/containerd.sock" -n k8s.io images import --platform linux/amd64 "$archive" >/dev/null
done
ctr -a "$SCRATCH/containerd.sock" -n k8s.io images check
"""


@pytest.mark.timeout(1800)
def test_containerd_imports_every_image_under_its_name(tmp_path: Path) -> None:
    """As the node does (ctr import), with a containerd of its own whose host writes land in tmp_path."""
    bin_dir = REPO / ".cluster" / "bin"
    if not all((bin_dir / tool).exists() for tool in ("containerd", "ctr", "helm")):
        pytest.skip("containerd, ctr and helm are not built (make binaries)")
    node_images = images.ensure_images(bin_dir)
    (tmp_path / "containerd.toml").write_text(CONTAINERD_CONFIG.format(scratch=tmp_path))
    private = ["unshare", "--mount", "--propagation", "private", "sh", "-c", images._PRIVATE_HOST, "sh"]
    archives = [str(image.archive) for image in node_images]
    result = subprocess.run(
        [*private, str(tmp_path / "host"), "sh", "-euc", IMPORT_SCRIPT, "sh", *archives],
        env={**os.environ, "SCRATCH": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    checked = {line[0]: (line[3], line[-1]) for line in lines}
    assert checked == {image.name: ("complete", "true") for image in node_images}
