"""The publish gate: every rule runs and every problem is reported at once, each with a stable
code, the step, the field path and a sentence a user can act on. A clean gate compiles a plan."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema
from croniter import croniter
from pydantic import ValidationError as PydanticError

from grantflow.definitions import expressions
from grantflow.definitions.document import (
    APPLICATION_TRIGGERS,
    ManualTrigger,
    ScheduleTrigger,
    Step,
    WebhookTrigger,
    WorkflowDocument,
)
from grantflow.definitions.loops import cycles
from grantflow.definitions.plan import Edge, Expression, Plan, PlanStep
from grantflow.durations import format_duration
from grantflow.steps.registry import get_step_type, step_type_names
from grantflow.strict import text_problem


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    step: str | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "step": self.step, "field": self.field, "message": self.message}


class References(Protocol):
    """What the gate asks about the world outside the document."""

    def application_id(self, id_or_name: str) -> str | None: ...

    def connection_problem(self, name: str, application_id: str | None) -> str | None: ...

    def connection_warning(self, name: str, application_id: str | None) -> str | None: ...

    def user_problem(self, key: str) -> str | None: ...

    def role_warning(self, role: str) -> str | None: ...


@dataclass
class GateResult:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    document: WorkflowDocument | None = None
    application_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


MAX_DEPTH = 64


def _unstorable(value: Any, loc: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """What no database stores (a NUL or an unpaired surrogate in a string or key) and nesting
    deeper than the serializer follows, each with where it is."""
    if len(loc) > MAX_DEPTH:
        yield loc[: MAX_DEPTH + 1], f"is nested more than {MAX_DEPTH} levels deep"
    elif isinstance(value, str) and (problem := text_problem(value)):
        yield loc, problem
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := text_problem(key)):
                key = key.encode("unicode_escape").decode("ascii")
                yield (*loc, key), f"this key {problem}"
            yield from _unstorable(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable(item, (*loc, index))


def parse_document(raw: Any) -> tuple[WorkflowDocument | None, list[Problem]]:
    """Validate the document's shape; each pydantic error becomes a problem with a field path."""
    unstorable = list(_unstorable(raw))
    if unstorable:
        return None, [Problem("document_invalid", msg, None, _path(at)) for at, msg in unstorable]
    try:
        return WorkflowDocument.model_validate(raw), []
    except PydanticError as exc:
        steps = raw.get("steps") if isinstance(raw, dict) else None
        problems = []
        for err in exc.errors():
            loc = tuple(
                p
                for p in err["loc"]
                if not (
                    isinstance(p, str)
                    and p
                    in (
                        "access_granted",
                        "access_revoked",
                        "identity_joined",
                        "identity_moved",
                        "identity_left",
                        "schedule",
                        "manual",
                        "webhook",
                    )
                )
            )
            step = None
            if (
                len(loc) >= 2
                and loc[0] == "steps"
                and isinstance(loc[1], int)
                and isinstance(steps, list)
                and loc[1] < len(steps)
                and isinstance(steps[loc[1]], dict)
            ):
                step_id = steps[loc[1]].get("id")
                step = step_id if isinstance(step_id, str) else None
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field; remove it or check its spelling"
            problems.append(Problem("document_invalid", message, step, _path(loc)))
        return None, problems


def check(raw: Any, references: References) -> GateResult:
    """Run every rule over a raw document (dict from YAML/JSON)."""
    document, problems = parse_document(raw)
    result = GateResult(errors=problems, document=document)
    if document is None:
        return result
    _Rules(document, references, result).run()
    return result


