"""/api/v1/controls: the catalogue of built-in controls, evaluating them, and the stored
evaluations with their findings (each linking to the object to fix)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from grantflow.api.idempotency import Idempotency, idempotency
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.governance import controls as service
from grantflow.governance.control_checks import catalogue
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=f"{API_PREFIX}/controls", tags=["controls"])


class ParamOut(BaseModel):
    name: str
    default: int
    minimum: int
    maximum: int
    unit: str
    description: str


class ControlOut(BaseModel):
    id: str
    title: str
    description: str
    params: list[ParamOut]


class EvaluationSummaryOut(BaseModel):
    id: str
    job_id: str | None
    passed: bool
    summary: dict[str, Any]
    params: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    link: str


class EvaluationOut(EvaluationSummaryOut):
    results: list[dict[str, Any]]


@router.get("", response_model=list[ControlOut])
def list_controls(_: Actor = Depends(Require(Permission.JOB_READ))) -> list[ControlOut]:
    """Every built-in control with its parameters and their defaults."""
    return [ControlOut.model_validate(c) for c in catalogue()]


@router.post("/evaluate", status_code=201, response_model=EvaluationOut)
def evaluate(
    body: service.EvaluationRequest | None = None,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Evaluate the controls (all, or `controls`) with optional parameter overrides; the
    stored evaluation, each control passed or failed with its findings. With an
    Idempotency-Key, a retry of the same request returns the same evaluation."""
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            201,
            lambda: EvaluationOut.model_validate(
                service.view(service.evaluate(session, actor, body))
            ),
        )


@router.get("/evaluations", response_model=PageOut[EvaluationSummaryOut])
def list_evaluations(
    job_id: str | None = Query(None, max_length=36, description="only this job's evaluations"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> PageOut[EvaluationSummaryOut]:
    """Evaluations newest first, with their summaries (the findings are on each one)."""
    with db.transaction() as session:
        page = service.list_evaluations(session, job_id=job_id, cursor=cursor, limit=limit)
        return PageOut(
            items=[
                EvaluationSummaryOut.model_validate(service.view(e, results=False))
                for e in page.items
            ],
            next_cursor=page.next_cursor,
        )


@router.get("/evaluations/{evaluation_id}", response_model=EvaluationOut)
def get_evaluation(
    evaluation_id: str,
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> EvaluationOut:
    """One evaluation with every control's findings; `latest` for the newest."""
    with db.transaction() as session:
        return EvaluationOut.model_validate(
            service.view(service.get_evaluation(session, evaluation_id))
        )
