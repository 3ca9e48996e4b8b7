"""The post-renderer as Helm runs it: the console script, `python -m`, and the Helm 4 plugin's command."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from postrender_builders import Manifest, example_release, to_stream

from tenant_postrender import render

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "postrender"
CONSOLE_SCRIPT = shutil.which(
    "tenant-postrender", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)


def run(
    command: list[str], stdin: bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, input=stdin, capture_output=True, timeout=60, check=False, env=env)


def tenant_postrender(*args: str) -> list[str]:
    assert CONSOLE_SCRIPT, "the console script tenant-postrender is not installed (pip install -e .)"
    return [CONSOLE_SCRIPT, *args]


def privileged(release: list[Manifest]) -> None:
    release[-2]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True


def without_limits(release: list[Manifest]) -> None:
    del release[-2]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def duplicate_env(release: list[Manifest]) -> None:
    release[-2]["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "LOG_LEVEL", "value": "x"}
    )


def stream_with(change: Any) -> bytes:
    release = example_release()
    change(release)
    return to_stream(release).encode()


BAD_INPUTS = {
    "privileged container": (stream_with(privileged), "securityContext.privileged: is true"),
    "missing limits": (stream_with(without_limits), "resources.limits.cpu: is not set"),
    "duplicate env": (stream_with(duplicate_env), "env[LOG_LEVEL]: is set 2 times"),
    "budget overflow": (
        to_stream(example_release(server_replicas=10)).encode(),
        "spec.hard.requests.cpu: the workloads request 5700m during a rollout but the quota allows 2",
    ),
    "malformed YAML": (b"kind: [\n", "is not valid YAML"),
    "empty input": (b"", "input stream: holds no Kubernetes objects"),
    "not UTF-8": (b"kind: \xff\n", "is not UTF-8 text"),
}


def test_good_input_goes_to_stdout_and_nothing_to_stderr() -> None:
    stream = to_stream(example_release())
    result = run(tenant_postrender(), stream.encode())
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.decode() == render(stream)


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_non_zero_with_the_message_and_an_empty_stdout(case: str) -> None:
    stdin, message = BAD_INPUTS[case]
    result = run(tenant_postrender(), stdin)
    assert result.returncode == 1
    assert result.stdout == b""
    report = result.stderr.decode()
    assert report.startswith("tenant-postrender refused the release")
    assert message in report
    assert "\n    fix: " in report


def test_the_registry_allow_list_is_an_argument() -> None:
    stream = to_stream(example_release()).encode()
    assert run(tenant_postrender("--allowed-registry", "docker.io"), stream).returncode == 0
    refused = run(tenant_postrender("--allowed-registry", "ghcr.io"), stream)
    assert (refused.returncode, refused.stdout) == (1, b"")
    assert b"is not from an allowed registry" in refused.stderr


def test_python_dash_m_is_the_same_command() -> None:
    stream = to_stream(example_release())
    result = run([sys.executable, "-m", "tenant_postrender"], stream.encode())
    assert (result.returncode, result.stdout.decode()) == (0, render(stream))


def test_the_cli_imports_only_yaml_and_the_standard_library() -> None:
    probe = (
        "import sys; before = set(sys.modules); import tenant_postrender.cli; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    third_party = {
        name.split(".")[0] for name in loaded.split() if name.split(".")[0] not in sys.stdlib_module_names
    }
    # libyaml's binding is compiled with Cython, whose runtime registers modules of its own.
    third_party = {name for name in third_party if "cython" not in name}
    assert third_party <= {"yaml", "_yaml", "tenant_postrender"}


def test_the_helm4_plugin_manifest() -> None:
    manifest = yaml.safe_load((PLUGIN_DIR / "plugin.yaml").read_text())
    assert {key: manifest[key] for key in ("apiVersion", "type", "name", "runtime")} == {
        "apiVersion": "v1",
        "type": "postrenderer/v1",
        "name": "tenant-postrender",
        "runtime": "subprocess",
    }
    [command] = manifest["runtimeConfig"]["platformCommand"]
    script = PLUGIN_DIR / command["command"].removeprefix("${HELM_PLUGIN_DIR}/")
    assert script.stat().st_mode & stat.S_IXUSR


def plugin_env(path: str) -> dict[str, str]:
    return {**os.environ, "PATH": path, "HELM_PLUGIN_DIR": str(PLUGIN_DIR)}


def plugin_command(*, stderr_dropped: bool = False) -> list[str]:
    """The plugin's command, started by a process standing in for Helm; Helm 4 keeps the command's stderr to
    itself, which `stderr_dropped` imitates."""
    stderr = "subprocess.DEVNULL" if stderr_dropped else "None"
    helm = f"import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:], stderr={stderr}).returncode)"
    return [sys.executable, "-c", helm, str(PLUGIN_DIR / "tenant-postrender.sh")]


@pytest.fixture
def python_only_path(tmp_path: Path) -> str:
    """A PATH with a python3 (that has PyYAML) and no tenant-postrender on it."""
    python3 = tmp_path / "python3"
    python3.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python3.chmod(0o755)
    return f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin"


def test_the_plugin_command_runs_the_console_script() -> None:
    assert CONSOLE_SCRIPT
    stream = to_stream(example_release())
    path = f"{Path(CONSOLE_SCRIPT).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"
    result = run(plugin_command(), stream.encode(), plugin_env(path))
    assert (result.returncode, result.stdout.decode()) == (0, render(stream))


def test_the_plugin_command_falls_back_to_the_package_beside_it(python_only_path: str) -> None:
    stream = to_stream(example_release())
    result = run(plugin_command(), stream.encode(), plugin_env(python_only_path))
    assert (result.returncode, result.stdout.decode(), result.stderr) == (0, render(stream), b"")


def test_the_plugin_command_reports_to_helms_stderr_when_its_own_is_dropped(python_only_path: str) -> None:
    stdin, message = BAD_INPUTS["budget overflow"]
    result = run(plugin_command(stderr_dropped=True), stdin, plugin_env(python_only_path))
    assert (result.returncode, result.stdout) == (1, b"")
    assert message in result.stderr.decode()
