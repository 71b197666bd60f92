"""A run waiting on an approval survives its processes. `grantflow serve` (the API, without an
embedded worker) and a separate `grantflow worker` share one PostgreSQL database; while the run
waits they are stopped (SIGTERM) or killed (SIGKILL); new processes find it waiting on the same
task, and an approval through the new API resumes it within seconds — through the decision's
wake-up (LISTEN/NOTIFY), not polling: the worker only polls once an hour."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.queue.models import QueueItem
from grantflow.store.database import open_database
from tests.support.databases import PostgresRun
from tests.support.processes import (
    ServedProcess,
    WorkerProcess,
    grantflow_env,
    json_output,
    poll,
    run_grantflow,
    serving,
    start_worker,
)

pytestmark = [pytest.mark.postgres, pytest.mark.acceptance]

POLL_SECONDS = 3600  # the new worker's polling: far longer than the test may take


@dataclass
class Site:
    """The database, the environment every process gets, and an admin's API token."""

    postgres: PostgresRun
    env: dict[str, str]
    workdir: Path
    admin_token: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    postgres = PostgresRun()
    postgres.create()  # migrated, as `grantflow migrate` leaves it
    try:
        workdir = tmp_path_factory.mktemp("waiting-restart")
        env = grantflow_env(
            database_url=postgres.url.render_as_string(hide_password=False),
            secret_key_file=workdir / "secret.key",
            log_level="info",
        )
        created = json_output(
            run_grantflow(
                "users",
                "create-admin",
                "--email",
                "ops@example.com",
                "--json",
                env=env,
                cwd=workdir,
            )
        )
        yield Site(postgres, env, workdir, created["token"])
    finally:
        postgres.drop()


@contextlib.contextmanager
def deployment(site: Site) -> Iterator[tuple[ServedProcess, WorkerProcess]]:
    """`grantflow serve` with no embedded worker, and one `grantflow worker` polling only
    every POLL_SECONDS; both stopped at the end unless the test ended them."""
    worker = start_worker(
        site.env, site.workdir, "--concurrency", "2", "--poll-seconds", str(POLL_SECONDS)
    )
    try:
        with serving(site.env, site.workdir, args=("--worker-concurrency", "0")) as api:
            worker.worker_id()  # it has started
            yield api, worker
    finally:
        worker.stop()


def client(api: ServedProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def approver_token(admin: httpx.Client, email: str) -> str:
    user = ok(admin.post("/api/v1/users", json={"email": email, "roles": ["approver"]}), 201)
    created = ok(admin.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "inbox"}), 201)
    token: str = created["token"]
    return token


def publish_approval(admin: httpx.Client, name: str, approver: str) -> str:
    """An approval by `approver` (no timeout: nothing but the decision can wake the run),
    then a step that records who approved."""
    document = {
        "name": name,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "approve",
                "type": "approval",
                "config": {"title": "Grant wiki access", "approvers": {"users": [approver]}},
                "next": "record",
            },
            {
                "id": "record",
                "type": "set",
                "config": {"values": {"approved_by": "{{ steps.approve.output.approvers }}"}},
            },
        ],
    }
    workflow_id: str = ok(admin.post("/api/v1/workflows", json=document), 201)["workflow"]["id"]
    ok(admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish"))
    return workflow_id


def end(process: Any, sig: signal.Signals) -> int:
    """Send `sig` and wait for the process to exit; its exit code."""
    process.send_signal(sig)
    code: int = process.wait(timeout=30)
    return code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_waiting_approval_survives_a_restart_and_resumes_on_the_decision(
    site: Site, sig: signal.Signals
) -> None:
    """Waiting on an approval, the API and the worker are ended by `sig`; new processes show
    the run waiting on the same task, and the approval through the new API resumes it to
    success although the new worker polls only once an hour."""
    approver = f"approver-{sig.name.lower()}@example.com"

    with deployment(site) as (api, worker), client(api, site.admin_token) as admin:
        token = approver_token(admin, approver)
        workflow_id = publish_approval(admin, f"Wiki access {sig.name}", approver)
        run_id = ok(admin.post(f"/api/v1/workflows/{workflow_id}/runs", json={"input": {}}), 201)[
            "id"
        ]
        waiting = poll(
            lambda: (d := ok(admin.get(f"/api/v1/runs/{run_id}")))["status"] == "waiting" and d,
            timeout=60,
            what="the run to wait on the approval",
        )
        assert waiting["waiting_reason"] == "approval"
        task_id = waiting["waiting_for"]["task_id"]
        with client(api, token) as inbox:
            assert [t["id"] for t in ok(inbox.get("/api/v1/inbox"))["items"]] == [task_id]

        api_exit, worker_exit = end(api.process, sig), end(worker.process, sig)
    if sig == signal.SIGKILL:
        assert (api_exit, worker_exit) == (-signal.SIGKILL, -signal.SIGKILL)
    else:
        assert api_exit in (0, -signal.SIGTERM)
        assert worker_exit == 0

    # Nothing holds the run while it waits: no lease to expire, no worker to come back.
    db = open_database(site.postgres.url)
    try:
        with db.transaction() as session:
            item = session.get(QueueItem, run_id)
            assert item is not None
            assert item.lease_owner is None
    finally:
        db.dispose()

    with (
        deployment(site) as (api, worker),
        client(api, site.admin_token) as admin,
        client(api, token) as inbox,
    ):
        shown = ok(admin.get(f"/api/v1/runs/{run_id}"))
        assert (shown["status"], shown["waiting_reason"]) == ("waiting", "approval")
        assert shown["waiting_for"]["task_id"] == task_id
        assert ok(admin.get(f"/api/v1/tasks/{task_id}"))["status"] == "pending"
        assert [t["id"] for t in ok(inbox.get("/api/v1/inbox"))["items"]] == [task_id]

        decided = ok(inbox.post(f"/api/v1/tasks/{task_id}/approve", json={"comment": "ok"}))
        assert decided["status"] == "approved"
        done = poll(
            lambda: (
                (d := ok(admin.get(f"/api/v1/runs/{run_id}")))["status"] in ("succeeded", "failed")
                and d
            ),
            timeout=60,
            what="the run to finish after the approval",
        )
        assert done["status"] == "succeeded", done["failure"]
        steps = {s["step_id"]: s for s in done["steps"]}
        assert steps["approve"]["output"]["approvers"] == [approver]
        assert steps["record"]["output"] == {"approved_by": [approver]}
        # the new worker ran it; the old one never saw the decision
        assert worker.process.poll() is None
        events = ok(admin.get(f"/api/v1/runs/{run_id}/timeline"))["events"]
        assert [e["kind"] for e in events].count("resumed") == 1
