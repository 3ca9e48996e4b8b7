"""charts/gen_readme.py: the `# --` comments of a values.yaml become the values table of the README."""

import importlib.util
from types import ModuleType

import pytest
from chart_support import CHARTS


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_readme", CHARTS / "gen_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_readme = load_generator()

VALUES = """\
# A plain comment documents nothing.
image:
  # -- Image repository.
  repository: example/app
  # -- Image tag; a description may go on
  # over several lines.
  tag: "1.0"
# -- Extra labels, as "key: value".
labels: {}
# -- Whether it is on.
enabled: true
"""


def test_rows_follow_the_file_with_types_and_defaults() -> None:
    rows = gen_readme.documented_values(VALUES)
    assert [(row.key, row.type, row.default, row.description) for row in rows] == [
        ("image.repository", "string", '"example/app"', "Image repository."),
        ("image.tag", "string", '"1.0"', "Image tag; a description may go on over several lines."),
        ("labels", "object", "{}", 'Extra labels, as "key: value".'),
        ("enabled", "bool", "true", "Whether it is on."),
    ]


def test_an_undocumented_value_is_refused() -> None:
    with pytest.raises(gen_readme.UndocumentedValuesError, match=r"image\.pullPolicy"):
        gen_readme.documented_values(VALUES.replace('  tag: "1.0"\n', '  tag: "1.0"\n  pullPolicy: Always\n'))


def test_a_blank_line_ends_a_description() -> None:
    with pytest.raises(gen_readme.UndocumentedValuesError, match="enabled"):
        gen_readme.documented_values(VALUES.replace("# -- Whether it is on.\n", "# -- Whether it is on.\n\n"))


def test_pipes_are_escaped_in_the_table() -> None:
    rows = gen_readme.documented_values('# -- a | b\nkey: "x|y"\n')
    assert gen_readme.values_table(rows).splitlines()[-1] == '| key | string | `"x\\|y"` | a \\| b |'
