"""`tenant-postrender`: the manifest stream on stdin, the release to apply on stdout.

On any violation the exit status is 1, stdout stays empty (so Helm applies nothing) and stderr lists every
violation. Only the standard library and PyYAML are imported: Helm starts this process on every install and
upgrade of every tenant.
"""

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from tenant_postrender.render import render
from tenant_postrender.violations import ValidationFailed, Violation

REFUSED = 1
# The allow-list as the environment gives it (comma-separated), for runs where Helm starts this process and
# no argument can be passed (the operator sets it; Helm hands its environment down to post-renderers).
ALLOWED_REGISTRIES_ENV = "TENANT_POSTRENDER_ALLOWED_REGISTRIES"


def allowed_registries(arguments: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The registries of --allowed-registry and of the environment together; [] allows any."""
    from_environment = environ.get(ALLOWED_REGISTRIES_ENV, "").split(",")
    return [*arguments, *(entry.strip() for entry in from_environment if entry.strip())]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tenant-postrender",
        description="Helm post-renderer for NeuralLog tenants: reads the rendered release on stdin, injects "
        "the tenant's NetworkPolicies, validates every manifest and writes the result on stdout.",
    )
    parser.add_argument(
        "--allowed-registry",
        action="append",
        default=[],
        metavar="REGISTRY",
        help="allow images from this registry or repository prefix only (repeatable, e.g. "
        f"docker.io/library; also read, comma-separated, from ${ALLOWED_REGISTRIES_ENV}); default: any",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
        registries = allowed_registries(arguments.allowed_registry, os.environ)
        result = render(text, allowed_registries=registries)
    except UnicodeDecodeError as error:
        failure = ValidationFailed(
            [
                Violation(
                    "input", "stream", f"is not UTF-8 text ({error})", "pipe in the output of helm template"
                )
            ]
        )
        print(failure.report(), file=sys.stderr)
        return REFUSED
    except ValidationFailed as failure:
        print(failure.report(), file=sys.stderr)
        return REFUSED
    sys.stdout.write(result)
    return 0
