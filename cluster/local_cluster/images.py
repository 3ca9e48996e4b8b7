"""The container images the local cluster's real node preloads, built here without a registry.

Each image is written as an OCI image-layout tar archive that ``ctr -n k8s.io images import`` names after the
manifest's ``io.containerd.image.name`` annotation. Nothing comes from a third-party image: pause is a static
C program, Redis is Debian's redis-server, the probe image is Debian's busybox, the NeuralLog server is a
stand-in from ``cluster/images/server-standin`` (the real image is not public), and the operator image is
``operator/Dockerfile`` built by buildah on a base made by mmdebstrap from Debian packages.

An archive is cached under ``cache_root()/images`` in an entry named after the image and a hash of every
input (sources, Debian package versions, tool versions, this module), so a warm run only computes keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local_cluster.build import cache_root

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
PROBE_IMAGE = "localhost/netprobe:1"  # for test probe pods
REDIS_IMAGE = "docker.io/library/redis:7-alpine"  # the tenant chart's default `redis:7-alpine`
SERVER_IMAGE = "docker.io/neurallog/server:latest"  # the tenant chart's default `neurallog/server:latest`
OPERATOR_IMAGE = "docker.io/neurallog/tenant-operator:latest"
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.15.0"  # the cluster DNS, built by build.py
# Only the operator's build uses these two; they never reach the node.
OPERATOR_BASE_IMAGE = "localhost/tenant-operator-base:bookworm-python3"
HELM_IMAGE = "localhost/helm:pinned"

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "cluster" / "images"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ARCHIVE_NAME = "image.tar"

# redis-server and redis-cli of Debian 12 (7.0), and their two libraries that a Debian host lacks.
REDIS_PACKAGES = ("redis-server", "redis-tools", "liblzf1", "libjemalloc2")
# The host packages whose shared libraries the Redis binaries load (ldd); the build checks that every library
# it copies belongs to one of them, so that their versions in the cache key cover everything copied.
REDIS_HOST_LIBRARIES = (
    "libc6",
    "libssl3",
    "libsystemd0",
    "libstdc++6",
    "libgcc-s1",
    "libatomic1",
    "libcap2",
    "libgcrypt20",
    "liblzma5",
    "libzstd1",
    "liblz4-1",
    "libgpg-error0",
)
# What the operator's base image holds beside Debian's minbase.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# The build context of operator/Dockerfile that the image is made of (operator/Dockerfile.dockerignore admits
# these and the Helm wrapper module, which only the registry build's Helm stage reads).
OPERATOR_CONTEXT = (
    "operator/Dockerfile",
    "operator/Dockerfile.dockerignore",
    "pyproject.toml",
    "operator/tenant_operator",
    "postrender/tenant_postrender",
    "postrender/plugin.yaml",
    "postrender/tenant-postrender.sh",
    "charts/tenant",
)
BUSYBOX = Path("/bin/busybox")  # of Debian's busybox-static, whose version the cache keys name
REDIS_UID = 999  # the redis user of the official Redis images, which the tenant chart runs Redis as
NOBODY_UID = 65534


@dataclass(frozen=True)
class LocalImage:
    """An image for the node: its fully qualified name as containerd's CRI stores it and its OCI archive."""

    name: str
    archive: Path


# --- OCI image layout -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image configuration these images use."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str = ""
    workdir: str = ""
    env: tuple[str, ...] = (PATH_ENV,)
    labels: Mapping[str, str] = field(default_factory=dict)


