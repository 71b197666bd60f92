"""`grantflow identities ...`: the people whose access Grantflow automates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from rich.markup import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.access import identities as service
from grantflow.access import identity_import
from grantflow.access.lifecycle import LifecycleState
from grantflow.access.models import Identity, LifecycleEvent
from grantflow.auth.actor import Actor
from grantflow.cli.context import (
    JSON_OPTION,
    database,
    emit_json,
    emit_table,
    errors_as_lines,
    out,
    settings,
)
from grantflow.errors import ValidationError
from grantflow.queue.database import DatabaseQueue

app = typer.Typer(
    help="Manage identities: create, change, offboard, list their lifecycle events, import CSV.",
    no_args_is_help=True,
)
CLI = Actor.system("cli")
M = TypeVar("M", bound=BaseModel)

# exit code of `import` when some rows were rejected (the others were imported)
ROWS_REJECTED = 3

IDENTITY_ARG = typer.Argument(..., help="the identity's id, email or userName")
DISPLAY_NAME = typer.Option(None, "--display-name")
USER_NAME = typer.Option(None, "--user-name", help="defaults to the email")
GIVEN_NAME = typer.Option(None, "--given-name")
FAMILY_NAME = typer.Option(None, "--family-name")
TITLE = typer.Option(None, "--title")
DEPARTMENT = typer.Option(None, "--department")
MANAGER = typer.Option(None, "--manager", help="the manager's id, email or userName")
START_DATE = typer.Option(None, "--start-date", help="YYYY-MM-DD")
END_DATE = typer.Option(None, "--end-date", help="YYYY-MM-DD; the identity leaves after it")
ATTR = typer.Option(None, "--attr", help="a custom attribute NAME=VALUE (repeat)")


def _plain(value: Any) -> Any:
    return timestamps.plain(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A table whose cells are shown as they are (a "[" in a title is not console markup)."""
    emit_table(
        [{c: escape(v) if isinstance(v, str) else v for c, v in row.items()} for row in rows],
        columns,
    )


def _row(session: Session, identity: Identity) -> dict[str, Any]:
    manager = session.get(Identity, identity.manager_id) if identity.manager_id else None
    return {
        "id": identity.id,
        "email": identity.email,
        "user_name": identity.user_name,
        "external_id": identity.external_id,
        "display_name": identity.display_name,
        "given_name": identity.given_name,
        "family_name": identity.family_name,
        "title": identity.title,
        "department": identity.department,
        "manager_id": identity.manager_id,
        "manager": (manager.email or manager.user_name) if manager else None,
        "start_date": _plain(identity.start_date),
        "end_date": _plain(identity.end_date),
        "lifecycle_state": identity.lifecycle_state,
        "active": identity.active,
        "attributes": identity.attributes or {},
        "source": identity.source,
        "deleted_at": _plain(identity.deleted_at),
        "created_at": _plain(identity.created_at),
        "updated_at": _plain(identity.updated_at),
    }


def _print_identity(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(row)
        return
    for name, value in row.items():
        if value not in (None, {}, ""):
            out.print(f"{name + ':':<17} {value}", markup=False)


def _validated(model: type[M], values: dict[str, Any]) -> M:
    """The options as the service's model; a bad value is one error line naming its option."""
    try:
        return model.model_validate(values)
    except PydanticError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "input"
        option = "--attr" if name == "attributes" else f"--{name.replace('_', '-')}"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValidationError(f"{option}: {message}") from None


def _attributes(pairs: list[str] | None, current: dict[str, Any]) -> dict[str, Any]:
    """NAME=VALUE sets an attribute, NAME= removes it."""
    merged = dict(current)
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"--attr: {pair!r} is not NAME=VALUE")
        if value:
            merged[name.strip()] = value
        else:
            merged.pop(name.strip(), None)
    return merged


def _sent(**options: Any) -> dict[str, Any]:
    """The options given: None is not given, an empty string clears the field."""
    return {k: (v or None) for k, v in options.items() if v is not None}


