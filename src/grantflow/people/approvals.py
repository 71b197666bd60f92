"""Approvals: creating the task when the step first runs, counting decisions against each
stage's policy, and the timeout policy (escalate, reject or approve) with reminders."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.people import routing, tasks
from grantflow.people.models import Task, TaskDecision
from grantflow.people.tasks import StepAsk, TaskKind, TaskStatus
from grantflow.store.base import utcnow

ENGINE = Actor.system("engine")


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approval step asks for, in the people service's terms (the `approval` step
    fills it in from its validated config)."""

    title: str
    instructions: str
    stages: list[dict[str, Any]]  # in order; each: users, roles, policy, required
    require_justification: bool
    timeout: dt.timedelta | None
    remind_before: dt.timedelta | None
    on_timeout: str | None  # escalate | reject | approve
    escalate_to: dict[str, Any] | None  # the fallback approvers: users, roles


@dataclass
class Outcome:
    task_id: str | None = None
    waiting: bool = False
    wake_at: dt.datetime | None = None
    output: dict[str, Any] | None = None
    rejected: str | None = None
    next_action: str | None = None
    event: dict[str, Any] = field(default_factory=dict)


def advance(ask: StepAsk, request: ApprovalRequest) -> Outcome:
    """One look at the approval: create it, or read its decision, or act on its timers."""
    session = ask.session
    now = ask.now
    task = tasks.for_step_run(session, ask.step_run_id)
    if task is None:
        task = _create(session, ask, request, now)
        return _waiting(task, {"approvers": tasks.describe(session, task)["assignees"]})
    if task.status == TaskStatus.APPROVED:
        return Outcome(task_id=task.id, output=_output(session, task))
    if task.status == TaskStatus.REJECTED:
        return Outcome(
            task_id=task.id,
            rejected=f"rejected by {task.decided_by}"
            + (f": {task.comment}" if task.comment else ""),
            next_action="the request was refused; re-request it with more justification "
            "(a new grant or run) if it is still needed",
        )
    if task.due_at is not None and now >= task.due_at:
        return _timed_out(session, task, now)
    if task.remind_at is not None and task.reminded_at is None and now >= task.remind_at:
        task.reminded_at = now
        tasks.close_notifications(session, task)  # let the same people be told again
        told = tasks.announce(session, task)
        return _waiting(task, {"reminded": told})
    return _waiting(task, {})


def _waiting(task: Task, event: dict[str, Any]) -> Outcome:
    return Outcome(task_id=task.id, waiting=True, wake_at=tasks.next_timer(task), event=event)


def _create(session: Session, ask: StepAsk, request: ApprovalRequest, now: dt.datetime) -> Task:
    identity = ask.subject.get("identity") or {}
    task = Task(
        kind=TaskKind.APPROVAL,
        status=TaskStatus.PENDING,
        run_id=ask.run_id,
        step_run_id=ask.step_run_id,
        step_id=ask.step_id,
        workflow_id=ask.workflow_id or "",
        title=request.title,
        instructions=request.instructions,
        requester=ask.requester,
        subject_email=(identity.get("email") or None),
        stages=request.stages,
        current_stage=0,
        require_justification=request.require_justification,
        due_at=now + request.timeout if request.timeout else None,
        remind_at=(
            now + request.timeout - request.remind_before
            if request.timeout and request.remind_before
            else None
        ),
        timeout_action=request.on_timeout,
        fallback=request.escalate_to,
    )
    session.add(task)
    session.flush()
    _route_stage(session, task, 0, origin="step")
    audit.record(
        session, ENGINE, "task.created", "task", task.id, {"kind": task.kind, "run": ask.run_id}
    )
    return task


def _route_stage(session: Session, task: Task, stage: int, origin: str) -> None:
    spec = task.stages[stage]
    routed = routing.resolve(session, spec.get("users", []), spec.get("roles", []))
    tasks.add_assignees(session, task, stage, routed.user_ids, routed.roles, origin)
    task.routing_problem = "; ".join(routed.problems) or None
    tasks.announce(session, task)


