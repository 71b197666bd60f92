"""`grantflow reviews start | list | show | items | decide | close | report`: access reviews
(certification campaigns), through /api/v1/reviews.

A decision is a person's: the token's user, or on the local database `decide --as EMAIL`, with
that user's permissions; only an assigned reviewer may decide (never their own access). Revoke
decisions, and revoke defaults at close, start the application's access_revoked workflows; a
running worker (or `grantflow serve`) advances them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from grantflow.cli.client import connect, segment
from grantflow.cli.context import (
    JSON_OPTION,
    emit_json,
    errors_as_lines,
    fold_table,
    out,
    progress,
)
from grantflow.cli.files import read_any, write_atomically
from grantflow.cli.inbox import AS_HELP, needs_person
from grantflow.errors import BadRequest

app = typer.Typer(
    help="Access reviews: start, decide keep or revoke, close, report.",
    no_args_is_help=True,
)
REVIEW = typer.Argument(..., help="id (or a unique prefix) or name")

ITEM_COLUMNS = ("id", "identity", "application", "role", "reviewers", "decision", "decided_by")


def _load(path: Path) -> dict[str, Any]:
    data = read_any(path, "-f")
    if not isinstance(data, dict):
        raise BadRequest(f"{path}: an access review config is a mapping (name, reviewer, ...)")
    return data


def _print_review(view: dict[str, Any]) -> None:
    p = view["progress"]
    out.print(f"review {view['id']}  {view['status']}  {view['name']!r}", markup=False)
    out.print(
        f"  {_minute(view['starts_at'])} -> {_minute(view['ends_at'])}"
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
        out.print(f"  closed {_minute(view['closed_at'])} by {view['closed_by']}")
    if p.get("revocations_pending"):
        out.print(
            f"  closing: the workers are revoking {p['revocations_pending']} grant(s) that "
            "defaulted to revoke, in batches"
        )
    if view.get("revocations_error"):
        out.print(
            f"  revoking failed: {view['revocations_error']} (the workers try again at "
            f"{_minute(view['revocations_retry_at'])})",
            markup=False,
        )


def _minute(at: str) -> str:
    """An RFC 3339 time to the minute: 2026-03-02 10:00Z."""
    return at[:16].replace("T", " ") + "Z"


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
    with errors_as_lines():
        config = _load(file)
        with (
            connect() as api,
            progress(f"starting {config.get('name', 'the review')}", quiet=as_json),
        ):
            view = api.post("/reviews", config)
    if as_json:
        emit_json(view)
    else:
        _print_review(view)


@app.command("list")
def list_reviews(
    status: str | None = typer.Option(None, "--status", help="open, closing or closed"),
    limit: int = typer.Option(50, "--limit", min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Campaigns, newest first, with their progress."""
    with errors_as_lines(), connect() as api:
        views = api.items("/reviews", limit, status=status)
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
def show(review: str = REVIEW, as_json: bool = JSON_OPTION) -> None:
    """A campaign and its progress."""
    with errors_as_lines(), connect() as api:
        view = api.get(f"/reviews/{segment(review)}")
    if as_json:
        emit_json(view)
    else:
        _print_review(view)


@app.command("items")
def items(
    review: str = REVIEW,
    pending: bool = typer.Option(False, "--pending", help="only undecided items"),
    mine: bool = typer.Option(False, "--mine", help="only items --as can decide now"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
    limit: int = typer.Option(500, "--limit", min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """The campaign's items, their reviewers and decisions."""
    with errors_as_lines(), connect(act_as=as_user) as api:
        if mine:
            needs_person(api, as_user)
        found = api.get(f"/reviews/{segment(review)}")
        views = api.items(
            f"/reviews/{found['id']}/items",
            limit,
            pending=True if pending else None,
            mine=mine or None,
        )
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
    decision: str = typer.Argument(..., help="keep or revoke"),
    as_user: str = typer.Option(None, "--as", help=AS_HELP),
    comment: str | None = typer.Option(None, "--comment", "-m", help="why (justification)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Keep or revoke one grant, as an assigned reviewer."""
    with errors_as_lines({}), connect(act_as=as_user) as api:
        needs_person(api, as_user)
        body = {"decision": decision, "comment": comment}
        view = api.post(f"/reviews/items/{segment(item)}/decide", body)
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
def close(review: str = REVIEW, as_json: bool = JSON_OPTION) -> None:
    """End the campaign now: undecided items get its default decision."""
    with errors_as_lines(), connect() as api:
        found = api.get(f"/reviews/{segment(review)}")
        view = api.post(f"/reviews/{found['id']}/close")
    if as_json:
        emit_json(view)
    else:
        _print_review(view)


@app.command("report")
def report(
    review: str = REVIEW,
    csv_file: Path = typer.Option(..., "--csv", help="write the CSV here ('-': standard output)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every item and its decision (reviewer, time, comment) as CSV."""
    with errors_as_lines(), connect() as api:
        found = api.get(f"/reviews/{segment(review)}")
        content = api.request("GET", f"/reviews/{found['id']}/report.csv").content
    rows = found["progress"]["total"]
    if str(csv_file) == "-":
        sys.stdout.buffer.write(content)
        return
    with errors_as_lines():
        write_atomically(csv_file, content, "--csv")
    if as_json:
        emit_json({"review_id": found["id"], "rows": rows, "csv": str(csv_file)})
    else:
        out.print(f"wrote {rows} item(s) to {csv_file}", markup=False)
