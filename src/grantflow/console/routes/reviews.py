"""/reviews: a reviewer's queue (keep or revoke each grant, with a comment) and the campaigns
with their progress; a campaign's items, its report, and Close for owners (job:manage)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission, Role, permissions_for
from grantflow.console.guard import Page
from grantflow.console.routes.grants import application_choices
from grantflow.console.tables import Column, Table
from grantflow.console.templating import render
from grantflow.console.views import (
    back_to,
    choice,
    database,
    form_model,
    next_page,
    perform,
    services,
    yes_no,
)
from grantflow.governance import review_decisions as decisions
from grantflow.governance import review_queries as queries
from grantflow.governance import reviews
from grantflow.governance.review_config import (
    DECIDER,
    Decision,
    ReviewConfig,
    ReviewerKind,
    ReviewStatus,
)
from grantflow.store.pagination import DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)

CAMPAIGNS = Table(
    columns=(
        Column("Campaign", "name", "link", link="url"),
        Column("Status", "status", "chip"),
        Column("Decided", "decided_text"),
        Column("Keep", "keep"),
        Column("Revoke", "revoke"),
        Column("Unassigned", "unassigned"),
        Column("Ends", "ends_at", "when"),
    ),
    empty="No access reviews yet.",
)


def _campaign_row(view: dict[str, Any]) -> dict[str, Any]:
    progress = view["progress"]
    return {
        **view,
        **{
            k: progress[k]
            for k in ("keep", "revoke", "unassigned", "percent", "pending", "revocations_pending")
        },
        "url": f"/reviews/{view['id']}",
        "decided_text": f"{progress['decided']} of {progress['total']} ({progress['percent']:g}%)",
    }


def _item_row(view: dict[str, Any]) -> dict[str, Any]:
    who = view["identity"]
    return {
        **view,
        "who": who.get("display_name") or who.get("email") or who["id"],
        "who_email": who.get("email"),
        "app": view["application"].get("name") or view["application"]["id"],
        "grant_url": f"/grants/{view['grant_id']}",
        "identity_url": f"/identities/{who['id']}",
        "decide_url": f"/reviews/{view['review_id']}/items/{view['id']}/decide",
    }


def _viewer(session: Session, actor: Actor) -> User | None:
    return session.get(User, actor.user_id) if actor.user_id else None


@router.get("/reviews")
def list_page(
    request: Request,
    status: str = Query("", max_length=20),
    cursor: str | None = Query(None, max_length=500),
    actor: Actor = Depends(Page(Permission.JOB_READ)),
) -> Response:
    """My queue (items I can decide now) and every campaign with its progress."""
    with database(request).transaction() as session:
        user = _viewer(session, actor)
        queue = []
        if user is not None and Permission.WORKFLOW_TASK in actor.permissions:
            mine = queries.inbox(session, user, limit=DEFAULT_LIMIT)
            queue = [_item_row(v) for v in queries.item_views(session, mine.items, user)]
        page = queries.list_reviews(
            session,
            status=choice(status, ReviewStatus, "status"),
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        rows = [_campaign_row(queries.review_view(session, r)) for r in page.items]
        apps = application_choices(session) if Permission.JOB_MANAGE in actor.permissions else []
    context = {
        "queue": queue,
        "table": CAMPAIGNS,
        "rows": CAMPAIGNS.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "filters": {"status": status},
        "statuses": [s.value for s in ReviewStatus],
        "applications": apps,
        "reviewer_kinds": [k.value for k in ReviewerKind],
        "deciding_roles": [r.value for r in Role if DECIDER in permissions_for([r])],
    }
    return render(request, "reviews/list.html", context)


@router.get("/reviews/{review_id}")
def detail_page(
    review_id: str,
    request: Request,
    pending: str = Query("", max_length=5),
    cursor: str | None = Query(None, max_length=500),
    actor: Actor = Depends(Page(Permission.JOB_READ)),
) -> Response:
    """A campaign: progress, its items (keep / revoke where I am a reviewer), Close."""
    with database(request).transaction() as session:
        review = queries.get_review(session, review_id)
        user = _viewer(session, actor)
        page = queries.list_items(
            session,
            review,
            pending=yes_no(pending, "pending"),
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        items = [_item_row(v) for v in queries.item_views(session, page.items, user)]
        context = {
            "review": _campaign_row(queries.review_view(session, review)),
            "items": items,
            "next_url": next_page(request, page.next_cursor),
            "filters": {"pending": pending},
        }
    return render(request, "reviews/detail.html", context)


@router.get("/reviews/{review_id}/report.csv")
def report(
    review_id: str, request: Request, _: Actor = Depends(Page(Permission.JOB_READ))
) -> Response:
    """Every item and its decision, as CSV (the API's report)."""
    with database(request).transaction() as session:
        review = queries.get_review(session, review_id)
        text = queries.report_csv(session, review)
        name = queries.report_name(review)
    return Response(
        content=text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


class _DecisionForm(BaseModel):  # the API's DecisionIn, from a form
    decision: Decision
    comment: str | None = None


@router.post("/reviews/{review_id}/items/{item_id}/decide")
def decide(
    review_id: str,
    item_id: str,
    request: Request,
    decision: str = Form("", max_length=20),
    comment: str = Form("", max_length=5000),
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.WORKFLOW_TASK)),
) -> Response:
    """Keep or revoke one grant; revoke revokes it at once."""

    def work(session: Session) -> str:
        body = form_model(_DecisionForm, decision=decision, comment=comment)
        item = decisions.decide(
            session,
            actor,
            services(request).queue,
            item_id,
            body.decision,
            body.comment,
            review_id=review_id,
        )
        view = _item_row(queries.item_view(session, item))
        verb = "kept" if body.decision == Decision.KEEP else "revoked"
        return f"{view['who']}'s access to {view['app']} is {verb}."

    return perform(request, back_to(next, f"/reviews/{review_id}"), work)


