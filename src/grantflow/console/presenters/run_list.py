"""The runs list: the API's filters (status, workflow, version, since, until, stuck, cursor) read
from the filter form — whose empty inputs mean "any" — with each bad value named next to its
input, and the rows as the API lists them (`engine.detail`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.definitions.models import Workflow
from grantflow.engine import detail
from grantflow.engine.states import RunStatus
from grantflow.queue.interface import Queue
from grantflow.strict import MAX_INT, time_in_range

PAGE_SIZE = 25
FIELDS = ("status", "workflow_id", "version", "since", "until", "stuck")


@dataclass
class RunFilters:
    status: RunStatus | None = None
    workflow_id: str | None = None
    version: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    stuck: bool | None = None
    cursor: str | None = None
    typed: dict[str, str] = field(default_factory=dict)  # as the form sent them
    errors: dict[str, str] = field(default_factory=dict)  # input -> what is wrong

    def query(self, **changes: str | None) -> str:
        """The list's URL query for these filters (the cursor dropped unless given)."""
        values = {k: v for k, v in self.typed.items() if v and k != "cursor"}
        values.update({k: v for k, v in changes.items() if v})
        return urlencode(values)


_NOT_A_MOMENT = "a date (2026-01-31) or a date and time (2026-01-31T09:30)"


def _moment(text: str) -> dt.datetime:
    """A date or date-time (the form's datetime-local, or ISO 8601), in UTC when unzoned, in
    the years the API accepts; else ValueError saying what is wrong."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(_NOT_A_MOMENT) from None
    return time_in_range(value if value.tzinfo else value.replace(tzinfo=dt.UTC))


def parse(params: Mapping[str, str]) -> RunFilters:
    typed = {k: params.get(k, "").strip() for k in (*FIELDS, "cursor")}
    found = RunFilters(typed=typed, cursor=typed["cursor"] or None)
    if typed["status"]:
        try:
            found.status = RunStatus(typed["status"])
        except ValueError:
            found.errors["status"] = "not a run status: " + ", ".join(s.value for s in RunStatus)
    found.workflow_id = typed["workflow_id"][:36] or None
    if typed["version"]:
        # (ASCII digits only: `isdigit` takes "²", which `int` refuses; at most the API's bound)
        number = typed["version"]
        if number.isascii() and number.isdigit() and 1 <= int(number) <= MAX_INT:
            found.version = int(number)
        else:
            found.errors["version"] = f"a version number: 1 to {MAX_INT:,}"
    for name in ("since", "until"):
        if typed[name]:
            try:
                setattr(found, name, _moment(typed[name]))
            except ValueError as exc:
                found.errors[name] = str(exc)
    if typed["stuck"]:
        if typed["stuck"] in ("true", "false"):
            found.stuck = typed["stuck"] == "true"
        else:
            found.errors["stuck"] = "true or false"
    return found


def workflows(session: Session) -> list[tuple[str, str]]:
    """(id, name) of every workflow, for the filter's choice."""
    rows = session.execute(select(Workflow.id, Workflow.name).order_by(Workflow.name))
    return [(str(i), str(n)) for i, n in rows.all()]


def rows(
    session: Session, queue: Queue, filters: RunFilters
) -> tuple[list[dict[str, Any]], str | None]:
    """The runs of one page as the API lists them (with the stuck facts), and the next
    page's cursor."""
    page = detail.list_runs(
        session,
        status=filters.status,
        workflow_id=filters.workflow_id,
        version=filters.version,
        since=filters.since,
        until=filters.until,
        stuck=filters.stuck,
        cursor=filters.cursor,
        limit=PAGE_SIZE,
    )
    names = dict(workflows(session))
    reports = detail.stuck_reports(session, list(page.items), queue)
    items = []
    for run in page.items:
        summary = detail.run_summary(run, names.get(run.workflow_id))
        summary["stuck"] = reports[run.id]
        items.append(summary)
    return items, page.next_cursor
