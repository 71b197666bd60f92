"""A workflow document shown as highlighted, read-only YAML, each line knowing the field path it
writes (`steps[1].config.url`), so the publish gate's problems appear right under the line of
the step and field they name; and a unified diff as classed lines.

The YAML is written here line by line (block style, as `grantflow workflows get --yaml` writes
it, scalars quoted by PyYAML), never parsed back: what is shown is the stored document."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from markupsafe import Markup, escape

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass
class Line:
    indent: int
    path: str  # the field this line writes, e.g. steps[1].config.url
    key: str | None = None
    value: str | None = None  # an inline value (None: the value follows on the next lines)
    dash: bool = False  # the first line of a list item
    item: str | None = None  # on a list item's first line: the item's own path (steps[1])
    problems: list[dict[str, Any]] = field(default_factory=list)


def _scalar(value: Any) -> str:
    if isinstance(value, str) and "\n" in value:
        return json.dumps(value, ensure_ascii=False)  # a double-quoted YAML scalar
    if isinstance(value, dict | list) and not value:
        return "{}" if isinstance(value, dict) else "[]"
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _inline(value: Any) -> bool:
    return not isinstance(value, dict | list) or not value


def _key(key: Any) -> str:
    text = str(key)
    return text if _PLAIN_KEY.match(text) else _scalar(text)


def _emit(value: Any, path: str, indent: int, lines: list[Line]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if _inline(item):
                lines.append(Line(indent, here, _key(key), _scalar(item)))
            else:
                lines.append(Line(indent, here, _key(key)))
                # lists under a key start at the key's own indent (PyYAML's block style)
                _emit(item, here, indent if isinstance(item, list) else indent + 2, lines)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            here = f"{path}[{index}]"
            start = len(lines)
            if _inline(item):
                lines.append(Line(indent, here, None, _scalar(item)))
            else:
                _emit(item, here, indent + 2, lines)
            first = lines[start]
            first.indent, first.dash, first.item = indent, True, here


def document_lines(document: dict[str, Any]) -> list[Line]:
    lines: list[Line] = []
    _emit(document, "", 0, lines)
    return lines


def _attach(lines: list[Line], problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put each problem on the line of its field (or of the nearest enclosing field); the
    problems that name no line are returned."""
    by_path: dict[str, Line] = {}
    for line in lines:
        by_path.setdefault(line.path, line)
        if line.item is not None:
            by_path.setdefault(line.item, line)
    unplaced = []
    for problem in problems:
        where = str(problem.get("field") or "")
        if where.startswith("document."):
            where = where[len("document.") :]
        target = by_path.get(where) if where else None
        while where and target is None:
            where = re.sub(r"(\.[^.\[\]]+|\[\d+\])$", "", where)
            target = by_path.get(where) if where else None
        if target is None:
            unplaced.append(problem)
        else:
            target.problems.append(problem)
    return unplaced


def _value_class(text: str) -> str:
    if text in ("true", "false", "null", "~"):
        return "y-const"
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return "y-num"
    if text in ("{}", "[]"):
        return "y-const"
    return "y-str"


def highlight(
    document: dict[str, Any], problems: list[dict[str, Any]] | None = None
) -> tuple[Markup, list[dict[str, Any]]]:
    """The document as highlighted YAML (`<span>` per line, problems under their line), and
    the problems that name no line of it."""
    lines = document_lines(document)
    unplaced = _attach(lines, list(problems or []))
    found = document.get("steps")
    steps: list[Any] = found if isinstance(found, list) else []
    out: list[Markup] = []
    for line in lines:
        anchor = ""
        match = re.fullmatch(r"steps\[(\d+)\]", line.item or "")
        if match and int(match.group(1)) < len(steps):
            step = steps[int(match.group(1))]
            step_id = step.get("id") if isinstance(step, dict) else None
            anchor = f"step-{step_id}" if step_id else ""
        text = Markup(escape(" " * line.indent))
        if line.dash:
            text += Markup('<span class="y-dash">- </span>')
        if line.key is not None:
            text += Markup('<span class="y-key">{}</span>:').format(line.key)
            if line.value is not None:
                text += " "
        if line.value is not None:
            text += Markup('<span class="{}">{}</span>').format(
                _value_class(line.value), line.value
            )
        classes = "yl y-problem" if line.problems else "yl"
        attrs = Markup(' id="{}"').format(anchor) if anchor else Markup("")
        out.append(
            Markup('<span class="{}"{} data-path="{}">{}</span>').format(
                classes, attrs, line.path, text
            )
        )
        for problem in line.problems:
            pad = " " * (line.indent + (2 if line.dash else 0))
            out.append(
                Markup('<span class="y-note" role="note">{}▲ {}{}</span>').format(
                    pad,
                    f"{problem.get('field')}: " if problem.get("field") else "",
                    problem.get("message", ""),
                )
            )
    return Markup("\n").join(out), unplaced


def diff_lines(text: str) -> list[tuple[str, str]]:
    """A unified diff as (class, line): added, removed, hunk header, file header, context."""
    shown = []
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            kind = "d-file"
        elif line.startswith("@@"):
            kind = "d-hunk"
        elif line.startswith("+"):
            kind = "d-add"
        elif line.startswith("-"):
            kind = "d-del"
        else:
            kind = "d-ctx"
        shown.append((kind, line))
    return shown