def _output(session: Session, task: Task) -> dict[str, Any]:
    rows = tasks.decisions(session, task)
    return {
        "approved": True,
        "task_id": task.id,
        "approvers": [d.actor for d in rows if d.decision in ("approve", "auto_approve")],
        "decisions": [
            {"by": d.actor, "decision": d.decision, "comment": d.comment, "stage": d.stage + 1}
            for d in rows
        ],
    }


def _timed_out(session: Session, task: Task, now: dt.datetime) -> Outcome:
    action = task.timeout_action
    if action == "escalate" and task.escalated_at is None and task.fallback:
        task.escalated_at = now
        task.due_at = None  # escalated once: the fallback approvers have until the deadline
        if task.reminded_at is None:  # (a reminder not sent yet is moot after the timeout)
            task.remind_at = None
        routed = routing.resolve(
            session, task.fallback.get("users", []), task.fallback.get("roles", [])
        )
        tasks.add_assignees(
            session, task, task.current_stage, routed.user_ids, routed.roles, "fallback"
        )
        task.routing_problem = "; ".join(routed.problems) or None
        told = tasks.announce(session, task)
        audit.record(session, ENGINE, "task.escalated", "task", task.id, {"to": told})
        return _waiting(task, {"escalated_to": told})
    decision = "auto_approve" if action == "approve" else "auto_reject"
    session.add(
        TaskDecision(
            task_id=task.id,
            stage=task.current_stage,
            user_id=None,
            actor="system:timeout",
            decision=decision,
            comment=f"no decision before the timeout ({task.due_at:%Y-%m-%d %H:%M}Z)",
            via="timeout",
        )
    )
    finish(session, task, approved=action == "approve", by="system:timeout", comment=None)
    if action == "approve":
        return Outcome(task_id=task.id, output=_output(session, task))
    return Outcome(
        task_id=task.id,
        rejected="rejected automatically: no approver decided before the timeout",
        next_action="re-request it, or give the workflow's approval a longer timeout",
    )


def finish(session: Session, task: Task, *, approved: bool, by: str, comment: str | None) -> None:
    task.status = TaskStatus.APPROVED if approved else TaskStatus.REJECTED
    task.decided_by = by
    task.decided_at = utcnow()
    task.comment = comment
    tasks.close_notifications(session, task)


def stage_complete(session: Session, task: Task) -> bool:
    """Have the approvals of the current stage met its policy?"""
    spec = task.stages[task.current_stage]
    approvals = [
        d
        for d in tasks.decisions(session, task)
        if d.stage == task.current_stage and d.decision == "approve"
    ]
    if task.escalated_at is not None and _by_fallback(session, task, approvals):
        return True
    policy = spec.get("policy", "any")
    if policy == "any":
        return len(approvals) >= 1
    if policy == "n_of_m":
        return len(approvals) >= int(spec.get("required") or 1)
    # all: every named user, and one member of every named role
    approvers = {d.user_id for d in approvals}
    rows = routing.assignees(session, task)
    for row in rows:
        if row.user_id and row.user_id not in approvers:
            return False
    from grantflow.auth.models import User

    for row in rows:
        if row.role:
            members = {
                d.user_id
                for d in approvals
                if (u := session.get(User, d.user_id or "")) is not None and row.role in u.roles
            }
            if not members:
                return False
    return True


def _by_fallback(session: Session, task: Task, approvals: list[TaskDecision]) -> bool:
    """After an escalation a fallback approver decides in place of the approvers who did not
    answer in time: one approval of theirs settles the stage, whatever its policy."""
    from grantflow.auth.models import User

    rows = [r for r in routing.assignees(session, task) if r.origin == "fallback"]
    users = {r.user_id for r in rows if r.user_id}
    roles = {r.role for r in rows if r.role}
    for decision in approvals:
        if decision.user_id in users:
            return True
        user = session.get(User, decision.user_id or "")
        if user is not None and roles & set(user.roles):
            return True
    return False


def next_stage(session: Session, task: Task) -> bool:
    """Move to the next stage if there is one (and route it); False when this was the last."""
    if task.current_stage + 1 >= len(task.stages):
        return False
    tasks.close_notifications(session, task)
    task.current_stage += 1
    _route_stage(session, task, task.current_stage, origin="step")
    return True
