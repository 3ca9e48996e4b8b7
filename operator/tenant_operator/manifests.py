"""`python -m tenant_operator.manifests`: write every generated file (what `make manifests` runs).

- charts/tenant-operator/crds/tenants.neurallog.io.yaml and charts/tenant/values.schema.json, from the models;
- operator/config/{crd/bases,rbac,manager}/*.yaml, from `helm template` of charts/tenant-operator (namespace
  `system`), so that the guide's `kubectl apply -f operator/config/...` installs what the chart installs.

`--check` writes nothing and exits 1 when a file differs from what would be written (the drift test uses it).
"""

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tenant_operator import schema

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = Path("charts/tenant-operator/crds") / f"{schema.CRD_NAME}.yaml"
VALUES_SCHEMA_FILE = Path("charts/tenant/values.schema.json")
HEADER = "# Generated from operator/tenant_operator/api.py by `make manifests`: do not edit.\n"


def to_yaml(document: Mapping[str, Any]) -> str:
    """Block-style YAML with long lines kept whole (CEL rules read better on one line)."""
    return yaml.safe_dump(dict(document), sort_keys=False, width=4096, allow_unicode=True)


def generated_files() -> dict[Path, str]:
    """Every generated file (relative to the repository root) and its content."""
    return {
        CRD_FILE: HEADER + to_yaml(schema.tenant_crd()),
        VALUES_SCHEMA_FILE: json.dumps(schema.values_schema(), indent=2) + "\n",
    }


def stale_files(root: Path, files: Mapping[Path, str]) -> list[Path]:
    """The files whose content on disk is not what would be generated."""
    return [
        path
        for path, content in files.items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != content
    ]


def write_files(root: Path, files: Mapping[Path, str]) -> list[Path]:
    """Write the files that changed; return them."""
    changed = stale_files(root, files)
    for path in changed:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(files[path], encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tenant_operator.manifests", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: %(default)s)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a generated file is stale"
    )
    options = parser.parse_args(argv)
    files = generated_files()
    if options.check:
        stale = stale_files(options.root, files)
        for path in stale:
            print(f"stale: {path} (run `make manifests`)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_files(options.root, files):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