class _Rules:
    def __init__(self, doc: WorkflowDocument, refs: References, result: GateResult) -> None:
        self.doc = doc
        self.refs = refs
        self.result = result
        self.ids = [s.id for s in doc.steps]
        self.by_id: dict[str, Step] = {}
        for step in doc.steps:
            self.by_id.setdefault(step.id, step)  # with duplicates, the first one counts

    def error(
        self, code: str, message: str, step: str | None = None, at: str | None = None
    ) -> None:
        self.result.errors.append(Problem(code, message, step, at))

    def warn(self, code: str, message: str, step: str | None = None, at: str | None = None) -> None:
        self.result.warnings.append(Problem(code, message, step, at))

    def run(self) -> None:
        self.application()
        self.trigger()
        if not self.entry():
            return
        self.duplicates()
        for index, step in enumerate(self.doc.steps):
            self.step(index, step)
        self.graph()

    # --- document level ----------------------------------------------------------------------
    def application(self) -> None:
        doc = self.doc
        if doc.application is not None:
            app_id = self.refs.application_id(doc.application)
            if app_id is None:
                self.error(
                    "application_missing",
                    f"application {doc.application!r} does not exist; create it or fix the name",
                    at="application",
                )
            self.result.application_id = app_id
        if doc.trigger.type in APPLICATION_TRIGGERS and doc.application is None:
            self.error(
                "trigger_needs_application",
                f"trigger {doc.trigger.type} fires for grants of one application; set "
                "`application`",
                at="trigger.type",
            )

    def trigger(self) -> None:
        trigger = self.doc.trigger
        if isinstance(trigger, ScheduleTrigger):
            if not croniter.is_valid(trigger.cron) or len(trigger.cron.split()) != 5:
                self.error(
                    "cron_invalid",
                    f"{trigger.cron!r} is not a 5-field cron expression (minute hour "
                    "day-of-month month day-of-week), e.g. '0 6 * * 1-5'",
                    at="trigger.cron",
                )
            try:
                zoneinfo.ZoneInfo(trigger.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # e.g. 'America'
                self.error(
                    "timezone_unknown",
                    f"{trigger.timezone!r} is not an IANA timezone; use e.g. "
                    "'Europe/Berlin' or 'UTC'",
                    at="trigger.timezone",
                )
        if isinstance(trigger, ManualTrigger | WebhookTrigger):
            try:
                jsonschema.Draft202012Validator.check_schema(trigger.input_schema)
            except jsonschema.SchemaError as exc:
                where = "/".join(str(p) for p in exc.path)
                self.error(
                    "input_schema_invalid",
                    f"the input schema is not valid JSON Schema"
                    f"{' at ' + where if where else ''}: {exc.message}",
                    at="trigger.input_schema",
                )

    def entry(self) -> bool:
        if not self.doc.steps:
            self.error(
                "no_entry_step",
                "the workflow has no steps, so there is nothing to run; add at least one step",
                at="steps",
            )
            return False
        if self.doc.entry is not None and self.doc.entry not in self.by_id:
            self.error(
                "entry_step_missing",
                f"entry names step {self.doc.entry!r}, which does not exist; "
                f"steps are: {', '.join(self.ids)}",
                at="entry",
            )
            return False
        return True

    @property
    def entry_id(self) -> str:
        return self.doc.entry or self.doc.steps[0].id

    def duplicates(self) -> None:
        seen: set[str] = set()
        for index, step_id in enumerate(self.ids):
            if step_id in seen:
                self.error(
                    "duplicate_step_id",
                    f"step id {step_id!r} is used more than once; step ids must be unique",
                    step_id,
                    f"steps[{index}].id",
                )
            seen.add(step_id)

    # --- one step ----------------------------------------------------------------------------
    def step(self, index: int, step: Step) -> None:
        at = f"steps[{index}]"
        step_type = get_step_type(step.type)
        if step_type is None:
            self.error(
                "unknown_step_type",
                f"step type {step.type!r} is not known; known types: "
                f"{', '.join(step_type_names())}",
                step.id,
                f"{at}.type",
            )
        else:
            self.step_config(at, step, step_type)
        for target_index, target in self.targets(step):
            if target not in self.by_id:
                where = (
                    f"{at}.next" if target_index is None else f"{at}.branches[{target_index}].next"
                )
                self.error(
                    "missing_step",
                    f"leads to step {target!r}, which does not exist",
                    step.id,
                    where,
                )
        if step.type == "condition" and not step.branches:
            self.error(
                "condition_without_branches",
                "a condition step needs at least one branch",
                step.id,
                f"{at}.branches",
            )
        for i, branch in enumerate(step.branches):
            self.template(step, f"{at}.branches[{i}].when", branch.when, condition=True)
        if step.timeout and step.timeout > self.doc.settings.execution_timeout:
            self.error(
                "step_timeout_exceeds_execution_timeout",
                f"the step timeout ({format_duration(step.timeout)}) is longer than the "
                "workflow's execution timeout "
                f"({format_duration(self.doc.settings.execution_timeout)}); shorten it "
                "or raise settings.execution_timeout",
                step.id,
                f"{at}.timeout",
            )

    def step_config(self, at: str, step: Step, step_type: Any) -> None:
        try:
            config = step_type.config_model.model_validate(step.config)
        except PydanticError as exc:
            for err in exc.errors():
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    message = f"unknown setting for a {step.type} step; remove it or check it"
                self.error(
                    "step_config_invalid",
                    message,
                    step.id,
                    _path((*at_parts(at), "config", *err["loc"])),
                )
            return
        for field_name, message in step_type.checks(config):
            self.error("step_config_invalid", message, step.id, f"{at}.config.{field_name}")
        for ref in step_type.references(config):
            if ref.kind == "connection":
                where = f"{at}.config.{ref.field}"
                problem = self.refs.connection_problem(ref.name, self.result.application_id)
                if problem:
                    self.error("connection_missing", problem, step.id, where)
                warning = (
                    None
                    if problem
                    else self.refs.connection_warning(ref.name, self.result.application_id)
                )
                if warning:
                    self.warn("connection_credential_missing", warning, step.id, where)
            elif ref.kind == "user":
                problem = self.refs.user_problem(ref.name)
                if problem:
                    self.error("user_not_routable", problem, step.id, f"{at}.config.{ref.field}")
            elif ref.kind == "role":
                warning = self.refs.role_warning(ref.name)
                if warning:
                    self.warn("role_has_no_members", warning, step.id, f"{at}.config.{ref.field}")
            elif ref.kind == "credential":
                self.error(
                    "credential_missing",
                    f"credential {ref.name!r} does not exist",
                    step.id,
                    f"{at}.config.{ref.field}",
                )
        for path, source in strings(step.config, f"{at}.config"):
            self.template(step, path, source)
        if step_type.side_effects(config) and not step.reversible and step.retry.max_attempts == 1:
            self.warn(
                "irreversible_without_retry",
                "this step changes an external system, is not reversible and is never "
                "retried: a passing fault fails the run; consider a retry policy",
                step.id,
                f"{at}.retry",
            )

    def template(self, step: Step, at: str, source: str, condition: bool = False) -> None:
        if not condition and not expressions.is_template(source):
            return
        analysis = expressions.analyse(source, condition=condition)
        for finding in analysis.findings:
            self.error(
                finding.code,
                f"{'condition' if condition else 'template'} {source!r} {finding.message}",
                step.id,
                at,
            )
        for ref in sorted(analysis.step_refs):
            if ref not in self.by_id:
                self.error(
                    "template_unknown_step",
                    f"refers to steps.{ref}, but no step has id {ref!r}",
                    step.id,
                    at,
                )
            elif ref == step.id and not condition:
                self.error(
                    "template_unknown_step",
                    f"refers to its own output (steps.{ref}) before it exists",
                    step.id,
                    at,
                )

    def targets(self, step: Step) -> Iterator[tuple[int | None, str]]:
        if step.next is not None:
            yield None, step.next
        for i, branch in enumerate(step.branches):
            yield i, branch.next

    # --- the graph ---------------------------------------------------------------------------
    def graph(self) -> None:
        edges = {
            s.id: [t for _, t in self.targets(s) if t in self.by_id] for s in self.by_id.values()
        }
        reached: set[str] = set()
        stack = [self.entry_id]
        while stack:
            node = stack.pop()
            if node not in reached:
                reached.add(node)
                stack.extend(edges[node])
        for index, step in enumerate(self.doc.steps):
            if step.id not in reached:
                self.error(
                    "unreachable_step",
                    f"step {step.id!r} can never run: no step leads to it from the entry "
                    f"step {self.entry_id!r}; link it with `next` or remove it",
                    step.id,
                    f"steps[{index}]",
                )
        for cycle in cycles(edges):
            if not any(self.by_id[n].max_iterations for n in cycle):
                loop = " -> ".join([*cycle, cycle[0]])
                self.error(
                    "cycle",
                    f"steps form a loop ({loop}) with no bound; declare max_iterations on "
                    "one step of the loop, or break it",
                    cycle[0],
                    f"steps[{self.ids.index(cycle[0])}].next",
                )


def at_parts(at: str) -> tuple[Any, ...]:
    """`steps[3]` -> ("steps", 3)."""
    name, _, rest = at.partition("[")
    return (name, int(rest.rstrip("]")))


def strings(value: Any, at: str) -> Iterator[tuple[str, str]]:
    """Every string inside a config value, with its field path."""
    if isinstance(value, str):
        yield at, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{at}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{at}[{i}]")


def compile_plan(result: GateResult, version: int) -> Plan:
    """The plan of a document that passed the gate."""
    doc = result.document
    assert doc is not None
    assert result.ok
    steps: dict[str, PlanStep] = {}
    edges: list[Edge] = []
    exprs: list[Expression] = []
    for index, step in enumerate(doc.steps):
        step_type = get_step_type(step.type)
        assert step_type is not None
        config = step_type.config_model.model_validate(step.config)
        steps[step.id] = PlanStep(
            id=step.id,
            type=step.type,
            name=step.name or step.id,
            config=step.config,
            timeout_seconds=step.timeout.total_seconds() if step.timeout else None,
            retry=step.retry,
            on_failure=step.on_failure,
            reversible=step.reversible,
            side_effects=step_type.side_effects(config),
            next=step.next,
            branches=step.branches,
            max_iterations=step.max_iterations,
        )
        if step.next:
            edges.append(Edge(source=step.id, target=step.next))
        for i, branch in enumerate(step.branches):
            edges.append(Edge(source=step.id, target=branch.next, when=branch.when))
            exprs.append(Expression(step=step.id, field=f"branches[{i}].when", source=branch.when))
        for path, source in strings(step.config, f"steps[{index}].config"):
            if expressions.is_template(source):
                exprs.append(Expression(step=step.id, field=path, source=source))
    settings = doc.settings
    return Plan(
        workflow=doc.name,
        version=version,
        entry=doc.entry or doc.steps[0].id,
        trigger=doc.trigger.model_dump(mode="json"),
        application_id=result.application_id,
        execution_timeout_seconds=settings.execution_timeout.total_seconds(),
        stuck_after_seconds=settings.stuck_after.total_seconds(),
        max_concurrent_runs=settings.max_concurrent_runs,
        safety=doc.safety.model_dump(mode="json", exclude_none=True) if doc.safety else {},
        steps=steps,
        edges=edges,
        expressions=exprs,
    )