def _blob(data: bytes) -> tuple[str, int]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _tag(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def index_json(name: str, manifest_digest: str, manifest_size: int) -> bytes:
    """index.json of an archive that ``ctr images import`` stores as ``name``."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": _tag(name),
                    },
                }
            ],
        },
        indent=2,
    ).encode()


def write_oci_archive(out: Path, name: str, layer: Path, config: ImageConfig) -> None:
    """Writes a one-layer image (``layer`` is an uncompressed tar of its root filesystem) to ``out``."""
    layer_digest = _file_digest(layer)
    image_config: dict[str, object] = {"Env": list(config.env)}
    if config.entrypoint is not None:
        image_config["Entrypoint"] = config.entrypoint
    if config.cmd is not None:
        image_config["Cmd"] = config.cmd
    if config.user:
        image_config["User"] = config.user
    if config.workdir:
        image_config["WorkingDir"] = config.workdir
    if config.labels:
        image_config["Labels"] = dict(config.labels)
    config_bytes = json.dumps(
        {
            "created": "1970-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "local_cluster.images"}],
        },
        sort_keys=True,
    ).encode()
    config_digest, config_size = _blob(config_bytes)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer.stat().st_size,
                }
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest, manifest_size = _blob(manifest)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(archive, "index.json", index_json(name, manifest_digest, manifest_size))
        archive.add(layer, f"blobs/sha256/{layer_digest.removeprefix('sha256:')}", recursive=False)
        _add_bytes(archive, f"blobs/sha256/{config_digest.removeprefix('sha256:')}", config_bytes)
        _add_bytes(archive, f"blobs/sha256/{manifest_digest.removeprefix('sha256:')}", manifest)


def annotate_oci_archive(source: Path, out: Path, name: str) -> None:
    """Copies an OCI archive of one image (as buildah pushes it) with index.json naming it ``name``."""
    with tarfile.open(source) as archive:
        index = json.loads(_read_member(archive, "index.json"))
        manifests = index["manifests"]
        if len(manifests) != 1:
            raise RuntimeError(f"{source} holds {len(manifests)} manifests, not one")
        annotations = manifests[0].setdefault("annotations", {})
        annotations["io.containerd.image.name"] = name
        annotations["org.opencontainers.image.ref.name"] = _tag(name)
        manifests[0].setdefault("platform", {"architecture": "amd64", "os": "linux"})
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as copy:
            for member in archive:
                if member.name.removeprefix("./") == "index.json":
                    _add_bytes(copy, "index.json", json.dumps(index, indent=2).encode())
                else:
                    copy.addfile(member, archive.extractfile(member) if member.isfile() else None)


def _read_member(archive: tarfile.TarFile, name: str) -> bytes:
    for candidate in (name, "./" + name):
        with contextlib.suppress(KeyError):
            stream = archive.extractfile(candidate)
            if stream is not None:
                return stream.read()
    raise KeyError(f"{name} is not in {archive.name!r}")


def tar_directory(root: Path, out: Path) -> None:
    """An uncompressed layer tar of ``root``, reproducible: sorted, without times or owner names."""

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).parts):
            archive.add(path, str(path.relative_to(root)), recursive=False, filter=normalize)


# --- helpers ----------------------------------------------------------------------------------------------


def _run(argv: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Runs a build step quietly; on failure raises with its output, which says why."""
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-6000:]
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{output}")
    return result.stdout


def _tree_digest(paths: Iterable[Path]) -> str:
    """A hash of files and directory trees (names and contents), caches of Python left out."""
    digest = hashlib.sha256()
    for top in paths:
        files = sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in files:
            if "__pycache__" in path.parts or not path.is_file():
                continue
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _dpkg_versions(packages: Iterable[str]) -> str:
    """``package=version`` of installed Debian packages (the inputs of images copied from the host)."""
    return _run(["dpkg-query", "-W", "-f", "${Package}=${Version}\n", *packages])


def _apt_candidates(packages: Iterable[str]) -> str:
    """Name, version and hash of the Debian packages ``apt-get download`` would fetch."""
    output = _run(["apt-cache", "show", "--no-all-versions", *packages])
    return "\n".join(re.findall(r"^(?:Package|Version|SHA256): .*$", output, re.MULTILINE))


def _apt_indexes() -> str:
    """A hash of the host's Debian package indexes: it changes when a newer package can be installed."""
    digest = hashlib.sha256()
    for path in sorted(Path("/var/lib/apt/lists").glob("*Release")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _sources_file() -> Path:
    """The host's Debian package sources, which mmdebstrap uses too."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.is_file() and path.read_text().strip():
            return path
    raise RuntimeError("no Debian package sources in /etc/apt (debian.sources or sources.list)")


def _busybox_tree(root: Path) -> None:
    """Debian's static busybox at /bin/busybox, a link per applet, /etc/passwd and group, /tmp."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX.resolve(), root / "bin/busybox")
    for applet in _run([str(BUSYBOX), "--list-full"]).split():
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        f"redis:x:{REDIS_UID}:{REDIS_UID}:redis:/data:/bin/false\n"
        f"nobody:x:{NOBODY_UID}:{NOBODY_UID}:nobody:/nonexistent:/bin/false\n"
    )
    (etc / "group").write_text(f"root:x:0:\nredis:x:{REDIS_UID}:\nnogroup:x:{NOBODY_UID}:\n")
    (etc / "nsswitch.conf").write_text("hosts: files dns\npasswd: files\ngroup: files\n")
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)


def _archive_from_tree(
    out: Path, name: str, config: ImageConfig, fill: Callable[[Path], None], work: Path
) -> None:
    root = work / "rootfs"
    root.mkdir()
    fill(root)
    layer = work / "layer.tar"
    tar_directory(root, layer)
    write_oci_archive(out, name, layer, config)


