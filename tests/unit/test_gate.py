"""The publish gate, one failing document per rule, and the compiled plan's integrity check."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from grantflow.definitions.gate import GateResult, Problem, check, compile_plan
from grantflow.definitions.plan import Plan, load_plan
from grantflow.errors import InternalError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class References:
    """The gate's view of the world: which applications and connections exist."""

    applications: dict[str, str] = field(default_factory=lambda: {"Wiki": "app-wiki"})
    connections: set[str] = field(default_factory=set)
    without_credential: set[str] = field(default_factory=set)
    asked: list[tuple[str, str | None]] = field(default_factory=list)
    # users an approval may name: email -> active
    users: dict[str, bool] = field(default_factory=dict)

    def application_id(self, id_or_name: str) -> str | None:
        return self.applications.get(id_or_name)

    def connection_problem(self, name: str, application_id: str | None) -> str | None:
        self.asked.append((name, application_id))
        if name in self.connections:
            return None
        return f"connection {name!r} does not exist; create it first"

    def connection_warning(self, name: str, application_id: str | None) -> str | None:
        if name in self.without_credential:
            return f"connection {name!r} has no credential yet"
        return None

    def role_warning(self, role: str) -> str | None:
        return None

    def user_problem(self, key: str) -> str | None:
        if key not in self.users:
            return f"user {key!r} does not exist"
        return None if self.users[key] else f"user {key!r} is deactivated"


def document(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "Gate test", "trigger": {"type": "manual"}, "steps": list(steps), **fields}


def http(step_id: str, **fields: Any) -> dict[str, Any]:
    config = {"method": "GET", "url": "https://directory.example.com/users"}
    return {"id": step_id, "type": "http", "config": config, **fields}


def set_step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": {"ok": True}}, **fields}


def condition(step_id: str, *branches: tuple[str, str], **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "condition",
        "branches": [{"when": when, "next": target} for when, target in branches],
        **fields,
    }


def gate(raw: Any, references: References | None = None) -> GateResult:
    return check(raw, references or References())


def examples_world() -> References:
    """The application and connections the shipped examples name."""
    return References(
        applications={"Wiki": "app-wiki", "Workforce identity": "app-workforce"},
        connections={"directory", "entra", "okta", "google", "mailer", "wiki"},
    )


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


