"""Safety under /api/v1: resuming a workflow paused for safety, usage against the spend caps,
and setting the caps."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from grantflow import strict
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.workflows import WorkflowOut, workflow_out
from grantflow.api.security import Require
from grantflow.api.state import database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.queue.interface import Queue
from grantflow.safety import breakers, spend
from grantflow.store.database import Database

router = APIRouter(prefix=API_PREFIX, tags=["safety"])


class SpendCapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str | None = Field(
        None, max_length=100, description="a workflow's id or name; leave out for the workspace"
    )
    kind: Literal["runs", "steps", "external_calls"]
    period: Literal["day", "month"]
    cap: strict.Int | None = Field(..., ge=0, le=1_000_000_000, description="null removes the cap")


@router.post("/workflows/{workflow_id}/resume-safety", response_model=WorkflowOut)
def resume_safety(
    workflow_id: str,
    actor: Actor = Depends(Require(Permission.WORKFLOW_PUBLISH)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> WorkflowOut:
    """Resume a workflow paused for safety: its held runs go on, oldest first."""
    with db.transaction() as session:
        return workflow_out(session, breakers.resume(session, actor, q, workflow_id))


@router.get("/usage")
def get_usage(
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Runs, executed steps and external calls this day and month, against the caps."""
    with db.transaction() as session:
        return spend.usage(session)


@router.put("/spend-caps")
def set_spend_cap(
    body: SpendCapIn,
    actor: Actor = Depends(Require(Permission.WORKFLOW_PUBLISH)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    """Set or remove a cap; runs waiting on a cap the change frees go on at once."""
    with db.transaction() as session:
        return spend.set_cap(
            session,
            actor,
            q,
            workflow=body.workflow,
            kind=body.kind,
            period=body.period,
            cap=body.cap,
        )
