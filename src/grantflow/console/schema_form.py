"""A task's form, rendered from its JSON Schema, and the submitted form read back into data.

Only presentation lives here: the fields of an object schema (strings, numbers, integers,
booleans, enums; anything else as a JSON text area) with their constraints as hints, and the
form's values turned into JSON values (a number typed as text stays text, so the task's own
validator — the one the API uses, `people.decisions` — says what is wrong with it). Errors
come back from that validator as details (`data.<field>`) and are shown next to their field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "data."  # form inputs are named data.<property>: never a clash with csrf_token, comment


@dataclass
class FormField:
    name: str
    label: str
    widget: str  # text | number | integer | checkbox | select | json
    required: bool
    description: str = ""
    value: Any = None  # what the input shows (a string, or a bool for a checkbox)
    options: list[tuple[str, str]] = field(default_factory=list)  # (value, label) of a select
    attrs: dict[str, Any] = field(default_factory=dict)  # min, max, minlength, maxlength, step
    hints: list[str] = field(default_factory=list)  # constraints in words (a pattern, ...)
    errors: list[str] = field(default_factory=list)

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "field-" + "".join(c if c.isalnum() else "-" for c in self.name)


def _properties(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(props, Mapping):
        return {}
    return {str(k): v if isinstance(v, Mapping) else {} for k, v in props.items()}


def _type(prop: Mapping[str, Any]) -> str | None:
    kind = prop.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first that is not null
        kind = next((k for k in kind if k != "null"), None)
    return kind if isinstance(kind, str) else None


def _widget(prop: Mapping[str, Any]) -> str:
    if isinstance(prop.get("enum"), list) and prop["enum"]:
        return "select"
    kind = _type(prop)
    if kind == "boolean" or isinstance(prop.get("const"), bool):
        return "checkbox"
    if kind in ("number", "integer"):
        return kind
    if kind == "string":
        return "text"
    return "json"  # objects, arrays, anything without a type: typed as JSON


def _shown(default: Any, widget: str) -> Any:
    """What an input shows for a default value of the schema."""
    if widget == "checkbox":
        return default is True
    if default is None:
        return ""
    if widget in ("select", "json"):
        return json.dumps(default)
    return str(default)


def fields(
    schema: Mapping[str, Any] | None,
    values: Mapping[str, Any] | None = None,
    errors: Mapping[str, list[str]] | None = None,
) -> list[FormField]:
    """The inputs of an object schema, filled with `values` (as submitted or defaults) and
    each one's `errors` (by property name)."""
    schema = schema or {}
    required = set(schema.get("required") or []) if isinstance(schema, Mapping) else set()
    values = values or {}
    errors = errors or {}
    shown = []
    props = _properties(schema)
    # the required fields first, in the order `required` names them (a stored schema's
    # properties may come back in another order), then the others
    order = [n for n in (schema.get("required") or []) if n in props]
    order += [n for n in props if n not in order]
    for name in order:
        prop = props[name]
        widget = _widget(prop)
        attrs: dict[str, Any] = {}
        hints: list[str] = []
        if widget in ("number", "integer"):
            for key, attr in (("minimum", "min"), ("maximum", "max")):
                if isinstance(prop.get(key), int | float):
                    attrs[attr] = prop[key]
            attrs["step"] = "1" if widget == "integer" else "any"
        if widget == "text":
            for key, attr in (("minLength", "minlength"), ("maxLength", "maxlength")):
                if isinstance(prop.get(key), int):
                    attrs[attr] = prop[key]
            if isinstance(prop.get("pattern"), str):
                hints.append(f"must match the pattern {prop['pattern']}")
            if isinstance(prop.get("format"), str):
                hints.append(f"format: {prop['format']}")
        if widget == "json":
            hints.append("JSON")
        options = []
        if widget == "select":
            options = [(json.dumps(v), str(v)) for v in prop["enum"]]
        value = values[name] if name in values else _shown(prop.get("default"), widget)
        shown.append(
            FormField(
                name=name,
                label=str(prop.get("title") or name),
                widget=widget,
                required=name in required,
                description=str(prop.get("description") or ""),
                value=value,
                options=options,
                attrs=attrs,
                hints=hints,
                errors=list(errors.get(name, [])),
            )
        )
    return shown


def _number(text: str, integer: bool) -> Any:
    try:
        return int(text) if integer or not any(c in text for c in ".eE") else float(text)
    except ValueError:
        return text  # the validator says it is not a number


def read(
    schema: Mapping[str, Any] | None, form: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data a submitted form stands for, and what the inputs held (to show them again).
    An empty input is left out (the validator says when it is required); a checkbox is true
    or false; a select gives its option's JSON value; a JSON text area its parsed value (text
    that is not JSON stays text, and the validator says it has the wrong type)."""
    data: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    for item in fields(schema):
        raw = form.get(item.input_name)
        if item.widget == "checkbox":
            data[item.name] = typed[item.name] = raw is not None
            continue
        text = raw.strip() if isinstance(raw, str) else ""
        typed[item.name] = text
        if not text:
            continue
        if item.widget in ("number", "integer"):
            data[item.name] = _number(text, item.widget == "integer")
        elif item.widget in ("select", "json"):
            try:
                data[item.name] = json.loads(text)
            except ValueError:
                data[item.name] = text
        else:
            data[item.name] = text
    return data, typed


def field_errors(
    details: list[dict[str, Any]], own: tuple[str, ...] = ()
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """A validation error's details split three ways: those of one form field (`data.<name>`,
    by name), those of the page's `own` inputs (e.g. `comment`), and the rest (about the
    whole form: shown above it)."""
    by_field: dict[str, list[str]] = {}
    by_input: dict[str, list[str]] = {}
    general: list[str] = []
    for detail in details:
        where = str(detail.get("field") or "")
        message = str(detail.get("message") or "")
        if where.startswith(PREFIX):
            name = where.removeprefix(PREFIX).split(".", 1)[0]
            by_field.setdefault(name, []).append(message)
        elif where in own:
            by_input.setdefault(where, []).append(message)
        else:
            general.append(f"{where}: {message}" if where and where != "data" else message)
    return by_field, by_input, general
