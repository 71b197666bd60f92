"""Failure reasons: the class, code, message, step and next action every failed, timed-out or
cancelled run carries. The next action's words and operation come from the advice table
(`grantflow.advice`); the run detail renders the operation as a concrete action."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import advice
from grantflow.engine.models import Run, StepRun
from grantflow.engine.states import StepStatus
from grantflow.errors import ConnectorError, FailureClass, GrantflowError

if TYPE_CHECKING:
    from grantflow.definitions.plan import Plan


_LIMIT_FIELDS = ("limit", "limit_value", "setting")


def reason(
    failure_class: str,
    code: str,
    message: str,
    next_action: str,
    step_id: str | None = None,
    *,
    situation: advice.Situation | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A failure reason; `next_action` is the raise site's words, which the table's entry for
    `code` may complete or replace."""
    advised = advice.advise(
        code,
        failure_class=failure_class,
        status_code=extra.get("status_code"),
        hint=next_action or None,
        situation=situation,
    )
    return {
        "class": failure_class,
        "code": code,
        "message": message,
        "step_id": step_id,
        **advised,
        **extra,
    }


def from_error(
    exc: BaseException,
    step_id: str | None,
    exhausted: bool,
    situation: advice.Situation | None = None,
) -> dict[str, Any]:
    """The failure reason for a step that raised `exc`."""
    if isinstance(exc, GrantflowError):
        extra: dict[str, Any] = {}
        if isinstance(exc, ConnectorError) and exc.status_code is not None:
            extra["status_code"] = exc.status_code
        # an abuse limit names itself: which limit, its value, the setting that raises it
        extra.update({k: v for k, v in exc.extra.items() if k in _LIMIT_FIELDS})
        passing = exc.failure_class in (FailureClass.TRANSIENT, FailureClass.TIMEOUT)
        if passing and not exhausted:
            # not a run's failure (yet): the step retries by itself, nothing to offer
            return {
                "class": str(exc.failure_class),
                "code": exc.code,
                "message": exc.message,
                "step_id": step_id,
                "advice": None,
                "next_action": exc.next_action or "the step retries by itself",
                "operation": None,
                **extra,
            }
        return reason(
            str(exc.failure_class),
            exc.code,
            exc.message,
            exc.next_action or "",
            step_id,
            situation=situation,
            **extra,
        )
    return reason(
        FailureClass.INTERNAL,
        "internal_error",
        f"unexpected {type(exc).__name__} while running the step",
        "report this fault with the run id; the timeline shows where it happened",
        step_id,
    )


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, GrantflowError) and exc.failure_class in (
        FailureClass.TRANSIENT,
        FailureClass.TIMEOUT,
    )


def irreversible_steps_done(session: Session, run: Run, plan: Plan | None) -> tuple[str, ...]:
    """Steps of `run` that acted on an external system and cannot be undone, in order. A step
    the plan does not describe counts as irreversible: nothing proves it can be undone. The one
    rule both the advice (which action can work) and Replay with latest (refused) apply."""
    done = session.execute(
        select(StepRun.step_id)
        .where(
            StepRun.run_id == run.id,
            StepRun.status == StepStatus.SUCCEEDED,
            StepRun.side_effects.is_(True),
        )
        .order_by(StepRun.sequence)
    ).scalars()
    steps = plan.steps if plan is not None else {}
    return tuple(
        sid for sid in dict.fromkeys(done) if sid not in steps or not steps[sid].reversible
    )


def situation_of(session: Session, run: Run, plan: Plan | None = None) -> advice.Situation:
    """The facts about `run` that decide which action can work (see grantflow.advice)."""
    irreversible = irreversible_steps_done(session, run, plan)
    grant = (run.subject or {}).get("grant") or {}
    return advice.Situation(irreversible_done=irreversible, grant_id=grant.get("id"))
