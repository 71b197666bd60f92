"""The console's task forms and action buttons, without a server: the fields a JSON Schema
gives, the data a submitted form stands for — checked by the same validator the API uses, its
errors landing next to their fields — and a console action for every advice operation."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import FormData

from grantflow import advice
from grantflow.console import actions, schema_form
from grantflow.errors import ValidationError
from grantflow.people.decisions import validate_form
from grantflow.people.models import Task

FORM: dict[str, Any] = {
    "type": "object",
    "required": ["ticket", "done"],
    "properties": {
        "ticket": {"type": "string", "pattern": "^INC-[0-9]+$", "minLength": 5, "title": "Ticket"},
        "seats": {"type": "integer", "minimum": 1, "maximum": 9},
        "ratio": {"type": "number"},
        "site": {"enum": ["London", "Paris", 3]},
        "done": {"type": "boolean", "const": True, "description": "the badge is off"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}


def validate(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The details of the validator the API's submit uses (empty when the data is good)."""
    try:
        validate_form(Task(form=FORM), data)
    except ValidationError as error:
        return error.details
    return []


def test_fields_of_a_schema_carry_their_widget_and_constraints() -> None:
    """Strings, integers, numbers, enums, booleans and anything else (JSON) become inputs with
    their label, required flag, HTML limits and the pattern in words; required ones first."""
    shown = {f.name: f for f in schema_form.fields(FORM)}
    assert [(f.name, f.widget) for f in shown.values()] == [
        ("ticket", "text"),  # the required ones first
        ("done", "checkbox"),
        ("seats", "integer"),
        ("ratio", "number"),
        ("site", "select"),
        ("tags", "json"),
    ]
    assert (shown["ticket"].label, shown["ticket"].required) == ("Ticket", True)
    assert shown["ticket"].attrs == {"minlength": 5}
    assert shown["ticket"].hints == ["must match the pattern ^INC-[0-9]+$"]
    assert shown["seats"].attrs == {"min": 1, "max": 9, "step": "1"}
    assert shown["site"].options == [('"London"', "London"), ('"Paris"', "Paris"), ("3", "3")]
    assert shown["done"].description == "the badge is off"
    assert shown["ticket"].input_name == "data.ticket"


def test_a_submitted_form_becomes_json_values() -> None:
    """Numbers become numbers, a checked box true and an unchecked one false, a select its
    option's value, a JSON area its value; empty inputs are left out."""
    form = FormData(
        [
            ("data.ticket", " INC-42 "),
            ("data.seats", "3"),
            ("data.ratio", "0.5"),
            ("data.site", "3"),
            ("data.tags", '["a", "b"]'),
            ("comment", "ignored here"),
        ]
    )
    data, typed = schema_form.read(FORM, form)
    assert data == {
        "ticket": "INC-42",
        "seats": 3,
        "ratio": 0.5,
        "site": 3,
        "done": False,
        "tags": ["a", "b"],
    }
    assert typed["ticket"] == "INC-42"
    assert validate(data) == [{"field": "data.done", "message": "True was expected"}]


def test_the_validators_errors_land_next_to_their_fields() -> None:
    """Text typed into a number input stays text, so the API's validator names the field;
    a missing required field is named as that field; each error is put on its input."""
    form = FormData([("data.ticket", "x"), ("data.seats", "three"), ("data.done", "true")])
    data, typed = schema_form.read(FORM, form)
    assert data == {"ticket": "x", "seats": "three", "done": True}
    by_field, by_input, general = schema_form.field_errors(validate(data), own=("comment",))
    assert set(by_field) == {"ticket", "seats"}
    assert any("does not match" in m for m in by_field["ticket"])
    assert by_field["seats"] == ["'three' is not of type 'integer'"]
    assert (by_input, general) == ({}, [])
    missing, _, _ = schema_form.field_errors(validate({}))
    assert missing == {
        "ticket": ["'ticket' is a required property"],
        "done": ["'done' is a required property"],
    }
    shown = {f.name: f for f in schema_form.fields(FORM, typed, by_field)}
    assert shown["ticket"].value == "x"
    assert shown["seats"].errors == ["'three' is not of type 'integer'"]
    _, own, rest = schema_form.field_errors(
        [{"field": "comment", "message": "required"}, {"field": "data", "message": "extra"}],
        own=("comment",),
    )
    assert (own, rest) == ({"comment": ["required"]}, ["extra"])


@pytest.mark.parametrize("name", sorted(advice.OPERATIONS))
def test_every_advice_operation_has_a_console_action(name: str) -> None:
    """Each operation the advice table can offer is a console form or a link to the page
    where it is done, with the operation's own label and permission."""
    ids = {
        "run_id": "r1",
        "grant_id": "g1",
        "task_id": "t1",
        "workflow_id": "w1",
        "version": 2,
        "connection_id": "c1",
        "incident_id": "i1",
    }
    action = actions.console_action(name, **ids)
    assert action is not None, name
    assert action.label == advice.OPERATIONS[name].label
    assert action.permission == str(advice.OPERATIONS[name].permission)
    assert action.url.startswith("/")
    assert not action.url.startswith("/api/")
    assert (action.method == "post") == (name in actions.FORMS)


def test_an_action_is_not_shown_to_whom_lacks_its_permission() -> None:
    """`shown` gives the Retry form to an operator, nothing to a viewer, nothing for an
    unknown operation or a missing id."""
    retry = advice.render("run.retry", run_id="r1")
    assert actions.shown(retry, lambda p: p == "run:operate", run_id="r1") == (
        actions.ConsoleAction("run.retry", "Retry", "post", "/runs/r1/retry", "run:operate")
    )
    assert actions.shown(retry, lambda p: False, run_id="r1") is None
    assert actions.shown({"operation": "nope"}, lambda p: True) is None
    assert actions.console_action("run.retry") is None