# (document, code, step, field, phrase of the message)
FAILING = [
    pytest.param(
        document(set_step("Create-User")),
        "document_invalid",
        "Create-User",
        "steps[0].id",
        "must be lowercase letters, digits and '_'",
        id="document_invalid-bad-step-id",
    ),
    pytest.param(
        document(http("a", colour="red")),
        "document_invalid",
        "a",
        "steps[0].colour",
        "unknown field",
        id="document_invalid-unknown-field",
    ),
    pytest.param(
        document(set_step("a"), description=7),
        "document_invalid",
        None,
        "description",
        "valid string",
        id="document_invalid-wrong-type",
    ),
    pytest.param(
        document(set_step("a"), trigger={"type": "on_tuesday"}),
        "document_invalid",
        None,
        "trigger",
        "access_granted",
        id="document_invalid-unknown-trigger",
    ),
    pytest.param(
        document({"id": "a", "type": "ldap_modify"}),
        "unknown_step_type",
        "a",
        "steps[0].type",
        "step type 'ldap_modify' is not known; known types: approval, condition, delay, entra.",
        id="unknown_step_type",
    ),
    pytest.param(
        document({"id": "a", "type": "http", "config": {"method": "POST"}}),
        "step_config_invalid",
        "a",
        "steps[0].config",
        "give url, or connection and path",
        id="step_config_invalid-http-without-url",
    ),
    pytest.param(
        document({"id": "a", "type": "http", "config": {"url": "/users"}}),
        "step_config_invalid",
        "a",
        "steps[0].config.url",
        "'/users' is not an absolute http(s) URL",
        id="step_config_invalid-http-relative-url",
    ),
    pytest.param(
        document({"id": "a", "type": "http", "config": {"url": "ftp://files.example.com/x"}}),
        "step_config_invalid",
        "a",
        "steps[0].config.url",
        "is not an absolute http(s) URL",
        id="step_config_invalid-http-not-http-scheme",
    ),
    pytest.param(
        document({"id": "a", "type": "http", "config": {"url": "https://x.example", "verb": 1}}),
        "step_config_invalid",
        "a",
        "steps[0].config.verb",
        "unknown setting for a http step",
        id="step_config_invalid-http-unknown-setting",
    ),
    pytest.param(
        document({"id": "a", "type": "set", "config": {"values": {}}}),
        "step_config_invalid",
        "a",
        "steps[0].config.values",
        "at least 1 item",
        id="step_config_invalid-set-empty-values",
    ),
    pytest.param(
        document({"id": "a", "type": "delay", "config": {"duration": "5m", "until": "2030-01-01"}}),
        "step_config_invalid",
        "a",
        "steps[0].config",
        "give exactly one of duration or until",
        id="step_config_invalid-delay-duration-and-until",
    ),
    pytest.param(
        document(http("a", next="b"), http("b"), http("b")),
        "duplicate_step_id",
        "b",
        "steps[2].id",
        "step id 'b' is used more than once",
        id="duplicate_step_id",
    ),
    pytest.param(
        document(),
        "no_entry_step",
        None,
        "steps",
        "the workflow has no steps",
        id="no_entry_step",
    ),
    pytest.param(
        document(http("a"), entry="start"),
        "entry_step_missing",
        None,
        "entry",
        "entry names step 'start', which does not exist; steps are: a",
        id="entry_step_missing",
    ),
    pytest.param(
        document(http("a", next="notify")),
        "missing_step",
        "a",
        "steps[0].next",
        "leads to step 'notify', which does not exist",
        id="missing_step-next",
    ),
    pytest.param(
        document(condition("a", ("input.vip", "b"), ("input.other", "nowhere")), http("b")),
        "missing_step",
        "a",
        "steps[0].branches[1].next",
        "leads to step 'nowhere', which does not exist",
        id="missing_step-branch",
    ),
    pytest.param(
        document(http("a"), http("orphan")),
        "unreachable_step",
        "orphan",
        "steps[1]",
        "step 'orphan' can never run: no step leads to it from the entry step 'a'",
        id="unreachable_step",
    ),
    pytest.param(
        document(http("a", next="b"), http("b", next="c"), http("c", next="b")),
        "cycle",
        "b",
        "steps[1].next",
        "steps form a loop (b -> c -> b) with no bound; declare max_iterations",
        id="cycle",
    ),
    pytest.param(
        document(http("a", next="a")),
        "cycle",
        "a",
        "steps[0].next",
        "steps form a loop (a -> a)",
        id="cycle-self-loop",
    ),
    pytest.param(
        document(http("a", config={"url": "https://x.example/{{ input.user "})),
        "template_invalid",
        "a",
        "steps[0].config.url",
        "does not compile",
        id="template_invalid-syntax",
    ),
    pytest.param(
        document(http("a", config={"url": "https://x.example/{{ input.user | shout }}"})),
        "template_invalid",
        "a",
        "steps[0].config.url",
        "No filter named 'shout'",
        id="template_invalid-unknown-filter",
    ),
    pytest.param(
        document(condition("a", ("input.count >", "b")), http("b")),
        "template_invalid",
        "a",
        "steps[0].branches[0].when",
        "condition 'input.count >' does not compile",
        id="template_invalid-condition",
    ),
    pytest.param(
        document(http("a", config={"url": "https://x.example/{{ input.__class__ }}"})),
        "template_unsafe",
        "a",
        "steps[0].config.url",
        "reaches attribute '__class__', which is outside the sandbox",
        id="template_unsafe-attribute",
    ),
    pytest.param(
        document(http("a", config={"url": "https://x.example/{{ input['__globals__'] }}"})),
        "template_unsafe",
        "a",
        "steps[0].config.url",
        "reaches attribute '__globals__', which is outside the sandbox",
        id="template_unsafe-subscript",
    ),
    pytest.param(
        document(condition("a", ("input.__class__", "b")), http("b")),
        "template_unsafe",
        "a",
        "steps[0].branches[0].when",
        "reaches attribute '__class__'",
        id="template_unsafe-condition",
    ),
    pytest.param(
        document(
            {
                "id": "a",
                "type": "set",
                "config": {"values": {"who": "{{ user.email }}"}},
            }
        ),
        "template_unknown_variable",
        "a",
        "steps[0].config.values.who",
        "uses unknown variable 'user'; available: input, identity, grant, application, steps, run",
        id="template_unknown_variable",
    ),
    pytest.param(
        document(http("a", config={"url": "https://x.example/{{ steps.lookup.output.id }}"})),
        "template_unknown_step",
        "a",
        "steps[0].config.url",
        "refers to steps.lookup, but no step has id 'lookup'",
        id="template_unknown_step",
    ),
    pytest.param(
        document(http("a", config={"url": "https://x.example/{{ steps.a.output.id }}"})),
        "template_unknown_step",
        "a",
        "steps[0].config.url",
        "refers to its own output (steps.a) before it exists",
        id="template_unknown_step-own-output",
    ),
    pytest.param(
        document(http("a"), application="Payroll"),
        "application_missing",
        None,
        "application",
        "application 'Payroll' does not exist; create it or fix the name",
        id="application_missing",
    ),
    pytest.param(
        document({"id": "a", "type": "http", "config": {"connection": "x", "path": "/users"}}),
        "connection_missing",
        "a",
        "steps[0].config.connection",
        "connection 'x' does not exist",
        id="connection_missing",
    ),
    pytest.param(
        document(http("a"), trigger={"type": "access_granted"}),
        "trigger_needs_application",
        None,
        "trigger.type",
        "trigger access_granted fires for grants of one application; set `application`",
        id="trigger_needs_application",
    ),
    pytest.param(
        document(http("a"), trigger={"type": "schedule", "cron": "61 * * * *"}),
        "cron_invalid",
        None,
        "trigger.cron",
        "'61 * * * *' is not a 5-field cron expression",
        id="cron_invalid",
    ),
    pytest.param(
        document(http("a"), trigger={"type": "schedule", "cron": "0 6 * * 1-5 2030"}),
        "cron_invalid",
        None,
        "trigger.cron",
        "is not a 5-field cron expression",
        id="cron_invalid-six-fields",
    ),
    pytest.param(
        document(
            http("a"), trigger={"type": "schedule", "cron": "0 6 * * *", "timezone": "Mars/Base"}
        ),
        "timezone_unknown",
        None,
        "trigger.timezone",
        "'Mars/Base' is not an IANA timezone",
        id="timezone_unknown",
    ),
    pytest.param(
        document(
            http("a"), trigger={"type": "schedule", "cron": "0 6 * * *", "timezone": "America"}
        ),
        "timezone_unknown",
        None,
        "trigger.timezone",
        "'America' is not an IANA timezone",
        id="timezone_unknown-a-tzdata-directory",
    ),
    pytest.param(
        document(http("a"), trigger={"type": "manual", "input_schema": {"type": "person"}}),
        "input_schema_invalid",
        None,
        "trigger.input_schema",
        "the input schema is not valid JSON Schema at type",
        id="input_schema_invalid",
    ),
    pytest.param(
        document(
            http("a", timeout="2h"),
            settings={"execution_timeout": "30m"},
        ),
        "step_timeout_exceeds_execution_timeout",
        "a",
        "steps[0].timeout",
        "the step timeout (2h) is longer than the workflow's execution timeout (30m)",
        id="step_timeout_exceeds_execution_timeout",
    ),
    pytest.param(
        document(condition("a", next="b"), http("b")),
        "condition_without_branches",
        "a",
        "steps[0].branches",
        "a condition step needs at least one branch",
        id="condition_without_branches",
    ),
]