# --- the images -------------------------------------------------------------------------------------------


def _pause_key(_bin_dir: Path) -> str:
    return _tree_digest([IMAGES_DIR / "pause"]) + _dpkg_versions(["gcc-12", "libc6-dev"])


def _build_pause(_bin_dir: Path, out: Path, work: Path) -> None:
    def fill(root: Path) -> None:
        _run(["gcc", "-static", "-Os", "-s", "-o", str(root / "pause"), str(IMAGES_DIR / "pause/pause.c")])

    _archive_from_tree(out, PAUSE_IMAGE, ImageConfig(entrypoint=["/pause"], user="65535:65535"), fill, work)


def _probe_key(_bin_dir: Path) -> str:
    return _dpkg_versions(["busybox-static"])


def _build_probe(_bin_dir: Path, out: Path, work: Path) -> None:
    config = ImageConfig(cmd=["sh"], user=f"{NOBODY_UID}:{NOBODY_UID}")
    _archive_from_tree(out, PROBE_IMAGE, config, _busybox_tree, work)


def _redis_key(_bin_dir: Path) -> str:
    return (
        _apt_candidates(REDIS_PACKAGES)
        + _dpkg_versions(REDIS_HOST_LIBRARIES)
        + _dpkg_versions(["busybox-static"])
    )


def _ldd(binary: Path, library_path: Path) -> list[Path]:
    """The shared libraries (and the loader) that ``binary`` loads, resolved to files."""
    output = _run(["ldd", str(binary)], env={**os.environ, "LD_LIBRARY_PATH": str(library_path)})
    libraries = []
    for line in output.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libraries.append(Path(match.group(1)))
        elif "not found" in line:
            raise RuntimeError(f"{binary}: {line.strip()}")
    return libraries


def _build_redis(_bin_dir: Path, out: Path, work: Path) -> None:
    debs = work / "debs"
    debs.mkdir()
    _run(["apt-get", "download", *REDIS_PACKAGES], cwd=debs)
    extracted = work / "extracted"
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(extracted)])
    deb_libraries = extracted / "usr/lib/x86_64-linux-gnu"

    def fill(root: Path) -> None:
        _busybox_tree(root)
        bin_dir = root / "usr/bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        # Debian's redis-server is a link to redis-check-rdb, which acts by the name it is run as.
        shutil.copy2(extracted / "usr/bin/redis-check-rdb", bin_dir / "redis-check-rdb")
        shutil.copy2(extracted / "usr/bin/redis-cli", bin_dir / "redis-cli")
        for alias in ("redis-server", "redis-check-aof", "redis-sentinel"):
            (bin_dir / alias).symlink_to("redis-check-rdb")
        libraries = root / "usr/lib/x86_64-linux-gnu"
        libraries.mkdir(parents=True)
        host_libraries: list[Path] = []
        for binary in (bin_dir / "redis-check-rdb", bin_dir / "redis-cli"):
            for library in _ldd(binary, deb_libraries):
                if not library.is_relative_to(deb_libraries):
                    host_libraries.append(library)
                target = libraries / library.name
                if not target.exists():
                    shutil.copy2(library.resolve(), target)
        _check_owners(host_libraries)
        # Every binary names the loader /lib64/ld-linux-x86-64.so.2; /lib and /lib64 are links (merged /usr).
        (root / "usr/lib64").mkdir()
        (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        (root / "lib").symlink_to("usr/lib")
        (root / "lib64").symlink_to("usr/lib64")
        data = root / "data"
        data.mkdir()
        os.chown(data, REDIS_UID, REDIS_UID)
        (root / "etc/redis").mkdir()

    config = ImageConfig(cmd=["redis-server"], user=f"{REDIS_UID}:{REDIS_UID}", workdir="/data")
    _archive_from_tree(out, REDIS_IMAGE, config, fill, work)


def _check_owners(libraries: list[Path]) -> None:
    """Every host library copied into an image belongs to a package the cache key names."""
    # A pattern, since dpkg knows a library by /lib or /usr/lib, whichever its package used (merged /usr).
    patterns = sorted({f"*/x86_64-linux-gnu/{path.resolve().name}" for path in libraries})
    output = _run(["dpkg-query", "-S", *patterns])
    owners = {line.split(":", 1)[0] for line in output.splitlines()}
    unexpected = owners - set(REDIS_HOST_LIBRARIES)
    if unexpected:
        raise RuntimeError(f"add {sorted(unexpected)} to REDIS_HOST_LIBRARIES: redis loads their libraries")


def _go_version() -> str:
    return _run(["go", "version"]).strip()


def _server_key(_bin_dir: Path) -> str:
    return _tree_digest([IMAGES_DIR / "server-standin"]) + _go_version()


def _build_server(_bin_dir: Path, out: Path, work: Path) -> None:
    def fill(root: Path) -> None:
        (root / "usr/local/bin").mkdir(parents=True)
        binary = root / "usr/local/bin/neurallog-server-standin"
        _run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(binary), "."],
            cwd=IMAGES_DIR / "server-standin",
            env={**os.environ, "CGO_ENABLED": "0"},
        )
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)

    config = ImageConfig(
        entrypoint=["/usr/local/bin/neurallog-server-standin"],
        user="65532:65532",
        labels={"io.neurallog.local-cluster": "stand-in of neurallog/server for tests"},
    )
    _archive_from_tree(out, SERVER_IMAGE, config, fill, work)


