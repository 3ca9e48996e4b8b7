"""An object's health as GitOps tools compute it: kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), through
our small command around it (cluster/tools/kstatus, built into .cluster/bin/kstatus like the other tools).

`kstatus(obj)` is the verdict only (Current, InProgress, Failed, Terminating, Unknown); `kstatus_result(obj)`
adds kstatus's message. Every test tier that wants to know whether Flux, Argo CD or kpt would call a Tenant
healthy imports these rather than restating kstatus's rules.
"""

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local_cluster.build import ensure_binaries

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".cluster" / "bin"
KSTATUS = BIN / "kstatus"
VERDICTS = frozenset({"Current", "InProgress", "Failed", "Terminating", "Unknown"})


def kstatus_binary() -> Path:
    """.cluster/bin/kstatus, built (or linked from the cache) when missing. A missing binary fails the caller:
    a health that kstatus did not compute is not proven."""
    if not KSTATUS.is_file():
        ensure_binaries(BIN, clients_only=True)
    assert KSTATUS.is_file(), f"{KSTATUS} is missing after building the client tools"
    return KSTATUS


def kstatus_result(obj: Mapping[str, Any]) -> dict[str, str]:
    """kstatus's {"status": ..., "message": ...} for one object (a dict as the API server returns it)."""
    result = subprocess.run(
        [str(kstatus_binary())],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"kstatus failed ({result.returncode}): {result.stderr}"
    verdict: dict[str, str] = json.loads(result.stdout)
    assert verdict.get("status") in VERDICTS, verdict
    return verdict


def kstatus(obj: Mapping[str, Any]) -> str:
    """kstatus's verdict on one object: Current, InProgress, Failed, Terminating or Unknown."""
    return kstatus_result(obj)["status"]
