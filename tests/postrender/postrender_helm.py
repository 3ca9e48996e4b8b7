"""Running Helm 4 (with the post-renderer installed as a plugin) and Helm 3 (running it as an executable) in a
Helm home of their own, so that tests never touch the user's Helm configuration or plugins."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import run_tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tenant"
EXAMPLE_VALUES = CHART / "ci" / "example-values.yaml"
PLUGIN_DIR = REPO / "postrender"
BIN = REPO / ".cluster" / "bin"
POSTRENDERER = "tenant-postrender"


@dataclass(frozen=True)
class HelmTool:
    """One Helm major version: its executable and how it is told about the post-renderer."""

    executable: str
    plugin: bool

    @property
    def path(self) -> Path:
        return BIN / self.executable

    def __str__(self) -> str:
        return "helm4-plugin" if self.plugin else "helm3-executable"


HELM4 = HelmTool("helm", plugin=True)
HELM3 = HelmTool("helm3", plugin=False)


class IsolatedHelm:
    """A Helm whose data, config and cache live under `home`; Helm 4 gets the plugin installed there."""

    def __init__(self, tool: HelmTool, home: Path, env: dict[str, str] | None = None) -> None:
        self.tool = tool
        base = dict(os.environ if env is None else env)
        # HELM_PLUGINS is left unset on purpose: Helm 4.3 installs a plugin from a local directory into
        # $HELM_DATA_HOME/plugins whatever HELM_PLUGINS says, and looks for it in HELM_PLUGINS.
        base.pop("HELM_PLUGINS", None)
        self.env = base | {
            "HELM_DATA_HOME": str(home / "data"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            # Helm 3 finds the console script on PATH, next to the interpreter running the tests.
            "PATH": os.pathsep.join([str(BIN), str(Path(sys.executable).parent), base.get("PATH", "")]),
        }
        if tool.plugin:
            self.run("plugin", "install", str(PLUGIN_DIR))

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_tool([str(self.tool.path), *args], self.env, check=check, timeout=timeout)
