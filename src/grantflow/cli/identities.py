"""`grantflow identities ...`: the people whose access Grantflow automates, through
/api/v1/identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from grantflow.cli.client import Client, connect, segment
from grantflow.cli.context import (
    JSON_OPTION,
    emit_json,
    emit_table,
    errors_as_lines,
    out,
    progress,
)
from grantflow.cli.files import multipart
from grantflow.cli.waiting import BUSY_HINT_SECONDS, Waiting
from grantflow.errors import BadRequest, ValidationError

app = typer.Typer(
    help="Manage identities: create, change, offboard, import CSV.",
    no_args_is_help=True,
)

# exit code of `import` when some rows were rejected (the others were imported)
ROWS_REJECTED = 3
OPTIONS = {"attributes": "--attr"}  # body fields named after another option
STATES = ("joiner", "active", "mover", "leaver", "left")

IDENTITY_ARG = typer.Argument(..., help="the identity's id (or id prefix), email or userName")
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


def _print_identity(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(row)
        return
    for name, value in row.items():
        if value not in (None, {}, [], ""):
            out.print(f"{name + ':':<19} {value}", markup=False)


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


def _find(api: Client, key: str) -> dict[str, Any]:
    """The identity by id, id prefix, email or userName (the server resolves it)."""
    found: dict[str, Any] = api.get(f"/identities/{segment(key)}")
    return found


@app.command("list")
def list_identities(
    query: str = typer.Option(None, "--query", "-q", help="substring of email, name, userName"),
    state: str = typer.Option(None, "--state", help="lifecycle state: " + ", ".join(STATES)),
    department: str = typer.Option(None, "--department"),
    include_deleted: bool = typer.Option(False, "--include-deleted"),
    limit: int = typer.Option(1000, "--limit", min=1, help="at most this many identities"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List identities (ordered by id)."""
    with errors_as_lines({"lifecycle_state": "--state", "q": "--query"}), connect() as api:
        rows = api.items(
            "/identities",
            limit,
            q=query,
            lifecycle_state=state,
            department=department,
            include_deleted=include_deleted,
        )
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "email", "display_name", "department", "lifecycle_state", "active"])


@app.command("show")
def show(identity: str = IDENTITY_ARG, as_json: bool = JSON_OPTION) -> None:
    """Show one identity (with its manager's email)."""
    with errors_as_lines(), connect() as api:
        row = _find(api, identity)
        manager = api.get(f"/identities/{row['manager_id']}") if row.get("manager_id") else None
    shown = {**row, "manager": (manager["email"] or manager["user_name"]) if manager else None}
    _print_identity(shown, as_json)


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
    with errors_as_lines(OPTIONS):
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
        with connect() as api:
            row = api.post("/identities", values)
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
    with errors_as_lines(OPTIONS):
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
        with connect() as api:
            found = _find(api, identity)
            if attr:
                values["attributes"] = _attributes(attr, found.get("attributes") or {})
            row = api.patch(f"/identities/{found['id']}", values)
    changes = row.get("changes", {})
    if as_json:
        emit_json(row)
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
    with errors_as_lines(), connect() as api:
        row = api.post(f"/identities/{_find(api, identity)['id']}/leave")
    if as_json:
        emit_json(row)
    elif row.get("changes"):
        out.print(f"{row['email']} left: {row['lifecycle_state']}", markup=False)
    else:
        out.print(f"{row['email']} was not active; nothing changed", markup=False)


@app.command("events")
def events(identity: str = IDENTITY_ARG, as_json: bool = JSON_OPTION) -> None:
    """Lifecycle events of the identity, with the runs each started or why none started."""
    with errors_as_lines(), connect() as api:
        found = api.get(f"/identities/{_find(api, identity)['id']}/events")
    rows = [{**e, "runs": [d["run_id"] for d in e["dispatch"] if "run_id" in d]} for e in found]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["created_at", "kind", "actor", "runs", "no_run_reason"])


