"""/api/v1/audit"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from grantflow import audit as service
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database
from grantflow.audit import checkpoints
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT
from grantflow.strict import Timestamp

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"])


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: dt.datetime
    actor: str
    actor_id: str | None
    action: str
    target_type: str
    target_id: str | None
    summary: dict[str, Any]
    request_id: str | None
    prev_hash: str
    hash: str
    key_id: str | None


class ChainOut(BaseModel):
    ok: bool
    checked: int
    first_broken_id: int | None
    reason: str | None
    legacy_entries: int = Field(description="unkeyed entries from before the keyed chain")
    missing_triggers: list[str] = Field(description="append-only triggers missing or disabled")
    checkpoints_checked: int = Field(description="checkpoints the log was found consistent with")


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoints: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=10_000,
        description="checkpoints as written by `grantflow audit checkpoint` (signed JSON objects)",
    )


@router.get("", response_model=PageOut[AuditEntryOut])
def list_audit_entries(
    actor: str | None = Query(None, max_length=320, description="actor email or user id"),
    action: str | None = Query(
        None, max_length=100, description="e.g. application.created, or application.*"
    ),
    target_type: str | None = Query(None, max_length=60),
    target_id: str | None = Query(None, max_length=100),
    since: Timestamp | None = Query(None, description="ISO 8601, inclusive"),
    until: Timestamp | None = Query(None, description="ISO 8601, exclusive"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.AUDIT_READ)),
    db: Database = Depends(database),
) -> PageOut[AuditEntryOut]:
    with db.transaction() as session:
        page = service.query(
            session,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            since=_aware(since),
            until=_aware(until),
            cursor=cursor,
            limit=limit,
        )
        return PageOut(
            items=[AuditEntryOut.model_validate(e) for e in page.items],
            next_cursor=page.next_cursor,
        )


@router.get("/verify", response_model=ChainOut)
def verify_chain(
    _: Actor = Depends(Require(Permission.AUDIT_READ)),
    db: Database = Depends(database),
) -> ChainOut:
    with db.transaction() as session:
        return _chain_out(service.verify(session))


@router.post(
    "/verify",
    response_model=ChainOut,
    responses={422: {"description": "a checkpoint is not one Grantflow wrote"}},
)
def verify_chain_against(
    body: VerifyIn,
    _: Actor = Depends(Require(Permission.AUDIT_READ)),
    db: Database = Depends(database),
) -> ChainOut:
    """Verify the chain and that it is consistent with every checkpoint given."""
    expected = [
        checkpoints.parse(item, f"checkpoints[{n}]") for n, item in enumerate(body.checkpoints)
    ]
    with db.transaction() as session:
        return _chain_out(service.verify(session, expected))


def _chain_out(report: service.ChainReport) -> ChainOut:
    return ChainOut(
        ok=report.ok,
        checked=report.checked,
        first_broken_id=report.first_broken_id,
        reason=report.reason,
        legacy_entries=report.legacy_entries,
        missing_triggers=list(report.missing_triggers),
        checkpoints_checked=report.checkpoints_checked,
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """A time without a zone is read as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value