def _coredns_key(bin_dir: Path) -> str:
    # The binary's cache entry is named by its pinned version and build inputs.
    return str((bin_dir / "coredns").resolve())


def _build_coredns(bin_dir: Path, out: Path, work: Path) -> None:
    def fill(root: Path) -> None:
        shutil.copy2(bin_dir / "coredns", root / "coredns")

    _archive_from_tree(out, COREDNS_IMAGE, ImageConfig(entrypoint=["/coredns"]), fill, work)


def _base_key(_bin_dir: Path) -> str:
    return _apt_indexes() + _sources_file().read_text() + " ".join(BASE_PACKAGES)


def _build_base(_bin_dir: Path, out: Path, work: Path) -> None:
    """Debian bookworm minbase with Python 3.11, by mmdebstrap from the host's package sources."""
    rootfs = work / "rootfs.tar"
    excludes = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*"]
    _run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--include=" + ",".join(BASE_PACKAGES),
            *(f"--dpkgopt=path-exclude={pattern}" for pattern in excludes),
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--format=tar",
            "bookworm",
            str(rootfs),
            str(_sources_file()),
        ],
        env={**os.environ, "TMPDIR": str(work)},
    )
    config = ImageConfig(cmd=["python3"], env=(PATH_ENV, "LANG=C.UTF-8"))
    write_oci_archive(out, OPERATOR_BASE_IMAGE, rootfs, config)


HELM_BINARIES = ("helm", "helm-worker")


def _helm_key(bin_dir: Path) -> str:
    for name in HELM_BINARIES:
        if not (bin_dir / name).exists():
            raise RuntimeError(f"{bin_dir / name} is missing: the operator image carries it (build it first)")
    # Each binary's cache entry is named after a hash of its Go module and link flags.
    return "+".join(str((bin_dir / name).resolve()) for name in HELM_BINARIES)


def _build_helm(bin_dir: Path, out: Path, work: Path) -> None:
    """The pinned Helm and the helm-worker that build.py made, alone in an image, for the operator's
    Dockerfile to copy."""

    def fill(root: Path) -> None:
        (root / "usr/local/bin").mkdir(parents=True)
        for name in HELM_BINARIES:
            shutil.copy2((bin_dir / name).resolve(), root / "usr/local/bin" / name)

    _archive_from_tree(out, HELM_IMAGE, ImageConfig(entrypoint=["/usr/local/bin/helm"]), fill, work)


def _operator_key(bin_dir: Path) -> str:
    buildah = _run(["buildah", "--version"])
    return (
        _tree_digest(REPO_ROOT / path for path in OPERATOR_CONTEXT)
        + _cached_name(BASE, bin_dir)
        + _cached_name(HELM, bin_dir)
        + buildah
    )


# buildah (containers/common and containers/image) writes to fixed host paths even with --root and --runroot:
# /etc/cni, /etc/containers/networks, /run/containers, /var/lib/containers/cache, /var/tmp. It runs in a mount
# namespace of its own where each of these trees is an overlay whose writable layer is in the scratch
# directory, so the host sees none of it and nothing is left to clean up.
_PRIVATE_HOST = """
set -eu
scratch=$1
shift
for tree in /etc /run /var; do
    layer=$scratch/host$(echo "$tree" | tr / _)
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$tree,upperdir=$layer/upper,workdir=$layer/work" "$tree"
done
exec "$@"
"""


def _buildah(work: Path, *args: str) -> None:
    storage = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]
    private = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PRIVATE_HOST, "sh"]
    _run(
        [*private, str(work / "host"), "buildah", *storage, *args],
        env={**os.environ, "TMPDIR": str(work / "tmp")},
    )


