"""Reconciliation: list every account in an application's target (SCIM Users, page by page)
and compare them with the application's active grants.

Each account is matched to an identity by userName (case-insensitive), then by email, then by
externalId == the identity's id; a deleted identity is still found by the userName and email
it had (`attributes.deleted_user_name` / `deleted_email`). Then, per account:

- no active grant for the matched person (or no person at all): **orphan**, and when the
  person has left (lifecycle state leaver or left, or deleted) a *leaver orphan* — access that
  should be gone and is not;
- a second account of a person whose grant already has one: **duplicate**;
- an account of a person with an active grant: **matched**, and a **mismatch** too when it is
  deactivated, or its email or displayName differ from the identity's.

Every identity with an active grant that no account matched is **missing**.

The target is read outside any database transaction through the connection's auth, limits
and the outbound guard, exactly as the `scim.*` steps reach it. The outcome is always stored:
a target that cannot be read gives a `failed` report whose error says why in plain words.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from grantflow import audit
from grantflow.access.applications import find_application, get_application
from grantflow.access.grants import GrantStatus
from grantflow.access.lifecycle import LifecycleState
from grantflow.access.models import Application, Grant, Identity, ReconciliationReport
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections.access import ConnectionAccess
from grantflow.connections.models import Connection, ConnectionKind
from grantflow.errors import Conflict, GrantflowError, NotFound, PermanentError
from grantflow.steps.execution import StepCall
from grantflow.store.base import new_id
from grantflow.store.database import Database
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import Page, decode_cursor, page_of
from grantflow.strict import Int

if TYPE_CHECKING:
    from grantflow.steps.scim_session import ScimSession

log = structlog.get_logger("grantflow.reconcile")

DEFAULT_PAGE_SIZE = 100
MAX_ACCOUNTS = 200_000  # a bound on one reconciliation: more is a misbehaving target
TIMEOUT_SECONDS = 600.0  # the whole listing; each request also keeps the connection's timeout

CSV_COLUMNS = (
    "kind",
    "account_id",
    "user_name",
    "email",
    "identity_id",
    "identity_email",
    "identity_state",
    "grant_id",
    "detail",
)


class ReportStatus(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


class ItemKind(enum.StrEnum):
    ORPHAN = "orphan"  # an account nobody is granted
    DUPLICATE = "duplicate"  # a second account of a granted person
    MISSING = "missing"  # a grant without an account
    MISMATCH = "mismatch"  # an account that disagrees with its identity


class Severity(enum.StrEnum):
    HIGH = "high"  # a person who left still has an active account
    MEDIUM = "medium"
    LOW = "low"


_KIND_ORDER = {k: n for n, k in enumerate(ItemKind)}
_SEVERITY_ORDER = {s: n for n, s in enumerate(Severity)}
_LEFT = {LifecycleState.LEAVER.value, LifecycleState.LEFT.value}
_MATCH_ORDER = {"userName": 0, "email": 1, "externalId": 2, None: 3}


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="the SCIM connection (name or id); needed only when the application "
        "has several",
    )
    page_size: Int = Field(
        DEFAULT_PAGE_SIZE,
        ge=1,
        le=1000,
        description="accounts asked for per SCIM request (the target may answer fewer)",
    )


# --- the target's side ------------------------------------------------------------------------


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


# --- the comparison ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    id: str
    user_name: str  # the current one, or the one a deleted identity had
    email: str | None
    display_name: str
    state: str  # the lifecycle state, or "deleted"

    @property
    def left(self) -> bool:
        return self.state in _LEFT or self.state == "deleted"


@dataclass
class Directory:
    """The identities, indexed by what an account can be matched on."""

    by_user_name: dict[str, Person]
    by_email: dict[str, Person]
    by_id: dict[str, Person]

    def match(self, account: Account) -> tuple[Person | None, str | None]:
        person = self.by_user_name.get(account.user_name.strip().lower())
        if person is not None:
            return person, "userName"
        for email in account.emails:
            person = self.by_email.get(email)
            if person is not None:
                return person, "email"
        if account.external_id:
            person = self.by_id.get(account.external_id.strip())
            if person is not None:
                return person, "externalId"
        return None, None


def load_directory(session: Session) -> Directory:
    rows = session.execute(
        select(
            Identity.id,
            Identity.user_name,
            Identity.email,
            Identity.display_name,
            Identity.lifecycle_state,
            Identity.deleted_at,
            Identity.attributes,
        )
    ).all()
    directory = Directory({}, {}, {})
    live: list[Person] = []
    for row in rows:
        if row.deleted_at is not None:
            attributes = row.attributes or {}
            old_email = attributes.get("deleted_email")
            person = Person(
                id=row.id,
                user_name=str(attributes.get("deleted_user_name") or row.user_name),
                email=str(old_email).lower() if old_email else None,
                display_name=row.display_name,
                state="deleted",
            )
            _index(directory, person)  # first: a rehire with the same keys wins below
        else:
            live.append(
                Person(row.id, row.user_name, row.email, row.display_name, row.lifecycle_state)
            )
    for person in live:
        _index(directory, person)
    return directory


def _index(directory: Directory, person: Person) -> None:
    directory.by_id[person.id] = person
    directory.by_user_name[person.user_name.strip().lower()] = person
    if person.email:
        directory.by_email[person.email.lower()] = person


@dataclass(frozen=True)
class GrantRef:
    id: str
    role: str


def active_grants(session: Session, application_id: str) -> dict[str, list[GrantRef]]:
    """Active grants of the application, per identity (oldest first)."""
    rows = session.execute(
        select(Grant.id, Grant.identity_id, Grant.role)
        .where(Grant.application_id == application_id, Grant.status == GrantStatus.ACTIVE)
        .order_by(Grant.granted_at, Grant.id)
    ).all()
    granted: dict[str, list[GrantRef]] = {}
    for row in rows:
        granted.setdefault(row.identity_id, []).append(GrantRef(row.id, row.role))
    return granted


def _roles(grants: list[GrantRef]) -> list[str]:
    return [g.role for g in grants if g.role]


def _item(
    kind: ItemKind,
    severity: Severity,
    detail: str,
    *,
    account: Account | None = None,
    person: Person | None = None,
    grants: list[GrantRef] | None = None,
    matched_by: str | None = None,
    problems: list[str] | None = None,
    other_account_id: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "kind": kind.value,
        "severity": severity.value,
        "account_id": account.id if account else None,
        "user_name": account.user_name if account else None,
        "email": account.email if account else None,
        "display_name": account.display_name if account else None,
        "account_active": account.active if account else None,
        "identity_id": person.id if person else None,
        "identity_user_name": person.user_name if person else None,
        "identity_email": person.email if person else None,
        "identity_display_name": person.display_name if person else None,
        "identity_state": person.state if person else None,
        "leaver": bool(person and person.left),
        "grant_id": grants[0].id if grants else None,
        "grant_ids": [g.id for g in grants or []],
        "roles": _roles(grants or []),
        "matched_by": matched_by,
        "problems": problems or [],
        "detail": detail,
    }
    if other_account_id is not None:
        item["matched_account_id"] = other_account_id
    return item


def _who(person: Person) -> str:
    return person.email or person.user_name


def _orphan(account: Account, person: Person | None, matched_by: str | None) -> dict[str, Any]:
    status = "deactivated (active=false)" if account.active is False else "active"
    if person is None:
        return _item(
            ItemKind.ORPHAN,
            Severity.MEDIUM,
            f"no identity matches this account (userName, email or externalId); the "
            f"account is {status}",
            account=account,
        )
    if person.left:
        state = {
            "deleted": "was deleted",
            LifecycleState.LEAVER.value: "is leaving (offboarding not finished)",
        }.get(person.state, "has left")
        still = (
            "the account is deactivated but still exists"
            if account.active is False
            else "the account is still active: remove or deactivate it in the target"
        )
        return _item(
            ItemKind.ORPHAN,
            Severity.MEDIUM if account.active is False else Severity.HIGH,
            f"{_who(person)} {state} and has no active grant; {still}",
            account=account,
            person=person,
            matched_by=matched_by,
        )
    return _item(
        ItemKind.ORPHAN,
        Severity.MEDIUM,
        f"{_who(person)} has no active grant for this application; the account is {status}",
        account=account,
        person=person,
        matched_by=matched_by,
    )


def _disagreements(account: Account, person: Person) -> list[tuple[str, str]]:
    found = []
    if account.active is False:
        found.append(("inactive", "the account is deactivated (active=false)"))
    if person.email and person.email.lower() not in account.emails[:1]:
        has = f"email {account.email!r}" if account.email else "no email"
        found.append(("email", f"the account has {has}, the identity {person.email!r}"))
    shown = (account.display_name or "").strip()
    if person.display_name and shown != person.display_name.strip():
        has = f"displayName {shown!r}" if shown else "no displayName"
        found.append(
            ("display_name", f"the account has {has}, the identity {person.display_name!r}")
        )
    return found


@dataclass
class Comparison:
    summary: dict[str, int]
    items: list[dict[str, Any]]


def compare(
    accounts: Iterable[Account], directory: Directory, granted: dict[str, list[GrantRef]]
) -> Comparison:
    items: list[dict[str, Any]] = []
    matched_account: dict[str, str] = {}  # identity id -> the account matched to its grant
    counts = dict.fromkeys(
        ("accounts", "matched", "in_sync", "mismatches", "orphans", "leaver_orphans", "duplicates"),
        0,
    )
    # The strongest match claims a person's grant first (userName, then email, then
    # externalId), so which account is the duplicate does not depend on the listing order.
    paired = [(account, *directory.match(account)) for account in accounts]
    paired.sort(key=lambda p: (_MATCH_ORDER[p[2]], p[0].user_name.lower(), p[0].id))
    for account, person, matched_by in paired:
        counts["accounts"] += 1
        grants = granted.get(person.id) if person is not None else None
        if person is None or not grants:
            item = _orphan(account, person, matched_by)
            counts["orphans"] += 1
            counts["leaver_orphans"] += int(item["leaver"])
            items.append(item)
            continue
        if person.id in matched_account:
            first = matched_account[person.id]
            counts["duplicates"] += 1
            items.append(
                _item(
                    ItemKind.DUPLICATE,
                    Severity.MEDIUM,
                    f"{_who(person)} already has account {first} for the grant; this is a "
                    "second account",
                    account=account,
                    person=person,
                    grants=grants,
                    matched_by=matched_by,
                    other_account_id=first,
                )
            )
            continue
        matched_account[person.id] = account.id
        counts["matched"] += 1
        problems = _disagreements(account, person)
        if not problems:
            counts["in_sync"] += 1
            continue
        counts["mismatches"] += 1
        items.append(
            _item(
                ItemKind.MISMATCH,
                Severity.LOW,
                "; ".join(text for _, text in problems),
                account=account,
                person=person,
                grants=grants,
                matched_by=matched_by,
                problems=[name for name, _ in problems],
            )
        )
    missing = 0
    for identity_id, grants in granted.items():
        if identity_id in matched_account:
            continue
        person = directory.by_id.get(identity_id)
        if person is None:  # (a grant always has its identity; defensive)
            continue
        missing += 1
        roles = _roles(grants)
        items.append(
            _item(
                ItemKind.MISSING,
                Severity.LOW,
                f"{_who(person)} has an active grant"
                + (f" (roles: {', '.join(roles)})" if roles else "")
                + " but no account in the target (looked for userName, email and "
                "externalId)",
                person=person,
                grants=grants,
            )
        )
    counts["missing"] = missing
    counts["active_grants"] = sum(len(g) for g in granted.values())
    counts["granted_identities"] = len(granted)
    items.sort(
        key=lambda i: (
            _SEVERITY_ORDER[Severity(i["severity"])],
            _KIND_ORDER[ItemKind(i["kind"])],
            (i["user_name"] or i["identity_user_name"] or "").lower(),
        )
    )
    return Comparison(counts, items)


# --- running one ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    application_id: str
    application_name: str
    connection_id: str
    connection_name: str
    base_url: str


def prepare(session: Session, actor: Actor, application: str, connection: str | None) -> Target:
    """Check the permission and choose the connection; raises before anything is stored."""
    actor.require(Permission.RECONCILE)
    app = find_application(session, application)
    chosen = choose_connection(session, app, connection)
    return Target(app.id, app.name, chosen.id, chosen.name, chosen.base_url)


def reconcile(
    database: Database,
    access: ConnectionAccess,
    actor: Actor,
    application: str,
    request: ReconcileRequest | None = None,
) -> str:
    """Run one reconciliation of `application` (id or name) and store its report; returns
    the report's id. A target that cannot be read gives a stored `failed` report."""
    request = request or ReconcileRequest()
    with database.transaction() as session:
        target = prepare(session, actor, application, request.connection)
    listing: Listing | None = None
    failure: GrantflowError | None = None
    try:
        listing = list_accounts(
            access, target.application_id, target.connection_name, request.page_size
        )
    except GrantflowError as exc:
        failure = exc
    except Exception as exc:  # a fault outside the classified ones still leaves a record
        log.exception("reconcile.unexpected", application_id=target.application_id)
        failure = PermanentError(
            f"reading the accounts failed unexpectedly: {type(exc).__name__}",
            code="internal_error",
            next_action="report this with the report id; it is a fault in Grantflow",
        )
    with database.transaction() as session:
        return _store(session, actor, target, listing, failure).id


