"""Access reviews (certification campaigns): reviewers decide, per active grant in scope,
whether the access stays (keep) or goes (revoke).

A campaign is started by hand or by a scheduled `access_review` job. Each grant in scope
becomes an item routed to its reviewers — the identity's manager, the application's owner,
named users or roles — or, when that first choice is missing, deactivated, lacks
workflow:task or is the person under review, to the configured fallback, with the reason
kept on the item. No one ever reviews their own access. A revoke decision revokes the grant
at once (reason `review`), which starts the application's access_revoked workflows. When the
campaign ends (closed by hand, or its end passes — a worker timer), every undecided item
gets the campaign's default decision. Every item and decision can be read as CSV.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access import grants as grant_service
from grantflow.access.applications import find_application
from grantflow.access.grants import GrantStatus, RevokeReason
from grantflow.access.lifecycle import LifecycleState
from grantflow.access.models import Application, Grant, Identity
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission, Role, permissions_for
from grantflow.durations import Duration, format_duration
from grantflow.errors import Conflict, NotFound, PermissionDenied, ValidationError
from grantflow.governance.models import AccessReview, ReviewItem
from grantflow.people import routing
from grantflow.people.notifications import Notification, NotificationKind, notify, resolve
from grantflow.queue.interface import Queue
from grantflow.schedules import runners
from grantflow.schedules.models import Job, Occurrence
from grantflow.store.base import utcnow
from grantflow.store.ids import by_prefix
from grantflow.store.names import name_key
from grantflow.store.pagination import Page, decode_cursor, encode_cursor
from grantflow.strict import Bool

SYSTEM = Actor.system("access-review")
DECIDER = Permission.WORKFLOW_TASK  # what deciding an item takes (as approvals do)
_SCAN = 500  # rows read per batch when filtering items in Python (reviewer lists are JSON)


class ReviewStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Decision(enum.StrEnum):
    KEEP = "keep"
    REVOKE = "revoke"


class ReviewerKind(enum.StrEnum):
    MANAGER = "manager"  # the identity's manager, as a Grantflow user (matched by e-mail)
    APPLICATION_OWNER = "application_owner"  # applications.owner_id
    USERS = "users"  # the named users
    ROLES = "roles"  # any member of the named roles


class Source(enum.StrEnum):
    """Where an item's reviewers came from (ReviewItem.reviewer_source)."""

    MANAGER = "manager"
    OWNER = "owner"
    NAMED = "named"
    FALLBACK = "fallback"


_SOURCE_OF = {
    ReviewerKind.MANAGER: Source.MANAGER,
    ReviewerKind.APPLICATION_OWNER: Source.OWNER,
    ReviewerKind.USERS: Source.NAMED,
    ReviewerKind.ROLES: Source.NAMED,
}


# --- the configuration -------------------------------------------------------------------------
def _listed(value: Any) -> Any:
    """One value or a list of them."""
    return [value] if isinstance(value, str) else value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Texts = Annotated[list[Text], BeforeValidator(_listed), Field(max_length=200)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


def _deciding_roles(roles: list[Role]) -> list[Role]:
    for role in roles:
        if DECIDER not in permissions_for([role]):
            raise ValueError(
                f"role {role} cannot decide reviews (it lacks {DECIDER}); use "
                + ", ".join(r.value for r in Role if DECIDER in permissions_for([r]))
            )
    return roles


DecidingRoles = Annotated[list[Role], Field(max_length=10)]


class IdentityFilter(BaseModel):
    """Which identities' grants are in scope; every field given must match (values of one
    field are alternatives). Text matches ignore case."""

    model_config = ConfigDict(extra="forbid")

    department: Texts = Field(default_factory=list)
    title: Texts = Field(default_factory=list)
    lifecycle_state: Annotated[list[LifecycleState], BeforeValidator(_listed)] = Field(
        default_factory=list
    )
    attributes: dict[str, str] = Field(
        default_factory=dict, max_length=20, description="identity attributes equal to these"
    )


class ReviewScope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applications: Texts = Field(
        default_factory=list, description="application names or ids; empty: every application"
    )
    roles: Annotated[
        list[Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]],
        BeforeValidator(_listed),
        Field(max_length=200),
    ] = Field(
        default_factory=list,
        description='grant roles; empty: any ("" is access to the application itself)',
    )
    identity: IdentityFilter = Field(default_factory=IdentityFilter)


class Fallback(BaseModel):
    """Who reviews an item when the first choice cannot."""

    model_config = ConfigDict(extra="forbid")

    users: Annotated[list[Email], BeforeValidator(_listed), Field(max_length=50)] = Field(
        default_factory=list, description="emails or ids of users"
    )
    roles: DecidingRoles = Field(default_factory=list)

    _roles = field_validator("roles")(_deciding_roles)

    @model_validator(mode="after")
    def _someone(self) -> Fallback:
        if not self.users and not self.roles:
            raise ValueError("name at least one fallback user or role")
        return self


