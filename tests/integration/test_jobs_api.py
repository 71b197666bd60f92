"""The jobs API over real HTTP on both databases: a published schedule workflow shows up as a
job, detail and filters, preview with warnings, validation (422 naming the field), status
changes with who and when and audit entries, Run now, occurrences, permissions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from grantflow.auth.permissions import Role
from tests.conftest import Api

JOBS = "/api/v1/jobs"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


def fields(response: httpx.Response, status: int = 422) -> dict[str, str]:
    """The fields a validation error names, with their messages."""
    error = ok(response, status)["error"]
    assert error["code"] == "validation_error"
    return {d["field"]: d["message"] for d in error["details"]}


def schedule_workflow(
    admin: httpx.Client, name: str, expression: str = "30 2 * * *", timezone: str = "Europe/Berlin"
) -> str:
    """Create and publish, through the API, a workflow with a schedule trigger; its id."""
    document = {
        "name": name,
        "trigger": {"type": "schedule", "cron": expression, "timezone": timezone},
        "steps": [{"id": "note", "type": "set", "config": {"values": {"done": True}}}],
    }
    workflow_id: str = ok(admin.post("/api/v1/workflows", json=document), 201)["workflow"]["id"]
    ok(admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish"))
    return workflow_id


def job_named(client: httpx.Client, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [j for j in ok(client.get(JOBS))["items"] if j["name"] == name]
    assert len(found) == 1, found
    return found[0]


def test_a_published_schedule_workflow_is_a_job_at_once(admin: httpx.Client) -> None:
    """Listed right after publishing, with next fire time in UTC and local time, description,
    default settings and the link to its workflow."""
    workflow_id = schedule_workflow(admin, "Nightly cleanup")
    job = job_named(admin, "Nightly cleanup")
    assert job["kind"] == "workflow"
    assert job["status"] == "enabled"
    assert job["status_changed_by"] == "system:scheduler"
    assert (job["cron"], job["timezone"]) == ("30 2 * * *", "Europe/Berlin")
    assert job["description"] == "At 02:30 (Europe/Berlin)"
    assert job["next_fire_at_local"].startswith(job["next_fire_at_local"][:10])
    assert job["next_fire_at_local"][11:19] == "02:30:00"
    assert job["next_fire_at"].endswith(("+00:00", "Z"))
    assert job["overdue"] is False
    assert job["last_occurrence"] is None
    assert job["settings"] == {
        "misfire_policy": "run_once",
        "catchup_window_seconds": 3600.0,
        "overlap_policy": "skip",
        "grace_seconds": 300.0,
    }
    assert job["workflow"]["id"] == workflow_id
    assert job["workflow"]["link"] == f"/api/v1/workflows/{workflow_id}"

    detail = ok(admin.get(f"{JOBS}/{job['id']}"))
    assert detail["health_note"] is None
    assert detail["next_fire_at"] == job["next_fire_at"]
    assert ok(admin.get(f"{JOBS}/Nightly cleanup"))["id"] == job["id"]  # by name too


def test_filters_by_kind_status_and_overdue(admin: httpx.Client) -> None:
    schedule_workflow(admin, "First")
    schedule_workflow(admin, "Second", "0 * * * *", "UTC")
    second = job_named(admin, "Second")
    ok(admin.post(f"{JOBS}/{second['id']}/pause"))

    def names(**params: Any) -> list[str]:
        return [j["name"] for j in ok(admin.get(JOBS, params=params))["items"]]

    assert names() == ["First", "Second"]
    assert names(kind="workflow") == ["First", "Second"]
    assert names(kind="report") == []
    assert names(status="paused") == ["Second"]
    assert names(status="enabled", overdue="false") == ["First"]
    assert names(overdue="true") == []
    assert names(limit=1) == ["First"]
    page = ok(admin.get(JOBS, params={"limit": 1}))
    assert [
        j["name"] for j in ok(admin.get(JOBS, params={"cursor": page["next_cursor"]}))["items"]
    ] == ["Second"]
    assert list(fields(admin.get(JOBS, params={"status": "sleeping"}))) == ["query.status"]


def test_preview_of_an_unsaved_expression(admin: httpx.Client) -> None:
    """Next N fire times in the timezone (with UTC), plain words, and no warnings for a
    weekday schedule; warnings for day 31 and for February 30."""
    body = ok(
        admin.post(
            f"{JOBS}/preview", json={"cron": "0 9 * * 1-5", "timezone": "Asia/Tokyo", "count": 3}
        )
    )
    assert body["description"] == "At 09:00, Monday through Friday (Asia/Tokyo)"
    assert len(body["next"]) == 3
    assert all(t["local"][11:] == "09:00:00+09:00" for t in body["next"])
    assert all(t["utc"][11:] == "00:00:00+00:00" for t in body["next"])
    assert body["warnings"] == []

    day31 = ok(admin.post(f"{JOBS}/preview", json={"cron": "0 0 31 * *"}))
    assert len(day31["next"]) == 10
    (warning,) = day31["warnings"]
    assert warning.startswith("day 31 does not exist in every month: it fires only in the months")

    never = ok(admin.post(f"{JOBS}/preview", json={"cron": "0 0 30 2 *"}))
    assert never["next"] == []
    assert never["warnings"] == [
        "it never fires: the date it names does not exist (e.g. February 30)"
    ]

    leap = ok(admin.post(f"{JOBS}/preview", json={"cron": "0 0 29 2 *", "count": 2}))
    assert len(leap["next"]) == 2
    assert leap["warnings"][0].startswith("it fires rarely")


def test_preview_validation_names_the_field(admin: httpx.Client) -> None:
    bad_cron = fields(admin.post(f"{JOBS}/preview", json={"cron": "61 * * * *"}))
    assert list(bad_cron) == ["body.cron"]
    assert "not a valid cron expression" in bad_cron["body.cron"]
    six = fields(admin.post(f"{JOBS}/preview", json={"cron": "0 0 * * * *"}))
    assert "must have 5 fields" in six["body.cron"]
    bad_zone = fields(admin.post(f"{JOBS}/preview", json={"cron": "0 0 * * *", "timezone": "X"}))
    assert list(bad_zone) == ["body.timezone"]
    assert "is not an IANA timezone" in bad_zone["body.timezone"]
    assert list(fields(admin.post(f"{JOBS}/preview", json={"cron": "* * * * *", "count": 0}))) == [
        "body.count"
    ]
    assert list(fields(admin.post(f"{JOBS}/preview", json={}))) == ["body.cron"]


def test_job_preview_uses_its_timezone(admin: httpx.Client) -> None:
    schedule_workflow(admin, "Berlin", "30 2 * * *", "Europe/Berlin")
    job = job_named(admin, "Berlin")
    body = ok(admin.get(f"{JOBS}/{job['id']}/preview", params={"count": 4}))
    assert body["timezone"] == "Europe/Berlin"
    assert [t["local"][11:16] for t in body["next"]] == ["02:30"] * 4
    assert body["next"][0]["utc"] == job["next_fire_at"].replace("Z", "+00:00")


def test_update_settings_and_validation(admin: httpx.Client) -> None:
    """Policies and grace change; a workflow job's cron is the workflow's (422 naming cron);
    unknown policies and fields are 422 naming them."""
    schedule_workflow(admin, "Tuned")
    job_id = job_named(admin, "Tuned")["id"]
    changed = ok(
        admin.patch(
            f"{JOBS}/{job_id}",
            json={
                "overlap_policy": "queue_one",
                "misfire_policy": "skip",
                "catchup_window_seconds": 600,
                "grace_seconds": 60,
            },
        )
    )
    assert changed["settings"] == {
        "misfire_policy": "skip",
        "catchup_window_seconds": 600.0,
        "overlap_policy": "queue_one",
        "grace_seconds": 60.0,
    }
    assert (
        "set by the workflow"
        in fields(admin.patch(f"{JOBS}/{job_id}", json={"cron": "0 3 * * *"}))["body.cron"]
    )
    assert list(fields(admin.patch(f"{JOBS}/{job_id}", json={"overlap_policy": "sometimes"}))) == [
        "body.overlap_policy"
    ]
    assert list(fields(admin.patch(f"{JOBS}/{job_id}", json={"grace_seconds": 0}))) == [
        "body.grace_seconds"
    ]
    assert list(fields(admin.patch(f"{JOBS}/{job_id}", json={"colour": "red"}))) == ["body.colour"]
    assert ok(admin.patch(f"{JOBS}/nope", json={}), 404)["error"]["code"] == "not_found"


def test_create_built_in_job_validation(admin: httpx.Client) -> None:
    """A built-in job's body: a bad cron names cron, a bad timezone names timezone, a bad kind
    names kind; a name already taken is 409."""
    base = {"name": "Quarterly", "kind": "control_evaluation", "cron": "0 6 1 */3 *"}
    assert list(fields(admin.post(JOBS, json={**base, "cron": "every day"}))) == ["body.cron"]
    assert list(fields(admin.post(JOBS, json={**base, "timezone": "Europe/Nowhere"}))) == [
        "body.timezone"
    ]
    assert list(fields(admin.post(JOBS, json={**base, "kind": "workflow"}))) == ["body.kind"]
    assert list(fields(admin.post(JOBS, json={**base, "overlap_policy": "x"}))) == [
        "body.overlap_policy"
    ]
    assert set(fields(admin.post(JOBS, json={}))) == {"body.name", "body.kind", "body.cron"}
    schedule_workflow(admin, "Quarterly")  # its job is named after it
    taken = ok(admin.post(JOBS, json=base), 409)["error"]
    assert taken["code"] == "job_exists"


def test_a_workflow_named_like_a_built_in_job_still_gets_its_job(admin: httpx.Client) -> None:
    """The job name is taken by a built-in job: the workflow's job gets a distinct name (and
    scheduling of every other job goes on)."""
    base = {"name": "Weekly", "kind": "control_evaluation", "cron": "0 6 * * 1"}
    ok(admin.post(JOBS, json=base), 201)
    workflow_id = schedule_workflow(admin, "Weekly")
    (job,) = ok(admin.get(JOBS, params={"kind": "workflow"}))["items"]
    assert job["workflow"]["id"] == workflow_id
    assert job["name"] == f"Weekly (workflow {workflow_id[:8]})"


def test_status_changes_record_who_when_and_audit(api: Api, admin: httpx.Client) -> None:
    """pause / resume / disable / enable: the status with who and when, an audit entry each
    (job.paused, job.enabled, job.disabled); a disabled job shows no next fire time."""
    schedule_workflow(admin, "Audited")
    job_id = job_named(admin, "Audited")["id"]
    paused = ok(admin.post(f"{JOBS}/{job_id}/pause"))
    assert (paused["status"], paused["status_changed_by"]) == ("paused", "admin@example.com")
    assert paused["status_changed_at"]
    assert paused["next_fire_at"] is not None
    assert ok(admin.post(f"{JOBS}/{job_id}/resume"))["status"] == "enabled"
    disabled = ok(admin.post(f"{JOBS}/{job_id}/disable"))
    assert (disabled["status"], disabled["next_fire_at"]) == ("disabled", None)
    enabled = ok(admin.post(f"{JOBS}/{job_id}/enable"))
    assert enabled["status"] == "enabled"
    assert enabled["next_fire_at"] is not None
    ok(admin.post(f"{JOBS}/{job_id}/enable"))  # already enabled: no change, no entry

    entries = ok(admin.get("/api/v1/audit", params={"target_id": job_id, "action": "job.*"}))
    actions = sorted((e["action"], e["actor"], e["summary"]["from"]) for e in entries["items"])
    assert actions == sorted(
        [
            ("job.paused", "admin@example.com", "enabled"),
            ("job.enabled", "admin@example.com", "paused"),
            ("job.disabled", "admin@example.com", "enabled"),
            ("job.enabled", "admin@example.com", "disabled"),
        ]
    )


def test_run_now_and_occurrences(api: Api, admin: httpx.Client) -> None:
    """Run now: a manual occurrence with its run link (201), audited; occurrences newest
    first, paginated without repeats."""
    schedule_workflow(admin, "On demand")
    job_id = job_named(admin, "On demand")["id"]
    ok(admin.patch(f"{JOBS}/{job_id}", json={"overlap_policy": "allow"}))
    ok(admin.post(f"{JOBS}/{job_id}/pause"))  # Run now works while paused
    made = [ok(admin.post(f"{JOBS}/{job_id}/run-now"), 201) for _ in range(3)]
    for occurrence in made:
        assert (occurrence["status"], occurrence["manual"]) == ("fired", True)
        assert occurrence["run"] == f"/api/v1/runs/{occurrence['run_id']}"
        assert occurrence["created_by"] == "admin@example.com"
        assert occurrence["lag_ms"] == 0
        ok(admin.get(occurrence["run"]))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = ok(admin.get(f"{JOBS}/{job_id}/occurrences", params=params))
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [o["id"] for o in reversed(made)]
    detail = ok(admin.get(f"{JOBS}/{job_id}"))
    assert detail["status"] == "paused"
    assert detail["last_occurrence"]["id"] == made[-1]["id"]
    assert detail["last_occurrence"]["run_status"] == "queued"
    entries = ok(admin.get("/api/v1/audit", params={"target_id": job_id, "action": "job.run_now"}))
    assert len(entries["items"]) == 3
    bad = ok(admin.get(f"{JOBS}/{job_id}/occurrences", params={"cursor": "forged"}), 400)
    assert bad["error"]["details"][0]["field"] == "query.cursor"


def test_viewer_reads_but_cannot_manage(api: Api, admin: httpx.Client) -> None:
    """job:read lets a viewer list, show, preview and read occurrences; pause and Run now
    are 403 naming job:manage."""
    schedule_workflow(admin, "Guarded")
    job_id = job_named(admin, "Guarded")["id"]
    with api.as_role(Role.VIEWER) as viewer:
        assert job_named(viewer, "Guarded")["id"] == job_id
        ok(viewer.get(f"{JOBS}/{job_id}"))
        ok(viewer.get(f"{JOBS}/{job_id}/occurrences"))
        ok(viewer.get(f"{JOBS}/{job_id}/preview"))
        ok(viewer.post(f"{JOBS}/preview", json={"cron": "0 0 * * *"}))
        for path in ("pause", "run-now", "disable"):
            error = ok(viewer.post(f"{JOBS}/{job_id}/{path}"), 403)["error"]
            assert error["code"] == "permission_denied"
            assert error["missing_permission"] == "job:manage"
        error = ok(viewer.patch(f"{JOBS}/{job_id}", json={"grace_seconds": 60}), 403)["error"]
        assert error["missing_permission"] == "job:manage"
    assert ok(admin.get(f"{JOBS}/{job_id}"))["status"] == "enabled"


@pytest.mark.parametrize("kind", ["control_evaluation"])
def test_built_in_job_created_and_run_now(admin: httpx.Client, kind: str) -> None:
    """A built-in job: created enabled (201), listed by kind; Run now records its result."""
    job = ok(
        admin.post(
            JOBS,
            json={"name": "Controls", "kind": kind, "cron": "0 6 * * 1", "timezone": "UTC"},
        ),
        201,
    )
    assert (job["kind"], job["status"], job["workflow"]) == (kind, "enabled", None)
    assert job["status_changed_by"] == "admin@example.com"
    assert [j["name"] for j in ok(admin.get(JOBS, params={"kind": kind}))["items"]] == ["Controls"]
    occurrence = ok(admin.post(f"{JOBS}/{job['id']}/run-now"), 201)
    assert (occurrence["status"], occurrence["manual"]) == ("fired", True)
    assert occurrence["result_type"] == kind
    assert occurrence["result_id"]
    assert occurrence["outcome"] in ("succeeded", "failed")
