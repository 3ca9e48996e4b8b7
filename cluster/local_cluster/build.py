"""Builds the local cluster's binaries from their Go modules, once, into a cache outside the checkout.

Versions are pinned in one place: the wrapper modules under ``cluster/tools/<tool>/go.mod``, and Helm 4 in
the helm-worker's module (``operator/helm-worker/go.mod``), which builds Helm's command too. A tool's cache
entry is keyed by a hash of its wrapper module, the Go toolchain and the link flags, so a changed pin builds
again and everything else is reused by later runs and by CI on the same machine. A tool may also take files
from its module's source into its cache entry (Flux's CRDs), so that they are at hand without Go at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"
REPO_ROOT = TOOLS_DIR.parent.parent


def cache_root() -> Path:
    """Where built binaries live: ``$TENANT_OPERATOR_CACHE`` or the user's cache directory."""
    explicit = os.environ.get("TENANT_OPERATOR_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neurallog-tenant-operator"


def _helm3_ldflags(version: str) -> list[str]:
    """Helm 3's release build tells it the Kubernetes version its client-go speaks (one major ahead: client-go
    v0.37 is Kubernetes 1.37); without these flags it assumes 1.20 and refuses charts needing a newer one."""
    text = (TOOLS_DIR / "helm3" / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/client-go v(\d+)\.(\d+)\.", text, re.MULTILINE)
    if not match:
        raise RuntimeError("cluster/tools/helm3/go.mod does not require k8s.io/client-go")
    major, minor = int(match.group(1)) + 1, match.group(2)
    flags = [f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    return flags


def _kubernetes_ldflags(version: str) -> list[str]:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return flags


def _helm_operator_ldflags(version: str) -> list[str]:
    """operator-sdk's release build stamps its version package (its Makefile); the Kubernetes version it
    prints is the one its client-go speaks (v0.33 is Kubernetes 1.33). The commit stays "unknown": only the
    tag is pinned."""
    text = (TOOLS_DIR / "helm-operator" / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.(\d+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError("cluster/tools/helm-operator/go.mod does not require k8s.io/client-go")
    package = "github.com/operator-framework/operator-sdk/internal/version"
    return [
        f"-X {package}.Version={version}",
        f"-X {package}.GitVersion={version}",
        f"-X {package}.ImageVersion={version}",
        f"-X {package}.KubernetesVersion=v1.{match.group(1)}.{match.group(2)}",
    ]


@dataclass(frozen=True)
class Tool:
    """One wrapper module under cluster/tools and the binaries built from it."""

    name: str
    module: str  # the module whose version is the tool's version
    binaries: dict[str, str]  # output file name -> Go package
    ldflags: Callable[[str], list[str]]
    server: bool = False  # only the local cluster runs it; tests against another cluster need only clients
    wrapper: str = ""  # the directory under cluster/tools, when it is not the tool's name
    source: Path | None = None  # the module's directory, for a program of the project's own
    static: bool = False  # built without cgo, for binaries that also run inside images
    tags: str = ""  # Go build tags
    subdir: str = ""  # where under the bin directory the binaries are linked (CNI plugins live apart)
    # Files of the module's source kept with the binaries: a directory under the bin directory -> a glob
    # relative to the module's root. They are copied into the cache entry's <directory> and linked as
    # <bin>/<directory>/<tool name> (see ``tool_files``).
    files: dict[str, str] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.source or TOOLS_DIR / (self.wrapper or self.name)

    def version(self) -> str:
        text = (self.directory / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)} (v\S+)", text, re.MULTILINE)
        if not match:
            raise RuntimeError(f"{self.directory}/go.mod does not require {self.module}")
        return match.group(1)

    def cache_key(self, go_version: str) -> str:
        digest = hashlib.sha256(go_version.encode())
        for path in sorted(self.directory.iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        version = self.version()
        digest.update(" ".join(self.ldflags(version)).encode())
        for directory, pattern in sorted(self.files.items()):
            digest.update(f"\0{directory}={pattern}".encode())
        return f"{self.name}-{version}-{digest.hexdigest()[:12]}"


TOOLS = (
    Tool(
        "kube",
        "k8s.io/kubernetes",
        {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
            "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        },
        _kubernetes_ldflags,
        server=True,
    ),
    Tool(
        "kubectl",
        "k8s.io/kubernetes",
        {"kubectl": "k8s.io/kubernetes/cmd/kubectl"},
        _kubernetes_ldflags,
        wrapper="kube",
    ),
    Tool("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "."}, lambda _v: [], server=True),
    Tool(
        "kwok",
        "sigs.k8s.io/kwok",
        {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
        lambda v: [f"-X sigs.k8s.io/kwok/pkg/consts.Version={v.lstrip('v')}"],
        server=True,
    ),
    # Helm 4's command, from the helm-worker's module (a `tool` line there): one pin for both.
    Tool(
        "helm4",
        "helm.sh/helm/v4",
        {"helm": "helm.sh/helm/v4/cmd/helm"},
        lambda v: [f"-X helm.sh/helm/v4/internal/version.version={v}"],
        source=REPO_ROOT / "operator" / "helm-worker",
    ),
    # The operator's Helm: Helm 4 as a library in one long-running process (operator/helm-worker).
    Tool(
        "helm-worker",
        "helm.sh/helm/v4",
        {"helm-worker": "."},
        lambda v: [f"-X helm.sh/helm/v4/internal/version.version={v}"],
        source=REPO_ROOT / "operator" / "helm-worker",
        static=True,
    ),
    Tool(
        "helm3",
        "helm.sh/helm/v3",
        {"helm3": "helm.sh/helm/v3/cmd/helm"},
        _helm3_ldflags,
    ),
    Tool(
        "ct",
        "github.com/helm/chart-testing/v3",
        {"ct": "github.com/helm/chart-testing/v3/ct"},
        lambda v: [f"-X github.com/helm/chart-testing/v3/ct/cmd.Version={v}"],
    ),
    # np-guard's analyzer: connectivity of rendered NetworkPolicies, read from YAML (tests/policy).
    Tool(
        "netpol-analyzer",
        "github.com/np-guard/netpol-analyzer",
        {"netpolicy": "github.com/np-guard/netpol-analyzer/cmd/netpolicy"},
        lambda _v: [],  # it prints no version
    ),
    # Chart READMEs generated from the comments of values.yaml (`make docs`).
    Tool(
        "helm-docs",
        "github.com/norwoodj/helm-docs",
        {"helm-docs": "github.com/norwoodj/helm-docs/cmd/helm-docs"},
        lambda v: [f"-X main.version={v.lstrip('v')}"],  # its footer prints "v" + version itself
    ),
    # Our command around cli-utils' kstatus (main.go there): an object's health as GitOps tools compute it.
    Tool(
        "kstatus",
        "sigs.k8s.io/cli-utils",
        {"kstatus": "."},
        lambda _v: [],
    ),
    # The real node: container runtime, CNI plugins, NetworkPolicy firewall and cluster DNS.
    Tool(
        "containerd",
        "github.com/containerd/containerd/v2",
        {
            name: f"github.com/containerd/containerd/v2/cmd/{name}"
            for name in ("containerd", "containerd-shim-runc-v2", "ctr")
        },
        lambda v: [f"-X github.com/containerd/containerd/v2/version.Version={v}"],
        server=True,
        static=True,
        tags="no_btrfs no_devmapper no_zfs no_aufs",
    ),
    Tool(
        "cni",
        "github.com/containernetworking/plugins",
        {
            "bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
            "host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
            "loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
            "portmap": "github.com/containernetworking/plugins/plugins/meta/portmap",
        },
        lambda v: [f"-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion={v}"],
        server=True,
        static=True,
        subdir="cni",
    ),
    Tool(
        "kube-router",
        "github.com/cloudnativelabs/kube-router/v2",
        {"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"},
        lambda v: [f"-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={v}"],
        server=True,
        static=True,
    ),
    Tool(
        "coredns",
        "github.com/coredns/coredns",
        {"coredns": "."},
        lambda _v: [],  # CoreDNS compiles its version in
        server=True,
        static=True,
    ),
    # Flux, started on demand by local_cluster.flux; their CRDs come from the same module versions.
    Tool(
        "flux-source-controller",
        "github.com/fluxcd/source-controller",
        {"source-controller": "github.com/fluxcd/source-controller"},
        lambda _v: [],  # it prints no version
        server=True,
        static=True,
        files={"crds": "config/crd/bases/*.yaml"},
    ),
    Tool(
        "flux-helm-controller",
        "github.com/fluxcd/helm-controller",
        {"helm-controller": "github.com/fluxcd/helm-controller"},
        lambda _v: [],  # it prints no version
        server=True,
        static=True,
        files={"crds": "config/crd/bases/*.yaml"},
    ),
    # operator-sdk's Helm operator, a peer in the scale benchmark (bench/helm_operator.py runs it).
    Tool(
        "helm-operator",
        "github.com/operator-framework/operator-sdk",
        {"helm-operator": "github.com/operator-framework/operator-sdk/cmd/helm-operator"},
        _helm_operator_ldflags,
        server=True,
        static=True,  # as its release build (CGO_ENABLED=0)
    ),
)


def _go_version() -> str:
    return subprocess.run(["go", "version"], check=True, capture_output=True, text=True).stdout.strip()


def _build(tool: Tool, target: Path) -> None:
    """Builds every binary of one tool into ``target`` (a fresh directory)."""
    ldflags = " ".join(["-s", "-w", *tool.ldflags(tool.version())])
    env = {**os.environ, "CGO_ENABLED": "0"} if tool.static else None
    tags = ["-tags", tool.tags] if tool.tags else []
    for output, package in tool.binaries.items():
        subprocess.run(
            ["go", "build", "-trimpath", *tags, "-ldflags", ldflags, "-o", str(target / output), package],
            cwd=tool.directory,
            env=env,
            check=True,
        )
    if tool.files:
        source = subprocess.run(
            ["go", "mod", "download", "-json", tool.module],
            cwd=tool.directory,
            check=True,
            capture_output=True,
            text=True,
        )
        root = Path(json.loads(source.stdout)["Dir"])
        for directory, pattern in tool.files.items():
            matches = sorted(root.glob(pattern))
            if not matches:
                raise RuntimeError(f"{tool.module}: no file matches {pattern}")
            (target / directory).mkdir(parents=True, exist_ok=True)
            for path in matches:
                shutil.copyfile(path, target / directory / path.name)


def tool_files(bin_dir: Path, tool_name: str, directory: str) -> Path:
    """Where ``ensure_binaries`` linked a tool's files: ``tool_files(bin, "flux-helm-controller", "crds")`` is
    the directory holding helm-controller's CRDs."""
    return bin_dir / directory / tool_name


def ensure_binaries(bin_dir: Path, clients_only: bool = False) -> None:
    """Builds what the cache lacks and links the binaries into ``bin_dir``: every one, or with
    ``clients_only`` those that tests against another cluster use (kubectl, helm, helm-worker, helm3, ct,
    netpolicy, helm-docs, kstatus)."""
    go_version = _go_version()
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in (tool for tool in TOOLS if not (clients_only and tool.server)):
        entry = cache_root() / "bin" / tool.cache_key(go_version)
        if not entry.is_dir():
            print(
                f"building {tool.name} {tool.version()} (cached in {entry}) ...", file=sys.stderr, flush=True
            )
            started = time.monotonic()
            entry.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{tool.name}-", dir=entry.parent))
            try:
                _build(tool, staging)
                try:
                    staging.rename(entry)
                except OSError:
                    if not entry.is_dir():  # else another run built the same entry meanwhile
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            print(f"built {tool.name} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        (bin_dir / tool.subdir).mkdir(exist_ok=True)
        for output in tool.binaries:
            link = bin_dir / tool.subdir / output
            link.unlink(missing_ok=True)
            link.symlink_to(entry / output)
        for directory in tool.files:
            link = tool_files(bin_dir, tool.name, directory)
            link.parent.mkdir(exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(entry / directory)