class ReviewConfig(BaseModel):
    """An access review campaign, as started by hand or by an access_review job."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=150)]
    scope: ReviewScope = Field(default_factory=ReviewScope)
    reviewer: ReviewerKind = Field(..., description="who reviews each grant first")
    users: Annotated[list[Email], BeforeValidator(_listed), Field(max_length=50)] = Field(
        default_factory=list, description="reviewer: users — their emails or ids"
    )
    roles: DecidingRoles = Field(default_factory=list, description="reviewer: roles")
    fallback: Fallback = Field(..., description="when the first choice cannot review an item")
    duration: Duration = Field(dt.timedelta(days=14), description="how long the campaign runs")
    remind_before: Duration | None = Field(
        None, description="remind reviewers with pending items this long before the end"
    )
    default_decision: Decision = Field(
        Decision.KEEP, description="what undecided items get when the campaign ends"
    )
    require_justification_for_keep: Bool = False

    _roles = field_validator("roles")(_deciding_roles)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: dt.timedelta) -> dt.timedelta:
        if not dt.timedelta(minutes=1) <= value <= dt.timedelta(days=366):
            raise ValueError("must be between 1 minute and 366 days")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ReviewConfig:
        if self.reviewer == ReviewerKind.USERS and not self.users:
            raise ValueError("users: reviewer is users, so name at least one user")
        if self.reviewer == ReviewerKind.ROLES and not self.roles:
            raise ValueError("roles: reviewer is roles, so name at least one role")
        if self.remind_before is not None and not (
            dt.timedelta(0) < self.remind_before < self.duration
        ):
            raise ValueError("remind_before: must be more than 0 and less than the duration")
        return self


def parse_config(config: dict[str, Any], *, prefix: str = "body.config") -> ReviewConfig:
    """The config, or a validation error naming each wrong field."""
    try:
        return ReviewConfig.model_validate(config)
    except PydanticError as exc:
        details = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            named = re.match(r"^([a-z_]+): (.*)$", message)
            if not loc and named:  # a rule across fields names the field it is about
                loc, message = named.group(1), named.group(2)
            if err["type"] == "extra_forbidden":
                message = "unknown field; remove it (check the spelling of the field name)"
            details.append({"field": f"{prefix}.{loc}" if loc else prefix, "message": message})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        raise ValidationError(f"access review config: {summary}", details=details) from None


def check(config: dict[str, Any]) -> None:
    parse_config(config)


# --- reviewers ---------------------------------------------------------------------------------
def _same_person(email: str | None, identity: Identity) -> bool:
    """Is the user with `email` the identity under review? (emails and userName, any case)"""
    if not email:
        return False
    mine = email.strip().lower()
    return mine in {(identity.email or "").lower(), identity.user_name.lower()}


def _who(identity: Identity) -> str:
    return identity.email or identity.user_name


@dataclass
class Routed:
    user_ids: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def anyone(self) -> bool:
        return bool(self.user_ids or self.roles)


class _Resolver:
    """Resolves reviewers for many items, caching users and role members."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._users: dict[str, User | None] = {}
        self._members: dict[str, list[User]] = {}

    def user(self, key: str) -> User | None:
        if key not in self._users:
            self._users[key] = routing.find_user(self.session, key)
        return self._users[key]

    def members(self, role: str) -> list[User]:
        if role not in self._members:
            self._members[role] = routing.role_members(self.session, role, DECIDER)
        return self._members[role]

    def _user_problem(self, user: User, identity: Identity, what: str) -> str | None:
        if not user.active:
            return f"{what} {user.email} is deactivated"
        if DECIDER not in permissions_for(user.roles):
            return f"{what} {user.email} lacks the permission {DECIDER}"
        if _same_person(user.email, identity):
            return (
                f"{what} {user.email} is the identity under review "
                "(no one reviews their own access)"
            )
        return None

    def people(self, identity: Identity, users: Iterable[str], roles: Iterable[str]) -> Routed:
        """Named users (emails or ids) and roles that can review this identity's access."""
        routed = Routed()
        for key in users:
            user = self.user(key)
            if user is None:
                routed.problems.append(f"user {key!r} does not exist")
                continue
            problem = self._user_problem(user, identity, "user")
            if problem:
                routed.problems.append(problem)
            elif user.id not in routed.user_ids:
                routed.user_ids.append(user.id)
        for role in roles:
            members = self.members(role)
            others = [u for u in members if not _same_person(u.email, identity)]
            if others:
                if role not in routed.roles:
                    routed.roles.append(role)
            elif members:
                routed.problems.append(
                    f"the only member of role {role} ({members[0].email}) is the identity "
                    "under review (no one reviews their own access)"
                )
            else:
                routed.problems.append(f"no active user with {DECIDER} has the role {role}")
        return routed

    def manager(self, identity: Identity) -> Routed:
        if identity.manager_id is None:
            return Routed(problems=[f"identity {_who(identity)} has no manager"])
        boss = self.session.get(Identity, identity.manager_id)
        if boss is None:
            return Routed(problems=[f"the manager of {_who(identity)} no longer exists"])
        if not boss.active or boss.deleted_at is not None:
            return Routed(
                problems=[f"the manager {_who(boss)} is not active ({boss.lifecycle_state})"]
            )
        if not boss.email:
            return Routed(problems=[f"the manager {_who(boss)} has no email to match a user by"])
        user = self.user(boss.email)
        if user is None:
            return Routed(problems=[f"no Grantflow user has the manager's email {boss.email}"])
        problem = self._user_problem(user, identity, "the manager")
        return Routed(problems=[problem]) if problem else Routed(user_ids=[user.id])

    def owner(self, identity: Identity, app: Application) -> Routed:
        if app.owner_id is None:
            return Routed(problems=[f"application {app.name} has no owner"])
        user = self.session.get(User, app.owner_id)
        if user is None:
            return Routed(problems=[f"the owner of application {app.name} no longer exists"])
        problem = self._user_problem(user, identity, f"the owner of {app.name}")
        return Routed(problems=[problem]) if problem else Routed(user_ids=[user.id])


