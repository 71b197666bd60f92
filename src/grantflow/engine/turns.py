"""What a worker keeps in memory while it holds a run (a turn), and the small pieces both of
the interpreter's paths share: making a step's call, choosing the next step, and step-run rows
as a checkpoint wrote them."""

from __future__ import annotations

import datetime as dt
import traceback
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import structlog
from sqlalchemy.orm import make_transient_to_detached

from grantflow.definitions import expressions
from grantflow.definitions.plan import Plan, PlanStep
from grantflow.durations import format_duration
from grantflow.engine.checkpoint import NextStep
from grantflow.engine.models import Run, StepAttempt, StepRun
from grantflow.engine.states import StepStatus
from grantflow.errors import GrantflowError
from grantflow.steps.execution import StepCall, StepResult, scrubbed
from grantflow.steps.registry import get_step_type
from grantflow.store.base import new_id

log = structlog.get_logger("grantflow.engine")

Row = TypeVar("Row", StepRun, StepAttempt)


@dataclass(slots=True)
class StepRow:
    """A step run as a hot-path checkpoint wrote it, in plain attributes: an ORM instance per
    step cost a tenth of a worker's Python on a run of local steps. The general path takes
    `orm()`, a detached StepRun it re-attaches without a query. (Its fields are StepRun's
    columns: a test holds them equal.)"""

    id: str
    run_id: str
    step_id: str
    step_type: str
    sequence: int
    iteration: int
    attempt_group: int
    status: str
    attempts: int
    side_effects: bool
    output: Any
    error: dict[str, Any] | None
    next_step: str | None
    next_attempt_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    counted_at: dt.datetime | None

    def orm(self) -> StepRun:
        return detached(StepRun, **{f.name: getattr(self, f.name) for f in fields(self)})


def orm_step_run(row: StepRun | StepRow) -> StepRun:
    return row.orm() if isinstance(row, StepRow) else row


@dataclass(slots=True)
class AttemptRow:
    """An external call's attempt as its intent wrote it, in plain attributes (as StepRow:
    the hot path builds it and reads its id and request); the general path takes `orm()`, a
    detached StepAttempt. (Its fields are StepAttempt's columns: a test holds them equal.)"""

    id: str
    step_run_id: str
    number: int
    idempotency_key: str
    status: str
    request: dict[str, Any] | None
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: float | None

    def orm(self) -> StepAttempt:
        return detached(StepAttempt, **{f.name: getattr(self, f.name) for f in fields(self)})


def orm_attempt(row: StepAttempt | AttemptRow) -> StepAttempt:
    return row.orm() if isinstance(row, AttemptRow) else row


@dataclass
class Pending:
    """An external call prepared in one transaction, to be made outside of any."""

    step_run: StepRun | StepRow
    # None for local steps, which do no I/O and keep no attempt log
    attempt: StepAttempt | AttemptRow | None
    step: PlanStep
    call: StepCall
    started: float


@dataclass
class Turn:
    """What a worker keeps in memory while it holds a run."""

    run_id: str
    # This turn's lease token (Run.lease_token), taken at its first look at the run: it may
    # write only while the run still carries it.
    token: str | None = None
    plan: Plan | None = None
    context: dict[str, Any] | None = None
    # The current step run as last committed: while this worker holds the run's lease and row
    # lock, nobody else changes it, so it is re-attached without a query.
    step_run: StepRun | StepRow | None = None
    iterations: Counter[str] | None = None  # passes per step id so far (loops)
    # Set when the last commit left the run running, not asked to pause, with a pending step:
    # the next step may take the hot path (engine/hot_path.py).
    chain: Chain | None = None
    # An external call whose intent the last checkpoint committed: made next, before anything.
    ready: Pending | None = None
    # A render that failed on the hot path (step run id, error): the general path records it
    # instead of rendering again (a template stopped by its CPU budget costs one budget).
    failed_render: tuple[str, expressions.ExpressionError] | None = None
    # The step run the last checkpoint already passed through the safety gate (counted it, on
    # PostgreSQL): it starts without a gate statement of its own.
    admitted: str | None = None
    # The last checkpoint committed without waiting for the WAL's flush (a pure step's success,
    # engine/checkpoint.py): a server crash could have lost it, so the general path checks the
    # current step run is there before trusting this memory (else it reads the run again).
    unflushed: bool = False
    # The step run the safety gate then found missing (a lost commit, expected to be absent
    # when the general path reads the run again; there, it is a fault in Grantflow)
    missing: str | None = None
    ended: bool = False  # the hot path recorded the run's end: nothing is left to do


@dataclass(frozen=True)
class Chain:
    """What the hot path needs of the run, as the last commit left it."""

    deadline_at: dt.datetime
    stuck_after: dt.timedelta
    workflow_id: str
    subject: dict[str, Any]
    created_by: str
    created_at: dt.datetime | None = None  # (the safety gate: held runs released by a resume)
    # what the run-status listeners look at (hooks.RunEnd): a plain run's end takes the hot path
    trigger: str = "manual"
    replay_of: str | None = None
    retry_count: int = 0


