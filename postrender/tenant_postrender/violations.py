"""What the post-renderer refuses, said so that a person can fix it without reading this code."""

from collections.abc import Sequence
from typing import NamedTuple


# Records here and in the other modules are NamedTuples, not dataclasses: importing dataclasses (and inspect
# with it) would cost the command line more than rendering a release does.
class Violation(NamedTuple):
    """One thing wrong with the rendered release.

    `subject` names the object as Kind/name (or `input` for the stream itself), `field` the path inside it,
    `problem` what is wrong and `fix` how to make it right.
    """

    subject: str
    field: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.subject} {self.field}: {self.problem}\n    fix: {self.fix}"


class ValidationFailed(Exception):  # noqa: N818 - the name the operator imports, fixed by the contract
    """The release was refused; `violations` holds every reason, not only the first."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = list(violations)
        super().__init__(self.report())

    def report(self) -> str:
        count = len(self.violations)
        header = (
            f"tenant-postrender refused the release ({count} violation{'s' if count != 1 else ''}); "
            "nothing was applied:"
        )
        return "\n".join([header, *(f"- {violation}" for violation in self.violations)])
