"""Each chart's README.md is what `make docs` writes (helm-docs, with the options the Makefile pins), and
every leaf value of its values.yaml has a `# --` description.

The tests run the Makefile's `docs` target itself on a copy of charts/, so they and a developer run the same
command. helm-docs' own strict mode cannot do the second check: it ignores `# --` comments above a key,
reports every value as undocumented, and then only logs it. Instead the values table helm-docs writes is
read: it lists an undocumented leaf with an empty description.
"""

import difflib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHARTS, REPO, find_tool

CHART_NAMES = sorted(chart.parent.name for chart in CHARTS.glob("*/Chart.yaml"))
# A row of helm-docs' values table: | key | type | default | description |
VALUES_ROW = re.compile(r"^\| (?P<key>\S+) \| (?P<type>\S+) \| (?P<default>.*) \| (?P<description>.*?) ?\|$")


@pytest.fixture(scope="module")
def helm_docs() -> Path:
    binary = find_tool("helm-docs")
    if binary is None:
        message = "no helm-docs: run `make binaries` (it builds .cluster/bin/helm-docs) or put it on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def make_docs(helm_docs: Path, charts: Path) -> subprocess.CompletedProcess[str]:
    """`make docs` on the charts under `charts` with this helm-docs (its prerequisite `binaries` not made)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("HELM_DOCS_") and name not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "--old-file=binaries",
            "docs",
            f"HELM_DOCS={helm_docs}",
            f"DOCS_CHARTS={charts}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def copy_charts(destination: Path) -> Path:
    """A copy of charts/ without the READMEs, which helm-docs is to write."""
    copy = destination / "charts"
    shutil.copytree(CHARTS, copy, ignore=shutil.ignore_patterns("README.md"))
    return copy


@pytest.fixture(scope="module")
def generated(helm_docs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """charts/ with the READMEs that `make docs` writes."""
    charts = copy_charts(tmp_path_factory.mktemp("chart-docs"))
    result = make_docs(helm_docs, charts)
    assert result.returncode == 0, f"make docs:\n{result.stdout}\n{result.stderr}"
    return charts


def documented(readme: str) -> dict[str, str]:
    """The description of each key of the values table of a README written by helm-docs."""
    rows = (VALUES_ROW.match(line) for line in readme.split("\n## Values\n", 1)[-1].splitlines())
    return {row["key"]: row["description"] for row in rows if row and row["key"] != "Key"}


def leaf_paths(values: Any, prefix: str = "") -> list[str]:
    """The dotted paths of the leaf values: everything but non-empty maps."""
    if isinstance(values, dict) and values:
        return [path for key, child in values.items() for path in leaf_paths(child, f"{prefix}{key}.")]
    return [prefix.removesuffix(".")]


def undocumented(chart: Path) -> list[str]:
    """The leaf values of the chart's values.yaml that its generated README gives no description."""
    values = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    descriptions = documented((chart / "README.md").read_text())
    return [path for path in leaf_paths(values) if not descriptions.get(path)]


def test_every_chart_has_a_readme_template() -> None:
    """Without README.md.gotmpl helm-docs falls back to its default template without a word."""
    assert CHART_NAMES == ["tenant", "tenant-operator"]
    for name in CHART_NAMES:
        assert (CHARTS / name / "README.md.gotmpl").is_file(), name


@pytest.mark.parametrize("name", CHART_NAMES)
def test_readme_is_what_helm_docs_writes(generated: Path, name: str) -> None:
    expected = (generated / name / "README.md").read_text()
    readme = CHARTS / name / "README.md"
    current = readme.read_text() if readme.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            str(readme.relative_to(REPO)),
            "written by helm-docs",
        )
    )
    if current != expected:
        pytest.fail(f"{diff}\n{readme.relative_to(REPO)} is out of date: run `make docs`", pytrace=False)


@pytest.mark.parametrize("name", CHART_NAMES)
def test_every_leaf_value_has_a_description(generated: Path, name: str) -> None:
    assert documented((generated / name / "README.md").read_text()), "no values table"
    missing = undocumented(generated / name)
    assert not missing, f"charts/{name}/values.yaml: values without a `# --` comment: {', '.join(missing)}"


def test_an_undocumented_value_is_found(helm_docs: Path, tmp_path: Path) -> None:
    charts = copy_charts(tmp_path)
    values = charts / "tenant-operator" / "values.yaml"
    values.write_text(
        values.read_text()
        + "\n# A plain comment documents nothing.\nextra:\n  # -- Documented.\n  kept: 1\n  forgotten: []\n"
        + "# -- Documented, but a blank line separates it from its key.\n\nalsoForgotten: {}\n"
    )
    result = make_docs(helm_docs, charts)
    assert result.returncode == 0, f"make docs:\n{result.stdout}\n{result.stderr}"
    assert undocumented(charts / "tenant-operator") == ["extra.forgotten", "alsoForgotten"]


def test_make_docs_fails_when_helm_docs_reports_a_problem(helm_docs: Path, tmp_path: Path) -> None:
    """helm-docs logs a template that does not parse, skips the chart and exits 0: the target fails."""
    charts = copy_charts(tmp_path)
    template = charts / "tenant" / "README.md.gotmpl"
    template.write_text(template.read_text() + '{{ template "chart.valuesSection" . \n')
    result = make_docs(helm_docs, charts)
    assert result.returncode != 0
    assert "tenant" in result.stderr
