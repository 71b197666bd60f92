"""The compiled plan: what the engine executes. Stored with each published version and
re-checked whenever it is loaded, so a corrupt plan is an internal error, never a hang."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticError

from grantflow.definitions import loops
from grantflow.definitions.document import Branch, OnFailure, RetryPolicy
from grantflow.errors import InternalError
from grantflow.steps.registry import get_step_type

PLAN_FORMAT = 1


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    type: str
    name: str
    config: dict[str, Any]
    timeout_seconds: float | None
    retry: RetryPolicy
    on_failure: OnFailure
    reversible: bool
    side_effects: bool
    next: str | None
    branches: list[Branch]
    max_iterations: int | None


class Edge(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    target: str
    when: str | None = None  # None: the default `next`


class Expression(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str
    field: str
    source: str


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = PLAN_FORMAT
    workflow: str
    version: int
    entry: str
    trigger: dict[str, Any]
    application_id: str | None
    execution_timeout_seconds: float
    stuck_after_seconds: float
    max_concurrent_runs: int | None
    # the document's safety block, as given (defaults are the configuration's, at run time)
    safety: dict[str, Any] = {}
    steps: dict[str, PlanStep]
    edges: list[Edge]
    expressions: list[Expression]

    @functools.cached_property
    def loop_bounds(self) -> dict[str, loops.Bound]:
        """How many passes each step may make (definitions/loops.py)."""
        return loops.bounds(
            {s.id: [s.next, *(b.next for b in s.branches)] for s in self.steps.values()},
            {s.id: s.max_iterations for s in self.steps.values()},
        )

    @functools.cached_property
    def involves_people(self) -> bool:
        """Whether a run can have a person's task: an approval or a task step (a step type
        that works inside the engine's transaction), or a step that escalates its failure."""
        for step in self.steps.values():
            step_type = get_step_type(step.type)
            if step_type is None or (step_type.local and not step_type.pure):
                return True
            if step.on_failure == OnFailure.ESCALATE:
                return True
        return False

    def integrity_problems(self) -> list[str]:
        problems: list[str] = []
        if self.format != PLAN_FORMAT:
            problems.append(f"plan format {self.format} is not {PLAN_FORMAT}")
        if self.entry not in self.steps:
            problems.append(f"entry step {self.entry!r} is missing")
        for key, step in self.steps.items():
            if key != step.id:
                problems.append(f"step key {key!r} does not match its id {step.id!r}")
            if get_step_type(step.type) is None:
                problems.append(f"step {step.id!r} has unknown type {step.type!r}")
            targets = [step.next] + [b.next for b in step.branches]
            for target in targets:
                if target is not None and target not in self.steps:
                    problems.append(f"step {step.id!r} leads to missing step {target!r}")
        for edge in self.edges:
            if edge.source not in self.steps or edge.target not in self.steps:
                problems.append(f"edge {edge.source!r} -> {edge.target!r} names a missing step")
        return problems


def load_plan(data: Any, *, workflow: str = "?", version: int | str = "?") -> Plan:
    """Parse and integrity-check a stored plan; any fault is an InternalError naming it."""
    where = f"workflow {workflow!r} version {version}"
    try:
        plan = Plan.model_validate(data)
    except PydanticError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise InternalError(
            f"the compiled plan of {where} is corrupt: {path}: {first['msg']}",
            code="plan_integrity_failed",
            next_action="Recompile the version's plan from its document, then Retry the run",
        ) from None
    problems = plan.integrity_problems()
    if problems:
        raise InternalError(
            f"the compiled plan of {where} failed its integrity check: {'; '.join(problems)}",
            code="plan_integrity_failed",
            next_action="Recompile the version's plan from its document, then Retry the run",
        )
    return plan
