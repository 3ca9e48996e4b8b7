"""The client tools the local cluster builds for the tests: helm-docs at its pinned version, and our kstatus
command's contract (one object in, one JSON verdict out; anything else refused). No cluster needed."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from local_cluster.build import TOOLS, Tool, ensure_binaries
from tests.conftest import STATE

BIN = STATE / "bin"


def tool(name: str) -> Tool:
    return next(t for t in TOOLS if t.name == name)


@pytest.fixture(scope="module", autouse=True)
def clients() -> None:
    if not ((BIN / "helm-docs").exists() and (BIN / "kstatus").exists()):
        ensure_binaries(BIN, clients_only=True)


def kstatus(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kstatus")], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


def test_helm_docs_reports_the_pinned_version() -> None:
    pinned = tool("helm-docs").version()
    out = subprocess.run(
        [str(BIN / "helm-docs"), "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.split() == ["helm-docs", "version", pinned.lstrip("v")]


@pytest.mark.parametrize(
    ("document", "verdict"),
    [
        # YAML, integers kept as integers: a generation not observed yet is in progress.
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  generation: 2\n"
            "spec:\n  replicas: 1\nstatus:\n  observedGeneration: 1\n",
            ("InProgress", "Deployment generation is 2, but latest observed generation is 1"),
        ),
        # JSON, with document separators around it.
        (
            '---\n{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}\n---\n',
            ("Current", "Resource is always ready"),
        ),
        # A custom resource: its Stalled condition makes it Failed, with that condition's message.
        (
            json.dumps(
                {
                    "apiVersion": "neurallog.io/v1",
                    "kind": "Tenant",
                    "metadata": {"name": "t", "generation": 3},
                    "status": {
                        "observedGeneration": 3,
                        "conditions": [
                            {"type": "Ready", "status": "False", "reason": "Failed", "message": "no"},
                            {
                                "type": "Stalled",
                                "status": "True",
                                "reason": "Failed",
                                "message": "install refused",
                            },
                        ],
                    },
                }
            ),
            ("Failed", "install refused"),
        ),
    ],
)
def test_kstatus_prints_one_verdict(document: str, verdict: tuple[str, str]) -> None:
    result = kstatus(document)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"status": verdict[0], "message": verdict[1]}


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ("", "no object"),
        ("---\n", "no object"),
        ("apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: Secret\n", "more than one object"),
        ("[1, 2]", "cannot unmarshal"),
        ('{"metadata": {"name": "x"}}', "'Kind' is missing"),
        ('{"kind": "Pod", "metadata": {"name": "x"}}', "no apiVersion or no kind"),
        ("not: [closed", "reading the object"),
    ],
)
def test_kstatus_refuses_anything_but_one_object(document: str, error: str) -> None:
    result = kstatus(document)
    assert result.returncode == 1
    assert result.stdout == ""
    assert error in result.stderr


def test_files_kept_from_a_module_are_part_of_the_cache_key() -> None:
    go = "go version go1.26 linux/amd64"
    source = tool("flux-source-controller")
    assert source.files == {"crds": "config/crd/bases/*.yaml"}
    without = dataclasses.replace(source, files={})
    assert source.cache_key(go) != without.cache_key(go)
    other = dataclasses.replace(source, files={"crds": "config/crd/*.yaml"})
    assert source.cache_key(go) != other.cache_key(go)
