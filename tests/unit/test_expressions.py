"""Mapping templates and conditions in the sandbox, and durations as people write them."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from pydantic import BaseModel

from grantflow.definitions import expressions
from grantflow.definitions.expressions import ExpressionError, analyse, evaluate, render
from grantflow.durations import Duration, format_duration, parse_duration

CONTEXT: dict[str, Any] = {
    "identity": {
        "email": "ada@example.com",
        "display_name": "Ada Lovelace",
        "department": "Research",
        "employment_type": "employee",
        "groups": ["research", "staff"],
        "level": 7,
        "remote": False,
    },
    "grant": {"role": "admin"},
    "input": {"directory_url": "https://dir.example.com", "seats": 3},
    "steps": {"create_user": {"output": {"id": 42}}},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ identity.groups }}", ["research", "staff"]),
        ("{{ identity.level }}", 7),
        ("{{ identity.remote }}", False),
        ("{{ steps.create_user.output }}", {"id": 42}),
        ("  {{ identity.level + 1 }}  ", 8),
        ("{{ none }}", None),
    ],
)
def test_a_lone_expression_keeps_its_type(template: str, expected: Any) -> None:
    """`{{ x }}` alone renders to x itself, so a list stays a list in a JSON body."""
    assert render(template, CONTEXT) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ input.directory_url }}/users", "https://dir.example.com/users"),
        ("{{ identity.level }}-{{ input.seats }}", "7-3"),
        ("Hello {{ identity.display_name }}", "Hello Ada Lovelace"),
        ("{{ identity.department | lower }}", "research"),
        ("{% if identity.remote %}home{% else %}office{% endif %}", "office"),
        ("plain text", "plain text"),
    ],
)
def test_anything_else_renders_to_text(template: str, expected: str) -> None:
    """Templates mixing text and expressions (or several expressions) render to a string."""
    assert render(template, CONTEXT) == expected


def test_nested_dicts_and_lists_are_rendered_in_place() -> None:
    """Every string inside a nested body is rendered; other values pass through unchanged."""
    body = {
        "userName": "{{ identity.email }}",
        "active": True,
        "limits": {"seats": "{{ input.seats }}", "label": "seats: {{ input.seats }}"},
        "groups": ["{{ identity.groups[0] }}", "all", 5],
    }
    assert render(body, CONTEXT) == {
        "userName": "ada@example.com",
        "active": True,
        "limits": {"seats": 3, "label": "seats: 3"},
        "groups": ["research", "all", 5],
    }


@pytest.mark.parametrize(
    "template",
    ["{{ identity.manager }}", "Dear {{ identity.manager }}", "{{ identity.manager.x }}"],
)
def test_a_missing_value_fails_naming_the_field(template: str) -> None:
    """With StrictUndefined, a missing value raises ExpressionError naming the field path."""
    config = {"body": {"approver": template}}
    with pytest.raises(ExpressionError) as caught:
        render(config, CONTEXT, where="notify.config")
    assert caught.value.code == "expression_error"
    assert "notify.config.body.approver" in caught.value.message
    assert "manager" in caught.value.message
    assert caught.value.next_action is not None
    assert "dry-run" in caught.value.next_action


def test_a_missing_value_in_a_list_names_its_index() -> None:
    """The path of a failing template inside a list includes the list index."""
    with pytest.raises(ExpressionError, match=r"create\.config\.groups\[1\]"):
        render({"groups": ["ok", "{{ input.nope }}"]}, CONTEXT, where="create.config")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ identity.email.__class__.__base__.__subclasses__() }}",
        "{{ lipsum.__globals__ }}",
        "x {{ ''.__class__.__mro__[1] }}",
    ],
)
def test_the_sandbox_refuses_escapes_at_run_time(template: str) -> None:
    """A template that reaches outside the sandbox fails as an ExpressionError when rendered."""
    with pytest.raises(ExpressionError, match="unsafe"):
        render(template, CONTEXT)


def test_the_sandbox_is_immutable() -> None:
    """A template cannot change the run context (append on a list is refused)."""
    with pytest.raises(ExpressionError, match="unsafe"):
        render("{{ identity.groups.append('root') }}", CONTEXT)
    assert CONTEXT["identity"]["groups"] == ["research", "staff"]


def test_a_template_that_does_not_compile_fails_cleanly_at_run_time() -> None:
    """Broken syntax or an unknown filter is an ExpressionError, never a raw Jinja error."""
    with pytest.raises(ExpressionError, match="failed"):
        render("{{ identity.email ", CONTEXT)
    with pytest.raises(ExpressionError, match="No filter named 'shout'"):
        render("{{ identity.email | shout }}", CONTEXT)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("grant.role == 'admin'", True),
        ("grant.role == 'viewer'", False),
        ("identity.employment_type != 'contractor'", True),
        ("'staff' in identity.groups", True),
        ("identity.level > 5 and not identity.remote", True),
        ("identity.groups | length > 2", False),
        ("steps.create_user.output.id", True),
    ],
)
def test_evaluate_a_condition(condition: str, expected: bool) -> None:
    """A bare condition evaluates to a bool over the run context."""
    assert evaluate(condition, CONTEXT) is expected


def test_a_condition_on_a_missing_value_fails_naming_it() -> None:
    """A condition that reads a missing value raises ExpressionError, not a Jinja error."""
    with pytest.raises(ExpressionError, match="condition") as caught:
        evaluate("identity.manager", CONTEXT)
    assert "manager" in caught.value.message


def test_analyse_reports_step_references() -> None:
    """Analysis finds which steps a template reads, by attribute or by subscript."""
    found = analyse("{{ steps.create_user.output.id }}/{{ steps['lookup'].output }}")
    assert found.findings == []
    assert found.step_refs == {"create_user", "lookup"}


def test_analyse_allows_loop_variables_and_set() -> None:
    """Names bound inside the template (for, set) are not unknown variables."""
    source = "{% set n = 2 %}{% for g in identity.groups %}{{ g }}{{ n }}{% endfor %}"
    assert analyse(source).findings == []


def test_dry_run_placeholders_record_what_is_unresolved() -> None:
    """In a dry-run, only the outputs of steps the sample does not give are placeholders:
    they render as <path> and are recorded."""
    found, token = expressions.recording_unresolved()
    try:
        context = {"steps": expressions.SampleSteps(), "input": {"base": "https://x"}}
        rendered = render("{{ input.base }}/users/{{ steps.create_user.output.id }}", context)
    finally:
        expressions.stop_recording(token)
    assert rendered == "https://x/users/<steps.create_user.output.id>"
    assert found == ["steps.create_user.output.id"]


def test_a_dry_run_is_strict_about_everything_else() -> None:
    """A value the sample's input lacks fails in a dry-run as it would in a run."""
    context = {"steps": expressions.SampleSteps(), "input": {}}
    with pytest.raises(ExpressionError, match="input has no field 'base'"):
        render("{{ input.base }}/users", context, where="create.config.url")


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172_800),
        ("500ms", 0.5),
        ("1m30s", 90),
        ("PT5M", 300),
        ("PT1H30M", 5400),
        ("P1DT2H", 93_600),
        ("PT0.5S", 0.5),
        (30, 30),
        (1.5, 1.5),
        (" 10s ", 10),
        (dt.timedelta(minutes=2), 120),
    ],
)
def test_durations_as_people_write_them(text: Any, seconds: float) -> None:
    """Compact units, ISO 8601 and plain seconds all parse to the same timedelta."""
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("soon", "'soon' is not a duration"),
        ("5 minutes", "is not a duration"),
        ("1h 30m", "is not a duration"),
        ("", "is not a duration"),
        ("P", "is not a duration"),
        ("10x", "is not a duration"),
        (-5, "cannot be negative"),
        (True, "number of seconds"),
        ([5], "number of seconds"),
        (None, "number of seconds"),
    ],
)
def test_bad_durations_are_rejected(value: Any, phrase: str) -> None:
    """Text that is not a duration, negatives and other types are refused with a hint."""
    with pytest.raises(ValueError, match=re.escape(phrase)):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (90, "1m30s"), (5400, "1h30m"), (93_600, "1d2h"), (0.25, "250ms"), (60, "1m")],
)
def test_format_duration_is_compact_and_round_trips(seconds: float, text: str) -> None:
    """The canonical form is compact and parses back to the same duration."""
    value = dt.timedelta(seconds=seconds)
    assert format_duration(value) == text
    assert parse_duration(format_duration(value)) == value


def test_duration_fields_serialise_in_the_compact_form() -> None:
    """A model field typed Duration accepts '90s' or 90 and dumps as '1m30s' in JSON mode."""

    class Model(BaseModel):
        timeout: Duration

    assert Model(timeout="90s").model_dump(mode="json") == {"timeout": "1m30s"}
    assert Model.model_validate({"timeout": 90}).timeout == dt.timedelta(seconds=90)
