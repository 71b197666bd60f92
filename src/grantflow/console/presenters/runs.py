"""The run pages: the run detail the API returns (`engine.detail.run_detail`), its timeline,
and what the page offers — the next action from the advice table as a button, and the run
operations (Pause, Resume, Cancel, Retry, Replay, Replay with latest) as buttons the user may
use. The service functions decide whether an operation works; the page only shows it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow.auth.permissions import Permission
from grantflow.console.actions import ConsoleAction, console_action, shown
from grantflow.engine import detail, history, operations
from grantflow.engine.models import Run, RunEvent
from grantflow.engine.states import RunStatus
from grantflow.queue.interface import Queue
from grantflow.store.pagination import BIGINT_KEYS, INTEGER_KEYS, decode_cursor

POLL_SECONDS = 2  # a run that is still moving is re-read this often by its page
# A run page shows its latest steps and events (a looping run can hold thousands, and the page
# is read again at every poll); the rest are on the run's steps and timeline pages.
PAGE_STEPS = 50
PAGE_EVENTS = 100
STEPS_PER_PAGE = 100  # the run's steps page
EVENTS_PER_PAGE = 200  # the run's timeline page

# the operations offered by status, beside the advice's next action (the service refuses
# what does not apply, in words)
_BY_STATUS: dict[RunStatus, tuple[str, ...]] = {
    RunStatus.QUEUED: ("run.pause", "run.cancel"),
    RunStatus.RUNNING: ("run.pause", "run.cancel"),
    RunStatus.WAITING: ("run.pause", "run.cancel"),
    RunStatus.PAUSED: ("run.resume", "run.cancel"),
    RunStatus.FAILED: ("run.retry", "run.replay", "run.replay_latest"),
    RunStatus.TIMED_OUT: ("run.retry", "run.replay", "run.replay_latest"),
    RunStatus.SUCCEEDED: ("run.replay", "run.replay_latest"),
    RunStatus.CANCELLED: ("run.replay", "run.replay_latest"),
}


def pretty(value: Any) -> str:
    """A recorded request, response or output as indented JSON (already redacted)."""
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def short(moment: str | None) -> str:
    """An RFC 3339 time (as the API writes it) to the second: 2026-01-31T09:30:05Z."""
    if not moment:
        return "—"
    return moment[:19] + "Z" if len(moment) > 19 and moment[10] == "T" else moment


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return str(value)


def timeline(session: Session, run: Run, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The API's timeline (its last `limit` events), each event's data as (words, text) pairs,
    and how many events the run has in all."""
    events, total = history.latest_events(session, run, limit)
    return [_with_details(event) for event in events], total


def _with_details(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    return {**event, "details": [(k.replace("_", " "), _text(v)) for k, v in data.items()]}


def fingerprint(session: Session, run: Run) -> str:
    """Changes whenever the page of the run would: its status, progress and events."""
    last_event = session.execute(
        select(func.max(RunEvent.id)).where(RunEvent.run_id == run.id)
    ).scalar_one()
    facts = (run.status, run.last_progress_at, last_event, run.pause_requested, run.waiting_on)
    return hashlib.sha256(repr(facts).encode()).hexdigest()[:16]


@dataclass
class RunPage:
    run: dict[str, Any]  # the API's run detail
    timeline: list[dict[str, Any]]
    terminal: bool
    version: str  # fingerprint: the page polls until it changes
    events_total: int  # the timeline shows the last PAGE_EVENTS of them
    next_action: ConsoleAction | None = None  # the advice's, as a button or link
    buttons: list[ConsoleAction] = field(default_factory=list)  # the other operations
    waiting_task: str | None = None  # the task a waiting run waits on
    reassign: ConsoleAction | None = None


def run_page(session: Session, run_id: str, queue: Queue, can: Callable[[str], bool]) -> RunPage:
    """Everything the run page shows, read in one transaction."""
    run = operations.get_run(session, run_id)
    shown_detail = detail.run_detail(session, run, queue, steps_limit=PAGE_STEPS)
    ids = detail.action_ids(run, run.failure)
    status = RunStatus(run.status)
    events, events_total = timeline(session, run, PAGE_EVENTS)
    page = RunPage(
        run=shown_detail,
        timeline=events,
        terminal=status.terminal,
        version=fingerprint(session, run),
        events_total=events_total,
    )
    advised = shown_detail.get("next") or {}
    page.next_action = shown(advised.get("action"), can, **ids)
    names = list(_BY_STATUS[status])
    if status == RunStatus.WAITING and run.waiting_reason == "escalated":
        names.insert(0, "run.retry")
    if run.pause_requested:
        names = ["run.resume" if n == "run.pause" else n for n in names]
    for name in names:
        action = console_action(name, **ids)
        if action is None or not can(action.permission):
            continue
        if page.next_action is not None and page.next_action.operation == action.operation:
            continue
        page.buttons.append(action)
    waiting = shown_detail.get("waiting_for") or {}
    page.waiting_task = waiting.get("task_id")
    page.reassign = shown(waiting.get("action"), can, **{**ids, "task_id": page.waiting_task})
    return page


def live_context(page: RunPage, can: Callable[[str], bool]) -> dict[str, Any]:
    """The template context of the run's live part (the page and its htmx fragment)."""
    return {
        "page": page,
        "r": page.run,
        "pretty": pretty,
        "short": short,
        "poll_seconds": POLL_SECONDS,
        "can_read_connections": can(Permission.CONNECTION_READ),
    }


@dataclass
class HistoryPage:
    """A page of a run's step runs or events, newest first (the run page shows the latest)."""

    run: Run
    items: list[dict[str, Any]]
    total: int  # step runs or events the run has
    next_cursor: str | None  # to the earlier ones


def steps_page(session: Session, run_id: str, cursor: str | None) -> HistoryPage:
    """The page of the run's step runs `cursor` names (GET /api/v1/runs/{id}/steps's)."""
    run = operations.get_run(session, run_id)
    page = history.step_page(session, run, decode_cursor(cursor, int, INTEGER_KEYS), STEPS_PER_PAGE)
    total = history.step_runs_total(session, run)
    return HistoryPage(run, list(page.items), total, page.next_cursor)


def events_page(session: Session, run_id: str, cursor: str | None) -> HistoryPage:
    """The page of the run's events `cursor` names (GET /api/v1/runs/{id}/events's), each
    event's data as (words, text) pairs."""
    run = operations.get_run(session, run_id)
    page = history.event_page(
        session, run, decode_cursor(cursor, int, BIGINT_KEYS), EVENTS_PER_PAGE
    )
    events = [_with_details(event) for event in page.items]
    return HistoryPage(run, events, history.events_total(session, run), page.next_cursor)
