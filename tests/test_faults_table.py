"""docs/faults.md ("What happens when ...") stays true to the test suite.

Every row of its tables names at least one test as `` `tests/<file>.py::<test>` `` and
every named test exists: a module-level ``def`` in that file (a parametrized test is
named without its ``[...]`` ids). Checked on the source with ``ast``, so this runs in
milliseconds and imports nothing; a renamed or deleted test fails here instead of
leaving the page promising a check that no longer runs.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from tests.helpers import REPO

PAGE = REPO / "docs" / "faults.md"
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def table_rows(text: str) -> list[str]:
    """Data rows of every Markdown table (not the header, the separator or placeholders)."""
    rows, previous = [], ""
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-| ]+\|", line.strip()):
            header = not previous.startswith("|")
            if not header and "(rows being added)" not in line:
                rows.append(line)
        previous = line
    return rows


@cache
def defined_functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(n.name for n in tree.body
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


def test_every_row_names_a_test_and_every_named_test_exists() -> None:
    rows = table_rows(PAGE.read_text(encoding="utf-8"))
    assert len(rows) >= 30, "the tables lost their rows"
    missing = []
    for row in rows:
        named = NODE.findall(row.split("|")[-2])  # the last column: the tests
        assert named, f"a row of {PAGE.name} names no test: {row[:100]}"
        for file, name in named:
            path = REPO / file
            if not path.is_file() or name not in defined_functions(path):
                missing.append(f"{file}::{name}")
    assert not missing, f"{PAGE.name} names tests that do not exist: {missing}"


def test_the_checker_sees_a_missing_test() -> None:
    """The check above cannot pass vacuously: a made-up name is caught."""
    row = "| x | y | `tests/test_faults_table.py::test_no_such_thing` |"
    [(file, name)] = NODE.findall(table_rows(f"| a | b | c |\n|---|---|---|\n{row}")[0])
    assert name not in defined_functions(REPO / file)
    assert "test_every_row_names_a_test_and_every_named_test_exists" in defined_functions(
        REPO / file)
