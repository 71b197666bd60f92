"""Control evaluation ("control packs"): built-in controls evaluated over Grantflow's own
inventory — identities, grants, workflows, connections, credentials, approvals, runs and
reconciliation reports.

Each control passes or fails with a list of findings; each finding names the object to fix
(`object_type`, `object_id`), links to it in the API (`link`) and says in plain words what is
wrong and what to do (`detail`). Controls take parameters with defaults (hours, days), which an
evaluation — a request, or a `control_evaluation` job's config — may override:

    {"controls": ["leavers_with_active_grants", ...], "params": {"approvals_pending": {"days": 3}}}

Every evaluation is stored. A control that fails raises one `control_failed` notification,
deduplicated per control until the control passes again, which resolves it.

The controls themselves, with their parameters, are in `control_checks`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import NotFound, ValidationError
from grantflow.governance.control_checks import API, BY_ID, Control
from grantflow.governance.models import ControlEvaluation
from grantflow.people.notifications import NotificationKind, notify, resolve
from grantflow.queue.interface import Queue
from grantflow.schedules import runners
from grantflow.schedules.models import Job, Occurrence
from grantflow.store.base import utcnow
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import Page, decode_cursor, page_of

MAX_FINDINGS = 500  # kept per control in an evaluation; `finding_count` has the full number
_HISTORY = 50  # evaluations looked back through for a control's previous outcome


# --- what to evaluate -------------------------------------------------------------------------


class EvaluationRequest(BaseModel):
    """Which controls to evaluate (all when omitted) and parameter overrides per control."""

    model_config = ConfigDict(extra="forbid")

    controls: list[str] | None = Field(
        None, description="control ids to evaluate; all when omitted", max_length=50
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='overrides per control, e.g. {"approvals_pending": {"days": 3}}',
    )


@dataclass(frozen=True)
class Selection:
    controls: list[Control]
    params: dict[str, dict[str, int]]  # every selected control's effective parameters

    def as_dict(self) -> dict[str, Any]:
        return {"controls": [c.id for c in self.controls], "params": self.params}


def _path(where: str, *parts: str) -> str:
    return ".".join(p for p in (where, *parts) if p)


def _invalid(where: str, message: str) -> ValidationError:
    return ValidationError(f"{where}: {message}", details=[{"field": where, "message": message}])


def select_controls(raw: EvaluationRequest | dict[str, Any] | None, where: str) -> Selection:
    """Validate a selection; errors name the field (`where` is the prefix, e.g. body)."""
    if raw is None:
        request = EvaluationRequest()
    elif isinstance(raw, EvaluationRequest):
        request = raw
    else:
        if not isinstance(raw, dict):
            raise _invalid(where or "config", "must be an object with controls and params")
        unknown = sorted(set(raw) - set(EvaluationRequest.model_fields))
        if unknown:
            raise _invalid(
                _path(where, unknown[0]), "unknown field; the fields are controls and params"
            )
        controls, params = raw.get("controls"), raw.get("params") or {}
        if controls is not None and (
            not isinstance(controls, list) or not all(isinstance(c, str) for c in controls)
        ):
            raise _invalid(_path(where, "controls"), "must be a list of control ids")
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise _invalid(_path(where, "params"), "must map control ids to objects of parameters")
        request = EvaluationRequest(controls=controls, params=params)
    known = ", ".join(BY_ID)
    ids = list(BY_ID) if request.controls is None else request.controls
    if not ids:
        raise _invalid(_path(where, "controls"), "name at least one control (or omit it for all)")
    for n, control_id in enumerate(ids):
        if control_id not in BY_ID:
            raise _invalid(
                _path(where, "controls", str(n)), f"unknown control {control_id!r}; known: {known}"
            )
    chosen = [BY_ID[c] for c in dict.fromkeys(ids)]
    for control_id, overrides in request.params.items():
        if control_id not in BY_ID:
            raise _invalid(
                _path(where, "params", control_id),
                f"unknown control {control_id!r}; known: {known}",
            )
        if control_id not in {c.id for c in chosen}:
            raise _invalid(
                _path(where, "params", control_id), f"control {control_id!r} is not being evaluated"
            )
        names = {p.name: p for p in BY_ID[control_id].params}
        for name, value in overrides.items():
            at = _path(where, "params", control_id, name)
            if name not in names:
                takes = ", ".join(names) or "no parameters"
                raise _invalid(at, f"unknown parameter; control {control_id!r} takes {takes}")
            param = names[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise _invalid(at, f"must be a whole number of {param.unit}")
            if not param.minimum <= value <= param.maximum:
                raise _invalid(
                    at, f"must be between {param.minimum} and {param.maximum} {param.unit}"
                )
    effective = {
        c.id: {p.name: int(request.params.get(c.id, {}).get(p.name, p.default)) for p in c.params}
        for c in chosen
    }
    return Selection(chosen, effective)


# --- evaluating -------------------------------------------------------------------------------


def _dedup_key(control_id: str) -> str:
    return f"{NotificationKind.CONTROL_FAILED}:{control_id}"


def _previous_outcomes(session: Session, wanted: Iterable[str]) -> dict[str, bool]:
    """Each control's outcome in the latest earlier evaluation that included it: from each
    evaluation's controls and the failing ones, without its findings (a megabyte each)."""
    remaining = set(wanted)
    found: dict[str, bool] = {}
    recent = session.execute(
        select(ControlEvaluation.params, ControlEvaluation.summary)
        .order_by(ControlEvaluation.created_at.desc(), ControlEvaluation.id.desc())
        .limit(_HISTORY)
    )
    for params, summary in recent:
        failing = set((summary or {}).get("failed_controls") or [])
        for control_id in (params or {}).get("controls") or []:
            if control_id in remaining:
                found[control_id] = control_id not in failing
                remaining.discard(control_id)
        if not remaining:
            break
    return found