@pytest.mark.parametrize(("raw", "code", "step", "at", "phrase"), FAILING)
def test_each_rule_names_code_step_field_and_cause(
    raw: dict[str, Any], code: str, step: str | None, at: str, phrase: str
) -> None:
    """A document breaking one rule is refused with exactly that problem, located precisely."""
    result = gate(raw)
    assert not result.ok
    assert [(p.code, p.step, p.field) for p in result.errors] == [(code, step, at)]
    assert phrase in result.errors[0].message


def test_a_loop_with_max_iterations_passes() -> None:
    """A cycle is allowed when one of its steps declares a loop bound."""
    raw = document(
        http("poll", next="wait"),
        {"id": "wait", "type": "delay", "config": {"duration": "30s"}, "next": "check"},
        condition("check", ("steps.poll.output.done", "finish"), next="poll", max_iterations=10),
        set_step("finish"),
    )
    result = gate(raw)
    assert result.errors == []
    assert result.ok


def test_all_errors_are_returned_at_once() -> None:
    """A document with several problems reports every one, not just the first."""
    raw = document(
        http("a", next="missing"),
        {"id": "b", "type": "smtp"},
        http("c", config={"url": "https://x.example/{{ user.id }}"}),
        http("c"),
        trigger={"type": "schedule", "cron": "every day", "timezone": "Nowhere/City"},
        application="Payroll",
    )
    result = gate(raw)
    codes = sorted((p.code, p.step or "") for p in result.errors)
    assert codes == [
        ("application_missing", ""),
        ("cron_invalid", ""),
        ("duplicate_step_id", "c"),
        ("missing_step", "a"),
        ("template_unknown_variable", "c"),
        ("timezone_unknown", ""),
        ("unknown_step_type", "b"),
        ("unreachable_step", "b"),
        ("unreachable_step", "c"),
        ("unreachable_step", "c"),
    ]


