"""Starting runs: the one place a run is created (manual starts, replays, later triggers)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from grantflow import strict
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.lookup import get_workflow
from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.definitions.plan import Plan
from grantflow.engine import creation, failures
from grantflow.engine.models import Run, StepRun
from grantflow.engine.plans import plan_of
from grantflow.engine.states import RunStatus, StepStatus
from grantflow.engine.timeline import add_event
from grantflow.errors import Conflict, InternalError, ValidationError
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.interface import Queue
from grantflow.store.after_commit import on_rollback
from grantflow.store.base import utcnow


def check_dispatching(workflow: Workflow) -> int:
    """The active version, or a refusal saying exactly why there is none to run."""
    if not workflow.enabled:
        by = f" by {workflow.enabled_changed_by}" if workflow.enabled_changed_by else ""
        raise Conflict(
            f"workflow {workflow.name!r} is disabled{by}; it starts no runs",
            next_action="enable the workflow, then start the run again",
            code="workflow_disabled",
        )
    if workflow.active_version is None:
        raise Conflict(
            f"workflow {workflow.name!r} has no active version; it starts no runs",
            next_action="publish a version (it becomes active), then start the run",
            code="no_active_version",
        )
    return workflow.active_version


def validate_input(schema: dict[str, Any], data: Any) -> None:
    import jsonschema  # (here: a worker that starts no run with an input schema never loads it)

    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if errors:
        details = [
            {
                "field": "input"
                + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in e.path),
                "message": e.message,
                "rule": str(e.validator),
            }
            for e in errors
        ]
        raise ValidationError(
            "the run input does not match the workflow's input schema: "
            + "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]),
            details=details,
            code="input_invalid",
            next_action="send input that matches the schema (GET the workflow's plan)",
        )


def start_run(
    session: Session,
    actor: Actor,
    queue: Queue,
    workflow_id: str,
    run_input: dict[str, Any],
    *,
    trigger: str = "manual",
    subject: dict[str, Any] | None = None,
    version: int | None = None,
    replay_of: str | None = None,
    replay_mode: str | None = None,
) -> Run:
    actor.require(Permission.RUN_OPERATE)
    now = utcnow()
    start = _Start(actor, run_input, trigger, subject, replay_of, replay_mode, now)
    if version is None and creation.applies(queue, session):
        known = creation.known(session, workflow_id)
        run = _start_known(session, queue, start, known) if known else None
        if run is not None:
            return run
    workflow, stored = _workflow_and_plan(session, workflow_id, version)
    _started(session, workflow.id, workflow.name)
    number = version if version is not None else check_dispatching(workflow)
    try:
        plan = plan_of(workflow.id, workflow.name, number, stored)
    except InternalError as exc:
        return _failed_at_start(session, actor, workflow, number, run_input, trigger, exc)
    if version is None and workflow.id == workflow_id and creation.applies(queue, session):
        creation.remember(session, workflow, stored)
    run, step_run, queued = start.new_run(workflow.id, number, plan)
    if workflow.safety_pause is None and creation.applies(queue, session):
        creation.create(session, queue, run, step_run, queued, start.slot(session))
        return run
    session.add(run)
    session.flush()
    add_event(session, run.id, "queued", actor=actor.label, details=queued["data"])
    if workflow.safety_pause is not None:  # accepted and held until the workflow is resumed
        from grantflow.safety.breakers import hold_new_run

        hold_new_run(session, run, workflow, queue)
    else:
        queue.schedule(session, run.id, start.slot(session))
    return run


def _start_known(
    session: Session, queue: DatabaseQueue, start: _Start, known: creation.Known
) -> Run | None:
    """The run created from the workflow as this process last read it, without reading it
    again; None, and nothing written, when the workflow is no longer so (or the input does not
    fit the version known: the version active now may take it): the caller reads it."""
    try:
        plan = plan_of(known.workflow_id, known.name, known.version, known.plan)
        run, step_run, queued = start.new_run(known.workflow_id, known.version, plan)
    except (InternalError, ValidationError):
        pass
    else:
        slot = start.slot(session)
        if creation.create(session, queue, run, step_run, queued, slot, known):
            _started(session, known.workflow_id, known.name)
            return run
        start.give_back(session)  # (the general path may hold or refuse the run instead)
    creation.forget(session, known.workflow_id)
    return None


def _started(session: Session, workflow_id: str, name: str) -> None:
    """The workflow's name for the run's detail in the same transaction (it reads no more)."""
    session.info.setdefault("workflow_names", {})[workflow_id] = name


@dataclass
class _Start:
    """What a start was asked for, to make its run from a workflow's version and plan."""

    actor: Actor
    run_input: dict[str, Any]
    trigger: str
    subject: dict[str, Any] | None
    replay_of: str | None
    replay_mode: str | None
    now: dt.datetime
    at: dt.datetime | None = None  # its fanout slot, once taken
    taken: _Slot | None = None

    def slot(self, session: Session) -> dt.datetime:
        """When the run may be taken (`fanout_slot`), taken once however many tries it makes."""
        if self.at is None:
            self.at, self.taken = _take_slot(session, self.now)
        return self.at

    def give_back(self, session: Session) -> None:
        """The slot, untaken: no run was created with it."""
        if self.taken is not None:
            self.taken.give_back()
            self.at = self.taken = None

    def new_run(
        self, workflow_id: str, number: int, plan: Plan
    ) -> tuple[Run, StepRun, dict[str, Any]]:
        """The run (transient), its first step run and its `queued` event; refused when the
        input cannot be stored or does not match the manual trigger's input schema."""
        unstorable_text = strict.unstorable(self.run_input, "input")  # (the API refuses it too)
        if unstorable_text:
            raise ValidationError(
                "the run input cannot be stored: "
                + "; ".join(f"{field}: {problem}" for field, problem in unstorable_text[:5]),
                details=[{"field": f, "message": p} for f, p in unstorable_text],
                code="input_invalid",
                next_action="remove the character from the input",
            )
        if self.trigger == "manual" and self.replay_of is None:
            schema = plan.trigger.get("input_schema") or {"type": "object"}
            validate_input(schema, self.run_input)
        now = self.now
        run = Run(
            workflow_id=workflow_id,
            version=number,
            status=RunStatus.QUEUED,
            trigger=self.trigger,
            input=self.run_input,
            subject=self.subject or {},
            current_step=plan.entry,
            deadline_at=now + dt.timedelta(seconds=plan.execution_timeout_seconds),
            stuck_after_seconds=plan.stuck_after_seconds,
            stuck_at=now + dt.timedelta(seconds=plan.stuck_after_seconds),
            replay_of=self.replay_of,
            replay_mode=self.replay_mode,
            created_by=self.actor.label,
            created_at=now,
            last_progress_at=now,
        )
        entry = plan.steps[plan.entry]
        step_run = StepRun(
            run=run,
            step_id=entry.id,
            step_type=entry.type,
            sequence=1,
            status=StepStatus.PENDING,
            side_effects=entry.side_effects,
        )
        replayed = {"replay_of": self.replay_of, "mode": self.replay_mode}
        queued: dict[str, Any] = {
            "kind": "queued",
            "actor": self.actor.label,
            "data": {
                **(replayed if self.replay_of else {}),
                "trigger": self.trigger,
                "version": number,
            },
        }
        return run, step_run, queued


