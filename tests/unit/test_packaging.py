"""The wheel is the product: tenant_operator and tenant_postrender with their console scripts. The local
cluster (cluster/, with the demo), the tests and their fixtures are development tooling: they stay out of the
wheel, and no product module imports them."""

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = (REPO / "operator" / "tenant_operator", REPO / "postrender" / "tenant_postrender")
TOOLING = {"local_cluster", "tests"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # A copy of the checkout without what earlier builds left: setuptools packs whatever is in build/lib.
    source = tmp_path_factory.mktemp("checkout") / "repo"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".cluster", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_the_product_only(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"tenant_operator", "tenant_postrender"}
    assert [name for name in names if "local_cluster" in name or "tests/" in name or "demo" in name] == []


def test_the_wheel_installs_the_products_console_scripts(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
    scripts = wheel.read(entry_points).decode().split("[console_scripts]")[1].split("[")[0]
    assert sorted(line.split("=")[0].strip() for line in scripts.splitlines() if line.strip()) == [
        "tenant-operator",
        "tenant-postrender",
    ]


def imported_modules(source: Path) -> set[str]:
    """The absolute modules a source file imports."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_no_product_module_imports_the_tooling() -> None:
    sources = [source for package in PRODUCT for source in sorted(package.rglob("*.py"))]
    assert sources
    imports = [
        f"{source.relative_to(REPO)} imports {module}"
        for source in sources
        for module in sorted(imported_modules(source))
        if module.split(".")[0] in TOOLING
    ]
    assert imports == []