def test_every_shape_error_is_returned_at_once() -> None:
    """Several malformed fields are all reported, each with its own path."""
    raw = document(
        {"id": "Bad Id", "type": "http"},
        {"id": "ok", "type": "http", "retry": {"max_attempts": 0}, "on_failure": "explode"},
        name="",
    )
    result = gate(raw)
    fields = {p.field for p in result.errors}
    assert {"name", "steps[0].id", "steps[1].retry.max_attempts", "steps[1].on_failure"} <= fields
    assert {p.code for p in result.errors} == {"document_invalid"}


def test_irreversible_step_without_retry_is_a_warning_and_publishable() -> None:
    """A POST that is neither reversible nor retried warns, but the gate passes."""
    raw = document({"id": "a", "type": "http", "config": {"method": "POST", "url": "https://x.io"}})
    result = gate(raw)
    assert result.ok
    assert [(w.code, w.step, w.field) for w in result.warnings] == [
        ("irreversible_without_retry", "a", "steps[0].retry")
    ]
    assert "not reversible and is never retried" in result.warnings[0].message


@pytest.mark.parametrize(
    "change",
    [{"reversible": True}, {"retry": {"max_attempts": 3}}],
    ids=["reversible", "retried"],
)
def test_no_warning_when_reversible_or_retried(change: dict[str, Any]) -> None:
    """The warning goes away once the step is reversible or has a retry policy."""
    step = {"id": "a", "type": "http", "config": {"method": "DELETE", "url": "https://x.io"}}
    result = gate(document({**step, **change}))
    assert result.ok
    assert result.warnings == []


def test_read_only_steps_never_warn() -> None:
    """A GET changes nothing, so it needs no retry to be publishable without warnings."""
    assert gate(document(http("a"))).warnings == []


def test_existing_application_is_resolved_to_its_id() -> None:
    """An application named by the document becomes the plan's application id."""
    raw = document(http("a"), application="Wiki", trigger={"type": "access_granted"})
    result = gate(raw)
    assert result.ok
    assert result.application_id == "app-wiki"
    assert compile_plan(result, 1).application_id == "app-wiki"


