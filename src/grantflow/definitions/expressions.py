"""Mapping templates and branch conditions in Jinja2's immutable sandbox.

A string in a step's config is a template. A string that is exactly one `{{ expression }}` keeps
the expression's type (a list stays a list in a JSON body); anything else renders to text.
Templates are checked when a version is published: syntax, sandbox escapes, unknown variables,
and references to steps that do not exist.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from grantflow.errors import ValidationError

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


class ExpressionError(ValidationError):
    """A template or condition failed to render or evaluate at run time."""

    code = "expression_error"


@dataclass(frozen=True)
class Finding:
    """A problem with one template, found without running it."""

    code: str
    message: str


@dataclass
class Analysis:
    findings: list[Finding] = field(default_factory=list)
    step_refs: set[str] = field(default_factory=set)


def _environment(undefined: type[Undefined]) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=undefined, autoescape=False, keep_trailing_newline=True
    )


_strict = _environment(StrictUndefined)


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def analyse(source: str, *, condition: bool = False) -> Analysis:
    """Check a template (or, with `condition`, a bare expression) without rendering it."""
    result = Analysis()
    try:
        tree = _strict.parse("{{ " + source + " }}" if condition else source)
        _strict.compile(tree)  # unknown filters and tests fail here, not at run time
    except TemplateSyntaxError as exc:
        result.findings.append(Finding("template_invalid", f"does not compile: {exc.message}"))
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
    result.step_refs = _step_refs(tree)
    return result


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
def _compiled(source: str, strict: bool) -> Any:
    env = _strict if strict else _placeholder_env()
    match = _SINGLE_EXPRESSION.match(source)
    if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
        return ("expr", env.compile_expression(match["expr"], undefined_to_none=False))
    return ("text", env.from_string(source))


def render(
    value: Any,
    context: dict[str, Any],
    undefined: type[Undefined] = StrictUndefined,
    where: str = "",
) -> Any:
    """Render every template inside `value` (strings, and strings nested in lists and dicts)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            kind, compiled = _compiled(value, undefined is StrictUndefined)
            result = compiled(**context) if kind == "expr" else compiled.render(**context)
            if isinstance(result, Undefined):  # a lone `{{ missing }}`: strict raises here
                result = str(result)
        except (
            TemplateSyntaxError,
            UndefinedError,
            SecurityError,
            TypeError,
            ValueError,
            ArithmeticError,
        ) as exc:
            raise ExpressionError(
                f"{where or 'template'} {value!r} failed: {exc}",
                next_action="check the mapping against the run context (a dry-run shows it)",
            ) from exc
        return result
    if isinstance(value, dict):
        return {
            k: render(v, context, undefined, f"{where}.{k}" if where else k)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [render(v, context, undefined, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def evaluate(
    condition: str, context: dict[str, Any], undefined: type[Undefined] = StrictUndefined
) -> bool:
    """Evaluate a branch condition (a bare expression such as `grant.role == 'admin'`)."""
    return bool(render("{{ " + condition + " }}", context, undefined, where="condition"))


# --- dry-run placeholders ------------------------------------------------------------------

_unresolved: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "unresolved", default=None
)


class Placeholder(Undefined):
    """Stands for a value a dry-run does not have (a later step's output): renders as `<path>`
    and records the path, instead of failing."""

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


class PathDict(dict[str, Any]):
    """A context mapping whose missing keys become placeholders carrying their full path."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        super().__init__({k: wrap(f"{path}.{k}", v) for k, v in data.items()})
        self.path = path

    def __missing__(self, key: str) -> Any:
        return Placeholder(name=f"{self.path}.{key}")


def wrap(path: str, value: Any) -> Any:
    return (
        PathDict(path, value)
        if isinstance(value, dict) and not isinstance(value, PathDict)
        else value
    )


@functools.cache
def _placeholder_env() -> ImmutableSandboxedEnvironment:
    return _environment(Placeholder)


def recording_unresolved() -> tuple[list[str], contextvars.Token[list[str] | None]]:
    found: list[str] = []
    return found, _unresolved.set(found)


def stop_recording(token: contextvars.Token[list[str] | None]) -> None:
    _unresolved.reset(token)
