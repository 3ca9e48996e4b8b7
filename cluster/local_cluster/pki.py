"""Certificates and keys of the local cluster, made once at first boot with openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path

API_SERVER_NAMES = (
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed_certificate(pki: Path, name: str, subject: str, extensions: str) -> None:
    """Writes ``name.key`` and ``name.crt``, signed by the cluster CA."""
    (pki / f"{name}.ext").write_text(extensions)
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        cwd=pki,
    )  # fmt: skip
    (pki / f"{name}.csr").unlink()
    (pki / f"{name}.ext").unlink()


def ensure_pki(pki: Path, server_ips: tuple[str, ...]) -> None:
    """CA, API server serving certificate (also valid for ``server_ips``), admin client certificate and
    service-account key pair."""
    if (pki / "sa.pub").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=local-cluster-ca", "-days", "3650",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.crt",
        cwd=pki,
    )  # fmt: skip
    server_names = ",".join((*API_SERVER_NAMES, *(f"IP:{ip}" for ip in server_ips)))
    _signed_certificate(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        f"subjectAltName={server_names}\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    _signed_certificate(
        pki, "admin", "/O=system:masters/CN=kubernetes-admin", "extendedKeyUsage=clientAuth\n"
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def ensure_client_certificate(pki: Path, name: str, subject: str) -> None:
    """A client certificate ``name.crt`` for ``subject`` (e.g. a node's kubelet), made once."""
    if not (pki / f"{name}.crt").exists():
        _signed_certificate(pki, name, subject, "extendedKeyUsage=clientAuth\n")
