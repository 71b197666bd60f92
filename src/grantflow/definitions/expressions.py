"""Mapping templates and branch conditions in Jinja2's immutable sandbox (definitions/sandbox.py).

A string in a step's config is a template. A string that is exactly one `{{ expression }}` keeps
the expression's type (a list stays a list in a JSON body); anything else renders to text.
Templates are checked when a version is published: syntax, sandbox escapes, unknown variables,
references to steps that do not exist, and constants over the limits. At run time (and in a
dry-run, the same way) a missing value is an error, a result must be data (text, numbers,
booleans, null, lists, mappings), and rendering stays within the template limits and budgets.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import json
import math
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.utils import missing

from grantflow.definitions.budget import BudgetExceeded, Deadline, within_budget
from grantflow.definitions.sandbox import (
    ExpressionError,
    GuardedEnvironment,
    MissingValue,
    TemplateLimitExceeded,
    checked,
    limits,
    safe_range,
    too_long,
)
from grantflow.definitions.sandbox import (
    _check_binop as check_binop,
)
from grantflow.strict import text_problem

__all__ = [
    "CONTEXT_ROOTS",
    "Deadline",
    "ExpressionError",
    "TemplateLimitExceeded",
    "analyse",
    "evaluate",
    "is_template",
    "render",
]

CONTEXT_ROOTS = ("input", "identity", "grant", "application", "steps", "run")
_GLOBALS = {
    "range",
    "dict",
    "lipsum",
    "cycler",
    "joiner",
    "namespace",
    "loop",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
}
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)
# What a template can raise that is the template's fault, never Grantflow's.
_TEMPLATE_FAULTS = (
    TemplateSyntaxError,
    UndefinedError,
    SecurityError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    AttributeError,
    RecursionError,
    MemoryError,
)


@dataclass(frozen=True)
class Finding:
    """A problem with one template, found without running it."""

    code: str
    message: str


@dataclass
class Analysis:
    findings: list[Finding] = field(default_factory=list)
    step_refs: set[str] = field(default_factory=set)


_env = GuardedEnvironment()


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def analyse(source: str, *, condition: bool = False) -> Analysis:
    """Check a template (or, with `condition`, a bare expression) without rendering it."""
    result = Analysis()
    try:
        tree = _env.parse("{{ " + source + " }}" if condition else source)
        _env.compile(tree)  # unknown filters and tests fail here, not at run time
    except TemplateSyntaxError as exc:
        result.findings.append(Finding("template_invalid", f"does not compile: {exc.message}"))
        return result
    except (ValueError, OverflowError, RecursionError, MemoryError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else exc
        result.findings.append(Finding("template_invalid", f"does not compile: {reason}"))
        return result
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for name in tree.find_all(nodes.Name):
        if (
            name.ctx == "load"
            and name.name not in stored
            and name.name not in _GLOBALS
            and name.name not in CONTEXT_ROOTS
        ):
            result.findings.append(
                Finding(
                    "template_unknown_variable",
                    f"uses unknown variable {name.name!r}; available: {', '.join(CONTEXT_ROOTS)}",
                )
            )
    for attr in _attribute_names(tree):
        if attr.startswith("_"):
            result.findings.append(
                Finding(
                    "template_unsafe",
                    f"reaches attribute {attr!r}, which is outside the sandbox",
                )
            )
    for message in dict.fromkeys(_constants_over_limits(tree)):
        result.findings.append(Finding("template_limit_exceeded", message))
    result.step_refs = _step_refs(tree)
    return result


class _NotConstant(Exception):
    pass


_UNARY: dict[type[nodes.Node], Any] = {nodes.Neg: operator.neg, nodes.Pos: operator.pos}


def _fold(node: nodes.Node) -> Any:
    """The value of a constant expression, computed only after the sandbox's checks pass."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.BinExpr):
        left, right = _fold(node.left), _fold(node.right)
        check_binop(node.operator, left, right)
        try:
            return checked(_env.binop_table[node.operator](left, right))
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise _NotConstant from exc  # the run reports it, with the values it has then
    if type(node) in _UNARY:
        return _UNARY[type(node)](_fold(node.node))  # type: ignore[attr-defined]
    if isinstance(node, nodes.List | nodes.Tuple):
        return [_fold(item) for item in node.items]
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "range"
        and not node.kwargs
    ):
        return safe_range(*(_fold(arg) for arg in node.args))
    raise _NotConstant


def _constants_over_limits(tree: nodes.Template) -> Iterator[str]:
    """Constant arithmetic, repetition and ranges that could never run within the limits
    (`7 ** (10 ** 7)`), found at publish time by folding them under the same checks."""
    for node in (*tree.find_all(nodes.BinExpr), *tree.find_all(nodes.Call)):
        try:
            _fold(node)
        except TemplateLimitExceeded as exc:
            yield exc.message
        except (_NotConstant, TypeError, ValueError, ArithmeticError):
            continue


