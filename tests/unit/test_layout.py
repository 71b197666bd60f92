"""The source layout reads like the architecture: every module under src/grantflow is parsed
with `ast` and its imports of grantflow modules collected — at the top, inside functions (a lazy
import is an import all the same) and under `if TYPE_CHECKING:` (kept apart: a type-only import
does not decide the order modules load in). From them:

- people/ never imports steps/ (a step type depends on the people service, never the reverse),
  not even for types, and schedules/ never imports governance/ (`schedules.runners` names the
  governance modules and imports them by name when a job of their kind runs);
- the circles broken in issue 17 stay broken: steps/approval ↔ people/approvals, steps/task ↔
  people/human_tasks, access/grants ↔ access/identities depend one way only;
- the module graph (type-only imports left out) has no circle besides the known ones listed in
  KNOWN_CIRCLES, which predate this test: a new one fails, a known one may only shrink;
- no module is over MAX_LINES = 850 lines (the largest, engine/interpreter.py, is about 800;
  reviews, controls and reconcile were split along their seams into modules under 530).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = SRC / "grantflow"
MAX_LINES = 850

# Circles older than this test, each within one package; remove an entry once it is broken.
KNOWN_CIRCLES = (
    frozenset({"grantflow.audit.checkpoints", "grantflow.audit.log"}),
    frozenset({"grantflow.people.account_email", "grantflow.people.email"}),
    frozenset(
        {
            "grantflow.cli.client",
            "grantflow.cli.context",
            "grantflow.cli.direct",
            "grantflow.cli.local",
            "grantflow.cli.profile",
        }
    ),
)
ONE_WAY = (
    ("grantflow.steps.approval", "grantflow.people.approvals"),
    ("grantflow.steps.task", "grantflow.people.human_tasks"),
    ("grantflow.access.identities", "grantflow.access.grants"),
)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the grantflow module imported (a package's __init__ under its own name)
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module `name` loads: itself, or the nearest enclosing module (`a.b.f` → `a.b`)."""
    modules = _modules()
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def _type_only_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                inside.update(id(n) for child in node.body for n in ast.walk(child))
    return inside


def _imports_of(module: str, source: str) -> Iterator[Import]:
    tree = ast.parse(source)
    type_only = _type_only_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b` loads the module a.b when there is one, else a
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "grantflow" or name.startswith("grantflow."):
                target = _resolve(name)
                if target != module:
                    yield Import(module, target, node.lineno, id(node) in type_only)


@cache
def _all_imports() -> tuple[Import, ...]:
    return tuple(i for m, p in _modules().items() for i in _imports_of(m, p.read_text()))


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _where(found: list[Import]) -> list[str]:
    return [f"{i.source}:{i.line} imports {i.target}" for i in found]


def _circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_imports_are_found_at_the_top_inside_functions_and_for_types() -> None:
    """A top-level, a function-level and a TYPE_CHECKING import are all found, by module."""
    source = """
from typing import TYPE_CHECKING
from grantflow.people import tasks
import grantflow.errors
if TYPE_CHECKING:
    from grantflow.steps.execution import StepCall
def later():
    from grantflow.store.base import utcnow
"""
    found = {(i.target, i.line, i.type_only) for i in _imports_of("grantflow.x", source)}
    assert found == {
        ("grantflow.people.tasks", 3, False),
        ("grantflow.errors", 4, False),
        ("grantflow.steps.execution", 6, True),
        ("grantflow.store.base", 8, False),
    }


def test_circles_are_found() -> None:
    """The circle finder names each circle of modules once, and nothing that is not one."""
    edges = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(map(sorted, _circles(edges))) == [["a", "b"], ["c", "d", "e"]]


def test_people_never_imports_steps() -> None:
    """No module of people/ imports one of steps/, even inside a function or for types."""
    found = [
        i
        for i in _all_imports()
        if _in(i.source, "grantflow.people") and _in(i.target, "grantflow.steps")
    ]
    assert _where(found) == []


def test_schedules_never_imports_governance() -> None:
    """No module of schedules/ imports one of governance/ (runners loads them by name)."""
    found = [
        i
        for i in _all_imports()
        if _in(i.source, "grantflow.schedules") and _in(i.target, "grantflow.governance")
    ]
    assert _where(found) == []


def test_the_broken_circles_depend_one_way() -> None:
    """A step type imports its people service and identities imports grants, never back."""
    imports = _all_imports()
    for upper, lower in ONE_WAY:
        assert any(i.source == upper and i.target == lower for i in imports), (upper, lower)
        back = [i for i in imports if i.source == lower and i.target == upper]
        assert _where(back) == []


def test_no_new_import_circle() -> None:
    """Every circle of the module graph (type-only imports aside) is within a known one."""
    edges: dict[str, set[str]] = {m: set() for m in _modules()}
    for i in _all_imports():
        if not i.type_only:
            edges[i.source].add(i.target)
    new = [
        sorted(circle)
        for circle in _circles(edges)
        if not any(circle <= known for known in KNOWN_CIRCLES)
    ]
    assert new == []


def test_no_module_is_over_the_line_limit() -> None:
    """Each module under src/grantflow has at most MAX_LINES (850) lines."""
    lengths = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    assert {m: n for m, n in lengths.items() if n > MAX_LINES} == {}