@dataclass
class Assignment:
    user_ids: list[str]
    roles: list[str]
    source: Source
    problem: str | None


def _assign(
    resolver: _Resolver, config: dict[str, Any], identity: Identity, app: Application
) -> Assignment:
    kind = ReviewerKind(config["reviewer"])
    if kind == ReviewerKind.MANAGER:
        first = resolver.manager(identity)
    elif kind == ReviewerKind.APPLICATION_OWNER:
        first = resolver.owner(identity, app)
    else:
        users = (config.get("users") or []) if kind == ReviewerKind.USERS else []
        roles = (config.get("roles") or []) if kind == ReviewerKind.ROLES else []
        first = resolver.people(identity, users, roles)
    if first.anyone:
        problem = "; ".join(first.problems) or None
        return Assignment(first.user_ids, first.roles, _SOURCE_OF[kind], problem)
    fallback = config.get("fallback") or {}
    second = resolver.people(identity, fallback.get("users") or [], fallback.get("roles") or [])
    why = "; ".join(first.problems) or f"no {kind} reviewer"
    problem = f"{why}: routed to the fallback reviewer"
    if not second.anyone:
        problem += (
            " — who cannot review it either ("
            + "; ".join(second.problems)
            + "); no one can decide it, so it gets the default decision when the campaign ends"
        )
    elif second.problems:
        problem += f" (not usable: {'; '.join(second.problems)})"
    return Assignment(second.user_ids, second.roles, Source.FALLBACK, problem)


def is_reviewer(user: User, item: ReviewItem) -> bool:
    """Assigned to the item (by name or by role) — never true for one's own access."""
    return user.id in (item.reviewer_user_ids or []) or any(
        role in user.roles for role in item.reviewer_roles or []
    )


def can_decide(session: Session, user: User, item: ReviewItem) -> bool:
    if item.decision is not None or not is_reviewer(user, item):
        return False
    if not user.active or DECIDER not in permissions_for(user.roles):
        return False
    identity = session.get(Identity, item.identity_id)
    return identity is not None and not _same_person(user.email, identity)


def _people_of(session: Session, resolver: _Resolver, item: ReviewItem) -> list[User]:
    """Every active user who can decide the item now."""
    identity = session.get(Identity, item.identity_id)
    assert identity is not None
    found: dict[str, User] = {}
    for user_id in item.reviewer_user_ids or []:
        user = resolver.user(user_id)
        if user is not None and user.active and DECIDER in permissions_for(user.roles):
            found.setdefault(user.id, user)
    for role in item.reviewer_roles or []:
        for user in resolver.members(role):
            found.setdefault(user.id, user)
    return [u for u in found.values() if not _same_person(u.email, identity)]


def _assignment_text(session: Session, item: ReviewItem) -> str:
    names = []
    for user_id in item.reviewer_user_ids or []:
        user = session.get(User, user_id)
        names.append(user.email if user else user_id)
    names += [f"role {r}" for r in item.reviewer_roles or []]
    source = {
        Source.MANAGER: "the identity's manager",
        Source.OWNER: "the application owner",
        Source.NAMED: "named reviewers",
        Source.FALLBACK: "the fallback reviewer",
    }.get(Source(item.reviewer_source), item.reviewer_source)
    return f"{', '.join(names) or 'no one'} ({source})"


def reviewer_labels(session: Session, item: ReviewItem) -> list[str]:
    labels = []
    for user_id in item.reviewer_user_ids or []:
        user = session.get(User, user_id)
        labels.append(user.email if user else user_id)
    return labels + [f"role:{r}" for r in item.reviewer_roles or []]


