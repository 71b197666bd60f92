"""Users and their roles: the one place their rules live (API and CLI both call these)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.models import User, UserRole
from grantflow.auth.passwords import hash_password
from grantflow.auth.permissions import Permission, Role, permissions_for
from grantflow.auth.sessions import end_all_sessions
from grantflow.errors import Conflict, NotFound, PermissionDenied, ValidationError
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import Page, decode_cursor, page_of


def normalise_email(email: str) -> str:
    return email.strip().lower()


def get_user(session: Session, user_id: str) -> User:
    user = session.get(  # (its roles in the same round trip)
        User, user_id, options=[joinedload(User.role_rows)]
    ) or by_prefix(session, User, user_id, "user")
    if user is None:
        raise NotFound(f"user {user_id} does not exist", target_type="user", target_id=user_id)
    return user


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.execute(
        select(User).where(User.email == normalise_email(email))
    ).scalar_one_or_none()


def acting_as(session: Session, email: str) -> tuple[User, Actor]:
    """The user an in-process command acts as (the CLI's `--as EMAIL`), and an actor with
    exactly that user's permissions, as their API token would have."""
    user = find_user_by_email(session, email)
    if user is None:
        raise NotFound(
            f"no user with email {email}",
            next_action="check `grantflow users list`",
            target_type="user",
        )
    if not user.active:
        raise PermissionDenied(
            f"user {user.email} is deactivated and cannot act",
            next_action="act as an active user",
        )
    return user, Actor(label=user.email, user_id=user.id, permissions=permissions_for(user.roles))


def create_user(
    session: Session,
    actor: Actor,
    *,
    email: str,
    display_name: str | None = None,
    roles: Sequence[Role] = (),
    password: str | None = None,
) -> User:
    actor.require(Permission.USER_ADMIN)
    email = normalise_email(email)
    existing = find_user_by_email(session, email)
    if existing is not None:
        raise Conflict(
            f"a user with email {email} already exists",
            next_action="use the existing user, or choose another email",
            existing_id=existing.id,
        )
    user = User(
        email=email,
        display_name=display_name or email.split("@")[0],
        password_hash=hash_password(password) if password else None,
        role_rows=[UserRole(role=str(role)) for role in sorted(set(roles))],
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor,
        "user.created",
        "user",
        user.id,
        {"email": email, "roles": user.roles, "password_set": password is not None},
    )
    return user


def update_user(
    session: Session,
    actor: Actor,
    user_id: str,
    *,
    display_name: str | None = None,
    active: bool | None = None,
    roles: Sequence[Role] | None = None,
) -> User:
    actor.require(Permission.USER_ADMIN)
    user = get_user(session, user_id)
    changes: dict[str, list[object]] = {}
    if display_name is not None and display_name != user.display_name:
        changes["display_name"] = [user.display_name, display_name]
        user.display_name = display_name
    if active is not None and active != user.active:
        if not active and user.id == actor.user_id:
            raise ValidationError(
                "you cannot deactivate yourself",
                details=[{"field": "body.active", "message": "cannot deactivate yourself"}],
                next_action="ask another admin to deactivate this user",
            )
        changes["active"] = [user.active, active]
        user.active = active
    if roles is not None:
        new_roles = sorted({str(role) for role in roles})
        if new_roles != user.roles:
            _refuse_removing_last_admin(session, user, new_roles)
            changes["roles"] = [user.roles, new_roles]
            user.role_rows = [UserRole(role=role) for role in new_roles]
    if changes:
        session.flush()
        audit.record(session, actor, "user.updated", "user", user.id, {"changes": changes})
    return user


def _refuse_removing_last_admin(session: Session, user: User, new_roles: list[str]) -> None:
    if Role.ADMIN in user.roles and Role.ADMIN not in new_roles:
        # Count the active admins that remain: this user may already be inactive (or be
        # deactivated in the same update), so it is excluded rather than assumed counted.
        other_admins = session.execute(
            select(func.count())
            .select_from(UserRole)
            .join(User)
            .where(UserRole.role == Role.ADMIN, User.active.is_(True), User.id != user.id)
        ).scalar_one()
        if other_admins == 0:
            raise Conflict(
                "this is the last active admin; removing the admin role would lock everyone out",
                next_action="give another active user the admin role first",
            )


def list_users(
    session: Session, *, email: str | None = None, cursor: str | None = None, limit: int = 50
) -> Page[User]:
    stmt = select(User)
    if email:
        stmt = stmt.where(User.email.contains(normalise_email(email), autoescape=True))
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(User.id > after)
    rows = session.execute(stmt.order_by(User.id).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda u: u.id)


MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1000


def check_password_rules(password: str, field: str = "password") -> None:
    """A password is 10 to 1000 characters; nothing else is demanded (length is what counts)."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        problem = (
            f"must be at least {MIN_PASSWORD_LENGTH} characters"
            if len(password) < MIN_PASSWORD_LENGTH
            else f"must be at most {MAX_PASSWORD_LENGTH} characters"
        )
        raise ValidationError(
            f"{field}: {problem}",
            details=[{"field": field, "message": problem}],
            next_action="choose a longer passphrase, e.g. four unrelated words",
        )


def set_password(session: Session, actor: Actor, user_id: str, password: str) -> User:
    """Set a user's console password (their own: self; anyone's: user:admin); every console
    session of theirs ends (a changed password signs the old sessions out). Audited."""
    if actor.user_id == user_id:
        actor.require(Permission.SELF)
    else:
        actor.require(Permission.USER_ADMIN)
    user = get_user(session, user_id)
    check_password_rules(password)
    first = user.password_hash is None
    user.password_hash = hash_password(password)
    session.flush()
    audit.record(
        session, actor, "user.password_set", "user", user.id, {"email": user.email, "first": first}
    )
    end_all_sessions(session, actor, user.id, reason="password changed")
    return user
