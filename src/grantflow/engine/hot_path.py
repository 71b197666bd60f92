"""The interpreter's hot path: the step boundaries of a running run, each committed in one
guarded write (engine/checkpoint.py), without locking and reloading the run. Anything that is
not a plain success between two steps — a failure, a wait, a person, the run's first or last
step, or a run that changed under the lease — goes to the general path (engine/interpreter.py).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import structlog
from sqlalchemy.exc import InterfaceError, OperationalError

from grantflow.connections.access import ConnectionAccess
from grantflow.definitions import expressions
from grantflow.definitions.plan import PlanStep
from grantflow.engine import hooks, metrics
from grantflow.engine.checkpoint import (
    Guard,
    NextStep,
    Started,
    Succeeded,
    flushes,
    record_run_succeeded,
    record_started,
    record_succeeded,
    record_succeeded_admitting,
)
from grantflow.engine.hooks import RunEnd
from grantflow.engine.models import StepRun
from grantflow.engine.states import RunStatus, StepStatus, check_step_transition
from grantflow.engine.turns import (
    AttemptRow,
    Chain,
    Pending,
    StepRow,
    Turn,
    call_step,
    choose_next,
    columns_of,
    logged_request,
    next_step,
    pending_columns,
    render_config,
    render_deadline,
)
from grantflow.safety import gate
from grantflow.safety.gate import step_start
from grantflow.safety.limits import LimitExceeded
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.registry import get_step_type
from grantflow.store.base import new_id, utcnow
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.engine")


class HotPath:
    """Mixed into the Interpreter, which provides these and the general path's `_finish`."""

    database: Database
    worker_id: str
    http: httpx.Client
    connections: ConnectionAccess | None
    clock: Callable[[], dt.datetime]
    stopping: threading.Event

    def _finish(self, turn: Turn, pending: Pending, outcome: StepResult | BaseException) -> bool:
        raise NotImplementedError

    def _advance_chain(self, turn: Turn, chain: Chain) -> bool | None:
        """Take the current step on the hot path: a pure step is run and committed with the
        next step in one write; an external call gets its intent and then its success written
        the same way. None when the general path must take the step (nothing was written: the
        step waits on a person or is not eligible, or the run changed under the lease); else
        whether to go on, like the general path."""
        turn.chain = None
        if turn.ready is not None:
            pending, turn.ready = turn.ready, None
            return self._call_and_record(turn, chain, pending)
        step_run, plan, context = turn.step_run, turn.plan, turn.context
        if step_run is None or plan is None or context is None or turn.iterations is None:
            return None
        if step_run.status != StepStatus.PENDING or step_run.attempts:
            return None
        step = plan.steps[step_run.step_id]
        step_type = get_step_type(step.type)
        if step_type is None or step_type.execute is None:
            return None
        if step_type.local and not step_type.pure:
            return None  # approvals and tasks work inside the engine's transaction
        check_step_transition(step_run.status, StepStatus.RUNNING)
        now = self.clock()
        if now >= chain.deadline_at:
            return None
        if turn.failed_render is not None and turn.failed_render[0] == step_run.id:
            return None  # it failed as the previous step ended: the general path records it
        if turn.admitted == step_run.id:
            turn.admitted = None  # counted by the checkpoint that made it current
        else:
            start = step_start(
                turn.run_id,
                chain.workflow_id,
                chain.created_at,
                step_run.iteration,
                step_run.sequence,
                step,
                turn.plan,
            )
            try:
                if self._held(start):
                    return None  # the general path holds it (a paused workflow, a spend cap)
            except gate.StepRunMissing:
                if not turn.unflushed:
                    raise
                # a crash lost the commit that made it: the general path reads the run again
                log.warning("run.unflushed_commit_lost", run_id=turn.run_id, step_id=step.id)
                turn.missing = step_run.id
                return None
        config = render_config(turn, step, step_run.id, context, chain.deadline_at, now)
        if config is None:
            return None  # the general path records the failure
        guard = Guard(
            turn.run_id,
            self.worker_id,
            turn.token or "",
            step.id,
            step_run.id,
            step_run.status,
            now,
        )
        if step_type.pure:
            call = self._chain_call(turn, chain, step_run, step, config, now, utcnow())
            pending = Pending(step_run, None, step, call, time.perf_counter())
            outcome = call_step(pending)
            return True if self._chain_succeeded(turn, chain, guard, pending, outcome) else None
        pending, intent = self._chain_intent(turn, chain, columns_of(step_run), step, config, now)
        if not record_started(self.database, guard, intent):
            return None
        turn.unflushed = False
        return self._call_and_record(turn, chain, pending)

    def _held(self, start: gate.StepStart) -> bool:
        """Would the safety gate hold this step? (A step it lets through is counted now.)"""
        try:
            return gate.admit_own(self.database, start) is not None
        except LimitExceeded:
            return True  # the general path fails the run, naming the limit

    def _call_and_record(self, turn: Turn, chain: Chain, pending: Pending) -> bool:
        """Make an external call whose intent is committed; record its outcome."""
        turn.step_run = pending.step_run
        pending.started = time.perf_counter()
        outcome = call_step(pending)
        step_run = pending.step_run
        guard = Guard(
            turn.run_id,
            self.worker_id,
            turn.token or "",
            step_run.step_id,
            step_run.id,
            step_run.status,
            self.clock(),
        )
        if self._chain_succeeded(turn, chain, guard, pending, outcome):
            return True
        return self._finish(turn, pending, outcome)  # a failure, a wait, or the run's end

    def _chain_call(
        self,
        turn: Turn,
        chain: Chain,
        step_run: StepRun | StepRow,
        step: PlanStep,
        config: dict[str, Any],
        now: dt.datetime,
        started: dt.datetime,
    ) -> StepCall:
        remaining = (chain.deadline_at - now).total_seconds()
        return StepCall(
            run_id=turn.run_id,
            step_id=step.id,
            attempt=1,
            idempotency_key=f"{turn.run_id}:{step.id}:{step_run.iteration}-1",
            config=config,
            timeout=max(min(step.timeout_seconds or remaining, remaining), 0.001),
            http=self.http,
            step_started_at=started,
            application_id=turn.plan.application_id if turn.plan else None,
            connections=self.connections,
            run_subject=chain.subject,
            run_created_by=chain.created_by,
            step_run_id=step_run.id,
            workflow_id=chain.workflow_id,
            now=now,
        )

    def _chain_intent(
        self,
        turn: Turn,
        chain: Chain,
        columns: dict[str, Any],
        step: PlanStep,
        config: dict[str, Any],
        now: dt.datetime,
    ) -> tuple[Pending, Started]:
        """An external call's first attempt, prepared: the step run and attempt as the intent
        will have written them, the call, and the intent to write."""
        step_type = get_step_type(step.type)
        assert step_type is not None
        started = utcnow()
        running = StepRow(
            **{**columns, "status": StepStatus.RUNNING, "attempts": 1, "started_at": started}
        )
        call = self._chain_call(turn, chain, running, step, config, now, started)
        attempt = AttemptRow(
            id=new_id(),
            step_run_id=running.id,
            number=1,
            idempotency_key=call.idempotency_key,
            status="running",
            request=logged_request(step, config, call.idempotency_key),
            response=None,
            error=None,
            started_at=started,
            finished_at=None,
            duration_ms=None,
        )
        intent = Started(
            attempt.id, call.idempotency_key, attempt.request or {}, started, {"type": step.type}
        )
        return Pending(running, attempt, step, call, time.perf_counter()), intent

    def _chain_succeeded(
        self,
        turn: Turn,
        chain: Chain,
        guard: Guard,
        pending: Pending,
        outcome: StepResult | BaseException,
    ) -> bool:
        """Commit a plain success with the next step (or, the run's last step, with the run's
        end); False (nothing written) when the outcome needs the general path: a failure, a
        wait, a skip, a run's end that concerns a listener."""
        plan, context, iterations = turn.plan, turn.context, turn.iterations
        assert plan is not None and context is not None and iterations is not None
        if not plain_success(outcome):
            return False
        assert isinstance(outcome, StepResult)
        step, step_run = pending.step, pending.step_run
        entry = {"output": outcome.output, "status": StepStatus.SUCCEEDED, "error": None}
        try:
            next_id = choose_next(
                step,
                {**context, "steps": {**context["steps"], step.id: entry}},
                render_deadline(step, chain.deadline_at, guard.now),
            )
        except expressions.ExpressionError:
            return False
        if next_id is None:  # the run ends: here when no run-status listener is concerned
            return self._end_run(turn, chain, guard, pending, outcome, entry)
        target = plan.steps[next_id]
        iteration = iterations[next_id] + 1
        if iteration > plan.loop_bounds[next_id].limit:
            return False  # the general path fails the run, naming the bound
        elapsed = time.perf_counter() - pending.started
        following = next_step(step_run, target, iteration)
        pending_row = pending_columns(turn.run_id, following)
        finished = utcnow()  # before the next step's start: the timeline never runs backwards
        # The next step's pass through the safety gate goes into this same write; an external
        # call next: its intent too (one commit per call).
        admit = self._fold_gate(turn, chain, following, target)
        ready = None
        if admit is not None:  # (else the call passes the gate at its own boundary)
            ready = self._next_intent(
                turn, chain, pending_row, target, context, step.id, entry, guard
            )
        started = ready[1] if ready else None
        done = _success(chain, guard, pending, outcome, elapsed, finished, following, started)
        try:
            recorded, admitted = self._record(guard, done, admit)
            written = done
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            if ready is None:
                raise
            # The next call's intent could not be written (e.g. a config that is not JSON):
            # the success must not be lost with it. Record it alone; the general path
            # prepares the next step and records why it cannot start.
            log.warning("run.next_intent_unwritable", run_id=turn.run_id, step_id=next_id)
            ready = None
            written = replace(done, next_started=None)
            recorded, admitted = self._record(guard, written, admit)
        if not recorded:
            return False
        # (as if without the intent: with a limit checked first, the write left it out)
        turn.unflushed = not flushes(self.database, replace(written, next_started=None))
        if ready is not None and not admitted:
            ready = None  # the gate did not count it: written `pending`, gated at its boundary
        _measured(step, elapsed)
        context["steps"][step.id] = entry
        iterations[next_id] = iteration
        if ready is not None:
            turn.ready = ready[0]
            turn.step_run = ready[0].step_run
        else:
            turn.step_run = StepRow(**pending_row)
        turn.step_run.counted_at = admitted
        turn.admitted = following.id if admitted is not None else None
        turn.chain = chain
        return True

    def _end_run(
        self,
        turn: Turn,
        chain: Chain,
        guard: Guard,
        pending: Pending,
        outcome: StepResult,
        entry: dict[str, Any],
    ) -> bool:
        """Record the last step's success and the run's end in one write, when no run-status
        listener has anything to do with it (hooks.RunEnd: told from the run and its plan, no
        query); False leaves the end to the general path, which tells the listeners."""
        end = RunEnd(
            status=RunStatus.SUCCEEDED,
            trigger=chain.trigger,
            created_by=chain.created_by,
            replay_of=chain.replay_of,
            retry_count=chain.retry_count,
            people=turn.plan is None or turn.plan.involves_people,
        )
        if hooks.run_end_concerns_a_listener(end):
            return False
        elapsed = time.perf_counter() - pending.started
        done = _success(chain, guard, pending, outcome, elapsed, utcnow(), None)
        if not record_run_succeeded(self.database, guard, done):
            return False
        step = pending.step
        _measured(step, elapsed)
        if chain.created_at is not None:
            metrics.RUN_DURATION.labels(str(RunStatus.SUCCEEDED)).observe(
                (self.clock() - chain.created_at).total_seconds()
            )
        assert turn.context is not None
        turn.context["steps"][step.id] = entry
        turn.ended = True
        return True

    def _record(
        self, guard: Guard, done: Succeeded, admit: gate.StepStart | None
    ) -> tuple[bool, dt.datetime | None]:
        """Write the success (and the next step's pass through the safety gate, `admit`):
        whether it was recorded, and when the next step was counted by it (None: it was not)."""
        if admit is None:
            return record_succeeded(self.database, guard, done), None
        return record_succeeded_admitting(self.database, guard, done, admit)

    def _fold_gate(
        self, turn: Turn, chain: Chain, following: NextStep, target: PlanStep
    ) -> gate.StepStart | None:
        """The next step's pass through the safety gate, to ride on the checkpoint that makes
        it current; None when the worker is stopping (it hands the run back)."""
        if self.stopping.is_set():
            return None
        return step_start(
            turn.run_id,
            chain.workflow_id,
            chain.created_at,
            following.iteration,
            following.sequence,
            target,
            turn.plan,
        )

    def _next_intent(
        self,
        turn: Turn,
        chain: Chain,
        row: dict[str, Any],
        target: PlanStep,
        context: dict[str, Any],
        done_id: str,
        entry: dict[str, Any],
        guard: Guard,
    ) -> tuple[Pending, Started] | None:
        """The next step's call, prepared, when it is an external call whose config renders;
        None leaves the next step pending for the usual boundary. (The checkpoint's write
        passes it through the safety gate: its step run is inserted there.)"""
        step_type = get_step_type(target.type)
        if step_type is None or step_type.local or step_type.execute is None:
            return None
        if self.stopping.is_set():
            return None  # hand the run back at this boundary instead
        try:
            config = expressions.render(
                target.config,
                {**context, "steps": {**context["steps"], done_id: entry}},
                where=f"{target.id}.config",
                deadline=render_deadline(target, chain.deadline_at, guard.now),
            )
        except expressions.ExpressionError as exc:
            turn.failed_render = (row["id"], exc)
            return None  # the general path records the failure
        try:
            return self._chain_intent(turn, chain, row, target, config, guard.now)
        except Exception:  # the general path prepares it, and records what is wrong
            return None