# --- starting ----------------------------------------------------------------------------------
def _in_scope(session: Session, scope: ReviewScope, app_ids: list[str]) -> list[Grant]:
    stmt = (
        select(Grant)
        .join(Identity, Identity.id == Grant.identity_id)
        .join(Application, Application.id == Grant.application_id)
        .where(Grant.status == GrantStatus.ACTIVE)
    )
    if app_ids:
        stmt = stmt.where(Grant.application_id.in_(app_ids))
    if scope.roles:
        stmt = stmt.where(Grant.role.in_(scope.roles))
    who = scope.identity
    if who.department:
        stmt = stmt.where(func.lower(Identity.department).in_([d.lower() for d in who.department]))
    if who.title:
        stmt = stmt.where(func.lower(Identity.title).in_([t.lower() for t in who.title]))
    if who.lifecycle_state:
        stmt = stmt.where(Identity.lifecycle_state.in_([s.value for s in who.lifecycle_state]))
    stmt = stmt.order_by(Application.name, Identity.email, Identity.user_name, Grant.role)
    found = list(session.execute(stmt).scalars())
    if who.attributes:
        wanted = who.attributes
        kept = []
        for grant in found:
            identity = session.get(Identity, grant.identity_id)
            attributes = (identity.attributes if identity else None) or {}
            if all(str(attributes.get(k)) == v for k, v in wanted.items()):
                kept.append(grant)
        found = kept
    return found


def _application_ids(session: Session, names: list[str]) -> list[str]:
    ids = []
    for n, key in enumerate(names):
        try:
            ids.append(find_application(session, key).id)
        except NotFound:
            raise ValidationError(
                f"scope.applications: no application with id or name {key!r}",
                details=[
                    {"field": f"body.scope.applications.{n}", "message": "no such application"}
                ],
            ) from None
    return ids


def start_review(
    session: Session,
    actor: Actor,
    queue: Queue,
    config: ReviewConfig,
    job_id: str | None = None,
    *,
    name: str | None = None,
) -> AccessReview:
    """Open a campaign with one item per active grant in scope, routed to its reviewers, and
    tell each reviewer once. A scope with nothing in it records a campaign closed at once."""
    actor.require(Permission.JOB_MANAGE)
    app_ids = _application_ids(session, config.scope.applications)
    now = utcnow()
    scope = config.scope.model_dump(mode="json")
    scope["application_ids"] = app_ids
    reviewers = {
        "reviewer": config.reviewer.value,
        "users": config.users,
        "roles": [r.value for r in config.roles],
        "fallback": config.fallback.model_dump(mode="json"),
    }
    review = AccessReview(
        name=(name or config.name)[:200],
        job_id=job_id,
        scope=scope,
        reviewers=reviewers,
        status=ReviewStatus.OPEN,
        default_decision=config.default_decision.value,
        require_justification_for_keep=config.require_justification_for_keep,
        remind_before_seconds=(
            config.remind_before.total_seconds() if config.remind_before is not None else None
        ),
        starts_at=now,
        ends_at=now + config.duration,
        created_by=actor.label,
        created_at=now,
    )
    session.add(review)
    session.flush()
    resolver = _Resolver(session)
    items = []
    for grant in _in_scope(session, config.scope, app_ids):
        identity = session.get(Identity, grant.identity_id)
        app = session.get(Application, grant.application_id)
        assert identity is not None and app is not None
        assigned = _assign(resolver, reviewers, identity, app)
        item = ReviewItem(
            review_id=review.id,
            grant_id=grant.id,
            identity_id=identity.id,
            application_id=app.id,
            role=grant.role,
            reviewer_user_ids=assigned.user_ids,
            reviewer_roles=assigned.roles,
            reviewer_source=assigned.source.value,
            routing_problem=assigned.problem,
        )
        session.add(item)
        items.append(item)
    session.flush()
    audit.record(
        session,
        actor,
        "access_review.started",
        "access_review",
        review.id,
        {
            "name": review.name,
            "job": job_id,
            "items": len(items),
            "reviewer": config.reviewer.value,
            "fallback_items": sum(1 for i in items if i.reviewer_source == Source.FALLBACK),
            "unassigned_items": sum(
                1 for i in items if not i.reviewer_user_ids and not i.reviewer_roles
            ),
            "ends_at": review.ends_at,
            "default_decision": review.default_decision,
        },
    )
    if not items:
        _finish(session, SYSTEM, queue, review, now, "nothing was in scope")
        return review
    for user, count in _pending_by_user(session, resolver, items).items():
        notify(
            session,
            NotificationKind.TASK_ASSIGNED,
            _dedup(review, user.id),
            f"Access review {review.name!r}: {count} grant(s) to review by "
            f"{review.ends_at:%Y-%m-%d %H:%M}Z",
            body="Decide keep or revoke for each: GET /api/v1/reviews/inbox, or "
            f"`grantflow reviews items {review.id} --mine --as {user.email}`. Undecided "
            f"items get the default decision ({review.default_decision}) at the end.",
            target_type="access_review",
            target_id=review.id,
            recipient_id=user.id,
            access_review_id=review.id,
            items=count,
        )
    return review