def _workflow_and_plan(
    session: Session, workflow_id: str, version: int | None
) -> tuple[Workflow, Any]:
    """The workflow and the stored plan of `version` (default: its active version), in one
    query; by the lookup's rules (a unique id prefix, NotFound) when the id is not exact."""
    number = Workflow.active_version if version is None else literal(version)
    row = session.execute(
        select(Workflow, WorkflowVersion.plan)
        .outerjoin(
            WorkflowVersion,
            (WorkflowVersion.workflow_id == Workflow.id) & (WorkflowVersion.number == number),
        )
        .where(Workflow.id == workflow_id)
    ).one_or_none()
    if row is not None:
        return row[0], row[1]
    # not an exact id: a unique prefix (or NotFound), then the same query on the id it names
    return _workflow_and_plan(session, get_workflow(session, workflow_id).id, version)


@dataclass
class Fanout:
    """The runs one event started so far, and when the first was (see `fanout_slot`)."""

    origin: dt.datetime
    started: int = 0


@dataclass
class _Slot:
    """One run's place in its event's fanout, given back at most once: by the start that
    wrote no run with it, or by the rollback of the savepoint that wrote the run."""

    fanout: Fanout
    given_back: bool = False

    def give_back(self) -> None:
        if not self.given_back:
            self.given_back = True
            self.fanout.started -= 1


def fanout_slot(session: Session, now: dt.datetime) -> dt.datetime:
    """When a run started in this transaction may be taken: one event that starts many runs (an
    import, a review closing, a bulk revoke) makes GRANTFLOW_FANOUT_BATCH of them ready at once,
    the next batch GRANTFLOW_FANOUT_INTERVAL_SECONDS later, and so on. An event spread over
    several transactions (an import's batches) shares one `Fanout` in `session.info`. A run
    undone with its savepoint gives its slot back."""
    return _take_slot(session, now)[0]


def _take_slot(session: Session, now: dt.datetime) -> tuple[dt.datetime, _Slot]:
    from grantflow.safety.limits import limits

    bounds = limits()
    fanout: Fanout = session.info.setdefault("fanout", Fanout(now))
    batch = fanout.started // bounds.fanout_batch
    fanout.started += 1
    slot = _Slot(fanout)
    on_rollback(session, slot.give_back)
    return fanout.origin + dt.timedelta(seconds=batch * bounds.fanout_interval_seconds), slot


def _failed_at_start(
    session: Session,
    actor: Actor,
    workflow: Workflow,
    number: int,
    run_input: dict[str, Any],
    trigger: str,
    exc: InternalError,
) -> Run:
    """A corrupt plan fails the run at once, visibly, instead of leaving it to hang."""
    now = utcnow()
    run = Run(
        workflow_id=workflow.id,
        version=number,
        status=RunStatus.FAILED,
        trigger=trigger,
        input=run_input,
        subject={},
        deadline_at=now,
        stuck_after_seconds=0,
        created_by=actor.label,
        created_at=now,
        finished_at=now,
        last_progress_at=now,
        failure=failures.reason("internal", exc.code, exc.message, exc.next_action or ""),
    )
    session.add(run)
    session.flush()
    add_event(
        session,
        run.id,
        "failed",
        actor=actor.label,
        details={"class": "internal", "message": exc.message},
    )
    return run