def evaluate(
    session: Session,
    actor: Actor,
    params: EvaluationRequest | dict[str, Any] | None = None,
    *,
    job_id: str | None = None,
    where: str = "body",
    now: dt.datetime | None = None,
) -> ControlEvaluation:
    """Evaluate the selected controls, store the evaluation, notify about controls that
    started failing and resolve the notifications of controls that pass again."""
    actor.require(Permission.JOB_MANAGE)
    selection = select_controls(params, where)
    now = now or utcnow()
    previous = _previous_outcomes(session, (c.id for c in selection.controls))
    results: list[dict[str, Any]] = []
    for control in selection.controls:
        findings = control.check(session, now, selection.params[control.id])
        results.append(
            {
                "control": control.id,
                "title": control.title,
                "passed": not findings,
                "params": selection.params[control.id],
                "finding_count": len(findings),
                "truncated": len(findings) > MAX_FINDINGS,
                "findings": findings[:MAX_FINDINGS],
                "previously_passed": previous.get(control.id),
            }
        )
    failed = [r["control"] for r in results if not r["passed"]]
    evaluation = ControlEvaluation(
        job_id=job_id,
        params=selection.as_dict(),
        summary={
            "controls": len(results),
            "passed": len(results) - len(failed),
            "failed": len(failed),
            "findings": sum(r["finding_count"] for r in results),
            "failed_controls": failed,
            "newly_failed": [
                r["control"]
                for r in results
                if not r["passed"] and previous.get(r["control"]) is not False
            ],
        },
        results=results,
        created_by=actor.label,
        created_at=now,
    )
    session.add(evaluation)
    session.flush()
    link = f"{API}/controls/evaluations/{evaluation.id}"
    for result in results:
        key = _dedup_key(result["control"])
        if result["passed"]:
            resolve(session, key)
            continue
        first = result["findings"][0]["detail"] if result["findings"] else ""
        notify(
            session,
            NotificationKind.CONTROL_FAILED,
            key,
            f"Control failed: {result['title']} ({result['finding_count']} finding(s))",
            body=f"{first}"
            + (" …and more" if result["finding_count"] > 1 else "")
            + f". See {link}",
            target_type="control_evaluation",
            target_id=evaluation.id,
            control=result["control"],
            findings=result["finding_count"],
            link=link,
        )
    audit.record(
        session,
        actor,
        "control.evaluated",
        "control_evaluation",
        evaluation.id,
        {
            "controls": [c.id for c in selection.controls],
            # (keys naming "pass" are redacted from audit summaries: ok / failing instead)
            "ok": evaluation.summary["passed"],
            "failing": evaluation.summary["failed"],
            "failing_controls": failed,
            "job_id": job_id,
        },
    )
    return evaluation


def get_evaluation(session: Session, evaluation_id: str) -> ControlEvaluation:
    """By id, or `latest` for the newest one."""
    if evaluation_id == "latest":
        found = session.execute(
            select(ControlEvaluation)
            .order_by(ControlEvaluation.created_at.desc(), ControlEvaluation.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    else:
        found = session.get(ControlEvaluation, evaluation_id) or by_prefix(
            session, ControlEvaluation, evaluation_id, "control evaluation"
        )
    if found is None:
        raise NotFound(
            f"control evaluation {evaluation_id} does not exist",
            target_type="control_evaluation",
            target_id=evaluation_id,
        )
    return found


def list_evaluations(
    session: Session, *, job_id: str | None = None, cursor: str | None = None, limit: int = 50
) -> Page[ControlEvaluation]:
    """Newest first."""
    stmt = select(ControlEvaluation)
    if job_id:
        stmt = stmt.where(ControlEvaluation.job_id == job_id)
    before = decode_cursor(cursor, str)
    if before is not None:
        stmt = stmt.where(ControlEvaluation.id < before)
    # (a list shows summaries: each evaluation's findings stay unread, a megabyte each)
    stmt = stmt.options(defer(ControlEvaluation.results))
    rows = (
        session.execute(stmt.order_by(ControlEvaluation.id.desc()).limit(limit + 1)).scalars().all()
    )
    return page_of(rows, limit, key=lambda e: e.id)


def view(evaluation: ControlEvaluation, *, results: bool = True) -> dict[str, Any]:
    summary = dict(evaluation.summary or {})
    shown: dict[str, Any] = {
        "id": evaluation.id,
        "job_id": evaluation.job_id,
        "passed": not summary.get("failed"),
        "summary": summary,
        "params": evaluation.params or {},
        "created_by": evaluation.created_by,
        "created_at": evaluation.created_at,
        "link": f"{API}/controls/evaluations/{evaluation.id}",
    }
    if results:
        shown["results"] = list(evaluation.results or [])
    return shown


# --- the control_evaluation job ---------------------------------------------------------------

_SCHEDULER = Actor.system("scheduler")


def _check(config: dict[str, Any]) -> None:
    select_controls(config or {}, "body.config")


def _run(session: Session, queue: Queue, job: Job, occurrence: Occurrence) -> runners.Result:
    evaluation = evaluate(session, _SCHEDULER, job.config or {}, job_id=job.id, where="body.config")
    outcome = "failed" if evaluation.summary.get("failed") else "succeeded"
    return runners.Result("control_evaluation", evaluation.id, outcome)


runners.register("control_evaluation", runners.Runner(_check, _run))
