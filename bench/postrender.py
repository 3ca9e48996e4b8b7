"""What the post-renderer costs per release: wall time of cold runs, beside `helm template` alone.

Every run is a new process, as on every `helm install` and `helm upgrade` of a tenant. Rows:
- `tenant-postrender` alone, on the stream `helm template` renders: what the post-renderer itself costs;
- the floor of any post-renderer in Python with PyYAML: an interpreter that imports yaml and copies stdin;
- for Helm 4 (plugin) and Helm 3 (executable): `helm template` alone, with `cat` as post-renderer (what
  post-rendering costs Helm itself: Helm 4 annotates, splits and re-parses the stream), and with
  `tenant-postrender`. The difference to `helm template` alone is what a user waits for in addition.
Then the imports the command line pays for, from `python -X importtime`.

The package is byte-compiled first, as `pip install` does: an editable install under
PYTHONDONTWRITEBYTECODE=1 would otherwise compile its sources again on every run.

    .venv/bin/python bench/postrender.py [--runs 30] [--values charts/tenant/ci/example-values.yaml]

Needs the Helm binaries of `make cluster-up` (.cluster/bin/helm and helm3); no cluster.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "tenant"
BIN = REPO / ".cluster" / "bin"
TARGET_MS = 150.0
# Offline, a Helm built without version stamps assumes Kubernetes 1.20, below the chart's kubeVersion.
KUBE_VERSION = "1.37.0"


def wall_times(
    commands: dict[str, tuple[Sequence[str], bytes]], runs: int, env: dict[str, str]
) -> dict[str, list[float]]:
    """Milliseconds of each of `runs` cold runs of each (command, stdin), after one untimed round that fills
    the OS file cache. The commands take turns, so that a busy moment of the machine falls on all of them."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for attempt in range(runs + 1):
        for name, (command, stdin) in commands.items():
            start = time.perf_counter()
            subprocess.run(command, input=stdin, capture_output=True, env=env, check=True)
            if attempt:
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20, method="inclusive")[-1]


# What the command line imports, as `python -X importtime` reports it: the interpreter's own start-up (site,
# which also runs the .pth files of the environment), PyYAML, and the standard modules the package uses.
IMPORTS_SHOWN = ("site", "tenant_postrender.cli", "yaml", "typing", "argparse", "json", "decimal")


def import_times(env: dict[str, str], runs: int) -> dict[str, float]:
    """Best cumulative ms of each module of IMPORTS_SHOWN over the runs, and `tenant_postrender (own code)`:
    the self time of the package's modules, what this project's code adds on top of its dependencies."""
    best: dict[str, float] = {}
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import tenant_postrender.cli"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        times: dict[str, float] = {"tenant_postrender (own code)": 0.0}
        for line in result.stderr.splitlines()[1:]:
            # "import time: <self us> | <cumulative us> | <indent><module>"
            own, cumulative, module = (part.strip() for part in line.removeprefix("import time:").split("|"))
            if module in IMPORTS_SHOWN:
                times[module] = int(cumulative) / 1000
            if module.startswith("tenant_postrender"):
                times["tenant_postrender (own code)"] += int(own) / 1000
        for module, millis in times.items():
            best[module] = min(best.get(module, millis), millis)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30, help="cold runs per row (at least 20)")
    parser.add_argument("--values", type=Path, default=CHART / "ci" / "example-values.yaml")
    arguments = parser.parse_args()
    runs = max(arguments.runs, 20)
    for tool in ("helm", "helm3"):
        if not (BIN / tool).exists():
            sys.exit(f"{BIN / tool} is missing: run `make cluster-up` first")

    with tempfile.TemporaryDirectory(prefix="bench-postrender-") as home:
        env = {key: value for key, value in os.environ.items() if key != "HELM_PLUGINS"} | {
            "HELM_DATA_HOME": f"{home}/data",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_CACHE_HOME": f"{home}/cache",
            "PATH": os.pathsep.join([str(BIN), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        subprocess.run([sys.executable, "-m", "compileall", "-q", REPO / "postrender"], env=env, check=True)
        identity = Path(home) / "identity"
        identity.mkdir()
        (identity / "plugin.yaml").write_text(
            "apiVersion: v1\ntype: postrenderer/v1\nname: identity\nversion: 0.1.0\nruntime: subprocess\n"
            "runtimeConfig:\n  platformCommand:\n    - command: /bin/cat\n"
        )
        for plugin in (REPO / "postrender", identity):
            subprocess.run(
                [BIN / "helm", "plugin", "install", plugin], capture_output=True, env=env, check=True
            )

        def template(tool: str, *extra: str) -> list[str]:
            return [
                str(BIN / tool),
                "template",
                "sample-tenant",
                str(CHART),
                "--namespace",
                "tenant-sample-tenant",
                "--kube-version",
                KUBE_VERSION,
                "-f",
                str(arguments.values),
                *extra,
            ]

        stream = subprocess.run(template("helm"), capture_output=True, env=env, check=True).stdout
        floor = [sys.executable, "-c", "import sys, yaml; sys.stdout.write(sys.stdin.read())"]
        commands: dict[str, tuple[Sequence[str], bytes]] = {
            "tenant-postrender alone": (["tenant-postrender"], stream),
            "python importing yaml, copying stdin (the floor)": (floor, stream),
        }
        for version, tool, cat in (("Helm 4", "helm", "identity"), ("Helm 3", "helm3", "cat")):
            commands[f"{version}: helm template"] = (template(tool), b"")
            commands[f"{version}: helm template --post-renderer cat"] = (
                template(tool, "--post-renderer", cat),
                b"",
            )
            commands[f"{version}: helm template --post-renderer tenant-postrender"] = (
                template(tool, "--post-renderer", "tenant-postrender"),
                b"",
            )
        rows = wall_times(commands, runs, env)
        imports = import_times(env, runs)

    print(f"Post-renderer wall time per release, {runs} cold runs each of {arguments.values.name}")
    print(f"{'':60} {'median ms':>10} {'p95 ms':>8}")
    for name, times in rows.items():
        print(f"{name:60} {statistics.median(times):10.1f} {p95(times):8.1f}")
    print()
    median = {name: statistics.median(times) for name, times in rows.items()}
    for version in ("Helm 4", "Helm 3"):
        alone = median[f"{version}: helm template"]
        added = median[f"{version}: helm template --post-renderer tenant-postrender"] - alone
        helm_own = median[f"{version}: helm template --post-renderer cat"] - alone
        verdict = "within" if added < TARGET_MS else "OVER"
        print(
            f"{version}: tenant-postrender adds {added:.1f} ms per release (median; {verdict} the "
            f"{TARGET_MS:.0f} ms target), of which {helm_own:.1f} ms Helm spends on any post-renderer"
        )
    print()
    print("imports of the command line (python -X importtime, best cumulative ms of the runs):")
    for module, millis in imports.items():
        print(f"  {module:50} {millis:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
