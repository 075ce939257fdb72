"""The layout of pipeline/ cannot rot: wings import downward only, and nothing cycles.

README, "Code layout": `pipeline/` holds four wings named after their concerns and a few
top-level modules. Every import of every module is read from its source (`ast`, function-
local imports included, since those run too) and checked against the direction:

    cli.py, __main__.py, __init__.py (the public API)    may import everything
    dataset/  viewing/                                   -> run/, inputs/, top-level base
    run/                                                 -> inputs/, top-level base
    inputs/                                              -> top-level base only
    top-level base (config, options, errors, urls, ...)  -> inputs/ at most, never run/ ...

and no module imports `pipeline/__init__.py` (the public API imports the modules, never
the reverse), and there is no cycle: not between wings and top-level modules, not between
two modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pipeline"

WINGS = ("inputs", "run", "viewing", "dataset")
# what each wing may import besides itself and the top-level base modules
WING_MAY_IMPORT = {
    "inputs": set(),
    "run": {"inputs"},
    "viewing": {"run", "inputs"},
    "dataset": {"run", "inputs"},
}
# top-level modules above every wing: nothing inside pipeline/ imports them (but __main__)
ENTRY = {"pipeline.cli", "pipeline.__main__", "pipeline"}
# the wings a top-level base module (config, errors, urls, ...) may import
BASE_MAY_IMPORT = {"inputs"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def resolve(name: str) -> str:
    """The module that `import name` (or `from name import ...`) loads."""
    return name if name in MODULES else name.rsplit(".", 1)[0]


def imports_of(mod: str) -> set[str]:
    """Every pipeline module `mod` imports, at module level or inside a function."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "pipeline"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "pipeline":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else resolve(base))
    found.discard(mod)
    return found


GRAPH = {mod: imports_of(mod) for mod in MODULES}


def unit(mod: str) -> str:
    """A module's wing ("run"), or the module itself when it sits at the top."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in WINGS) else mod


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_wings_exist_as_packages():
    folders = sorted(p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(WINGS)
    for wing in WINGS:
        assert (PKG / wing / "__init__.py").is_file()
        assert f"pipeline.{wing}" in MODULES
    # the parser sees what the package really imports
    assert "pipeline.inputs.radiometry" in GRAPH["pipeline.run.plan"]
    assert "pipeline.run.scene" in GRAPH["pipeline.run.batch"]  # a function-local import


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if unit(m) in WINGS))
def test_a_wing_imports_only_downward(mod):
    own = unit(mod)
    for target in sorted(GRAPH[mod]):
        there = unit(target)
        assert target not in ENTRY, f"{mod} imports {target}, which sits above every wing"
        if there in WINGS and there != own:
            assert there in WING_MAY_IMPORT[own], (
                f"{mod} ({own}/) imports {target} ({there}/): {own}/ may import "
                f"{sorted(WING_MAY_IMPORT[own]) or 'no other wing'}")


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if unit(m) not in WINGS
                                       and m not in ENTRY))
def test_a_top_level_base_module_stays_below_the_wings_that_use_it(mod):
    for target in sorted(GRAPH[mod]):
        assert target not in ENTRY, f"{mod} imports {target}"
        there = unit(target)
        if there in WINGS:
            assert there in BASE_MAY_IMPORT, f"{mod} imports {target} ({there}/)"


def test_nothing_inside_pipeline_imports_the_public_api():
    """`pipeline/__init__.py` imports the modules; a module importing it back would make
    the public API's import order matter (the version lives in pipeline/version.py)."""
    users = sorted(m for m, targets in GRAPH.items() if "pipeline" in targets)
    assert users == []


def test_no_cycle_between_wings_and_top_level_modules():
    units: dict[str, set[str]] = {}
    for mod, targets in GRAPH.items():
        units.setdefault(unit(mod), set()).update(unit(t) for t in targets if unit(t) != unit(mod))
    assert find_cycle(units) is None


def test_no_import_cycle_between_modules():
    assert find_cycle(GRAPH) is None


def test_tests_mirror_the_wings():
    """tests/pipeline/<wing>/test_<module>.py tests pipeline/<wing>/<module>.py."""
    tests = ROOT / "tests" / "pipeline"
    homes = {m.rsplit(".", 1)[-1]: Path(*m.split(".")[1:-1]) for m in MODULES if "." in m}
    misplaced = []
    for test in sorted(tests.rglob("test_*.py")):
        name = test.stem.removeprefix("test_")
        if name in homes and test.parent.relative_to(tests) != homes[name]:
            misplaced.append(f"{test.relative_to(ROOT)} (module in pipeline/{homes[name]})")
        for folder in test.relative_to(tests).parents:
            assert (tests / folder / "__init__.py").is_file(), folder
    assert misplaced == []