@router.post("/reviews/{review_id}/close")
def close(
    review_id: str, request: Request, actor: Actor = Depends(Page(Permission.JOB_MANAGE))
) -> Response:
    """End the campaign now: undecided items get its default decision."""

    def work(session: Session) -> str:
        review = reviews.close(session, actor, services(request).queue, review_id)
        if review.status == ReviewStatus.CLOSING:
            return (
                f"Access review {review.name} is closing: its decisions are final, and the "
                "workers revoke the grants that defaulted to revoke in batches."
            )
        return f"Access review {review.name} is closed."

    return perform(request, f"/reviews/{review_id}", work)


def _lines(text: str) -> list[str]:
    """A text area's entries, one per line or comma-separated."""
    return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]


@router.post("/reviews")
def start(
    request: Request,
    name: str = Form("", max_length=150),
    applications: list[str] = Form([]),
    reviewer: str = Form("", max_length=40),
    users: str = Form("", max_length=20_000),
    roles: list[str] = Form([]),
    fallback_users: str = Form("", max_length=20_000),
    fallback_roles: list[str] = Form([]),
    duration: str = Form("", max_length=40),
    default_decision: str = Form("", max_length=10),
    require_justification_for_keep: str = Form("", max_length=10),
    actor: Actor = Depends(Page(Permission.JOB_MANAGE)),
) -> Response:
    """Start a campaign by hand (as POST /api/v1/reviews): one item per active grant in
    scope, routed to its reviewers; on to the campaign's page."""

    def work(session: Session) -> tuple[str, str]:
        values: dict[str, Any] = {
            "name": name,
            "scope": {"applications": applications},
            "reviewer": reviewer,
            "users": _lines(users),
            "roles": roles,
            "fallback": {"users": _lines(fallback_users), "roles": fallback_roles},
            "require_justification_for_keep": bool(require_justification_for_keep),
        }
        if duration.strip():
            values["duration"] = duration.strip()
        if default_decision:
            values["default_decision"] = default_decision
        config = form_model(ReviewConfig, **values)
        review = reviews.start_review(session, actor, services(request).queue, config)
        items = queries.progress(session, review)["total"]
        started = f"Access review {review.name} started: {items} item{'s' * (items != 1)}."
        return started, f"/reviews/{review.id}"

    return perform(request, "/reviews", work)