def chain_of(run: Run) -> Chain:
    """What the hot path needs of `run` (which the caller leaves running)."""
    return Chain(
        run.deadline_at,
        dt.timedelta(seconds=run.stuck_after_seconds),
        run.workflow_id,
        run.subject or {},
        run.created_by,
        run.created_at,
        run.trigger,
        run.replay_of,
        run.retry_count or 0,
    )


def next_step(current: StepRun | StepRow, target: PlanStep, iteration: int) -> NextStep:
    """The step run that follows `current`: `target`'s `iteration`th pass."""
    return NextStep(
        id=new_id(),
        step_id=target.id,
        step_type=target.type,
        sequence=current.sequence + 1,
        iteration=iteration,
        side_effects=target.side_effects,
    )


def pending_columns(run_id: str, following: NextStep) -> dict[str, Any]:
    """A new step run, `pending`, with every column set (so none is left unloaded after the
    insert: reading one later would cost a query per step)."""
    return {
        "id": following.id,
        "run_id": run_id,
        "step_id": following.step_id,
        "step_type": following.step_type,
        "sequence": following.sequence,
        "iteration": following.iteration,
        "status": StepStatus.PENDING,
        "side_effects": following.side_effects,
        "attempt_group": 1,
        "attempts": 0,
        "output": None,
        "error": None,
        "next_step": None,
        "next_attempt_at": None,
        "started_at": None,
        "finished_at": None,
        "counted_at": None,  # (set by the checkpoint that passes it through the safety gate)
    }


def columns_of(row: StepRun | StepRow) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in StepRun.__table__.columns}


def detached(model: type[Row], **values: Any) -> Row:
    """A row a checkpoint wrote, as the session would have loaded it (every column set), so
    the general path re-attaches it without a query."""
    row = model(**values)
    make_transient_to_detached(row)
    return row


def logged_request(step: PlanStep, config: dict[str, Any], key: str) -> dict[str, Any]:
    """What an attempt records of its call: the step type's preview (secrets redacted) with
    the `Idempotency-Key` header the call carries, so the log shows what was sent."""
    step_type = get_step_type(step.type)
    assert step_type is not None
    shown = step_type.preview(config)
    request = shown.get("request")
    holder = request if isinstance(request, dict) else shown
    holder["headers"] = {**(holder.get("headers") or {}), "Idempotency-Key": key}
    return shown


def call_step(pending: Pending) -> StepResult | BaseException:
    """Run one attempt of a step, outside any transaction: its result, or the error it raised."""
    step_type = get_step_type(pending.step.type)
    assert step_type is not None
    assert step_type.execute is not None
    secrets = pending.call.secrets
    try:
        return scrubbed(step_type.execute(pending.call), secrets)
    except GrantflowError as exc:
        return scrubbed(exc, secrets)
    except Exception as exc:  # an executor bug: classified as internal, never retried
        # (logged by hand: the traceback may quote what the target said)
        log.error(
            "run.step.crashed",
            step_id=pending.step.id,
            error=secrets.redactor.text("".join(traceback.format_exception(exc))),
        )
        return exc


def choose_next(
    step: PlanStep, context: dict[str, Any], deadline: expressions.Deadline | None = None
) -> str | None:
    """The first branch whose condition holds, else the step's `next` (None: the run ends)."""
    for index, branch in enumerate(step.branches):
        where = f"{step.id}.branches[{index}].when"
        if expressions.evaluate(branch.when, context, where=where, deadline=deadline):
            return branch.next
    return step.next


def render_deadline(
    step: PlanStep, deadline_at: dt.datetime, now: dt.datetime
) -> expressions.Deadline:
    """How long rendering a step's templates may take: the step's timeout, or what is left of
    the run's execution timeout when that is sooner."""
    remaining = max((deadline_at - now).total_seconds(), 0.0)
    if step.timeout_seconds is not None and step.timeout_seconds < remaining:
        limit = format_duration(dt.timedelta(seconds=step.timeout_seconds))
        return expressions.Deadline(
            step.timeout_seconds, f"the step's timeout ({limit})", "raise the step's `timeout`"
        )
    return expressions.Deadline(
        remaining, "the run's execution timeout", "raise settings.execution_timeout"
    )


def render_config(
    turn: Turn,
    step: PlanStep,
    step_run_id: str,
    context: dict[str, Any],
    deadline_at: dt.datetime,
    now: dt.datetime,
) -> dict[str, Any] | None:
    """The step's rendered config for a fast path; None when it does not render, noted on the
    turn for the general path to record (without rendering again)."""
    try:
        config: dict[str, Any] = expressions.render(
            step.config,
            context,
            where=f"{step.id}.config",
            deadline=render_deadline(step, deadline_at, now),
        )
    except expressions.ExpressionError as exc:
        turn.failed_render = (step_run_id, exc)
        return None
    return config