def _store(
    session: Session,
    actor: Actor,
    target: Target,
    listing: Listing | None,
    failure: GrantflowError | None,
) -> ReconciliationReport:
    connection = {
        "id": target.connection_id,
        "name": target.connection_name,
        "base_url": target.base_url,
    }
    report = ReconciliationReport(
        application_id=target.application_id,
        connection_id=target.connection_id,
        created_by=actor.label,
    )
    if listing is None:
        assert failure is not None
        report.status = ReportStatus.FAILED
        report.error = failure.message
        report.items = []
        report.summary = {
            "connection": connection,
            "counts": {},
            "failure": {
                "class": str(failure.failure_class),
                "code": failure.code,
                "next_action": failure.next_action,
            },
        }
    else:
        result = compare(
            listing.accounts,
            load_directory(session),
            active_grants(session, target.application_id),
        )
        report.status = ReportStatus.COMPLETED
        report.items = result.items
        report.summary = {
            "connection": connection,
            "counts": result.summary,
            "pages": listing.pages,
            "failure": None,
        }
    session.add(report)
    session.flush()
    audit.record(
        session,
        actor,
        f"reconciliation.{report.status}",
        "reconciliation",
        report.id,
        {
            "application_id": target.application_id,
            "application": target.application_name,
            "connection": target.connection_name,
            "status": report.status,
            "counts": report.summary["counts"],
            "error": report.error,
        },
    )
    log.info(
        "reconcile.done",
        report_id=report.id,
        application_id=target.application_id,
        status=report.status,
        **report.summary["counts"],
    )
    return report