def test_connection_is_looked_up_for_the_workflows_application() -> None:
    """The gate asks about a connection in the scope of the document's application."""
    refs = References(connections={"directory"})
    step = {"id": "a", "type": "http", "config": {"connection": "directory", "path": "/users"}}
    result = gate(document(step, application="Wiki"), refs)
    assert result.ok
    assert refs.asked == [("directory", "app-wiki")]


def test_connection_without_credential_is_a_warning_not_an_error() -> None:
    """A connection that exists but has no credential yet warns at the step's field."""
    refs = References(connections={"directory"}, without_credential={"directory"})
    step = {"id": "a", "type": "http", "config": {"connection": "directory", "path": "/users"}}
    result = gate(document(step, application="Wiki"), refs)
    assert result.ok
    assert [(p.code, p.step, p.field) for p in result.warnings] == [
        ("connection_credential_missing", "a", "steps[0].config.connection")
    ]


def test_unstorable_text_is_refused_with_its_path() -> None:
    """A NUL character anywhere in the document is a document_invalid naming where it is."""
    raw = document(set_step("a", config={"values": {"note": "bad\x00byte"}}))
    result = gate(raw)
    assert [(p.code, p.field) for p in result.errors] == [
        ("document_invalid", "steps[0].config.values.note")
    ]
    assert "NUL character" in result.errors[0].message


def test_absurdly_nested_config_is_refused() -> None:
    """Nesting deeper than the store can serialise is refused as a document problem."""
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    result = gate(document(set_step("a", config={"values": {"deep": deep}})))
    assert [p.code for p in result.errors] == ["document_invalid"]
    assert "nested more than 64 levels deep" in result.errors[0].message
    assert (result.errors[0].field or "").startswith("steps[0].config.values.deep[0][0]")


@pytest.mark.parametrize("raw", [None, [], "a string", 42])
def test_a_document_that_is_not_a_mapping_is_refused(raw: Any) -> None:
    """Anything but a mapping is one document_invalid problem, never an exception."""
    result = gate(raw)
    assert [p.code for p in result.errors] == ["document_invalid"]


@pytest.mark.parametrize("name", ["onboarding.yaml", "offboarding.yaml"])
def test_examples_pass_the_gate(name: str) -> None:
    """Both shipped examples pass the gate without errors."""
    result = gate(example(name), examples_world())
    assert (result.errors, result.warnings) == ([], [])
    assert result.application_id == "app-workforce"


def test_problem_serialises_with_code_step_field_and_message() -> None:
    """The API shape of a problem carries exactly the four keys users read."""
    problem = Problem("cycle", "steps form a loop", "a", "steps[0].next")
    assert problem.to_dict() == {
        "code": "cycle",
        "step": "a",
        "field": "steps[0].next",
        "message": "steps form a loop",
    }


# --- compiled plans ---------------------------------------------------------------------------


def onboarding_plan() -> Plan:
    result = gate(example("onboarding.yaml"), examples_world())
    assert result.ok
    return compile_plan(result, 3)


def test_plan_has_entry_edges_and_expression_sources() -> None:
    """The onboarding plan names its entry, every edge and every expression's source."""
    plan = onboarding_plan()
    assert plan.workflow == "Onboard new hire"
    assert plan.version == 3
    assert plan.entry == "has_manager"
    assert plan.execution_timeout_seconds == 7 * 24 * 3600
    assert list(plan.steps) == [
        "has_manager",
        "manager_approval",
        "access_approval",
        "create_user",
        "add_groups",
        "create_mailbox",
        "needs_licence",
        "assign_licence",
        "welcome_email",
    ]
    edges = {(e.source, e.target, e.when) for e in plan.edges}
    assert edges == {
        ("has_manager", "manager_approval", "identity.manager"),
        ("has_manager", "access_approval", None),
        ("manager_approval", "create_user", None),
        ("access_approval", "create_user", None),
        ("create_user", "add_groups", None),
        ("add_groups", "create_mailbox", None),
        ("create_mailbox", "needs_licence", None),
        ("needs_licence", "welcome_email", None),
        ("needs_licence", "assign_licence", "identity.employment_type != 'contractor'"),
        ("assign_licence", "welcome_email", None),
    }
    sources = {(x.step, x.field): x.source for x in plan.expressions}
    assert sources[("create_user", "steps[3].config.user_name")] == "{{ identity.email }}"
    assert sources[("needs_licence", "branches[0].when")] == (
        "identity.employment_type != 'contractor'"
    )
    assert sources[("manager_approval", "steps[1].config.approvers.users[0]")] == (
        "{{ identity.manager.email }}"
    )
    assert plan.steps["create_user"].side_effects is True
    assert plan.steps["needs_licence"].side_effects is False
    assert plan.steps["manager_approval"].side_effects is False