@app.command("import")
def import_file(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="a CSV file (UTF-8, header first)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="report what would change; write none"),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="hand the file to the workers and print the import's id"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create and update identities from a CSV file, matched by email.

    Columns: email (required), display_name, user_name, given_name, family_name, title,
    department, manager, start_date, end_date, active, attr.<name>. On a server the workers
    import it while this command shows their progress (Ctrl-C stops the waiting, not the
    import). Exit code 0 when every row was imported (or unchanged), 3 when some rows were
    rejected (the others were imported), 1 when the file was refused (nothing imported) or
    the import was cancelled or failed, 130 when Ctrl-C stopped the waiting.
    """
    if dry_run and no_wait:
        raise typer.BadParameter("a dry run answers at once: leave out --no-wait")
    with errors_as_lines():
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise BadRequest(f"PATH: cannot read {path}: {exc.strerror}") from None
        body, kind = multipart({}, "file", path.name, "text/csv", content)
        with connect() as api:
            if dry_run or not (api.remote or no_wait):  # (locally, this process writes it)
                with progress(f"importing {path.name}", quiet=as_json):
                    answer = api.request(
                        "POST", "/identities/import", params={"dry_run": dry_run},
                        content=body, content_type=kind,
                    )  # fmt: skip
                report = answer.json()
            else:
                started = api.request(
                    "POST", "/identity-imports", content=body, content_type=kind
                ).json()
                if no_wait:
                    _print_import(started, as_json)
                    return
                report = _follow(api, started, quiet=as_json)
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
    if report.get("status") in ("cancelled", "failed"):
        raise typer.Exit(1)
    if report["counts"]["rejected"]:
        raise typer.Exit(ROWS_REJECTED)


def _follow(api: Client, started: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Wait for the workers to finish the import, showing its progress; then its report. What
    needs a person (no worker runs, a batch failed) is also said once on stderr, for a script
    or --json that shows no progress bar."""
    import_id, name = started["id"], started["filename"] or "the file"
    waiting = Waiting(
        api,
        f"import {import_id}",
        resume=f"grantflow identities imports {import_id}",
        behind=f"not moved for {BUSY_HINT_SECONDS:.0f} s although workers are live: they write "
        "imports one at a time, oldest first (`grantflow identities imports` lists the imports "
        "ahead of it)",
    )
    with progress(f"importing {name}", quiet=quiet) as update:

        def each(view: dict[str, Any]) -> None:
            if view["error"] and view["status"] in ("queued", "running"):
                waiting.note(f"a batch failed: {view['error']} (the workers try again at "
                             f"{view['retry_at']})")  # fmt: skip
            shown = f"importing {name}: {view['done_rows']:,} of {view['rows']:,} rows"
            update(description=shown, completed=view["done_rows"], total=view["rows"])

        view = waiting.follow(
            started,
            lambda: api.get(f"/identity-imports/{import_id}"),
            going=lambda view: view["status"] in ("queued", "running"),
            progress=lambda view: view["done_rows"],
            each=each,
        )
    if view["status"] == "failed":
        waiting.note(f"failed at row {view['done_rows']} of {view['rows']}: {view['error']}")
    results = api.items(f"/identity-imports/{import_id}/rows", limit=view["rows"] or 1)
    return {
        "dry_run": False,
        "import_id": import_id,
        "status": view["status"],
        "filename": view["filename"],
        "rows": view["rows"],
        "counts": view["counts"],
        "results": results,
    }


@app.command("imports")
def imports(
    import_id: str | None = typer.Argument(None, help="an import's id (or id prefix)"),
    limit: int = typer.Option(20, "--limit", min=1, help="imports listed"),
    as_json: bool = JSON_OPTION,
) -> None:
    """The CSV imports, newest first; with an id, that import and its rejected rows."""
    with errors_as_lines(), connect() as api:
        if import_id is None:
            found = api.items("/identity-imports", limit=limit)
            if as_json:
                emit_json(found)
                return
            rows = [{**i, **i["counts"], "done": f"{i['done_rows']}/{i['rows']}"} for i in found]
            emit_table(
                rows,
                ["id", "status", "filename", "done", "created", "updated", "rejected",
                 "created_by", "created_at"],
            )  # fmt: skip
            return
        view = api.get(f"/identity-imports/{segment(import_id)}")
        rejected = api.items(
            f"/identity-imports/{view['id']}/rows", limit=view["rows"] or 1, outcome="rejected"
        )
    if as_json:
        emit_json({**view, "rejected_rows": rejected})
        return
    _print_import(view, False)
    if rejected:
        emit_table(rejected, ["row", "email", "reason"])


@app.command("cancel-import")
def cancel_import(
    import_id: str = typer.Argument(..., help="an import's id (or id prefix)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Stop an import between batches: the rows written stay; the rest are not written."""
    with errors_as_lines(), connect() as api:
        whole = api.full_id("/identity-imports", import_id)
        view = api.post(f"/identity-imports/{whole}/cancel")
    _print_import(view, as_json)


def _print_import(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(view)
        return
    counts = ", ".join(f"{n} {k}" for k, n in view["counts"].items())
    out.print(f"import {view['id']}: {view['status']}", markup=False)
    out.print(f"  {view['filename'] or '(no file name)'}: {view['done_rows']} of "
              f"{view['rows']} rows done ({counts})", markup=False)  # fmt: skip
    if view.get("error"):
        out.print(f"  a batch failed: {view['error']} (tried again at {view['retry_at']})",
                  markup=False)  # fmt: skip
    if view["status"] in ("queued", "running"):
        out.print(f"  follow it: grantflow identities imports {view['id']}", markup=False)


def _print_report(report: dict[str, Any]) -> None:
    rows = []
    for result in report["results"]:
        if result["outcome"] == "unchanged":
            continue
        if result["outcome"] == "rejected":
            detail = result.get("reason") or ""
        elif result.get("changes"):
            detail = "; ".join(
                f"{k}: {old!r} -> {new!r}" for k, (old, new) in result["changes"].items()
            )
        else:
            detail = ""
        if result.get("events"):
            detail = f"{detail} (events: {', '.join(result['events'])})".strip()
        rows.append(
            {"row": result["row"], "email": result["email"], "outcome": result["outcome"],
             "detail": detail}
        )  # fmt: skip
    if rows:
        emit_table(rows, ["row", "email", "outcome", "detail"])
    c = report["counts"]
    prefix = "dry run (nothing written): " if report["dry_run"] else ""
    if report.get("status") in ("cancelled", "failed"):
        prefix = f"import {report['status']}, {len(report['results'])} rows written: "
    out.print(
        f"{prefix}{report['rows']} rows: {c['created']} created, {c['updated']} updated, "
        f"{c['unchanged']} unchanged, {c['rejected']} rejected",
        markup=False,
    )