# --- reading ----------------------------------------------------------------------------------


def get_report(session: Session, report_id: str) -> ReconciliationReport:
    report = session.get(ReconciliationReport, report_id) or by_prefix(
        session, ReconciliationReport, report_id, "reconciliation report"
    )
    if report is None:
        raise NotFound(
            f"reconciliation report {report_id} does not exist",
            target_type="reconciliation",
            target_id=report_id,
        )
    return report


def list_reports(
    session: Session, application_id: str, *, cursor: str | None = None, limit: int = 50
) -> Page[ReconciliationReport]:
    """The application's reports, newest first (ids are time-ordered)."""
    get_application(session, application_id)
    stmt = (
        select(ReconciliationReport)
        .options(defer(ReconciliationReport.items))  # (a list shows the counts only)
        .where(ReconciliationReport.application_id == application_id)
    )
    before = decode_cursor(cursor, str)
    if before is not None:
        stmt = stmt.where(ReconciliationReport.id < before)
    rows = (
        session.execute(stmt.order_by(ReconciliationReport.id.desc()).limit(limit + 1))
        .scalars()
        .all()
    )
    return page_of(rows, limit, key=lambda r: r.id)


def view(session: Session, report: ReconciliationReport, *, items: bool = True) -> dict[str, Any]:
    """The report as plain data (the API's and the CLI's shape)."""
    app = session.get(Application, report.application_id)
    summary = report.summary or {}
    failure = summary.get("failure") or {}
    shown: dict[str, Any] = {
        "id": report.id,
        "application": {"id": report.application_id, "name": app.name if app else None},
        "connection": summary.get("connection") or {"id": report.connection_id},
        "status": report.status,
        "summary": summary.get("counts") or {},
        "pages": summary.get("pages"),
        "error": report.error,
        "failure_class": failure.get("class"),
        "next_action": failure.get("next_action"),
        "created_by": report.created_by,
        "created_at": report.created_at,
        "csv": f"/api/v1/reconciliations/{report.id}/csv",
    }
    if items:
        shown["items"] = list(report.items or [])
    return shown


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # a value from the target must not run as a formula in a spreadsheet
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def report_csv(report: ReconciliationReport) -> str:
    """One row per finding: orphans, duplicates, missing accounts, mismatches."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in report.items or []:
        writer.writerow([_cell(item.get(column)) for column in CSV_COLUMNS])
    return buffer.getvalue()
