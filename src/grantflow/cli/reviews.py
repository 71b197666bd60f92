"""`grantflow reviews start | list | show | items | decide | close | report`: access reviews
(certification campaigns), through the same services as /api/v1/reviews.

A decision is a person's: `decide --as EMAIL` acts as that user, with their permissions, and
only an assigned reviewer may decide (never their own access). Revoke decisions, and revoke
defaults at close, start the application's access_revoked workflows through the database
queue; a running worker (or `grantflow serve`) advances them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from grantflow.auth.actor import Actor
from grantflow.cli.context import JSON_OPTION, database, emit_json, errors_as_lines, out
from grantflow.cli.grants import fold_table
from grantflow.cli.inbox import AS_HELP, acting_user
from grantflow.definitions.source import parse_text
from grantflow.errors import BadRequest
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules import reviews as service
from grantflow.schedules.reviews import Decision, ReviewStatus

app = typer.Typer(
    help="Access reviews: start campaigns, decide keep or revoke, close, and report.",
    no_args_is_help=True,
)
CLI = Actor.system("cli")

ITEM_COLUMNS = ("id", "identity", "application", "role", "reviewers", "decision", "decided_by")


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadRequest(f"-f: cannot read {path}: {exc.strerror}") from None
    data = parse_text(text, name=str(path))
    if not isinstance(data, dict):
        raise BadRequest(f"{path}: an access review config is a mapping (name, reviewer, ...)")
    return data


def _print_review(view: dict[str, Any]) -> None:
    p = view["progress"]
    out.print(f"review {view['id']}  {view['status']}  {view['name']!r}", markup=False)
    out.print(
        f"  {view['starts_at']:%Y-%m-%d %H:%M}Z -> {view['ends_at']:%Y-%m-%d %H:%M}Z"
        f"  default {view['default_decision']}"
        + ("  (keep needs a justification)" if view["require_justification_for_keep"] else ""),
        markup=False,
    )
    out.print(
        f"  progress: {p['decided']}/{p['total']} decided ({p['percent']}%): keep {p['keep']}, "
        f"revoke {p['revoke']}, pending {p['pending']}, defaulted {p['defaulted']}, "
        f"fallback {p['fallback']}, unassigned {p['unassigned']}",
        markup=False,
    )
    if view.get("closed_at"):
        out.print(f"  closed {view['closed_at']:%Y-%m-%d %H:%M}Z by {view['closed_by']}")


def _item_row(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": view["id"],
        "identity": view["identity"]["email"] or view["identity"]["user_name"],
        "application": view["application"]["name"],
        "role": view["role"],
        "reviewers": ", ".join(view["reviewers"]) + f" ({view['reviewer_source']})",
        "decision": (view["decision"] or "pending") + (" (default)" if view["defaulted"] else ""),
        "decided_by": view["decided_by"],
    }


@app.command("start")
def start(
    file: Path = typer.Option(..., "-f", "--file", help="the review config (YAML or JSON)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a campaign now from a config file."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        config = service.parse_config(_load(file), prefix=str(file))
        review = service.start_review(session, CLI, DatabaseQueue(db), config)
        view = service.review_view(session, review)
    if as_json:
        emit_json(view)
    else:
        _print_review(view)


@app.command("list")
def list_reviews(
    status: ReviewStatus | None = typer.Option(None, "--status"),
    limit: int = typer.Option(50, "--limit", min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Campaigns, newest first, with their progress."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        page = service.list_reviews(session, status=status, limit=limit)
        views = [service.review_view(session, r) for r in page.items]
    if as_json:
        emit_json(views)
        return
    fold_table(
        [
            {
                "id": v["id"],
                "name": v["name"],
                "status": v["status"],
                "ends_at": v["ends_at"],
                "decided": f"{v['progress']['decided']}/{v['progress']['total']}",
                "percent": v["progress"]["percent"],
            }
            for v in views
        ],
        ("id", "name", "status", "ends_at", "decided", "percent"),
    )


@app.command("show")
def show(review: str = typer.Argument(..., help="id or name"), as_json: bool = JSON_OPTION) -> None:
    """A campaign and its progress."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        view = service.review_view(session, service.get_review(session, review))
    if as_json:
        emit_json(view)
    else:
        _print_review(view)


@app.command("items")
def items(
    review: str = typer.Argument(..., help="id or name"),
    pending: bool = typer.Option(False, "--pending", help="only undecided items"),
    mine: bool = typer.Option(False, "--mine", help="only items --as can decide now"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
    limit: int = typer.Option(500, "--limit", min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """The campaign's items, their reviewers and decisions."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        if mine and as_user is None:
            raise BadRequest("--mine needs --as EMAIL (whose items)")
        user = acting_user(session, as_user)[0] if as_user else None
        found = service.get_review(session, review)
        page = service.list_items(
            session,
            found,
            pending=True if pending else None,
            mine=user if mine else None,
            limit=limit,
        )
        views = [service.item_view(session, i, user) for i in page.items]
    if as_json:
        emit_json(views)
        return
    fold_table([_item_row(v) for v in views], ITEM_COLUMNS)
    for v in views:
        if v["routing_problem"] and v["decision"] is None:
            out.print(f"  {v['id']}: {v['routing_problem']}", markup=False)


@app.command("decide")
def decide(
    item: str = typer.Argument(..., help="the item's id"),
    decision: Decision = typer.Argument(..., help="keep or revoke"),
    as_user: str = typer.Option(..., "--as", help=AS_HELP),
    comment: str | None = typer.Option(None, "--comment", "-m", help="why (justification)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Keep or revoke one grant, as an assigned reviewer."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        user, actor = acting_user(session, as_user)
        decided = service.decide(session, actor, DatabaseQueue(db), item, decision, comment)
        view = service.item_view(session, decided, user)
    if as_json:
        emit_json(view)
        return
    revoked = "; the grant is revoked (its access_revoked workflows start)"
    out.print(
        f"item {view['id']}: {view['decision']} by {view['decided_by']}"
        + (revoked if view["revoked"] else ""),
        markup=False,
    )


@app.command("close")
def close(
    review: str = typer.Argument(..., help="id or name"), as_json: bool = JSON_OPTION
) -> None:
    """End the campaign now: undecided items get its default decision."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        closed = service.close(session, CLI, DatabaseQueue(db), review)
        view = service.review_view(session, closed)
    if as_json:
        emit_json(view)
    else:
        _print_review(view)


@app.command("report")
def report(
    review: str = typer.Argument(..., help="id or name"),
    csv_file: Path = typer.Option(..., "--csv", help="write the CSV here ('-': standard output)"),
) -> None:
    """Every item and its decision (reviewer, time, comment) as CSV."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.get_review(session, review)
        text = service.report_csv(session, found)
        rows = service.progress(session, found)["total"]
    if str(csv_file) == "-":
        typer.echo(text, nl=False)
        return
    csv_file.write_text(text, newline="")
    out.print(f"wrote {rows} item(s) to {csv_file}", markup=False)
