"""The target's side of a reconciliation: the application's SCIM connection (the one named, or
its only one) and every account the target lists (SCIM Users, page by page).

The target is read outside any database transaction through the connection's auth, limits
and the outbound guard, exactly as the `scim.*` steps reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.access.models import Application
from grantflow.connections.access import ConnectionAccess
from grantflow.connections.models import Connection, ConnectionKind
from grantflow.errors import Conflict, NotFound, PermanentError
from grantflow.steps.execution import StepCall
from grantflow.store.base import new_id

if TYPE_CHECKING:
    from grantflow.steps.scim_session import ScimSession

MAX_ACCOUNTS = 200_000  # a bound on one reconciliation: more is a misbehaving target
TIMEOUT_SECONDS = 600.0  # the whole listing; each request also keeps the connection's timeout


@dataclass(frozen=True)
class Account:
    id: str
    user_name: str
    emails: tuple[str, ...]  # lower-cased, the primary one first
    external_id: str | None
    display_name: str | None
    active: bool | None

    @property
    def email(self) -> str | None:
        return self.emails[0] if self.emails else None


@dataclass(frozen=True)
class Listing:
    accounts: list[Account]
    pages: int


def _account(resource: Any) -> Account:
    entries = list(getattr(resource, "emails", None) or [])
    entries.sort(key=lambda e: not bool(getattr(e, "primary", False)))
    emails = tuple(str(e.value).strip().lower() for e in entries if getattr(e, "value", None))
    return Account(
        id=str(resource.id),
        user_name=str(getattr(resource, "user_name", None) or ""),
        emails=emails,
        external_id=getattr(resource, "external_id", None),
        display_name=getattr(resource, "display_name", None),
        active=getattr(resource, "active", None),
    )


def _list_users(s: ScimSession, page_size: int) -> Listing:
    """Every User of the target, by index pagination (RFC 7644 §3.4.2.4)."""
    from scim2_models import ListResponse, SearchRequest

    model = s.model("User")
    found: dict[str, Account] = {}
    start, pages = 1, 0
    while True:
        with s.translating("the list of users"):
            page = s.scim.query(
                model, query_parameters=SearchRequest(start_index=start, count=page_size)
            )
        pages += 1
        if not isinstance(page, ListResponse):
            raise PermanentError(
                f"{s.label} answered the list of users with something that is not a SCIM list",
                code="scim_invalid_response",
                response=s.record,
                next_action="check that the connection's base URL is the SCIM root of the "
                "target, then reconcile again",
            )
        resources = list(page.resources or [])
        new = 0
        for resource in resources:
            account = _account(resource)
            if account.id not in found:
                found[account.id] = account
                new += 1
        if len(found) > MAX_ACCOUNTS:
            raise PermanentError(
                f"{s.label} lists more than {MAX_ACCOUNTS} users; reconciliation stopped",
                code="too_many_accounts",
                next_action="check that the connection's base URL points at one tenant",
            )
        start += len(resources)
        # the end: an empty page, the total reached, or a target that ignores startIndex
        if not resources or new == 0:
            break
        if page.total_results is not None and start > page.total_results:
            break
    return Listing(list(found.values()), pages)


def list_accounts(
    access: ConnectionAccess, application_id: str, connection_name: str, page_size: int
) -> Listing:
    """Read the target's users through the connection, as a `scim.*` step would."""
    call = StepCall(
        run_id="reconciliation",
        step_id="list_users",
        attempt=1,
        idempotency_key=f"reconcile-{new_id()}",
        config={},
        timeout=TIMEOUT_SECONDS,
        http=access.http,
        application_id=application_id,
        connections=access,
    )
    # the SCIM client loads here, not with the API: importing it costs seconds of CPU
    from grantflow.steps.scim_session import run

    listing = run(call, connection_name, lambda s: _list_users(s, page_size))
    hide = call.secrets.redactor  # (a target may echo the credential in an account's fields)
    if not hide:
        return listing
    accounts = [
        replace(
            a,
            id=hide.text(a.id),
            user_name=hide.text(a.user_name),
            emails=tuple(hide.text(e) for e in a.emails),
            external_id=a.external_id and hide.text(a.external_id),
            display_name=a.display_name and hide.text(a.display_name),
        )
        for a in listing.accounts
    ]
    return Listing(accounts, listing.pages)


# --- choosing the connection ------------------------------------------------------------------


def _scim_connections(session: Session, application_id: str) -> list[Connection]:
    return list(
        session.execute(
            select(Connection)
            .where(
                Connection.application_id == application_id,
                Connection.kind == ConnectionKind.SCIM,
            )
            .order_by(Connection.name)
        ).scalars()
    )


def choose_connection(session: Session, app: Application, key: str | None) -> Connection:
    """The SCIM connection named (by name or id), or the application's only one."""
    how = (
        f"add a connection of kind scim to {app.name!r} (POST /api/v1/applications/"
        f"{app.id}/connections with kind scim and the SCIM root as base_url), set its "
        "credential, then reconcile again"
    )
    if key is not None:
        connection = session.get(Connection, key)
        if connection is None or connection.application_id != app.id:
            connection = session.execute(
                select(Connection).where(
                    Connection.application_id == app.id, Connection.name == key
                )
            ).scalar_one_or_none()
        if connection is None:
            names = [c.name for c in _scim_connections(session, app.id)]
            raise NotFound(
                f"application {app.name!r} has no connection {key!r}",
                next_action=f"name one of its SCIM connections: {', '.join(names)}"
                if names
                else how,
                target_type="connection",
            )
        if connection.kind != ConnectionKind.SCIM:
            raise Conflict(
                f"connection {connection.name!r} of {app.name!r} is of kind "
                f"{connection.kind}; reconciliation lists accounts over SCIM 2.0 and needs "
                "a connection of kind scim",
                code="not_a_scim_connection",
                next_action=how,
            )
        return connection
    found = _scim_connections(session, app.id)
    if not found:
        raise Conflict(
            f"application {app.name!r} has no SCIM connection: reconciliation lists the "
            "accounts in the target over SCIM 2.0",
            code="no_scim_connection",
            next_action=how,
        )
    if len(found) > 1:
        listed = ", ".join(c.name for c in found)
        raise Conflict(
            f"application {app.name!r} has {len(found)} SCIM connections ({listed}); "
            "say which one to reconcile",
            code="connection_ambiguous",
            next_action="name the connection (body field `connection`, or --connection)",
        )
    return found[0]
