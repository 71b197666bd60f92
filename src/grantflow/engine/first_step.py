"""The interpreter's fast path for a run's first step (PostgreSQL): a run that was just created
and claimed is taken in one guarded write (engine/take.py) instead of the general path's
transaction, and its first step goes on on the hot path (engine/hot_path.py). A pure first step
runs before the take (it has no effect outside the run) and, a plain success, is recorded by
the next checkpoint; an external call's intent is part of the take, and the call is made next.

Anything unusual leaves the run to the general path, with nothing written: SQLite, a worker
stopping, a run not fresh (retried, resumed, held, paused or asked to pause), a deadline passed,
a damaged plan, a step that waits on a person or cannot run here, a first step whose config
does not render, a pure first step that does not simply succeed (it waits, skips or fails: the
general path runs it again and records that), a run-status listener concerned with the run's
start, and whatever the write's guard finds (the lease lost, the run changed, the concurrency
limit reached, the safety gate holding or near a breaker).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from grantflow.definitions.plan import Plan, PlanStep
from grantflow.engine import concurrency, hooks
from grantflow.engine.checkpoint import Guard, Started
from grantflow.engine.context import build_context
from grantflow.engine.hooks import RunEnd
from grantflow.engine.hot_path import HotPath, plain_success
from grantflow.engine.models import Run, StepRun
from grantflow.engine.plans import plan_of_text
from grantflow.engine.states import RunStatus, StepStatus
from grantflow.engine.take import Fresh, Take, fresh_of, read_fresh, record_taken
from grantflow.engine.turns import (
    Chain,
    Pending,
    Turn,
    call_step,
    chain_of,
    columns_of,
    detached,
    render_config,
)
from grantflow.errors import InternalError
from grantflow.safety import gate
from grantflow.safety.gate import step_start
from grantflow.steps.execution import StepResult
from grantflow.steps.registry import get_step_type
from grantflow.store.base import utcnow


class FirstStep(HotPath):
    """Mixed into the Interpreter (before the general path's first look at a run)."""

    def _take_fresh(self, turn: Turn, claimed: Sequence[Any] | None = None) -> bool:
        """Take a freshly claimed run and start its first step. True: taken, and the turn goes
        on — a call is ready to be made, or a pure step's success was recorded with the next
        step (or its run's end) or, if that checkpoint did not apply, is left to the general
        path. False: nothing written, the turn as it was (but for a config that failed to
        render, which the general path records); the general path takes the run. `claimed`:
        the run as the claim read it (take.READ_WITH_CLAIM), instead of reading it now."""
        if self.database.dialect != "postgresql" or self.stopping.is_set():
            return False
        fresh = read_fresh(self.database, turn.run_id) if claimed is None else fresh_of(claimed)
        if fresh is None:
            return False
        try:
            plan = plan_of_text(
                fresh.run["workflow_id"], fresh.workflow_name, fresh.run["version"], fresh.plan
            )
        except InternalError:
            return False  # the general path fails the run, naming the plan
        run = Run(**fresh.run)  # (transient: read for the context and the chain)
        step = plan.steps.get(fresh.step_run["step_id"])
        now = self.clock()
        if step is None or not _plain(run, fresh, step, plan, now):
            return False
        start = step_start(run.id, run.workflow_id, run.created_at, 1, 1, step, plan)
        admit = gate.folded(start)
        if admit is None:
            return False  # the gate stops it: the general path fails the run, naming the limit
        step_run = detached(StepRun, **fresh.step_run)
        context = build_context(run, [step_run])
        chain = chain_of(run)
        turn.plan = plan  # (the call's application: read while preparing it)
        first = self._first_step(turn, chain, step_run, step, context, now)
        if first is None:
            turn.plan = None
            return False
        pending, intent, outcome = first
        started = pending.call.step_started_at
        assert started is not None
        take = Take(
            run_id=run.id,
            worker_id=self.worker_id,
            seen_token=run.lease_token,
            lease_token=uuid.uuid4().hex,
            step_id=step.id,
            step_run_id=step_run.id,
            workflow_id=run.workflow_id,
            allowed=concurrency.allowed(plan.max_concurrent_runs),
            now=now,
            started_at=started,
            stuck_at=started + chain.stuck_after,
            intent=intent,
        )
        writing = time.perf_counter()
        if not record_taken(self.database, take, admit, tuple(start.kinds)):
            turn.plan = None
            return False
        turn.token, turn.context = take.lease_token, context
        turn.iterations = Counter({step.id: 1})
        if outcome is None:  # a call, its intent committed: made next
            turn.ready, turn.step_run, turn.chain = pending, pending.step_run, chain
            return True
        pending.started += time.perf_counter() - writing  # (the step's time is not the take's)
        turn.step_run = step_run
        guard = Guard(
            run.id,
            self.worker_id,
            take.lease_token,
            step.id,
            step_run.id,
            StepStatus.PENDING,
            self.clock(),  # (its progress: after the run's start)
        )
        self._chain_succeeded(turn, chain, guard, pending, outcome)  # (if not: the general path)
        return True

    def _first_step(
        self,
        turn: Turn,
        chain: Chain,
        step_run: StepRun,
        step: PlanStep,
        context: dict[str, Any],
        now: dt.datetime,
    ) -> tuple[Pending, Started | None, StepResult | None] | None:
        """The first step before the take: an external call prepared with its intent, or a
        pure step run, with its plain success; None when the general path must take it."""
        config = render_config(turn, step, step_run.id, context, chain.deadline_at, now)
        if config is None:
            return None  # the general path records the failure
        if not _local(step):
            try:
                pending, intent = self._chain_intent(
                    turn, chain, columns_of(step_run), step, config, now
                )
            except Exception:  # the general path prepares it, and records what is wrong
                return None
            return pending, intent, None
        call = self._chain_call(turn, chain, step_run, step, config, now, utcnow())
        pending = Pending(step_run, None, step, call, time.perf_counter())
        outcome = call_step(pending)
        if not plain_success(outcome):
            return None
        assert isinstance(outcome, StepResult)
        return pending, None, outcome


def _local(step: PlanStep) -> bool:
    step_type = get_step_type(step.type)
    return step_type is not None and step_type.local


def _plain(run: Run, fresh: Fresh, step: PlanStep, plan: Plan, now: dt.datetime) -> bool:
    """Is this the plain start of a fresh run, as the general path would make it?"""
    columns = fresh.step_run
    step_type = get_step_type(step.type)
    if step_type is None or step_type.execute is None:
        return False  # the general path fails the run, naming the step type
    if step_type.local and not step_type.pure:
        return False  # approvals and tasks work inside the engine's transaction
    if run.current_step != step.id or run.pause_requested or run.waiting_reason is not None:
        return False
    if (columns["status"], columns["attempts"], columns["attempt_group"]) != (
        StepStatus.PENDING,
        0,
        1,
    ):
        return False
    if (columns["sequence"], columns["iteration"]) != (1, 1) or now >= run.deadline_at:
        return False
    start = RunEnd(
        status=RunStatus.RUNNING,
        trigger=run.trigger,
        created_by=run.created_by,
        replay_of=run.replay_of,
        retry_count=run.retry_count or 0,
        people=plan.involves_people,
    )
    return not hooks.run_end_concerns_a_listener(start)
