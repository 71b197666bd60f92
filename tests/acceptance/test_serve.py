"""`grantflow serve` as a real process on SQLite and PostgreSQL, talked to over TCP."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from grantflow.store import migrate
from grantflow.store.database import open_database
from tests.conftest import BACKENDS
from tests.support.databases import PostgresRun
from tests.support.processes import (
    ServedProcess,
    grantflow_env,
    json_output,
    run_grantflow,
    serving,
)
from tests.support.services import free_port, port_open

pytestmark = pytest.mark.acceptance


@dataclass
class Deployment:
    """One database, the environment that points at it, and a `grantflow serve` on it."""

    backend: str
    env: dict[str, str]
    workdir: Path
    server: ServedProcess
    # Commands run before the server could start, in order (PostgreSQL: refused serve, migrate).
    preparation: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    _admin: dict[str, Any] | None = None

    def grantflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_grantflow(*args, env=self.env, cwd=self.workdir)

    def admin(self) -> dict[str, Any]:
        """The output of `grantflow users create-admin --json`, run once per deployment."""
        if self._admin is None:
            created = self.grantflow(
                "users", "create-admin", "--email", "ops@example.com", "--json"
            )
            self._admin = json_output(created)
        return self._admin

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def sqlite_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("serve-sqlite")
    env = grantflow_env(
        database_url=f"sqlite:///{workdir / 'data' / 'grantflow.db'}",
        secret_key_file=workdir / "secret.key",
    )
    with serving(env, workdir) as server:
        yield Deployment("sqlite", env, workdir, server)


@pytest.fixture(scope="module")
def postgres_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    run = PostgresRun()
    run.create(migrated=False)
    try:
        workdir = tmp_path_factory.mktemp("serve-postgres")
        env = grantflow_env(
            database_url=run.url.render_as_string(hide_password=False),
            secret_key_file=workdir / "secret.key",
        )
        refused = run_grantflow("serve", "--port", str(free_port()), env=env, cwd=workdir)
        migrated = run_grantflow("migrate", env=env, cwd=workdir)
        with serving(env, workdir) as server:
            yield Deployment("postgresql", env, workdir, server, [refused, migrated])
    finally:
        run.drop()


@pytest.fixture(
    params=[
        pytest.param(b, marks=[pytest.mark.postgres] if b == "postgresql" else []) for b in BACKENDS
    ]
)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """The served deployment of each backend (one per module, shared by the tests)."""
    fixture = {"sqlite": "sqlite_deployment", "postgresql": "postgres_deployment"}[request.param]
    found: Deployment = request.getfixturevalue(fixture)
    return found


def test_sqlite_serve_creates_and_migrates_its_database(sqlite_deployment: Deployment) -> None:
    """On SQLite, `serve` alone creates the database file and migrates it to the newest revision."""
    db = open_database(make_url(sqlite_deployment.env["GRANTFLOW_DATABASE_URL"]))
    try:
        assert migrate.current_revision(db) is not None
        assert migrate.current_revision(db) == migrate.head_revision(db)
    finally:
        db.dispose()
    assert (sqlite_deployment.workdir / "secret.key").exists()


@pytest.mark.postgres
@pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="PostgreSQL not in GRANTFLOW_TEST_DATABASES"
)
def test_postgres_serve_refuses_until_migrated(postgres_deployment: Deployment) -> None:
    """On PostgreSQL, `serve` refuses an unmigrated database, naming `grantflow migrate`."""
    refused, migrated = postgres_deployment.preparation
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    # The key file is generated (with its warning event) before the schema is checked.
    assert refused.stderr.splitlines()[-2:] == [
        "error: the PostgreSQL schema is not at the newest migration",
        "  next: run `grantflow migrate` once, then start the servers",
    ]
    assert migrated.returncode == 0, migrated.stderr
    assert "database at revision" in migrated.stdout
    assert "was empty" in migrated.stdout


def test_health_and_readiness(deployment: Deployment) -> None:
    """/healthz answers ok and /readyz reports the migrated database of the backend and the
    queue transport (the database's, which is up while the database is)."""
    with deployment.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "database": deployment.backend,
        "queue": {"transport": "database", "status": "up"},
    }


def test_create_admin_token_works_against_the_server(deployment: Deployment) -> None:
    """`users create-admin --json` prints a token that the running server accepts on /me."""
    created = deployment.admin()
    assert created["user"] == "ops@example.com"
    assert created["token"].startswith("gft_")
    with deployment.client(created["token"]) as client:
        me = client.get("/api/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "ops@example.com"
    assert "admin" in me.json()["roles"]
    with deployment.client("gft_not-a-real-token") as client:
        assert client.get("/api/v1/me").status_code == 401


def test_request_id_is_echoed_or_generated(deployment: Deployment) -> None:
    """A valid X-Request-ID comes back unchanged; without one (or a bad one) one is generated."""
    with deployment.client() as client:
        echoed = client.get("/healthz", headers={"X-Request-ID": "trace-123.abc"})
        first = client.get("/healthz")
        second = client.get("/healthz")
        bad = client.get("/healthz", headers={"X-Request-ID": "not ok/../"})
    assert echoed.headers["X-Request-ID"] == "trace-123.abc"
    generated = [r.headers["X-Request-ID"] for r in (first, second, bad)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", g) for g in generated), generated
    assert len(set(generated)) == 3


def test_metrics_count_requests_by_route_template(deployment: Deployment) -> None:
    """/metrics counts requests labelled by the route template, never by the raw path."""
    with deployment.client() as client:
        assert client.get("/api/v1/applications/app-xyz-123").status_code == 401
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'grantflow_http_requests_total{method="GET",route="/api/v1/applications/{app_id}",'
        'status="401"}' in text
    )
    assert 'grantflow_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "app-xyz-123" not in text


def test_logs_are_json_lines_with_request_ids_and_no_tokens(deployment: Deployment) -> None:
    """Each stderr line is JSON; a request logs http.request with its id; tokens never appear."""
    token = deployment.admin()["token"]
    with deployment.client(token) as client:
        assert client.get("/api/v1/me", headers={"X-Request-ID": "log-check-1"}).status_code == 200
    event = deployment.server.wait_for_log(lambda e: e.get("request_id") == "log-check-1")
    assert event["event"] == "http.request"
    assert event["route"] == "/api/v1/me"
    assert event["status"] == 200
    assert event["level"] == "info"
    events = deployment.server.log_events()
    assert all({"event", "level", "timestamp"} <= set(e) for e in events)
    assert all(e.get("request_id") for e in events if e["event"] == "http.request")
    assert token not in deployment.server.stderr()


def test_sigterm_stops_the_server_cleanly(deployment: Deployment) -> None:
    """SIGTERM shuts a second server on the same database down gracefully and frees its port."""
    with serving(deployment.env, deployment.workdir) as server:
        assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
        # uvicorn shuts down gracefully, then re-raises the signal: exit by SIGTERM is clean.
        assert server.terminate() in (0, -signal.SIGTERM)
        port = int(server.url.rsplit(":", 1)[1])
        assert not port_open("127.0.0.1", port)
    assert "Traceback" not in server.stderr()
    events = [e["event"] for e in server.log_events()]
    assert "Application shutdown complete." in events
    assert events[-1].startswith("Finished server process")