@app.command("list")
def list_identities(
    query: str = typer.Option(None, "--query", "-q", help="substring of email, name, userName"),
    state: LifecycleState = typer.Option(None, "--state", help="lifecycle state"),
    department: str = typer.Option(None, "--department"),
    include_deleted: bool = typer.Option(False, "--include-deleted"),
    limit: int = typer.Option(1000, "--limit", min=1, help="at most this many identities"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List identities (ordered by id)."""
    rows: list[dict[str, Any]] = []
    with errors_as_lines(), database() as db, db.transaction() as session:
        cursor = None
        while len(rows) < limit:
            page = service.list_identities(
                session,
                query=query,
                lifecycle_state=state,
                department=department,
                include_deleted=include_deleted,
                cursor=cursor,
                limit=min(500, limit - len(rows)),
            )
            rows.extend(_row(session, i) for i in page.items)
            if not page.next_cursor:
                break
            cursor = page.next_cursor
    if as_json:
        emit_json(rows)
    else:
        _table(rows, ["id", "email", "display_name", "department", "lifecycle_state", "active"])


@app.command("show")
def show(identity: str = IDENTITY_ARG, as_json: bool = JSON_OPTION) -> None:
    """Show one identity."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        row = _row(session, service.find_identity(session, identity))
    _print_identity(row, as_json)


@app.command("create")
def create(
    email: str = typer.Option(..., "--email"),
    display_name: str = DISPLAY_NAME,
    user_name: str = USER_NAME,
    given_name: str = GIVEN_NAME,
    family_name: str = FAMILY_NAME,
    title: str = TITLE,
    department: str = DEPARTMENT,
    manager: str = MANAGER,
    start_date: str = START_DATE,
    end_date: str = END_DATE,
    inactive: bool = typer.Option(
        False, "--inactive", help="a pre-hire: created without joining (no identity_joined)"
    ),
    attr: list[str] = ATTR,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an identity; an active one joins (identity_joined workflows start)."""
    with errors_as_lines():
        values = _sent(
            email=email,
            display_name=display_name,
            user_name=user_name,
            given_name=given_name,
            family_name=family_name,
            title=title,
            department=department,
            manager=manager,
            start_date=start_date,
            end_date=end_date,
        )
        values["active"] = not inactive
        if attr:
            values["attributes"] = _attributes(attr, {})
        data = _validated(service.IdentityCreate, values)
        with database() as db, db.transaction() as session:
            row = _row(session, service.create_identity(session, CLI, DatabaseQueue(db), data))
    if as_json:
        emit_json(row)
    else:
        out.print(
            f"created identity {row['email']} ({row['id']}), {row['lifecycle_state']}",
            markup=False,
        )


@app.command("update")
def update(
    identity: str = IDENTITY_ARG,
    email: str = typer.Option(None, "--email"),
    display_name: str = DISPLAY_NAME,
    user_name: str = USER_NAME,
    given_name: str = GIVEN_NAME,
    family_name: str = FAMILY_NAME,
    title: str = TITLE,
    department: str = DEPARTMENT,
    manager: str = MANAGER,
    start_date: str = START_DATE,
    end_date: str = END_DATE,
    active: bool = typer.Option(
        None, "--active/--inactive", help="reactivate (joins) or deactivate (leaves)"
    ),
    attr: list[str] = typer.Option(
        None, "--attr", help="NAME=VALUE sets a custom attribute, NAME= removes it (repeat)"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Change the options given (an empty value clears a field). While active, a change is a
    move (identity_moved); --inactive offboards (identity_left, grants revoked)."""
    with errors_as_lines():
        values = _sent(
            email=email,
            display_name=display_name,
            user_name=user_name,
            given_name=given_name,
            family_name=family_name,
            title=title,
            department=department,
            manager=manager,
            start_date=start_date,
            end_date=end_date,
        )
        if active is not None:
            values["active"] = active
        with database() as db, db.transaction() as session:
            found = service.find_identity(session, identity)
            if attr:
                values["attributes"] = _attributes(attr, found.attributes or {})
            data = _validated(service.IdentityFields, values)
            changed, changes = service.update_identity(
                session, CLI, DatabaseQueue(db), found.id, data
            )
            row = _row(session, changed)
    if as_json:
        emit_json({**row, "changes": {k: [_plain(v) for v in c] for k, c in changes.items()}})
    elif changes:
        out.print(
            f"updated identity {row['email'] or row['user_name']}: {', '.join(sorted(changes))}; "
            f"now {row['lifecycle_state']}",
            markup=False,
        )
    else:
        out.print(f"identity {row['email'] or row['user_name']}: nothing changed", markup=False)


@app.command("leave")
def leave(identity: str = IDENTITY_ARG, as_json: bool = JSON_OPTION) -> None:
    """Offboard now: revoke every active grant and start the identity_left workflows."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_identity(session, identity)
        left, changes = service.update_identity(
            session, CLI, DatabaseQueue(db), found.id, service.IdentityFields(active=False)
        )
        row = _row(session, left)
    if as_json:
        emit_json(row)
    elif changes:
        out.print(f"{row['email']} left: {row['lifecycle_state']}", markup=False)
    else:
        out.print(f"{row['email']} was not active; nothing changed", markup=False)


@app.command("events")
def events(identity: str = IDENTITY_ARG, as_json: bool = JSON_OPTION) -> None:
    """Lifecycle events of the identity, with the runs each started or why none started."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.get_live_identity(session, service.find_identity(session, identity).id)
        rows = [
            {
                "id": e.id,
                "kind": e.kind,
                "created_at": _plain(e.created_at),
                "actor": e.actor,
                "grant_id": e.grant_id,
                "application_id": e.application_id,
                "details": e.details,
                "dispatch": e.dispatch,
                "runs": [d["run_id"] for d in e.dispatch if "run_id" in d],
                "no_run_reason": e.no_run_reason,
            }
            for e in session.execute(
                select(LifecycleEvent)
                .where(LifecycleEvent.identity_id == found.id)
                .order_by(LifecycleEvent.id)
            ).scalars()
        ]
    if as_json:
        emit_json(rows)
    else:
        _table(rows, ["created_at", "kind", "actor", "runs", "no_run_reason"])


@app.command("import")
def import_file(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="a CSV file (UTF-8, header first)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="report what would change; write none"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create and update identities from a CSV file, matched by email.

    Columns: email (required), display_name, user_name, given_name, family_name, title,
    department, manager, start_date, end_date, active, attr.<name>. Exit code 0 when every
    row was imported (or unchanged), 3 when some rows were rejected (the others were imported),
    1 when the file was refused (nothing imported).
    """
    loaded = settings()
    with errors_as_lines():
        content = path.read_bytes()
        with database(loaded) as db:
            report = identity_import.import_csv(
                db,
                CLI,
                DatabaseQueue(db),
                content,
                filename=path.name,
                dry_run=dry_run,
                max_bytes=loaded.evidence_max_bytes,
            )
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        _print_report(report)
    if report.counts.rejected:
        raise typer.Exit(ROWS_REJECTED)


def _print_report(report: identity_import.ImportReport) -> None:
    shown = [r for r in report.results if r.outcome != identity_import.Outcome.UNCHANGED]
    rows = []
    for result in shown:
        if result.outcome == identity_import.Outcome.REJECTED:
            detail = result.reason or ""
        elif result.changes:
            detail = "; ".join(
                f"{k}: {old!r} -> {new!r}" for k, (old, new) in result.changes.items()
            )
        else:
            detail = ""
        if result.events:
            detail = f"{detail} (events: {', '.join(result.events)})".strip()
        rows.append(
            {"row": result.row, "email": result.email, "outcome": result.outcome, "detail": detail}
        )
    if rows:
        _table(rows, ["row", "email", "outcome", "detail"])
    c = report.counts
    prefix = "dry run (nothing written): " if report.dry_run else ""
    out.print(
        f"{prefix}{report.rows} rows: {c.created} created, {c.updated} updated, "
        f"{c.unchanged} unchanged, {c.rejected} rejected",
        markup=False,
    )
