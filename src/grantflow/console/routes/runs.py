"""/runs: the runs list with the API's filters; /runs/<id>: a run's status, failure reason,
next action, waiting reason, timeline and steps with their attempts — updating itself while
the run moves (`/runs/<id>/live`, an htmx fragment polled until the run ends).

The operations are form POSTs calling the service functions the API's routes call
(`engine.operations.retry / replay / cancel / pause / resume`, `access.grants.dispatch_grant`)
with the signed-in user, under the same permissions (run:operate; dispatching a grant:
grant:write). A cancel the service refuses because steps already acted shows those steps and
asks to confirm a forced cancel. Any other refusal is shown on the run page in words, with
the action that works when the service names one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.access.grants import dispatch_grant
from grantflow.api.state import state_of
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.actions import refusals_audited, shown
from grantflow.console.guard import Page
from grantflow.console.presenters import run_list, runs
from grantflow.console.state import console_state
from grantflow.console.templating import redirect, render
from grantflow.engine import detail, operations
from grantflow.engine.states import RunStatus
from grantflow.errors import Conflict, GrantflowError, PermissionDenied
from grantflow.queue.interface import Queue

router = APIRouter(include_in_schema=False)

# what an operation did, for the next page: (run to show, message)
Outcome = tuple[str, str]


def _can(actor: Actor) -> Callable[[str], bool]:
    return lambda permission: permission in actor.permissions


@router.get("/runs")
def list_runs(request: Request, actor: Actor = Depends(Page(Permission.RUN_READ))) -> Response:
    """Runs, newest first, filtered as GET /api/v1/runs filters them; a page at a time."""
    filters = run_list.parse(request.query_params)
    state = console_state(request)
    with state.database.transaction() as session:
        workflows = run_list.workflows(session)
        items: list[dict[str, Any]] = []
        next_cursor = None
        if not filters.errors:
            items, next_cursor = run_list.rows(session, state_of(request).queue, filters)
    context = {
        "filters": filters,
        "workflows": workflows,
        "runs": items,
        "next_cursor": next_cursor,
        "statuses": [s.value for s in RunStatus],
    }
    return render(request, "runs/list.html", context, status_code=422 if filters.errors else 200)


def _run_page(
    request: Request, actor: Actor, run_id: str, error: GrantflowError | None = None
) -> Response:
    queue = state_of(request).queue
    with console_state(request).database.snapshot() as session:
        page = runs.run_page(session, run_id, queue, _can(actor))
        ids = detail.action_ids(operations.get_run(session, run_id))
    fix = shown(error.extra.get("action"), _can(actor), **ids) if error is not None else None
    context = {**runs.live_context(page, _can(actor)), "error": error, "fix": fix}
    status = error.http_status if error is not None else 200
    return render(request, "runs/detail.html", context, status_code=status)


@router.get("/runs/{run_id}")
def run_page(
    run_id: str, request: Request, actor: Actor = Depends(Page(Permission.RUN_READ))
) -> Response:
    """The run as GET /api/v1/runs/{id} and its timeline show it, with its operations."""
    return _run_page(request, actor, run_id)


@router.get("/runs/{run_id}/live")
def run_live(
    run_id: str,
    request: Request,
    v: str = Query("", max_length=64),
    actor: Actor = Depends(Page(Permission.RUN_READ)),
) -> Response:
    """The run page's changing part (htmx): 204 while nothing changed since version `v`."""
    queue = state_of(request).queue
    with console_state(request).database.snapshot() as session:
        run = operations.get_run(session, run_id)
        if v and v == runs.fingerprint(session, run):
            return Response(status_code=204)
        page = runs.run_page(session, run_id, queue, _can(actor))
    return render(request, "htmx/run_live.html", runs.live_context(page, _can(actor)))


@router.get("/runs/{run_id}/steps")
def run_steps(
    run_id: str,
    request: Request,
    cursor: str | None = Query(None, max_length=500),
    actor: Actor = Depends(Page(Permission.RUN_READ)),
) -> Response:
    """Every step run of the run, newest first, a page at a time.

    As GET /api/v1/runs/{id}/steps pages them; the run page shows only the latest."""
    with console_state(request).database.snapshot() as session:
        page = runs.steps_page(session, run_id, cursor)
    context = {"page": page, "cursor": cursor, "pretty": runs.pretty, "short": runs.short}
    return render(request, "runs/steps.html", context)


@router.get("/runs/{run_id}/timeline")
def run_timeline(
    run_id: str,
    request: Request,
    cursor: str | None = Query(None, max_length=500),
    actor: Actor = Depends(Page(Permission.RUN_READ)),
) -> Response:
    """Every event of the run, newest first, a page at a time.

    As GET /api/v1/runs/{id}/events pages them; the run page shows only the latest."""
    with console_state(request).database.snapshot() as session:
        page = runs.events_page(session, run_id, cursor)
    context = {"page": page, "cursor": cursor, "short": runs.short}
    return render(request, "runs/timeline.html", context)


