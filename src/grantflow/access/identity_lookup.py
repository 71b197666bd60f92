"""Finding an identity by what a request names it by: its id, e-mail, userName or a unique id
prefix. It sits below `identities` and `grants` (and what else names an identity), so that
`grants` needs nothing of `identities`, whose offboarding revokes grants."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from grantflow.access.models import Identity
from grantflow.errors import NotFound
from grantflow.store.ids import by_prefix


def find_identity(session: Session, key: str, *, field: str = "identity") -> Identity:
    """By id, email or userName; a miss names the field it came from."""
    lowered = key.strip().lower()
    identity = (
        session.get(Identity, key)
        or session.execute(
            select(Identity).where(
                or_(Identity.email == lowered, func.lower(Identity.user_name) == lowered)
            )
        )
        .scalars()
        .first()
        or by_prefix(session, Identity, key, "identity", named=True)
    )
    if identity is None:
        raise NotFound(
            f"{field}: no identity with id, email or userName {key!r}",
            target_type="identity",
            details=[{"field": f"body.{field}", "message": "no such identity"}],
        )
    return identity
