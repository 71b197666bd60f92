"""The database going away (a restart, a failover): under the API a 503 to retry, never a 500,
and the next request works on fresh connections; under workers, on each queue transport,
nothing is lost or done twice."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from grantflow.api import create_app
from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.store.database import Database, open_database
from tests.conftest import Api
from tests.support.databases import kill_connections
from tests.support.engine import publish, run_detail, running_worker, start, wait_status, workflow
from tests.support.server import serve_in_thread
from tests.support.target import Reply, running_target
from tests.support.tcp_proxy import tcp_proxy

pytestmark = [pytest.mark.transports, pytest.mark.usefixtures("transport")]

SETS = [{"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}} for i in range(3)]


def test_a_lost_database_connection_is_a_503_then_recovers(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("connections to SQLite cannot be lost")
    assert admin.get("/api/v1/applications").status_code == 200
    assert kill_connections(database) >= 1
    first = admin.get("/api/v1/applications")
    assert first.status_code == 503, first.text
    error = first.json()["error"]
    assert (error["code"], error["failure_class"]) == ("database_unavailable", "transient")
    assert first.headers["retry-after"] == "1"
    again = admin.get("/api/v1/applications")
    assert again.status_code == 200, again.text


def test_backends_terminated_mid_run_lose_nothing(database: Database) -> None:
    """Every PostgreSQL connection is terminated (a restart) while workers hold runs mid-call:
    every run still succeeds, no step succeeds twice, every call carries its key. The turns
    the outage cut short hand their runs back (or their leases, no longer renewed, run out)."""
    if database.dialect != "postgresql":
        pytest.skip("connections to SQLite cannot be lost")
    pg = database
    with running_target() as target:
        held = threading.Event()
        target.on("/one", Reply(200, {"ok": 1}, hold=held))
        target.on("/two", Reply(200, {"ok": 2}))
        steps = [
            {
                "id": name,
                "type": "http",
                "config": {"method": "POST", "url": f"{target.url}/{name}"},
            }
            for name in ("one", "two")
        ]
        flow = publish(pg, workflow("restarted", *steps))
        runs = [start(pg, flow, {"n": n}) for n in range(6)]
        workers_db = open_database(pg.url)  # (the workers' own pools, as in their processes)
        workers_db.use_master_keys(pg.master_keys)
        try:
            with (
                running_worker(workers_db, concurrency=3, lease_seconds=2.0),
                running_worker(workers_db, concurrency=3, lease_seconds=2.0),
            ):
                target.wait_for_calls("/one", 6, timeout=60)
                assert kill_connections(pg) >= 1
                pg.engine.dispose()  # (this test's own pooled connections died too)
                held.set()
                for run_id in runs:
                    wait_status(pg, run_id, "succeeded")
        finally:
            workers_db.dispose()
        seen_keys = target.per_key()
    assert None not in seen_keys  # every call, re-sent or not, carried its key
    for run_id in runs:
        shown = run_detail(pg, run_id)
        assert [s["status"] for s in shown["steps"]] == ["succeeded", "succeeded"]
        for step in shown["steps"]:
            log = step["attempt_log"]
            assert [a["status"] for a in log].count("succeeded") == 1, log
            # a call cut short by the outage is re-sent with the same key: done once there
            assert {a["idempotency_key"] for a in log} == {f"{run_id}:{step['step_id']}:1-1"}
        assert {k for k in seen_keys if k and k.startswith(run_id)} == {
            f"{run_id}:one:1-1",
            f"{run_id}:two:1-1",
        }


def test_an_unreachable_database_is_a_503_with_retry_after_and_workers_resume_after(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    """PostgreSQL unreachable (behind a proxy the test cuts) while runs are queued and running:
    the API answers 503 with Retry-After, the workers back off; once it is reachable again,
    without restarting anything, every run succeeds, each step once."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite is a file: it cannot be unreachable")
    url = database.url
    with tcp_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        behind = open_database(url.set(host="127.0.0.1", port=proxy.port))
        behind.use_master_keys(database.master_keys)
        served = settings.model_copy(
            update={"database_url": behind.url.render_as_string(hide_password=False)}
        )
        flow = publish(database, workflow("steady", *SETS))
        before = [start(database, flow) for _ in range(4)]
        try:
            with (
                serve_in_thread(create_app(served, behind)) as base_url,
                Api(base_url=base_url, database=database).as_role(Role.ADMIN) as admin,
                running_worker(behind, lease_seconds=2.0),
            ):
                proxy.cut()
                refused = admin.post(f"/api/v1/workflows/{flow}/runs", json={"input": {}})
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["code"] == "database_unavailable"
                with Api(base_url=base_url, database=database).client() as anonymous:
                    assert anonymous.get("/readyz").status_code == 503
                proxy.restore()
                after = admin.post(f"/api/v1/workflows/{flow}/runs", json={"input": {}})
                assert after.status_code == 201, after.text
                for run_id in [*before, after.json()["id"]]:
                    shown = wait_status(database, run_id, "succeeded")
                    assert [s["attempts"] for s in shown["steps"]] == [1, 1, 1]
        finally:
            behind.dispose()