def _operate(
    request: Request,
    actor: Actor,
    run_id: str,
    operation: Callable[[Session, Queue], Outcome],
) -> Response:
    """Run `operation` in one transaction; then the run page with its message, or the run
    page showing the refusal in words."""
    database = console_state(request).database
    queue = state_of(request).queue
    try:
        with (
            refusals_audited(database, actor, request.url.path, "POST"),
            database.transaction() as session,
        ):
            target, message = operation(session, queue)
    except PermissionDenied:
        raise
    except GrantflowError as error:
        return _run_page(request, actor, run_id, error)
    return redirect(request, f"/runs/{target}", message=message)


@router.post("/runs/{run_id}/retry")
def retry(
    run_id: str, request: Request, actor: Actor = Depends(Page(Permission.RUN_OPERATE))
) -> Response:
    """Resume the run from its failed step, on the same version."""

    def apply(session: Session, queue: Queue) -> Outcome:
        operations.retry(session, actor, queue, run_id)
        return run_id, "Retried: the run resumes from its failed step."

    return _operate(request, actor, run_id, apply)


def _replay(request: Request, actor: Actor, run_id: str, latest: bool) -> Response:
    def apply(session: Session, queue: Queue) -> Outcome:
        new = operations.replay(session, actor, queue, run_id, latest=latest)
        how = "on the active version" if latest else f"on version {new.version}"
        return new.id, f"Replayed run {run_id} as this new run, {how}."

    return _operate(request, actor, run_id, apply)


@router.post("/runs/{run_id}/replay")
def replay(
    run_id: str, request: Request, actor: Actor = Depends(Page(Permission.RUN_OPERATE))
) -> Response:
    """A new run of the same version with the same input."""
    return _replay(request, actor, run_id, latest=False)


@router.post("/runs/{run_id}/replay-latest")
def replay_latest(
    run_id: str, request: Request, actor: Actor = Depends(Page(Permission.RUN_OPERATE))
) -> Response:
    """A new run of the active version with the same input (refused after a non-reversible
    step acted, saying which and what to do instead)."""
    return _replay(request, actor, run_id, latest=True)


@router.post("/runs/{run_id}/cancel")
def cancel(
    run_id: str,
    request: Request,
    force: str = Form("", max_length=5),
    actor: Actor = Depends(Page(Permission.RUN_OPERATE)),
) -> Response:
    """Cancel; when steps with side effects already acted, first show them and ask to
    confirm a forced cancel (the service refuses without force, naming them)."""
    forced = force == "true"

    def apply(session: Session, queue: Queue) -> Outcome:
        run = operations.cancel(session, actor, queue, run_id, force=forced)
        acted = f" after {', '.join(run.acted_steps)} had acted" if run.acted_steps else ""
        return run_id, f"Cancelled{acted}."

    database = console_state(request).database
    if not forced:
        try:
            with (
                refusals_audited(database, actor, request.url.path, "POST"),
                database.transaction() as session,
            ):
                target, message = apply(session, state_of(request).queue)
            return redirect(request, f"/runs/{target}", message=message)
        except Conflict as error:
            if error.code != "cancel_needs_force":
                return _run_page(request, actor, run_id, error)
            context = {"run_id": run_id, "error": error, "acted": error.extra["acted_steps"]}
            return render(request, "runs/cancel.html", context)
    return _operate(request, actor, run_id, apply)


@router.post("/runs/{run_id}/pause")
def pause(
    run_id: str, request: Request, actor: Actor = Depends(Page(Permission.RUN_OPERATE))
) -> Response:
    """Stop the run at its next step boundary."""

    def apply(session: Session, queue: Queue) -> Outcome:
        run = operations.pause(session, actor, queue, run_id)
        if run.pause_requested:
            return run_id, "Pause requested: the run stops at its next step boundary."
        return run_id, "Paused."

    return _operate(request, actor, run_id, apply)


@router.post("/runs/{run_id}/resume")
def resume(
    run_id: str, request: Request, actor: Actor = Depends(Page(Permission.RUN_OPERATE))
) -> Response:
    """Continue a paused run from where it stopped."""

    def apply(session: Session, queue: Queue) -> Outcome:
        operations.resume(session, actor, queue, run_id)
        return run_id, "Resumed."

    return _operate(request, actor, run_id, apply)


@router.post("/runs/{run_id}/dispatch-grant")
def dispatch(
    run_id: str, request: Request, actor: Actor = Depends(Page(Permission.GRANT_WRITE))
) -> Response:
    """Start the workflows of the grant that started this run again (grant:write, as
    POST /api/v1/grants/{id}/dispatch) — what a refused Replay with latest offers."""

    def apply(session: Session, queue: Queue) -> Outcome:
        run = operations.get_run(session, run_id)
        grant_id = detail.action_ids(run).get("grant_id")
        if not grant_id:
            raise Conflict(
                f"run {run_id} was not started by a grant, so there is no grant to dispatch",
                next_action="Replay the run instead",
                code="no_grant",
            )
        done = dispatch_grant(session, actor, queue, grant_id)
        started = [r["run_id"] for r in done.started]
        if not started:
            return run_id, f"Dispatched grant {grant_id}: no run started."
        return started[0], f"Dispatched grant {grant_id}: this run started."

    return _operate(request, actor, run_id, apply)