def plain_success(outcome: StepResult | BaseException) -> bool:
    """A success the hot path records: not a failure, a wait or a skip."""
    if not isinstance(outcome, StepResult):
        return False
    return not (outcome.wait_until or outcome.wait_for or outcome.skipped)


def _success(
    chain: Chain,
    guard: Guard,
    pending: Pending,
    outcome: StepResult,
    elapsed: float,
    finished: dt.datetime,
    following: NextStep | None,
    started: Started | None = None,
) -> Succeeded:
    """What a checkpoint writes of a step's success: `following` the next step, None when it
    ends the run; `started` the next call's intent, written with it."""
    step_run = pending.step_run
    duration_ms = round(elapsed * 1000, 3)
    return Succeeded(
        attempts=step_run.attempts or 1,  # (a pure step on the hot path: its first)
        output=outcome.output,
        started_at=step_run.started_at or pending.call.step_started_at or finished,
        finished_at=finished,
        event={"duration_ms": duration_ms},
        stuck_at=guard.now + chain.stuck_after,
        next=following,
        attempt_id=pending.attempt.id if pending.attempt else None,
        response=outcome.response,
        duration_ms=duration_ms,
        next_started=started,
    )


def _measured(step: PlanStep, elapsed: float) -> None:
    duration, outcomes = metrics.step_succeeded(step.type)
    duration.observe(elapsed)
    outcomes.inc()