def _dedup(review: AccessReview, user_id: str, reminder: bool = False) -> str:
    return f"access_review:{review.id}:{'reminder:' if reminder else ''}{user_id}"


def _pending_by_user(
    session: Session, resolver: _Resolver, items: Iterable[ReviewItem]
) -> dict[User, int]:
    counts: dict[str, int] = {}
    users: dict[str, User] = {}
    for item in items:
        if item.decision is not None:
            continue
        for user in _people_of(session, resolver, item):
            users[user.id] = user
            counts[user.id] = counts.get(user.id, 0) + 1
    return {users[k]: v for k, v in sorted(counts.items(), key=lambda kv: users[kv[0]].email)}


# --- reading -----------------------------------------------------------------------------------
def get_review(session: Session, review_id: str, *, lock: bool = False) -> AccessReview:
    review = session.get(AccessReview, review_id, with_for_update=lock or None)
    if review is None:
        named = list(
            session.execute(
                select(AccessReview).where(AccessReview.name_key == name_key(review_id))
            ).scalars()
        )
        if len(named) > 1:
            raise Conflict(
                f"{len(named)} access reviews are named {review_id!r}; use the id",
                code="ambiguous_name",
            )
        review = (
            named[0] if named else by_prefix(session, AccessReview, review_id, "review", named=True)
        )
        if review is not None and lock:
            session.refresh(review, with_for_update=True)
    if review is None:
        raise NotFound(
            f"no access review with id or name {review_id!r}",
            target_type="access_review",
            target_id=review_id,
        )
    return review


def get_item(session: Session, item_id: str, review_id: str | None = None) -> ReviewItem:
    item = session.get(ReviewItem, item_id) or by_prefix(
        session, ReviewItem, item_id, "access review item"
    )
    if item is None or (review_id is not None and item.review_id != review_id):
        raise NotFound(
            f"access review item {item_id} does not exist"
            + (f" in review {review_id}" if review_id else ""),
            target_type="access_review_item",
            target_id=item_id,
        )
    return item


def list_reviews(
    session: Session,
    *,
    status: ReviewStatus | None = None,
    job_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[AccessReview]:
    """Newest first."""
    stmt = select(AccessReview)
    if status:
        stmt = stmt.where(AccessReview.status == status)
    if job_id:
        stmt = stmt.where(AccessReview.job_id == job_id)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(AccessReview.id < after)
    rows = list(
        session.execute(stmt.order_by(AccessReview.id.desc()).limit(limit + 1)).scalars().all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


def _scan(
    session: Session, stmt: Any, keep: Any, cursor: str | None, limit: int
) -> Page[ReviewItem]:
    """Items of `stmt` in id order for which `keep(item)` holds, a page at a time."""
    after = decode_cursor(cursor, str)
    found: list[ReviewItem] = []
    while len(found) <= limit:
        batch_stmt = stmt if after is None else stmt.where(ReviewItem.id > after)
        batch = list(session.execute(batch_stmt.order_by(ReviewItem.id).limit(_SCAN)).scalars())
        found += [i for i in batch if keep(i)]
        if len(batch) < _SCAN:
            break
        after = batch[-1].id
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1].id) if more and found else None)