def _attribute_names(tree: nodes.Template) -> Iterator[str]:
    for getattr_node in tree.find_all(nodes.Getattr):
        yield getattr_node.attr
    for getitem in tree.find_all(nodes.Getitem):
        if isinstance(getitem.arg, nodes.Const) and isinstance(getitem.arg.value, str):
            yield getitem.arg.value


def _step_refs(tree: nodes.Template) -> set[str]:
    refs: set[str] = set()
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Name) and attr.node.name == "steps":
            refs.add(attr.attr)
    for item in tree.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.name == "steps"
            and isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
        ):
            refs.add(item.arg.value)
    return refs


@functools.lru_cache(maxsize=4096)
def _compiled(source: str) -> tuple[str, Any]:
    match = _SINGLE_EXPRESSION.match(source)
    if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
        return ("expr", _env.compile_expression(match["expr"], undefined_to_none=False))
    return ("text", _env.from_string(source))


class _Size:
    """One render's progress: the JSON size produced so far (against the step output limit)
    and the template being rendered."""

    __slots__ = ("source", "total", "where")

    def __init__(self) -> None:
        self.total = 0
        self.where = ""
        self.source: str | None = None  # the template being rendered (named if it is stopped)

    def add(self, size: int) -> None:
        self.total += size
        limit = limits().output_bytes
        if self.total > limit:
            raise TemplateLimitExceeded(
                f"the rendered config would be over {limit:,} bytes, the step output limit "
                "(setting GRANTFLOW_STEP_OUTPUT_MAX_BYTES)",
                next_action="map less into the step, or raise GRANTFLOW_STEP_OUTPUT_MAX_BYTES",
                limit="step_output_max_bytes",
                limit_value=limit,
            )


def render(
    value: Any, context: dict[str, Any], *, where: str = "", deadline: Deadline | None = None
) -> Any:
    """Render every template inside `value` (strings, and strings nested in lists and dicts),
    within the template limits, the CPU budget and `deadline`."""
    size = _Size()
    _check_context(context)
    try:
        return within_budget(lambda: _render(value, context, where, size), deadline)
    except BudgetExceeded as exc:  # stopped by the budget: name what was rendering
        if size.source is None:
            raise
        raise TemplateLimitExceeded(
            f"{size.where} {_show(size.source)}: {exc.message}",
            next_action=exc.next_action,
            **exc.extra,
        ) from None


def _check_context(context: dict[str, Any]) -> None:
    """A run context over its limit fails the step that would read it."""
    total = getattr(context.get("steps"), "total_bytes", None)
    limit = limits().context_bytes
    if total is not None and total > limit:
        raise TemplateLimitExceeded(
            f"the run context (input, subject and step outputs) is {total:,} bytes, over the run "
            f"context limit of {limit:,} bytes (setting GRANTFLOW_RUN_CONTEXT_MAX_BYTES)",
            next_action="have steps return less, or raise GRANTFLOW_RUN_CONTEXT_MAX_BYTES",
            limit="run_context_max_bytes",
            limit_value=limit,
        )


def evaluate(
    condition: str,
    context: dict[str, Any],
    *,
    where: str = "condition",
    deadline: Deadline | None = None,
) -> bool:
    """Evaluate a branch condition (a bare expression such as `grant.role == 'admin'`)."""
    return bool(render("{{ " + condition + " }}", context, where=where, deadline=deadline))


def _render(value: Any, context: dict[str, Any], where: str, size: _Size) -> Any:
    if isinstance(value, str):
        if not is_template(value):
            size.add(len(value) + 2)
            return value
        return _render_string(value, context, where, size)
    if isinstance(value, dict):
        size.add(2)
        rendered = {}
        for key, item in value.items():
            size.add(len(key) + 4)
            rendered[key] = _render(item, context, f"{where}.{key}" if where else key, size)
        return rendered
    if isinstance(value, list):
        size.add(2)
        return [_render(v, context, f"{where}[{i}]", size) for i, v in enumerate(value)]
    size.add(8)
    return value


def _show(source: str) -> str:
    return repr(source if len(source) <= 200 else source[:200] + "…")


def _render_string(source: str, context: dict[str, Any], where: str, size: _Size) -> Any:
    action = "check the mapping against the run context (a dry-run shows it)"
    where = where or "template"
    size.where, size.source = where, source
    try:
        kind, compiled = _compiled(source)
        if kind == "expr":
            return _data(compiled(**context), size)
        return _text(compiled, context, size)
    except ExpressionError as exc:  # a limit, or a result that is not data
        raise type(exc)(
            f"{where} {_show(source)}: {exc.message}",
            next_action=exc.next_action or action,
            **exc.extra,
        ) from None
    except MissingValue as exc:
        raise ExpressionError(
            f"{where} {_show(source)} failed: {_missing(exc, context)}", next_action=action
        ) from exc
    except _TEMPLATE_FAULTS as exc:
        reason = "it recursed too deeply" if isinstance(exc, RecursionError) else exc
        raise ExpressionError(
            f"{where} {_show(source)} failed: {reason}", next_action=action
        ) from exc


