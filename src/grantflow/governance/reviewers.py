"""Who reviews an item of an access review, and who may decide it now.

Each grant in scope goes to its first-choice reviewers — the identity's manager, the
application's owner, named users or roles — or, when that choice is missing, deactivated,
lacks workflow:task or is the person under review, to the campaign's fallback, with the reason
kept on the item. No one ever reviews their own access. Reviewers are told once per campaign
(`dedup_key`), with the count of items waiting for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import Session

from grantflow.access.models import Application, Identity
from grantflow.auth.models import User
from grantflow.auth.permissions import permissions_for
from grantflow.governance.models import AccessReview, ReviewAssignee, ReviewItem
from grantflow.governance.review_config import DECIDER, ReviewerKind, Source
from grantflow.people import routing

_SOURCE_OF = {
    ReviewerKind.MANAGER: Source.MANAGER,
    ReviewerKind.APPLICATION_OWNER: Source.OWNER,
    ReviewerKind.USERS: Source.NAMED,
    ReviewerKind.ROLES: Source.NAMED,
}


def same_person(email: str | None, identity: Identity) -> bool:
    """Is the user with `email` the identity under review? (emails and userName, any case)"""
    if not email:
        return False
    mine = email.strip().lower()
    return mine in {(identity.email or "").lower(), identity.user_name.lower()}


def who(identity: Identity) -> str:
    """The identity as reviewers know it: its e-mail, or its userName."""
    return identity.email or identity.user_name


@dataclass
class Routed:
    user_ids: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def anyone(self) -> bool:
        return bool(self.user_ids or self.roles)


class Resolver:
    """Resolves reviewers for many items, caching users and role members."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._users: dict[str, User | None] = {}
        self._members: dict[str, list[User]] = {}
        self._managers: dict[str, Identity | None] = {}  # (read once each, held)

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
        if same_person(user.email, identity):
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
            others = [u for u in members if not same_person(u.email, identity)]
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
            return Routed(problems=[f"identity {who(identity)} has no manager"])
        if identity.manager_id not in self._managers:
            self._managers[identity.manager_id] = self.session.get(Identity, identity.manager_id)
        boss = self._managers[identity.manager_id]
        if boss is None:
            return Routed(problems=[f"the manager of {who(identity)} no longer exists"])
        if not boss.active or boss.deleted_at is not None:
            return Routed(
                problems=[f"the manager {who(boss)} is not active ({boss.lifecycle_state})"]
            )
        if not boss.email:
            return Routed(problems=[f"the manager {who(boss)} has no email to match a user by"])
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


def assign(
    resolver: Resolver, config: dict[str, Any], identity: Identity, app: Application
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


def decidable_by(user: User) -> ColumnElement[bool]:
    """What `decides` says of an item, as SQL over `access_review_items`: undecided, assigned
    to the user by name or by one of their roles, not their own access. Each part is an index
    walk: the user's assignee rows, and their identity by lower(email) or lower(user_name).
    (SQLite lowers ASCII only: callers check `decides` on what it finds.)"""
    if not user.active or DECIDER not in permissions_for(user.roles):
        return false()
    mine = user.email.strip().lower()
    assigned = select(ReviewAssignee.item_id).where(
        or_(ReviewAssignee.user_id == user.id, ReviewAssignee.role.in_(user.roles))
    )
    own = select(Identity.id).where(
        or_(func.lower(Identity.email) == mine, func.lower(Identity.user_name) == mine)
    )
    return and_(
        ReviewItem.decision.is_(None),
        ReviewItem.id.in_(assigned),
        ReviewItem.identity_id.not_in(own),
    )


def decides(user: User, item: ReviewItem, identity: Identity | None) -> bool:
    """Whether the user can decide the item now; `identity` is the item's (None: deleted)."""
    if item.decision is not None or not is_reviewer(user, item):
        return False
    if not user.active or DECIDER not in permissions_for(user.roles):
        return False
    return identity is not None and not same_person(user.email, identity)


def _people_of(session: Session, resolver: Resolver, item: ReviewItem) -> list[User]:
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
    return [u for u in found.values() if not same_person(u.email, identity)]


def assignment_text(session: Session, item: ReviewItem) -> str:
    """Whom the item is assigned to, in words (a refusal names them)."""
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


def reviewer_labels(item: ReviewItem, users: Mapping[str, User]) -> list[str]:
    """The item's reviewers as e-mails (`users`: by id; an id not there was deleted since)."""
    labels = [users[u].email if u in users else u for u in item.reviewer_user_ids or []]
    return labels + [f"role:{r}" for r in item.reviewer_roles or []]


def dedup_key(review: AccessReview, user_id: str, reminder: bool = False) -> str:
    """The key of a reviewer's notification of a campaign (one, and one reminder)."""
    return f"access_review:{review.id}:{'reminder:' if reminder else ''}{user_id}"


def pending_by_user(
    session: Session, resolver: Resolver, items: Iterable[ReviewItem]
) -> dict[User, int]:
    """Each user who can decide some of `items` now, with how many (in e-mail order)."""
    counts: dict[str, int] = {}
    users: dict[str, User] = {}
    for item in items:
        if item.decision is not None:
            continue
        for user in _people_of(session, resolver, item):
            users[user.id] = user
            counts[user.id] = counts.get(user.id, 0) + 1
    return {users[k]: v for k, v in sorted(counts.items(), key=lambda kv: users[kv[0]].email)}
