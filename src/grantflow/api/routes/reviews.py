"""/api/v1/reviews: access reviews (certification campaigns) — start, follow, decide, close,
and the CSV report of every decision."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from grantflow.api.idempotency import Idempotency, idempotency
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.errors import BadRequest, PermissionDenied
from grantflow.governance import review_decisions as decisions
from grantflow.governance import review_queries as queries
from grantflow.governance import reviews
from grantflow.governance.review_config import Decision, ReviewConfig, ReviewStatus
from grantflow.queue.interface import Queue
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=f"{API_PREFIX}/reviews", tags=["reviews"])

Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision
    comment: Comment | None = Field(None, description="why; required to keep when configured")


class ProgressOut(BaseModel):
    total: int
    decided: int
    keep: int
    revoke: int
    pending: int
    defaulted: int
    fallback: int
    unassigned: int
    percent: float
    revocations_pending: int = Field(
        description="closing: grants that defaulted to revoke and the workers have yet to revoke"
    )


class ReviewOut(BaseModel):
    id: str
    name: str
    job_id: str | None
    status: ReviewStatus
    scope: dict[str, Any]
    reviewers: dict[str, Any]
    default_decision: Decision
    require_justification_for_keep: bool
    remind_before: str | None
    reminded_at: dt.datetime | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    closed_at: dt.datetime | None
    closed_by: str | None
    revocations_error: str | None = Field(
        description="closing: why the last batch of default revocations failed (none revoked)"
    )
    revocations_retry_at: dt.datetime | None = Field(
        description="closing: when the workers try that batch again"
    )
    created_by: str
    created_at: dt.datetime
    progress: ProgressOut
    report: str


class ItemOut(BaseModel):
    id: str
    review_id: str
    grant_id: str
    grant_status: str | None
    identity: dict[str, Any]
    application: dict[str, Any]
    role: str | None
    reviewers: list[str] = Field(description="emails of users, and role:<name> for roles")
    reviewer_source: str = Field(description="manager | owner | named | fallback")
    routing_problem: str | None
    decision: Decision | None
    decided_by: str | None
    decided_at: dt.datetime | None
    comment: str | None
    defaulted: bool
    revoked: bool
    decide: str
    review: dict[str, Any] | None = None
    can_decide: bool | None = Field(None, description="whether the caller may decide it now")


def _user(session: Session, actor: Actor) -> User | None:
    return session.get(User, actor.user_id) if actor.user_id else None


def _review_out(session: Session, review: Any) -> ReviewOut:
    return ReviewOut.model_validate(queries.review_view(session, review))


@router.post("", status_code=201, response_model=ReviewOut)
def start_review(
    body: ReviewConfig,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Start a campaign by hand: one item per active grant in scope, routed to reviewers.
    With an Idempotency-Key, a retry of the same request returns the same campaign."""
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            201,
            lambda: _review_out(session, reviews.start_review(session, actor, q, body)),
        )


@router.get("", response_model=PageOut[ReviewOut])
def list_reviews(
    status: ReviewStatus | None = Query(None),
    job_id: str | None = Query(None, max_length=36),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> PageOut[ReviewOut]:
    """Campaigns, newest first."""
    with db.transaction() as session:
        page = queries.list_reviews(
            session, status=status, job_id=job_id, cursor=cursor, limit=limit
        )
        return PageOut(
            items=[_review_out(session, r) for r in page.items], next_cursor=page.next_cursor
        )


@router.get("/inbox", response_model=PageOut[ItemOut])
def review_inbox(
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    actor: Actor = Depends(Require(Permission.WORKFLOW_TASK)),
    db: Database = Depends(database),
) -> PageOut[ItemOut]:
    """My pending review items across open campaigns (never my own access)."""
    with db.transaction() as session:
        user = _user(session, actor)
        if user is None:
            raise PermissionDenied("the review inbox belongs to a user; use a user's API token")
        page = queries.inbox(session, user, cursor=cursor, limit=limit)
        return PageOut(
            items=[
                ItemOut.model_validate(v) for v in queries.item_views(session, page.items, user)
            ],
            next_cursor=page.next_cursor,
        )


@router.get("/{review_id}", response_model=ReviewOut)
def get_review(
    review_id: str,
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> ReviewOut:
    """A campaign and its progress."""
    with db.transaction() as session:
        return _review_out(session, queries.get_review(session, review_id))


@router.get("/{review_id}/items", response_model=PageOut[ItemOut])
def list_items(
    review_id: str,
    pending: bool | None = Query(None, description="true: undecided; false: decided"),
    mine: bool = Query(False, description="only items I can decide now"),
    decision: Decision | None = Query(None),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    actor: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> PageOut[ItemOut]:
    with db.transaction() as session:
        review = queries.get_review(session, review_id)
        viewer = _user(session, actor)
        if mine and viewer is None:
            raise BadRequest(
                "mine: only a user's token has items of its own",
                details=[{"field": "query.mine", "message": "needs a user's token"}],
            )
        page = queries.list_items(
            session,
            review,
            pending=pending,
            mine=viewer if mine else None,
            decision=decision,
            cursor=cursor,
            limit=limit,
        )
        return PageOut(
            items=[
                ItemOut.model_validate(v) for v in queries.item_views(session, page.items, viewer)
            ],
            next_cursor=page.next_cursor,
        )


@router.post("/items/{item_id}/decide", response_model=ItemOut)
def decide_item(
    item_id: str,
    body: DecisionIn,
    actor: Actor = Depends(Require(Permission.WORKFLOW_TASK)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> ItemOut:
    """The same decision, by the item's id alone (or a unique prefix of it)."""
    with db.transaction() as session:
        item = decisions.decide(session, actor, q, item_id, body.decision, body.comment)
        return ItemOut.model_validate(queries.item_view(session, item, _user(session, actor)))


@router.post("/{review_id}/items/{item_id}/decide", response_model=ItemOut)
def decide(
    review_id: str,
    item_id: str,
    body: DecisionIn,
    actor: Actor = Depends(Require(Permission.WORKFLOW_TASK)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> ItemOut:
    """Keep or revoke one grant (assigned reviewers only; never one's own access). Revoke
    revokes the grant at once, which starts the application's access_revoked workflows."""
    with db.transaction() as session:
        item = decisions.decide(
            session, actor, q, item_id, body.decision, body.comment, review_id=review_id
        )
        return ItemOut.model_validate(queries.item_view(session, item, _user(session, actor)))


@router.post("/{review_id}/close", response_model=ReviewOut)
def close_review(
    review_id: str,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> ReviewOut:
    """End the campaign now: undecided items get its default decision (revoke revokes)."""
    with db.transaction() as session:
        return _review_out(session, reviews.close(session, actor, q, review_id))


@router.get(
    "/{review_id}/report.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per item"}},
)
def review_report(
    review_id: str,
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> Response:
    """Every item and its decision as CSV: item_id, grant_id, identity_email, identity_name,
    application, role, reviewers, reviewer_source, routing_problem, decision, decided_by,
    decided_at, comment, defaulted, revoked."""
    with db.transaction() as session:
        review = queries.get_review(session, review_id)
        text = queries.report_csv(session, review)
        name = queries.report_name(review)
    return Response(
        content=text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
