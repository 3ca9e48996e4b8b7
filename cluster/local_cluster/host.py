"""Changes the local cluster makes to the host, each recorded with its undo as it is made.

The journal is a file in the cluster's state directory, so that ``down`` undoes in reverse order what the
last ``up`` did even when that ``up`` crashed half way, and a second ``up`` starts clean.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class HostJournal:
    """An append-only list of undo commands, replayed in reverse by ``undo_all``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _entries(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        entries: list[dict[str, object]] = json.loads(self.path.read_text())
        return entries

    def record(self, what: str, undo: list[str]) -> None:
        """Records, before making a change, the command that undoes it."""
        entries = self._entries()
        entries.append({"what": what, "undo": undo})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(entries, indent=1))

    def change(self, what: str, do: list[str], undo: list[str]) -> None:
        """Makes one change with ``do`` and records its undo first, so a crash in between is undone too."""
        self.record(what, undo)
        run(do)

    def undo_all(self) -> None:
        for entry in reversed(self._entries()):
            undo = [str(arg) for arg in entry["undo"]]  # type: ignore[attr-defined]
            result = subprocess.run(undo, capture_output=True, text=True, check=False)
            gone = any(word in result.stderr for word in ("No such", "Cannot find", "does not exist"))
            if result.returncode != 0 and not gone:  # else the change had not been made yet
                print(f"undo of {entry['what']!r} failed: {result.stderr.strip()}", file=sys.stderr)
        self.path.unlink(missing_ok=True)


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def unmount_under(directory: Path) -> None:
    """Unmounts every mount point below ``directory``, deepest first (pod volumes, netns files, overlays)."""
    prefix = str(directory.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if (point + "/").startswith(prefix):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