def list_items(
    session: Session,
    review: AccessReview,
    *,
    pending: bool | None = None,
    mine: User | None = None,
    decision: Decision | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[ReviewItem]:
    """The review's items; `pending` (undecided or decided), `mine` (the user can decide)."""
    stmt = select(ReviewItem).where(ReviewItem.review_id == review.id)
    if pending is True:
        stmt = stmt.where(ReviewItem.decision.is_(None))
    elif pending is False:
        stmt = stmt.where(ReviewItem.decision.is_not(None))
    if decision is not None:
        stmt = stmt.where(ReviewItem.decision == decision)

    def keep(item: ReviewItem) -> bool:
        if mine is None:
            return True
        return review.status == ReviewStatus.OPEN and can_decide(session, mine, item)

    return _scan(session, stmt, keep, cursor, limit)


def inbox(
    session: Session, user: User, *, cursor: str | None = None, limit: int = 50
) -> Page[ReviewItem]:
    """The user's pending items across open campaigns (never their own access)."""
    stmt = (
        select(ReviewItem)
        .join(AccessReview, AccessReview.id == ReviewItem.review_id)
        .where(AccessReview.status == ReviewStatus.OPEN, ReviewItem.decision.is_(None))
    )
    return _scan(session, stmt, lambda i: can_decide(session, user, i), cursor, limit)


def progress(session: Session, review: AccessReview) -> dict[str, Any]:
    rows = session.execute(
        select(
            ReviewItem.decision,
            ReviewItem.defaulted,
            ReviewItem.reviewer_source,
            ReviewItem.reviewer_user_ids,
            ReviewItem.reviewer_roles,
        ).where(ReviewItem.review_id == review.id)
    ).all()
    total = len(rows)
    decided = sum(1 for r in rows if r.decision is not None)
    counts = {
        "total": total,
        "decided": decided,
        "keep": sum(1 for r in rows if r.decision == Decision.KEEP),
        "revoke": sum(1 for r in rows if r.decision == Decision.REVOKE),
        "pending": total - decided,
        "defaulted": sum(1 for r in rows if r.defaulted),
        "fallback": sum(1 for r in rows if r.reviewer_source == Source.FALLBACK),
        "unassigned": sum(
            1
            for r in rows
            if r.decision is None and not r.reviewer_user_ids and not r.reviewer_roles
        ),
        "percent": round(100.0 * decided / total, 1) if total else 100.0,
    }
    return counts


def item_view(session: Session, item: ReviewItem, viewer: User | None = None) -> dict[str, Any]:
    identity = session.get(Identity, item.identity_id)
    app = session.get(Application, item.application_id)
    grant = session.get(Grant, item.grant_id)
    review = session.get(AccessReview, item.review_id)
    shown: dict[str, Any] = {
        "id": item.id,
        "review_id": item.review_id,
        "grant_id": item.grant_id,
        "grant_status": grant.status if grant else None,
        "identity": {
            "id": item.identity_id,
            "email": identity.email if identity else None,
            "user_name": identity.user_name if identity else None,
            "display_name": identity.display_name if identity else None,
            "department": identity.department if identity else None,
        },
        "application": {"id": item.application_id, "name": app.name if app else None},
        "role": item.role or None,
        "reviewers": reviewer_labels(session, item),
        "reviewer_source": item.reviewer_source,
        "routing_problem": item.routing_problem,
        "decision": item.decision,
        "decided_by": item.decided_by,
        "decided_at": item.decided_at,
        "comment": item.comment,
        "defaulted": item.defaulted,
        "revoked": item.revoked,
        "decide": f"/api/v1/reviews/{item.review_id}/items/{item.id}/decide",
    }
    if review is not None:
        shown["review"] = {
            "id": review.id,
            "name": review.name,
            "ends_at": review.ends_at,
            "require_justification_for_keep": review.require_justification_for_keep,
        }
    if viewer is not None:
        shown["can_decide"] = (
            review is not None
            and review.status == ReviewStatus.OPEN
            and can_decide(session, viewer, item)
        )
    return shown


def review_view(session: Session, review: AccessReview) -> dict[str, Any]:
    remind = review.remind_before_seconds
    return {
        "id": review.id,
        "name": review.name,
        "job_id": review.job_id,
        "status": review.status,
        "scope": review.scope,
        "reviewers": review.reviewers,
        "default_decision": review.default_decision,
        "require_justification_for_keep": review.require_justification_for_keep,
        "remind_before": format_duration(dt.timedelta(seconds=remind)) if remind else None,
        "reminded_at": review.reminded_at,
        "starts_at": review.starts_at,
        "ends_at": review.ends_at,
        "closed_at": review.closed_at,
        "closed_by": review.closed_by,
        "created_by": review.created_by,
        "created_at": review.created_at,
        "progress": progress(session, review),
        "report": f"/api/v1/reviews/{review.id}/report.csv",
    }


# --- deciding ----------------------------------------------------------------------------------
def _revoker(label: str, user_id: str | None) -> Actor:
    """The review authorises revoking the grant under review (reviewers need not hold
    grant:write); the grant and its audit entry name who decided."""
    return Actor(label=label, user_id=user_id, permissions=frozenset({Permission.GRANT_WRITE}))


def _revoke(
    session: Session, actor: Actor, queue: Queue, review: AccessReview, item: ReviewItem
) -> bool:
    grant = session.get(Grant, item.grant_id)
    if grant is None or grant.status != GrantStatus.ACTIVE:
        return False
    why = f"access review {review.name!r}" + (f": {item.comment}" if item.comment else "")
    grant_service.revoke_grant(
        session, actor, queue, grant.id, reason=RevokeReason.REVIEW, comment=why[:2000]
    )
    item.revoked = True
    return True


def decide(
    session: Session,
    actor: Actor,
    queue: Queue,
    item_id: str,
    decision: Decision | str,
    comment: str | None = None,
    *,
    review_id: str | None = None,
) -> ReviewItem:
    """An assigned reviewer keeps or revokes one grant; revoke takes effect at once."""
    actor.require(DECIDER)
    decision = Decision(decision)
    comment = (comment or "").strip() or None
    item = session.get(ReviewItem, item_id, with_for_update=True)  # one decision at a time
    if item is None or (review_id is not None and item.review_id != review_id):
        # NotFound naming what is missing, or the item a unique id prefix names
        found = get_item(session, item_id, review_id)
        item = session.get(ReviewItem, found.id, with_for_update=True, populate_existing=True)
    assert item is not None
    user = session.get(User, actor.user_id) if actor.user_id else None
    if user is None:
        raise PermissionDenied(
            "a review decision is a person's: decide with a user's API token "
            "(or `grantflow reviews decide --as EMAIL`)",
            code="not_reviewer",
        )
    identity = session.get(Identity, item.identity_id)
    assert identity is not None
    if _same_person(user.email, identity):
        raise PermissionDenied(
            f"{user.email} cannot review their own access (item {item.id} is about "
            f"{_who(identity)}'s grant); it is assigned to {_assignment_text(session, item)}",
            code="own_access",
            next_action="the assigned reviewer decides it",
        )
    if not is_reviewer(user, item):
        raise PermissionDenied(
            f"{user.email} is not a reviewer of item {item.id}: it is assigned to "
            f"{_assignment_text(session, item)}",
            code="not_reviewer",
            next_action="only an assigned reviewer can decide it",
        )
    review = session.get(AccessReview, item.review_id)
    assert review is not None
    if review.status != ReviewStatus.OPEN:
        raise Conflict(
            f"access review {review.name!r} closed at {review.closed_at:%Y-%m-%d %H:%M:%S}Z; "
            "its decisions are final",
            code="review_closed",
        )
    if item.decision is not None:
        raise Conflict(
            f"item {item.id} was already decided: {item.decision} by {item.decided_by} at "
            f"{item.decided_at:%Y-%m-%d %H:%M:%S}Z",
            code="already_decided",
            next_action="a decision is final; grant the access again if it was revoked wrongly",
        )
    if decision == Decision.KEEP and review.require_justification_for_keep and not comment:
        raise ValidationError(
            "comment: keeping access in this review needs a justification",
            details=[{"field": "body.comment", "message": "a justification is required"}],
        )
    item.decision = decision.value
    item.decided_by = user.email
    item.decided_at = utcnow()
    item.comment = comment
    revoked = False
    if decision == Decision.REVOKE:
        revoked = _revoke(session, _revoker(user.email, user.id), queue, review, item)
    session.flush()
    audit.record(
        session,
        actor,
        "access_review.decided",
        "access_review",
        review.id,
        {
            "item": item.id,
            "grant": item.grant_id,
            "identity": _who(identity),
            "application": _app_name(session, item),
            "role": item.role or None,
            "decision": decision.value,
            "comment": comment,
            "revoked": revoked,
        },
    )
    if not _pending_for(session, review, user):
        resolve(session, _dedup(review, user.id))
    return item


def _app_name(session: Session, item: ReviewItem) -> str | None:
    app = session.get(Application, item.application_id)
    return app.name if app else None


def _pending_for(session: Session, review: AccessReview, user: User) -> bool:
    pending = session.execute(
        select(ReviewItem).where(ReviewItem.review_id == review.id, ReviewItem.decision.is_(None))
    ).scalars()
    return any(can_decide(session, user, i) for i in pending)


# --- closing and reminders ---------------------------------------------------------------------
def close(session: Session, actor: Actor, queue: Queue, review_id: str) -> AccessReview:
    """End the campaign now: undecided items get its default decision."""
    actor.require(Permission.JOB_MANAGE)
    review = get_review(session, review_id, lock=True)
    if review.status != ReviewStatus.OPEN:
        raise Conflict(
            f"access review {review.name!r} was already closed at "
            f"{review.closed_at:%Y-%m-%d %H:%M:%S}Z by {review.closed_by}",
            code="review_closed",
        )
    _finish(session, actor, queue, review, utcnow(), f"closed by {actor.label}")
    return review


def _finish(
    session: Session, actor: Actor, queue: Queue, review: AccessReview, now: dt.datetime, why: str
) -> None:
    default = Decision(review.default_decision)
    undecided = list(
        session.execute(
            select(ReviewItem)
            .where(ReviewItem.review_id == review.id, ReviewItem.decision.is_(None))
            .order_by(ReviewItem.id)
            .with_for_update()
        ).scalars()
    )
    revoker = _revoker(SYSTEM.label, None)
    revoked = 0
    for item in undecided:
        item.decision = default.value
        item.defaulted = True
        item.decided_by = SYSTEM.label
        item.decided_at = now
        item.comment = f"no decision before the campaign ended ({why}): default {default}"
        if default == Decision.REVOKE and _revoke(session, revoker, queue, review, item):
            revoked += 1
    review.status = ReviewStatus.CLOSED
    review.closed_at = now
    review.closed_by = actor.label
    session.flush()
    for (key,) in session.execute(
        select(Notification.dedup_key)
        .where(
            Notification.dedup_key.startswith(f"access_review:{review.id}:", autoescape=True),
            Notification.resolved_at.is_(None),
        )
        .distinct()
    ).all():
        resolve(session, key)
    audit.record(
        session,
        actor,
        "access_review.closed",
        "access_review",
        review.id,
        {
            "name": review.name,
            "why": why,
            "default_decision": default.value,
            "defaulted": len(undecided),
            "revoked_by_default": revoked,
            "progress": progress(session, review),
        },
    )


def close_due(session: Session, queue: Queue, now: dt.datetime | None = None) -> list[str]:
    """Close every open campaign whose end has passed (a durable timer run by workers)."""
    now = now or utcnow()
    due = list(
        session.execute(
            select(AccessReview.id)
            .where(AccessReview.status == ReviewStatus.OPEN, AccessReview.ends_at <= now)
            .order_by(AccessReview.ends_at)
            .limit(20)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    for review_id in due:
        review = session.get(AccessReview, review_id)
        assert review is not None
        _finish(
            session,
            SYSTEM,
            queue,
            review,
            now,
            f"its end passed at {review.ends_at:%Y-%m-%d %H:%M}Z",
        )
    return due


def remind_due(session: Session, now: dt.datetime | None = None) -> list[str]:
    """Once per campaign, when `remind_before` its end is reached: one reminder to each
    reviewer who still has items to decide."""
    now = now or utcnow()
    candidates = list(
        session.execute(
            select(AccessReview)
            .where(
                AccessReview.status == ReviewStatus.OPEN,
                AccessReview.reminded_at.is_(None),
                AccessReview.remind_before_seconds.is_not(None),
                AccessReview.ends_at > now,
            )
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    reminded = []
    for review in candidates:
        assert review.remind_before_seconds is not None
        if review.ends_at - dt.timedelta(seconds=review.remind_before_seconds) > now:
            continue
        review.reminded_at = now
        pending = session.execute(
            select(ReviewItem).where(
                ReviewItem.review_id == review.id, ReviewItem.decision.is_(None)
            )
        ).scalars()
        people = _pending_by_user(session, _Resolver(session), pending)
        for user, count in people.items():
            notify(
                session,
                NotificationKind.TASK_ASSIGNED,
                _dedup(review, user.id, reminder=True),
                f"Reminder: access review {review.name!r} ends {review.ends_at:%Y-%m-%d %H:%M}Z; "
                f"{count} grant(s) still wait for your decision",
                body=f"Undecided items get the default decision ({review.default_decision}).",
                target_type="access_review",
                target_id=review.id,
                recipient_id=user.id,
                access_review_id=review.id,
                items=count,
                reminder=True,
            )
        audit.record(
            session,
            SYSTEM,
            "access_review.reminded",
            "access_review",
            review.id,
            {"reviewers": [u.email for u in people], "pending": sum(people.values())},
        )
        reminded.append(review.id)
    return reminded


# --- the report --------------------------------------------------------------------------------
CSV_COLUMNS = (
    "item_id",
    "grant_id",
    "identity_email",
    "identity_name",
    "application",
    "role",
    "reviewers",
    "reviewer_source",
    "routing_problem",
    "decision",
    "decided_by",
    "decided_at",
    "comment",
    "defaulted",
    "revoked",
)


def _cell(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    # a comment or a name must not run as a formula in a spreadsheet
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def report_rows(session: Session, review: AccessReview) -> Iterator[dict[str, Any]]:
    items = session.execute(
        select(ReviewItem).where(ReviewItem.review_id == review.id).order_by(ReviewItem.id)
    ).scalars()
    for item in items:
        identity = session.get(Identity, item.identity_id)
        yield {
            "item_id": item.id,
            "grant_id": item.grant_id,
            "identity_email": _who(identity) if identity else item.identity_id,
            "identity_name": identity.display_name if identity else None,
            "application": _app_name(session, item),
            "role": item.role,
            "reviewers": "; ".join(reviewer_labels(session, item)),
            "reviewer_source": item.reviewer_source,
            "routing_problem": item.routing_problem,
            "decision": item.decision,
            "decided_by": item.decided_by,
            "decided_at": item.decided_at,
            "comment": item.comment,
            "defaulted": item.defaulted,
            "revoked": item.revoked,
        }


def report_csv(session: Session, review: AccessReview) -> str:
    """Every item and its decision (pending ones with an empty decision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report_rows(session, review):
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()


def report_name(review: AccessReview) -> str:
    return f"access-review-{review.created_at:%Y%m%dT%H%M%SZ}-{review.id[:8]}.csv"


# --- the scheduled job -------------------------------------------------------------------------
def _run_job(session: Session, queue: Queue, job: Job, occurrence: Occurrence) -> runners.Result:
    """One occurrence of an access_review job: a campaign named after the job's config and
    the occurrence's date. A config that no longer works (an application deleted since)
    raises; the scheduler records the occurrence as failed with the reason."""
    config = parse_config(job.config or {})
    review = start_review(
        session,
        Actor.system("scheduler"),
        queue,
        config,
        job_id=job.id,
        name=f"{config.name} {occurrence.scheduled_for:%Y-%m-%d}",
    )
    return runners.Result(result_type="access_review", result_id=review.id, outcome="succeeded")


runners.register("access_review", runners.Runner(check=check, run=_run_job))

__all__ = [
    "Decision",
    "ReviewConfig",
    "ReviewStatus",
    "ReviewerKind",
    "close",
    "close_due",
    "decide",
    "progress",
    "remind_due",
    "report_csv",
    "start_review",
]