def _build_operator(bin_dir: Path, out: Path, work: Path) -> None:
    """operator/Dockerfile built by buildah on the local base and Helm images, in storage of its own."""
    base = _ensure(BASE, bin_dir)
    helm = _ensure(HELM, bin_dir)
    (work / "tmp").mkdir()
    _buildah(
        work,
        "build",
        "--isolation=chroot",
        # pip in RUN reaches the package index as the host's pip does: on the host's network, trusting the
        # host's CA bundle (which may hold a proxy's CA). A RUN mount: the image keeps its own bundle.
        "--network=host",
        "--volume=/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
        "--pull=never",
        "--layers=false",
        "--format=oci",
        f"--build-arg=BASE_IMAGE=oci-archive:{base.archive}",
        f"--build-arg=HELM_IMAGE=oci-archive:{helm.archive}",
        f"--file={REPO_ROOT / 'operator/Dockerfile'}",
        f"--tag={OPERATOR_IMAGE}",
        str(REPO_ROOT),
    )
    pushed = work / "pushed.tar"
    _buildah(work, "push", "--quiet", OPERATOR_IMAGE, f"oci-archive:{pushed}")
    annotate_oci_archive(pushed, out, OPERATOR_IMAGE)


# --- cache ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to build one image, and what its cache key is made of."""

    name: str
    slug: str
    key: Callable[[Path], str]
    build: Callable[[Path, Path, Path], None]  # (bin_dir, out archive, scratch directory)


PAUSE = Recipe(PAUSE_IMAGE, "pause", _pause_key, _build_pause)
PROBE = Recipe(PROBE_IMAGE, "netprobe", _probe_key, _build_probe)
REDIS = Recipe(REDIS_IMAGE, "redis", _redis_key, _build_redis)
SERVER = Recipe(SERVER_IMAGE, "server-standin", _server_key, _build_server)
COREDNS = Recipe(COREDNS_IMAGE, "coredns", _coredns_key, _build_coredns)
BASE = Recipe(OPERATOR_BASE_IMAGE, "operator-base", _base_key, _build_base)
HELM = Recipe(HELM_IMAGE, "helm", _helm_key, _build_helm)
OPERATOR = Recipe(OPERATOR_IMAGE, "tenant-operator", _operator_key, _build_operator)
# What the node preloads, in this order.
NODE_IMAGES = (PAUSE, PROBE, REDIS, SERVER, COREDNS, OPERATOR)

_MODULE_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _cached_name(recipe: Recipe, bin_dir: Path) -> str:
    digest = hashlib.sha256((_MODULE_DIGEST + recipe.name + "\0" + recipe.key(bin_dir)).encode())
    return f"{recipe.slug}-{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def _scratch(parent: Path, prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _ensure(recipe: Recipe, bin_dir: Path) -> LocalImage:
    """The cached archive of ``recipe``, built first when the cache lacks it."""
    entry = cache_root() / "images" / _cached_name(recipe, bin_dir)
    archive = entry / ARCHIVE_NAME
    if archive.is_file():
        return LocalImage(recipe.name, archive)
    started = time.monotonic()
    entry.mkdir(parents=True, exist_ok=True)
    with _scratch(entry.parent, f".{recipe.slug}-") as work:
        staged = work / ARCHIVE_NAME
        recipe.build(bin_dir, staged, work)
        staged.rename(archive)  # atomic: a reader sees the whole archive or none
    # Older builds of the same image go: each edit of the operator's sources would otherwise keep 100 MB.
    for stale in entry.parent.glob(f"{recipe.slug}-*"):
        if stale != entry and stale.name.rsplit("-", 1)[0] == recipe.slug:
            shutil.rmtree(stale, ignore_errors=True)
    size = archive.stat().st_size / 1e6
    print(
        f"built image {recipe.name} in {time.monotonic() - started:.0f}s ({size:.0f} MB, {entry})",
        file=sys.stderr,
        flush=True,
    )
    return LocalImage(recipe.name, archive)


def ensure_images(bin_dir: Path) -> list[LocalImage]:
    """Builds (or reuses from cache) every image the real node preloads; returns them.

    ``bin_dir`` holds the pinned Helm (``build.ensure_binaries``), which the operator image carries.
    """
    return [_ensure(recipe, bin_dir) for recipe in NODE_IMAGES]


def read_index(archive: Path) -> dict[str, object]:
    """index.json of an OCI archive (for checks and tests)."""
    with tarfile.open(archive) as opened:
        index: dict[str, object] = json.loads(_read_member(opened, "index.json"))
        return index


__all__ = [
    "OPERATOR_IMAGE",
    "PAUSE_IMAGE",
    "PROBE_IMAGE",
    "REDIS_IMAGE",
    "SERVER_IMAGE",
    "LocalImage",
    "ensure_images",
]
