"""/jobs: scheduled jobs with their schedule in plain words, next fire time in the job's
timezone, last outcome and the overdue flag; a job's next fire times, its occurrences (skipped
ones with their reason), Run now, pause / resume."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.tables import Column, RowAction, Table
from grantflow.console.templating import render
from grantflow.console.views import (
    back_to,
    choice,
    console_path,
    database,
    next_page,
    perform,
    services,
    yes_no,
)
from grantflow.schedules import jobs as service
from grantflow.schedules import scheduler
from grantflow.schedules.models import JobStatus
from grantflow.store.pagination import DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)

JOBS = Table(
    columns=(
        Column("Job", "name", "link", link="url"),
        Column("Kind", "kind", "code"),
        Column("Status", "status", "chip"),
        Column("Schedule", "description"),
        Column("Next (job's time zone)", "next_local"),
        Column("Last outcome", "last_outcome", "chip"),
        Column("Overdue", "overdue_flag", "chip"),
    ),
    actions=(RowAction("Run now", "/jobs/{id}/run-now", Permission.JOB_MANAGE),),
    empty="No jobs yet. Publish a workflow with a schedule trigger, or create a built-in job.",
)

OCCURRENCES = Table(
    columns=(
        Column("Scheduled for (job's time zone)", "scheduled_for_local"),
        Column("How", "how"),
        Column("Status", "status", "chip"),
        Column("Reason", "reason"),
        Column("Run", "run_label", "link", link="run_url"),
        Column("Outcome", "outcome", "chip"),
        Column("By", "created_by"),
    ),
    empty="No occurrences yet.",
)


def _local(text: str | None) -> str | None:
    """An ISO time with its offset, to the minute: `2026-03-02 02:30+01:00`."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text).isoformat(sep=" ", timespec="minutes")


def job_row(view: dict[str, Any]) -> dict[str, Any]:
    last = view.get("last_occurrence") or {}
    return {
        **view,
        "url": f"/jobs/{view['id']}",
        "next_local": (
            f"{_local(view['next_fire_at_local'])} ({view['timezone']})"
            if view["next_fire_at_local"]
            else "—"
        ),
        "last_outcome": last.get("outcome") or last.get("status"),
        "overdue_flag": "overdue" if view["overdue"] else None,
    }


def occurrence_row(view: dict[str, Any]) -> dict[str, Any]:
    return {
        **view,
        "scheduled_for_local": _local(view["scheduled_for_local"]),
        "how": "Run now" if view["manual"] else "scheduled",
        "run_label": view["run_id"][:8] if view["run_id"] else None,
        "run_url": console_path(view["run"]),
    }


@router.get("/jobs")
def list_page(
    request: Request,
    status: str = Query("", max_length=20),
    overdue: str = Query("", max_length=5),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.JOB_READ)),
) -> Response:
    """Jobs with next fire time, last outcome and the overdue flag."""
    service.sync_now(database(request))
    with database(request).transaction() as session:
        page = service.list_jobs(
            session,
            status=choice(status, JobStatus, "status"),
            overdue=yes_no(overdue, "overdue"),
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        rows = [job_row(v) for v in service.job_views(session, page.items)]
    context = {
        "table": JOBS,
        "rows": JOBS.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "filters": {"status": status, "overdue": overdue},
        "statuses": [s.value for s in JobStatus],
    }
    if request.headers.get("hx-target") == "table":
        return render(request, "partials/table.html", context)
    return render(request, "jobs/list.html", context)


@router.get("/jobs/{job_id}")
def detail_page(
    job_id: str,
    request: Request,
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.JOB_READ)),
) -> Response:
    """The schedule in words, the next fire times, occurrences (skipped: why)."""
    service.sync_now(database(request))
    with database(request).transaction() as session:
        job = service.get_job(session, job_id)
        view = job_row(service.job_view(session, job))
        preview = service.preview(job, 5)
        page = service.occurrences(session, job, cursor=cursor, limit=DEFAULT_LIMIT)
        rows = [
            occurrence_row(o) for o in service.occurrence_views(session, page.items, job.timezone)
        ]
    context = {
        "job": view,
        "upcoming": [{"local": _local(t["local"]), "utc": t["utc"]} for t in preview["next"]]
        if view["status"] != JobStatus.DISABLED
        else [],
        "warnings": preview["warnings"],
        "table": OCCURRENCES,
        "rows": OCCURRENCES.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "workflow_url": console_path(view["workflow"]["link"]) if view["workflow"] else None,
    }
    return render(request, "jobs/detail.html", context)


@router.post("/jobs/{job_id}/run-now")
def run_now(
    job_id: str,
    request: Request,
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.JOB_MANAGE)),
) -> Response:
    """An occurrence now, recorded as Run now: fired with its run, or skipped with why."""

    def work(session: Session) -> str:
        occurrence = scheduler.run_now(session, actor, services(request).queue, job_id)
        if occurrence.status == "skipped":
            return f"Run now recorded a skipped occurrence: {occurrence.reason}."
        return f"Run now: occurrence {occurrence.status}" + (
            f", run {occurrence.run_id[:8]} started." if occurrence.run_id else "."
        )

    return perform(request, back_to(next, f"/jobs/{job_id}"), work)


def _set_status(request: Request, actor: Actor, job_id: str, status: JobStatus) -> Response:
    def work(session: Session) -> str:
        job = service.set_status(session, actor, job_id, status)
        return f"Job {job.name} is {status}."

    return perform(request, f"/jobs/{job_id}", work)


@router.post("/jobs/{job_id}/pause")
def pause(
    job_id: str, request: Request, actor: Actor = Depends(Page(Permission.JOB_MANAGE))
) -> Response:
    """Paused: each scheduled time is recorded as skipped, naming who paused it."""
    return _set_status(request, actor, job_id, JobStatus.PAUSED)


@router.post("/jobs/{job_id}/resume")
def resume(
    job_id: str, request: Request, actor: Actor = Depends(Page(Permission.JOB_MANAGE))
) -> Response:
    """Back to enabled."""
    return _set_status(request, actor, job_id, JobStatus.ENABLED)
