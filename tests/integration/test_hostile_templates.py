"""Hostile templates and documents, published and run for real: each fails with its limit
named (class safety), a template error is an expression_error naming the step and the
expression, and a dry-run reports what a run would hit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from grantflow.config import load_settings
from grantflow.definitions import sandbox
from grantflow.store.database import Database
from tests.support.engine import publish, running_worker, start, wait_status, workflow

LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def limits(request: pytest.FixtureRequest) -> Iterator[None]:
    """Template limits from settings for one test (`request.param`), the defaults after."""
    sandbox.configure(load_settings(**getattr(request, "param", {})))
    yield
    sandbox.configure(load_settings())


def set_step(step_id: str, **values: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": values}}


def failed_run(database: Database, document: dict[str, Any], run_input: Any = None) -> Any:
    run_id = start(database, publish(database, document), run_input)
    with running_worker(database):
        shown = wait_status(database, run_id, "failed", "timed_out", "succeeded", timeout=60)
    assert shown["status"] == "failed", shown
    return shown


def step_of(shown: dict[str, Any], step_id: str) -> dict[str, Any]:
    (step,) = [s for s in shown["steps"] if s["step_id"] == step_id]
    return step


# --- publishing -------------------------------------------------------------------------------


def test_publishing_an_expensive_constant_is_refused_naming_the_limit(
    admin: httpx.Client,
) -> None:
    """`7 ** (10 ** 7)` is never computed: the gate refuses it (422) naming the step, the
    field, the limit and its setting, and /healthz answers meanwhile."""
    document = workflow("Power", set_step("calc", big="{{ 7 ** (10 ** 7) }}"))
    created = admin.post("/api/v1/workflows", json=document)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["workflow"]["id"]
    published = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert published.status_code == 422, published.text
    (problem,) = published.json()["error"]["details"]
    assert problem["code"] == "template_limit_exceeded"
    assert problem["step"] == "calc"
    assert problem["field"] == "steps[0].config.values.big"
    assert "about 9,030,900 digits" in problem["message"]
    assert "GRANTFLOW_TEMPLATE_MAX_DIGITS" in problem["message"]
    assert admin.get("/healthz").status_code == 200


def test_a_condition_on_a_huge_power_is_a_gate_error_not_a_500(admin: httpx.Client) -> None:
    """`7 ** 6000 > input.x` (its value cannot even be printed) is a 422 naming the branch."""
    document = workflow(
        "Compare",
        {
            **set_step("a", x=1),
            "branches": [{"when": "7 ** 6000 > input.x", "next": "b"}],
        },
        set_step("b", y=2),
    )
    created = admin.post("/api/v1/workflows", json=document)
    workflow_id = created.json()["workflow"]["id"]
    published = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert published.status_code == 422, published.text
    (problem,) = published.json()["error"]["details"]
    assert (problem["code"], problem["field"]) == (
        "template_limit_exceeded",
        "steps[0].branches[0].when",
    )
    assert "7 ** 6000 would have about 5,418 digits" in problem["message"]


def test_a_yaml_alias_bomb_is_refused_and_nothing_is_stored(admin: httpx.Client) -> None:
    """A few hundred bytes of nested aliases are a 413 naming the document limit; no
    workflow is created."""
    lines = ['a: &a ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    text = "name: Bomb\ntrigger: {type: manual}\ndescription:\n" + "\n".join(
        "  " + line for line in lines
    )
    assert len(text) < 1000
    response = admin.post("/api/v1/workflows", content=text, headers=YAML)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "document_too_large"
    assert "GRANTFLOW_MAX_BODY_BYTES" in error["message"]
    assert admin.get("/api/v1/workflows").json()["items"] == []


# --- running ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limits", [{"template_cpu_seconds": 0.3}], indirect=True)
def test_a_template_over_its_cpu_budget_fails_the_step_with_class_safety(
    database: Database, limits: None
) -> None:
    """A set step whose template loops for long (timeout 3s) is stopped at the CPU budget:
    the step and run fail with class safety naming the budget and its setting."""
    step = {**set_step("spin", v=LOOP), "timeout": "3s"}
    shown = failed_run(database, workflow("Spin", step))
    failure = shown["failure"]
    assert (failure["class"], failure["code"], failure["step_id"]) == (
        "safety",
        "template_limit_exceeded",
        "spin",
    )
    assert failure["message"].startswith("spin.config.values.v '{% for i in range(100000)")
    assert "more than 0.3s of CPU, the template CPU budget" in failure["message"]
    assert "GRANTFLOW_TEMPLATE_CPU_SECONDS" in failure["next_action"]
    assert step_of(shown, "spin")["status"] == "failed"


@pytest.mark.parametrize("limits", [{"template_cpu_seconds": 60}], indirect=True)
def test_a_template_past_its_step_timeout_fails_the_step(database: Database, limits: None) -> None:
    """With a generous CPU budget, the step's own timeout stops the render: the run fails
    (never `succeeded`), naming the timeout and how to raise it."""
    step = {**set_step("spin", v=LOOP), "timeout": "1s"}
    shown = failed_run(database, workflow("Slow", step))
    failure = shown["failure"]
    assert failure["class"] == "safety"
    assert "rendering was stopped: it ran past the step's timeout (1s)" in failure["message"]
    assert failure["next_action"] == "make the template do less, or raise the step's `timeout`"


def test_a_missing_value_in_a_list_is_an_expression_error_naming_step_and_expression(
    database: Database,
) -> None:
    """`{{ [input.nope] }}` fails its step as an expression_error that names the step, the
    field and the missing value; nothing about SQL reaches the user."""
    shown = failed_run(database, workflow("Nope", set_step("pick", v="{{ [input.nope] }}")))
    failure = shown["failure"]
    assert (failure["class"], failure["code"], failure["step_id"]) == (
        "validation",
        "expression_error",
        "pick",
    )
    assert failure["message"] == (
        "pick.config.values.v '{{ [input.nope] }}' failed: input has no field 'nope'"
    )
    assert "SQL" not in str(shown)
    assert "INSERT" not in str(shown)


@pytest.mark.parametrize("limits", [{"step_output_max_bytes": 1024}], indirect=True)
def test_a_step_output_over_its_limit_fails_the_step(database: Database, limits: None) -> None:
    """A set step computing 3,000 characters against a 1 KiB output limit fails with safety,
    naming the limit and its setting."""
    shown = failed_run(database, workflow("Big", set_step("big", v="{{ 'x' * 3000 }}")))
    failure = shown["failure"]
    assert failure["class"] == "safety"
    assert "over 1,024 bytes, the step output limit" in failure["message"]
    assert "GRANTFLOW_STEP_OUTPUT_MAX_BYTES" in failure["message"]


@pytest.mark.parametrize("limits", [{"run_context_max_bytes": 2048}], indirect=True)
def test_a_run_context_over_its_limit_fails_the_step_that_would_read_it(
    database: Database, limits: None
) -> None:
    """Steps whose outputs add up past the run context limit: the next step fails with
    safety, naming the limit and its setting."""
    document = workflow(
        "Grow",
        set_step("one", v="{{ 'x' * 900 }}"),
        set_step("two", v="{{ 'y' * 900 }}"),
        set_step("three", v="{{ 'z' * 900 }}"),
        set_step("four", v="done"),
    )
    shown = failed_run(database, document)
    failure = shown["failure"]
    assert (failure["class"], failure["step_id"]) == ("safety", "four")
    assert "over the run context limit of 2,048 bytes" in failure["message"]
    assert "GRANTFLOW_RUN_CONTEXT_MAX_BYTES" in failure["message"]
    assert step_of(shown, "three")["status"] == "succeeded"  # 2,7xx bytes after it


def test_a_condition_over_a_limit_at_run_time_fails_with_class_safety(
    database: Database,
) -> None:
    """A branch computing `input.a ** input.b` too large fails the run with class safety
    naming the branch, not as a validation error."""
    document = workflow(
        "Branchy",
        {**set_step("a", x=1), "branches": [{"when": "input.a ** input.b > 1", "next": "b"}]},
        set_step("b", y=2),
    )
    shown = failed_run(database, document, {"a": 7, "b": 6000})
    failure = shown["failure"]
    assert (failure["class"], failure["code"]) == ("safety", "template_limit_exceeded")
    assert failure["message"].startswith("a.branches[0].when")
    assert "GRANTFLOW_TEMPLATE_MAX_DIGITS" in failure["message"]


# --- dry-run ----------------------------------------------------------------------------------


def test_a_dry_run_reports_a_missing_identity_attribute_as_the_run_fails(
    admin: httpx.Client,
) -> None:
    """A field identities do not have is the dry-run error the run would hit, with the
    step and expression; fields a snapshot has but the sample leaves out are null, as in a
    run; a sample field no identity has is a warning."""
    document = {
        "name": "Joiner kinds",
        "trigger": {"type": "identity_joined"},
        "steps": [
            {**set_step("label", who="{{ identity.display_name or identity.email }}"), "next": "k"},
            set_step("k", kind="{{ identity.employment_type }}"),
        ],
    }
    created = admin.post("/api/v1/workflows", json=document)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["workflow"]["id"]
    sample = {"identity": {"email": "ada@example.com", "shoe_size": 38}}
    result = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/dry-run", json=sample)
    assert result.status_code == 200, result.text
    body = result.json()
    steps = {s["id"]: s for s in body["steps"]}
    assert steps["label"]["preview"] == {"output": {"who": "ada@example.com"}}
    assert steps["k"]["error"] == (
        "k.config.values.kind '{{ identity.employment_type }}' failed: identity has no field "
        "'employment_type'"
    )
    assert body["path"] == ["label", "k"]
    assert body["warnings"] == [
        "identity.shoe_size is not a field a run's identity has: a run would not see it "
        "(custom fields are under identity.attributes)"
    ]