def test_plan_round_trips_through_its_stored_form() -> None:
    """A plan dumped to JSON and loaded again is the same plan."""
    plan = onboarding_plan()
    assert load_plan(plan.model_dump(mode="json"), workflow="Onboard", version=3) == plan


def _corrupt(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(onboarding_plan().model_dump(mode="json"))
    change(data)
    result: dict[str, Any] = data
    return result


def _drop_entry(data: dict[str, Any]) -> None:
    del data["steps"]["has_manager"]


def _dangling_next(data: dict[str, Any]) -> None:
    data["steps"]["add_groups"]["next"] = "ghost"


def _unknown_type(data: dict[str, Any]) -> None:
    data["steps"]["welcome_email"]["type"] = "carrier_pigeon"


def _dangling_edge(data: dict[str, Any]) -> None:
    data["edges"].append({"source": "welcome_email", "target": "phantom", "when": None})


def _wrong_key(data: dict[str, Any]) -> None:
    data["steps"]["renamed"] = data["steps"].pop("add_groups")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param(_drop_entry, "entry step 'has_manager' is missing", id="entry-removed"),
        pytest.param(
            _dangling_next, "step 'add_groups' leads to missing step 'ghost'", id="next-dangling"
        ),
        pytest.param(
            _unknown_type,
            "step 'welcome_email' has unknown type 'carrier_pigeon'",
            id="unknown-step-type",
        ),
        pytest.param(
            _dangling_edge, "edge 'welcome_email' -> 'phantom' names a missing step", id="edge"
        ),
        pytest.param(
            _wrong_key, "step key 'renamed' does not match its id 'add_groups'", id="key-mismatch"
        ),
    ],
)
def test_corrupt_plan_is_an_internal_error_naming_what_is_missing(change: Any, named: str) -> None:
    """Loading a damaged plan raises plan_integrity_failed, saying exactly what is wrong."""
    with pytest.raises(InternalError) as caught:
        load_plan(_corrupt(change), workflow="Onboard new hire", version=3)
    assert caught.value.code == "plan_integrity_failed"
    assert "workflow 'Onboard new hire' version 3" in caught.value.message
    assert named in caught.value.message
    assert caught.value.next_action is not None
    assert "Recompile the version" in caught.value.next_action


@pytest.mark.parametrize(
    ("data", "named"),
    [
        pytest.param("garbage", "(root)", id="a-string"),
        pytest.param(None, "(root)", id="null"),
        pytest.param({"format": 1}, "workflow", id="fields-missing"),
        pytest.param({**onboarding_plan().model_dump(mode="json"), "entry": 5}, "entry", id="type"),
    ],
)
def test_garbage_plan_is_an_internal_error(data: Any, named: str) -> None:
    """A plan that is not even the right shape is plan_integrity_failed naming the bad path."""
    with pytest.raises(InternalError) as caught:
        load_plan(data, workflow="W", version=1)
    assert caught.value.code == "plan_integrity_failed"
    assert "is corrupt" in caught.value.message
    assert named in caught.value.message


def test_plan_of_a_newer_format_is_refused() -> None:
    """A plan written in another format version is not executed."""
    data = {**onboarding_plan().model_dump(mode="json"), "format": 99}
    with pytest.raises(InternalError, match="plan format 99 is not 1"):
        load_plan(data)
