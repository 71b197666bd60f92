"""The interpreter: advances one run step by step, committing each step's outcome before the
next starts. A worker keeps advancing the same run while steps complete, and hands it back
only when it must wait (a timer, a retry backoff, a person) or when it shuts down.

Before an external call the attempt is recorded (its intent: number, idempotency key, the
rendered request with secrets redacted); after it, the outcome. A worker that dies between the
two leaves an attempt marked running; whoever resumes the run sends the call again with the
same idempotency key.

This is the general path: every step boundary locks and reads the run and acts on what it
finds. Between steps of a run that keeps succeeding, the hot path (engine/hot_path.py) commits
each boundary in one guarded write instead, and a freshly claimed run is taken with its first
step's start in one guarded write too (engine/first_step.py); both hand back here whenever
anything else happens.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from grantflow import advice, timestamps
from grantflow.connections.access import ConnectionAccess
from grantflow.definitions import expressions
from grantflow.definitions.plan import Plan, PlanStep
from grantflow.engine import concurrency, failures, hooks, metrics
from grantflow.engine.context import load_progress, skipped_output, step_entry
from grantflow.engine.first_step import FirstStep
from grantflow.engine.models import Run, StepAttempt, StepRun
from grantflow.engine.plans import plan_for
from grantflow.engine.retry import backoff_seconds
from grantflow.engine.states import PERSON_WAITS, RunStatus, StepStatus, WaitingReason
from grantflow.engine.transitions import move_run, move_step, touch
from grantflow.engine.turns import (
    Chain,
    Pending,
    Turn,
    call_step,
    chain_of,
    choose_next,
    logged_request,
    next_step,
    orm_attempt,
    orm_step_run,
    pending_columns,
    render_deadline,
)
from grantflow.errors import (
    FailureClass,
    GrantflowError,
    InternalError,
    ReauthRequired,
)
from grantflow.queue.interface import Queue
from grantflow.safety import gate
from grantflow.safety.gate import step_start
from grantflow.safety.limits import LimitExceeded
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.registry import get_step_type
from grantflow.store.after_commit import after_commit
from grantflow.store.base import new_id, utcnow
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.engine")

_CONCURRENCY_RECHECK = dt.timedelta(milliseconds=500)


def _take(turn: Turn, token: str) -> None:
    turn.token = token


def _chain_of(run: Run) -> Chain | None:
    """What the hot path needs of a run this transaction leaves running (None: it may not)."""
    if run.status != RunStatus.RUNNING or run.pause_requested:
        return None
    return chain_of(run)


class Interpreter(FirstStep):
    def __init__(
        self,
        database: Database,
        queue: Queue,
        worker_id: str,
        http: httpx.Client,
        clock: Callable[[], dt.datetime] = utcnow,
        stopping: threading.Event | None = None,
        connections: ConnectionAccess | None = None,
    ) -> None:
        self.connections = connections
        self.database = database
        self.queue = queue
        self.worker_id = worker_id
        self.http = http
        self.clock = clock
        self.stopping = stopping or threading.Event()

    # --- the loop -----------------------------------------------------------------------------
    def advance(self, run_id: str) -> bool:
        """Advance a run this worker has leased, until it waits, ends, or the worker stops.
        False when the turn ended without settling the run (the database went away): its
        queue lease is still this worker's, to hand back."""
        turn = Turn(run_id)
        fresh = True  # a freshly claimed run may be taken on the fast path (engine/first_step.py)
        claimed = self.queue.claimed_row(run_id)  # (what the claim read of it, if anything)
        while True:
            if turn.ended:
                return True
            if self.stopping.is_set() and turn.ready is None:  # (a committed intent: call it)
                self._hand_back(turn)
                return True
            try:
                if fresh:
                    fresh = False
                    if self._take_fresh(turn, claimed):
                        continue  # taken: on from the top (the run may have ended already)
                if turn.chain is not None:
                    more = self._advance_chain(turn, turn.chain)
                    if more is not None:
                        if more:
                            continue
                        return True
                pending_or_more = self._prepare(turn)
                if isinstance(pending_or_more, Pending):
                    chain, turn.chain = turn.chain, None
                    if chain is not None:  # a success is recorded on the hot path
                        more = self._call_and_record(turn, chain, pending_or_more)
                    else:
                        more = self._finish(turn, pending_or_more, call_step(pending_or_more))
                    if not more:
                        return True
                elif not pending_or_more:
                    return True
            except (OperationalError, InterfaceError) as exc:
                # The database went away mid-turn: nothing half-written was committed. The
                # worker hands the run back, or its lease, no longer renewed, runs out; another
                # worker (or this one) resumes it from its last committed step.
                log.warning(
                    "run.database_unavailable", run_id=run_id, error=type(exc.orig or exc).__name__
                )
                return False
            except Exception as exc:  # a fault in Grantflow itself: fail the run, visibly
                log.exception("run.internal_error", run_id=run_id)
                self._fail_internal(turn, exc)
                return True

    def _hand_back(self, turn: Turn) -> None:
        with self.database.transaction() as session:
            run, held = self._locked_run(session, turn)
            if run is not None and held and self.queue.holds(session, run.id, self.worker_id):
                self.queue.schedule(session, run.id)

    # --- the lease fence ----------------------------------------------------------------------
    def _locked_run(self, session: Session, turn: Turn) -> tuple[Run | None, bool]:
        """The run, row-locked and read anew, and whether this turn still holds it.

        A turn's first look takes the run if this worker holds its queue lease: it writes a
        new lease token on the run. From then on the turn holds the run while the run carries
        that token. A worker that lost its lease (frozen past it, then woken) finds its
        successor's token there and writes nothing: every write of the general path happens in
        a transaction that checked the token on the locked row, and the hot path's writes
        compare it in their WHERE (engine/checkpoint.py)."""
        run = session.execute(
            select(Run)
            .where(Run.id == turn.run_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if run is None:
            return None, False
        if turn.token is not None:
            held = run.lease_token == turn.token
        else:  # (read after the row lock: a claim by another worker committed before is seen)
            held = self.queue.holds(session, run.id, self.worker_id)
            if held:
                token = run.lease_token = uuid.uuid4().hex
                # the turn holds the run once the token is committed (not if this rolls back)
                after_commit(session, lambda _items: _take(turn, token))
        if not held:
            log.info("run.lease.lost", run_id=run.id, worker=self.worker_id)
        return run, held

    # --- phase 1: decide, and record the intent -----------------------------------------------
    def _prepare(self, turn: Turn) -> Pending | bool:
        turn.chain = turn.ready = None
        with self.database.transaction() as session:
            run, held = self._locked_run(session, turn)
            if run is None:
                return False
            if not held:
                return False  # the lease was lost; another worker owns the run now
            now = self.clock()
            status = RunStatus(run.status)
            if status.terminal:
                self.queue.remove(session, run.id)
                return False
            if turn.plan is None:
                turn.plan = plan_for(session, run.workflow_id, run.version)
            plan = turn.plan
            step_run = self._current_step_run(session, turn, run)
            if now >= run.deadline_at:
                self._time_out(session, run, step_run, plan)
                return False
            if status == RunStatus.PAUSED:
                self.queue.schedule(session, run.id, run.deadline_at)
                return False
            if run.pause_requested:
                run.pause_requested = False
                move_run(session, run, RunStatus.PAUSED, reason="operator")
                self.queue.schedule(session, run.id, run.deadline_at)
                return False
            if status == RunStatus.WAITING:
                if run.waiting_reason in PERSON_WAITS and not self._person_wake(run, now):
                    wake = min(run.wake_at or run.deadline_at, run.deadline_at)
                    self.queue.schedule(session, run.id, wake)
                    return False
                if run.waiting_reason in PERSON_WAITS:  # a decision, a reminder or a timeout
                    move_run(session, run, RunStatus.RUNNING)
                    return self._begin_attempt(
                        session, turn, run, step_run, plan.steps[step_run.step_id], now, True
                    )
                if run.wake_at is not None and now < run.wake_at:
                    self.queue.schedule(session, run.id, min(run.wake_at, run.deadline_at))
                    return False
                move_run(session, run, RunStatus.RUNNING)
            elif status == RunStatus.QUEUED:
                allowed = concurrency.allowed(plan.max_concurrent_runs)
                if concurrency.over_limit(self.database, session, run, allowed):
                    self.queue.schedule(session, run.id, now + _CONCURRENCY_RECHECK)
                    return False
                move_run(session, run, RunStatus.RUNNING)
            step = plan.steps[step_run.step_id]
            if step_run.status == StepStatus.SKIPPED:  # a person skipped the failed step
                return self._go_next(session, turn, run, step_run, step)
            if step_run.status == StepStatus.WAITING and step_run.next_attempt_at is not None:
                until = step_run.next_attempt_at  # a durable timer (delay)
                if now < until:
                    self._park(session, run, WaitingReason.DELAY, until)
                    return False
                return self._succeed(session, turn, run, step_run, step, step_run.output)
            # (a step WAITING without a time waited on a person, e.g. a reauthorisation: it
            # runs again now)
            if (
                step_run.status == StepStatus.RETRYING
                and step_run.next_attempt_at
                and now < step_run.next_attempt_at
            ):
                self._park(session, run, WaitingReason.RETRY, step_run.next_attempt_at)
                return False
            if step_run.status == StepStatus.RUNNING:
                self._abandon_lost_attempts(session, step_run)
            return self._begin_attempt(session, turn, run, step_run, step, now)

    @staticmethod
    def _person_wake(run: Run, now: dt.datetime) -> bool:
        """Approvals and tasks wake their run to read a decision or act on a timer; the
        other person waits (escalation, reauthorisation) are resumed by an operation."""
        return (
            run.waiting_reason in (WaitingReason.APPROVAL, WaitingReason.TASK)
            and run.wake_at is not None
            and now >= run.wake_at
        )

    @staticmethod
    def _abandon_lost_attempts(session: Session, step_run: StepRun) -> None:
        """A step found running was held by a worker that died mid-call: its attempt is closed
        as abandoned; the next attempt re-sends the call with the same idempotency key."""
        session.execute(
            update(StepAttempt)
            .where(StepAttempt.step_run_id == step_run.id, StepAttempt.status == "running")
            .values(
                status="abandoned",
                finished_at=utcnow(),
                error={
                    "class": "transient",
                    "message": "the worker running this attempt was lost before it recorded "
                    "the outcome; the call is re-sent with the same idempotency key",
                },
            )
        )

    def _current_step_run(self, session: Session, turn: Turn, run: Run) -> StepRun:
        if turn.step_run is not None and not turn.unflushed:
            row = session.merge(orm_step_run(turn.step_run), load=False)
            turn.step_run = row
            return row
        if turn.step_run is not None:
            # The last checkpoint was not flushed (a pure step's success): a server crash may
            # have lost it. Its step run there as it was left means it was not (the server
            # recovers commits in order); else the run is behind this memory: read it again.
            # (This transaction's commit waits for the flush: `_locked_run` wrote a lock.)
            turn.unflushed, missing = False, turn.missing
            turn.missing = None
            found = session.get(StepRun, turn.step_run.id)
            if (
                found is not None
                and found.status == turn.step_run.status
                and found.step_id == run.current_step
            ):
                if missing == found.id:  # the gate found none, and none was lost
                    raise RuntimeError(f"the safety gate found no step run {missing}, yet it is")
                turn.step_run = found
                return found
        # A turn's first look, or after commits a crash lost: the current step run, the
        # template context and the loop counts (kept in memory for the rest of the turn).
        turn.unflushed = False
        turn.step_run, turn.context, turn.iterations = load_progress(session, run)
        return turn.step_run

    @staticmethod
    def _loaded(turn: Turn) -> tuple[dict[str, Any], Counter[str]]:
        """The context and loop counts the turn's first look loaded (_current_step_run)."""
        assert turn.context is not None and turn.iterations is not None
        return turn.context, turn.iterations

    def _begin_attempt(
        self,
        session: Session,
        turn: Turn,
        run: Run,
        step_run: StepRun,
        step: PlanStep,
        now: dt.datetime,
        resumed: bool = False,
    ) -> Pending | bool:
        """Start an attempt of the step; `resumed`: the attempt that waited on a person goes
        on (reading the decision is not another attempt)."""
        step_type = get_step_type(step.type)
        if step_type is None or step_type.execute is None:
            raise InternalError(f"step type {step.type!r} cannot run in this deployment")
        if not resumed:  # the safety gate: a paused workflow, a breaker, a spend cap
            start = step_start(
                run.id,
                run.workflow_id,
                run.created_at,
                step_run.iteration,
                step_run.sequence,
                step,
                turn.plan,
            )
            try:
                hold = gate.admit(session, start)
            except LimitExceeded as exc:  # an abuse limit: the run fails, class safety
                failure = failures.from_error(exc, step.id, exhausted=True)
                self._end(session, run, RunStatus.FAILED, failure)
                return False
            if hold is not None:
                self._hold(session, run, hold, now)
                return False
        context, _ = self._loaded(turn)
        if not resumed or not step_run.attempts:
            step_run.attempts += 1
        key = f"{run.id}:{step.id}:{step_run.iteration}-{step_run.attempt_group}"
        attempt = None
        if step_type.local:
            move_step(session, step_run, StepStatus.RUNNING)
        else:
            number = step_run.attempts
            if step_run.attempt_group > 1:  # an operator retry restarted the count, not the log
                # the log goes on after its last entry (a count would collide on a third
                # group once an earlier one numbered past it)
                last = session.execute(
                    select(func.max(StepAttempt.number)).where(
                        StepAttempt.step_run_id == step_run.id
                    )
                ).scalar_one()
                number = (last or 0) + 1
            attempt = StepAttempt(
                id=new_id(),
                step_run_id=step_run.id,
                number=number,
                idempotency_key=key,
                status="running",
                started_at=now,
            )
            session.add(attempt)
            move_step(session, step_run, StepStatus.RUNNING, event="step_started", type=step.type)
        run.current_step = step.id
        failed, turn.failed_render = turn.failed_render, None
        try:
            if failed is not None and failed[0] == step_run.id:
                raise failed[1]  # the hot path rendered it already
            config = expressions.render(
                step.config,
                context,
                where=f"{step.id}.config",
                deadline=render_deadline(step, run.deadline_at, now),
            )
        except expressions.ExpressionError as exc:
            if attempt is not None:
                attempt.status = "failed"
                attempt.error = {"class": exc.failure_class, "message": exc.message}
                attempt.finished_at = now
            return self._fail_step(session, turn, run, step_run, step, exc)
        if attempt is not None:
            attempt.request = logged_request(step, config, key)
        remaining = (run.deadline_at - now).total_seconds()
        timeout = min(step.timeout_seconds or remaining, remaining)
        call = StepCall(
            run_id=run.id,
            step_id=step.id,
            attempt=step_run.attempts,
            idempotency_key=key,
            config=config,
            timeout=max(timeout, 0.001),
            http=self.http,
            step_started_at=step_run.started_at,
            application_id=turn.plan.application_id if turn.plan else None,
            connections=self.connections,
            session=session if step_type.local else None,
            run_subject=run.subject or {},
            run_created_by=run.created_by,
            step_run_id=step_run.id,
            workflow_id=run.workflow_id,
            now=now,
        )
        pending = Pending(step_run, attempt, step, call, time.perf_counter())
        if step_type.local:
            outcome = call_step(pending)
            return self._apply(session, turn, run, step_run, None, pending, outcome)
        turn.chain = _chain_of(run)  # its success may take the hot path
        return pending

    # --- phase 3: record the outcome, choose what comes next ----------------------------------
    def _finish(self, turn: Turn, pending: Pending, outcome: StepResult | BaseException) -> bool:
        with self.database.transaction() as session:
            run, held = self._locked_run(session, turn)
            assert run is not None
            assert pending.attempt is not None
            if not held:
                # Another worker took the run over while this one was away (its lease expired):
                # the successor closed this attempt as abandoned and made the call again with
                # the same idempotency key. What this worker got back is dropped; nothing it
                # did is written over what the successor recorded.
                return False
            attempt = session.merge(orm_attempt(pending.attempt), load=False)
            if run.status != RunStatus.RUNNING:  # cancelled or timed out while we called out
                step_run = session.get(StepRun, pending.step_run.id, populate_existing=True)
                assert step_run is not None
                turn.step_run = None
                self._close_attempt(attempt, pending, outcome)
                if step_run.status == StepStatus.RUNNING:
                    done = isinstance(outcome, StepResult)
                    move_step(
                        session,
                        step_run,
                        StepStatus.SUCCEEDED if done else StepStatus.FAILED,
                        event="step_succeeded" if done else "step_failed",
                        after=run.status,
                    )
                    if done:
                        step_run.output = outcome.output  # type: ignore[union-attr]
                return False
            step_run = self._current_step_run(session, turn, run)
            return self._apply(session, turn, run, step_run, attempt, pending, outcome)

    def _close_attempt(
        self, attempt: StepAttempt | None, pending: Pending, outcome: StepResult | BaseException
    ) -> float:
        elapsed = time.perf_counter() - pending.started
        outcome_label = "succeeded" if isinstance(outcome, StepResult) else "failed"
        if attempt is None:  # a local step: metrics only
            failure_class = (
                ""
                if isinstance(outcome, StepResult)
                else str(getattr(outcome, "failure_class", FailureClass.INTERNAL))
            )
            metrics.STEP_DURATION.labels(pending.step.type, outcome_label).observe(elapsed)
            metrics.STEP_OUTCOMES.labels(pending.step.type, outcome_label, failure_class).inc()
            return elapsed
        attempt.finished_at = self.clock()

        attempt.duration_ms = round(elapsed * 1000, 3)
        if isinstance(outcome, StepResult):
            attempt.status = "succeeded"
            attempt.response = outcome.response
        else:
            reason = failures.from_error(outcome, pending.step.id, exhausted=False)
            attempt.status = "failed"
            attempt.error = {
                "class": reason["class"],
                "code": reason["code"],
                "message": reason["message"],
            }
            attempt.response = getattr(outcome, "response", None)
        failure_class = (
            "" if isinstance(outcome, StepResult) else (attempt.error or {}).get("class", "")
        )
        outcome_label = "succeeded" if isinstance(outcome, StepResult) else "failed"
        metrics.STEP_DURATION.labels(pending.step.type, outcome_label).observe(elapsed)
        metrics.STEP_OUTCOMES.labels(pending.step.type, outcome_label, failure_class).inc()
        return elapsed

    def _apply(
        self,
        session: Session,
        turn: Turn,
        run: Run,
        step_run: StepRun,
        attempt: StepAttempt | None,
        pending: Pending,
        outcome: StepResult | BaseException,
    ) -> bool:
        elapsed = self._close_attempt(attempt, pending, outcome)
        step = pending.step
        if isinstance(outcome, BaseException):
            return self._fail_step(session, turn, run, step_run, step, outcome)
        if outcome.wait_for is not None:
            return self._wait_for_person(session, run, step_run, outcome)
        if outcome.skipped:
            step_run.output = outcome.output
            move_step(session, step_run, StepStatus.SKIPPED, event="step_skipped")
            self._loaded(turn)[0]["steps"][step.id] = step_entry(step_run)
            return self._go_next(session, turn, run, step_run, step)
        if outcome.wait_until is not None and outcome.wait_until > self.clock():
            step_run.next_attempt_at = outcome.wait_until
            move_step(
                session,
                step_run,
                StepStatus.WAITING,
                event="step_waiting",
                until=outcome.wait_until.isoformat(),
            )
            self._park(session, run, WaitingReason.DELAY, outcome.wait_until)
            return False
        return self._succeed(
            session, turn, run, step_run, step, outcome.output, duration_ms=round(elapsed * 1000, 3)
        )

    def _wait_for_person(
        self, session: Session, run: Run, step_run: StepRun, outcome: StepResult
    ) -> bool:
        """Park the run on a person's decision: it holds no worker and no connection; the
        decision (or the step's next timer) wakes it."""
        step_run.next_attempt_at = None
        reason = WaitingReason(outcome.wait_for or WaitingReason.TASK)
        if step_run.status != StepStatus.WAITING:
            move_step(
                session,
                step_run,
                StepStatus.WAITING,
                event="step_waiting",
                reason=str(reason),
                task_id=outcome.waiting_on,
                **outcome.extra,
            )
        move_run(session, run, RunStatus.WAITING, waiting_reason=reason, wake_at=outcome.wake_at)
        run.waiting_on = outcome.waiting_on
        wake = min(outcome.wake_at or run.deadline_at, run.deadline_at)
        self.queue.schedule(session, run.id, wake)
        return False

    def _succeed(
        self,
        session: Session,
        turn: Turn,
        run: Run,
        step_run: StepRun,
        step: PlanStep,
        output: Any,
        **data: Any,
    ) -> bool:
        step_run.output = output
        step_run.error = None
        move_step(session, step_run, StepStatus.SUCCEEDED, event="step_succeeded", **data)
        self._loaded(turn)[0]["steps"][step.id] = step_entry(step_run)
        return self._go_next(session, turn, run, step_run, step)

    def _go_next(
        self, session: Session, turn: Turn, run: Run, step_run: StepRun, step: PlanStep
    ) -> bool:
        context, iterations = self._loaded(turn)
        try:
            next_id = choose_next(
                step, context, render_deadline(step, run.deadline_at, self.clock())
            )
        except expressions.ExpressionError as exc:
            failure = failures.reason(
                exc.failure_class,
                exc.code,
                exc.message,
                exc.next_action or "fix the condition",
                step.id,
                situation=failures.situation_of(session, run, turn.plan),
            )
            self._end(session, run, RunStatus.FAILED, failure)
            return False
        step_run.next_step = next_id
        if next_id is None:
            self._end(session, run, RunStatus.SUCCEEDED)
            return False
        plan = turn.plan
        assert plan is not None
        target = plan.steps[next_id]
        iteration = iterations[next_id] + 1
        bound = plan.loop_bounds[next_id]
        if iteration > bound.limit:
            failure = failures.reason(
                FailureClass.PERMANENT,
                "loop_bound_exceeded",
                bound.exceeded(next_id, iteration),
                "check the loop's exit condition (or raise max_iterations), fix the workflow, "
                "then Replay with latest",
                next_id,
                situation=failures.situation_of(session, run, plan),
            )
            self._end(session, run, RunStatus.FAILED, failure)
            return False
        following = next_step(step_run, target, iteration)
        new = StepRun(**pending_columns(run.id, following))
        session.add(new)

        iterations[next_id] = iteration
        turn.step_run = new
        run.current_step = next_id
        touch(run, self.clock())
        turn.chain = _chain_of(run)
        return True

    def _fail_step(
        self,
        session: Session,
        turn: Turn,
        run: Run,
        step_run: StepRun,
        step: PlanStep,
        exc: BaseException,
    ) -> bool:
        now = self.clock()
        if isinstance(exc, ReauthRequired):
            return self._wait_for_reauth(session, run, step_run, step, exc)
        retryable = failures.retryable(exc)
        if retryable and step_run.attempts < step.retry.max_attempts:
            delay = backoff_seconds(
                step.retry, step_run.attempts, getattr(exc, "retry_after", None)
            )
            next_at = now + dt.timedelta(seconds=delay)
            reason = failures.from_error(exc, step.id, exhausted=False)
            step_run.error = reason
            step_run.next_attempt_at = next_at
            move_step(
                session,
                step_run,
                StepStatus.RETRYING,
                event="step_retrying",
                **{
                    "class": reason["class"],
                    "message": reason["message"],
                    "next_attempt_at": next_at.isoformat(),
                    "attempts_left": step.retry.max_attempts - step_run.attempts,
                },
            )
            self._park(session, run, WaitingReason.RETRY, next_at)
            hooks.step_failed(session, run, step_run, reason, False)
            return False
        failure = failures.from_error(
            exc,
            step.id,
            exhausted=retryable,
            situation=failures.situation_of(session, run, turn.plan),
        )
        failure["attempts"] = step_run.attempts
        step_run.error = failure
        move_step(
            session,
            step_run,
            StepStatus.FAILED,
            event="step_failed",
            **{"class": failure["class"], "message": failure["message"]},
        )
        if step.on_failure == "continue":  # the run goes on without it: say so to later steps
            step_run.output = skipped_output("on_failure: continue", failure["message"])
        hooks.step_failed(session, run, step_run, failure, True)
        self._loaded(turn)[0]["steps"][step.id] = step_entry(step_run)
        if step.on_failure == "continue":
            return self._go_next(session, turn, run, step_run, step)
        if step.on_failure == "escalate":
            failure.update(advice.advise(f"waiting.{WaitingReason.ESCALATED}"))
            move_run(
                session,
                run,
                RunStatus.WAITING,
                waiting_reason=WaitingReason.ESCALATED,
                failure=failure,
            )
            hooks.escalated(session, run, step_run, failure)
            self.queue.schedule(session, run.id, run.deadline_at)
            return False
        final = (
            RunStatus.TIMED_OUT if failure["class"] == FailureClass.TIMEOUT else RunStatus.FAILED
        )
        self._end(session, run, final, failure)
        return False

    def _wait_for_reauth(
        self, session: Session, run: Run, step_run: StepRun, step: PlanStep, exc: ReauthRequired
    ) -> bool:
        """The connection needs a person to replace its credential: wait, holding nothing;
        replacing the credential queues the run again and the step runs anew."""
        reason = failures.from_error(exc, step.id, exhausted=False)
        reason["connection_id"] = exc.connection_id
        step_run.error = reason
        step_run.next_attempt_at = None
        move_step(
            session,
            step_run,
            StepStatus.WAITING,
            event="step_waiting",
            reason="reauth",
            connection_id=exc.connection_id,
        )
        move_run(
            session, run, RunStatus.WAITING, waiting_reason=WaitingReason.REAUTH, failure=reason
        )
        run.waiting_on = exc.connection_id
        self.queue.schedule(session, run.id, run.deadline_at)
        return False

    def _hold(self, session: Session, run: Run, hold: gate.Hold, now: dt.datetime) -> None:
        """The gate holds the step: for safety the run is queued and held (no worker takes it
        until the workflow is resumed); for a spend cap it waits for the roll-over. Either way
        the execution time it had left is kept for when it goes on."""
        remaining = max((run.deadline_at - now).total_seconds(), 1.0)
        failure = {
            **hold.failure,
            "step_id": run.current_step,
            "held_at": timestamps.rfc3339(now),
            "remaining_seconds": remaining,
        }
        if hold.reason == WaitingReason.SAFETY:
            move_run(session, run, RunStatus.QUEUED, failure=failure)
            run.waiting_reason = WaitingReason.SAFETY
            self.queue.remove(session, run.id)
        else:
            assert hold.wake_at is not None
            run.deadline_at = max(run.deadline_at, hold.wake_at + dt.timedelta(seconds=remaining))
            move_run(
                session,
                run,
                RunStatus.WAITING,
                waiting_reason=hold.reason,
                wake_at=hold.wake_at,
                failure=failure,
            )
            self.queue.schedule(session, run.id, hold.wake_at)
        run.stuck_at = None  # held on purpose, not stuck

    def _park(self, session: Session, run: Run, reason: WaitingReason, until: dt.datetime) -> None:
        move_run(session, run, RunStatus.WAITING, waiting_reason=reason, wake_at=until)
        self.queue.schedule(session, run.id, min(until, run.deadline_at))

    def _end(
        self, session: Session, run: Run, status: RunStatus, failure: dict[str, Any] | None = None
    ) -> None:
        move_run(session, run, status, failure=failure)
        self.queue.remove(session, run.id)
        metrics.RUN_DURATION.labels(str(status)).observe(
            (self.clock() - run.created_at).total_seconds()
        )

    def _time_out(self, session: Session, run: Run, step_run: StepRun, plan: Plan) -> None:
        if step_run.status in (StepStatus.RUNNING, StepStatus.RETRYING, StepStatus.WAITING):
            move_step(
                session,
                step_run,
                StepStatus.FAILED,
                event="step_failed",
                **{"class": "timeout", "message": "the run's execution timeout passed"},
            )
        elif step_run.status == StepStatus.PENDING:  # the deadline passed before it started
            move_step(session, step_run, StepStatus.CANCELLED, event="step_cancelled")
        limit = dt.timedelta(seconds=plan.execution_timeout_seconds)
        failure = failures.reason(
            FailureClass.TIMEOUT,
            "execution_timeout",
            f"the run did not finish within its execution timeout ({limit}); it was at step "
            f"{step_run.step_id!r}",
            "find why it was slow (the timeline shows where time went), then Retry the run "
            "or raise settings.execution_timeout",
            step_run.step_id,
        )
        self._end(session, run, RunStatus.TIMED_OUT, failure)

    def _fail_internal(self, turn: Turn, exc: BaseException) -> None:
        with self.database.transaction() as session:
            run, held = self._locked_run(session, turn)
            if run is None or not held or RunStatus(run.status).terminal:
                return
            error = (
                exc
                if isinstance(exc, GrantflowError)
                else InternalError(f"internal fault: {type(exc).__name__}: {exc}")
            )

            failure = failures.reason(
                FailureClass.INTERNAL,
                getattr(error, "code", "internal_error"),
                error.message,
                error.next_action or "report this fault with the run id",
                run.current_step,
            )
            self._end(session, run, RunStatus.FAILED, failure)