def _text(compiled: Any, context: dict[str, Any], size: _Size) -> str:
    """Text output, stopped as soon as it is over the length limit (never joined first)."""
    parts: list[str] = []
    length = 0
    limit = limits().max_length
    for chunk in compiled.generate(**context):
        length += len(chunk)
        if length > limit:
            too_long("the rendered text", length)
        parts.append(chunk)
    size.add(length + 2)
    return _storable("".join(parts))


def _data(value: Any, size: _Size) -> Any:
    """A lone expression's value as JSON data; a missing value fails as it would in text."""
    if value is None or isinstance(value, bool):
        size.add(5)
        return value
    if isinstance(value, str):
        size.add(len(value) + 2)
        return _storable(str(value))
    if isinstance(value, int):
        size.add(8)
        return checked(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(f"the result is {value}, which JSON cannot carry")
        size.add(12)
        return value
    if isinstance(value, Undefined):  # strict: raises; a dry-run placeholder: its <path>
        return _data(str(value), size)
    if isinstance(value, dict):
        size.add(2)
        out = {}
        for key, item in value.items():
            name = _key(key)
            size.add(len(name) + 4)
            out[name] = _data(item, size)
        return out
    if isinstance(value, list | tuple | set | frozenset | range | Iterator):
        items = list(itertools.islice(value, limits().max_length + 1))
        if len(items) > limits().max_length:
            too_long("the list", len(items))
        size.add(2)
        return [_data(item, size) for item in items]
    raise ExpressionError(
        f"the result is a {type(value).__name__}, not data (text, a number, true/false, "
        "null, a list or a mapping)"
    )


def _storable(text: str) -> str:
    """Text a database can store: no NUL character, no unpaired surrogate."""
    if problem := text_problem(text):
        raise ExpressionError(f"the result {problem}; it cannot be stored")
    return text


def _key(key: Any) -> str:
    if isinstance(key, str):
        return _storable(str(key))
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    raise ExpressionError(f"a mapping key is a {type(key).__name__}; keys must be text")


def _missing(exc: MissingValue, context: dict[str, Any]) -> str:
    """Which value was missing, by its path in the run context when it can be found."""
    if exc.obj is missing:
        return f"{exc.name!r} is not defined"
    path = _path_of(exc.obj, context)
    if path == "steps":
        return f"steps.{exc.name} has no value: step {exc.name!r} has not run (yet) on this path"
    if path is not None:
        kind = "item" if isinstance(exc.obj, list) else "field"
        return f"{path} has no {kind} {exc.name!r}"
    return str(exc)


def _nested(value: Any) -> bool:
    return isinstance(value, dict | list)


def _path_of(target: Any, context: dict[str, Any]) -> str | None:
    """The path of an object (by identity) in the context, breadth first, a bounded search."""
    queue: list[tuple[str, Any]] = list(context.items())
    for _ in range(10_000):
        if not queue:
            return None
        path, value = queue.pop(0)
        if value is target:
            return path
        if isinstance(value, dict):
            queue.extend((f"{path}.{k}", v) for k, v in value.items() if isinstance(v, dict | list))
        elif isinstance(value, list):
            queue.extend(
                (f"{path}[{i}]", v) for i, v in enumerate(value) if isinstance(v, dict | list)
            )
    return None


# --- dry-run placeholders ------------------------------------------------------------------

_unresolved: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "unresolved", default=None
)


class Placeholder(Undefined):
    """Stands for a value a dry-run cannot know yet (a step's output the sample does not give):
    renders as `<path>` and records the path, instead of failing."""

    def _path(self) -> str:
        return self._undefined_name or "?"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder(name=f"{self._path()}.{name}")

    def __getitem__(self, key: Any) -> Any:
        return Placeholder(name=f"{self._path()}[{key!r}]")

    def __str__(self) -> str:
        found = _unresolved.get()
        if found is not None and self._path() not in found:
            found.append(self._path())
        return f"<{self._path()}>"

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __bool__(self) -> bool:
        return False


class SampleSteps(dict[str, Any]):
    """A dry-run's `steps`: the sample's outputs; any other step's is a placeholder."""

    def __missing__(self, key: str) -> Any:
        return Placeholder(name=f"steps.{key}")


def recording_unresolved() -> tuple[list[str], contextvars.Token[list[str] | None]]:
    found: list[str] = []
    return found, _unresolved.set(found)


def stop_recording(token: contextvars.Token[list[str] | None]) -> None:
    _unresolved.reset(token)
