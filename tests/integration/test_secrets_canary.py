"""The canary secret: a unique value planted as credentials on connections whose target echoes
every request header (and the query) back, in successful and in error responses. Every path is
exercised — successful calls, 400 / 401 / 500 answers, retries, a dry-run, run detail and
timeline, the API's connection, run, audit and notification responses, Test connection, the CLI
(`connections list --json`, `connections test`) — and then the captured logs (structlog and the
standard library, the in-process API server and worker, the CLI's stderr), every response body
and a dump of every column of every table are searched: the canary never appears.

Then generated credentials (hypothesis) are echoed back in generated forms — JSON-escaped in
any way, URL- or form-encoded, base64 of the secret, of `user:secret` or inside other bytes —
in successful and failed answers, and the same places plus notifications, e-mails and
/metrics are searched for every form of them (tests/support/echo.py)."""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest
import sqlalchemy as sa
import structlog
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.logging import configure_logging
from grantflow.people import email
from grantflow.redaction import REDACTED
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import (
    API,
    FAST_RETRY,
    allowing_loopback,
    connection_worker,
    make_application,
    make_connection,
    ok,
    put_credential,
    serving_api,
)
from tests.support.echo import ANY_SECRETS, ASCII_SECRETS, Echo, echoes, leaks
from tests.support.engine import publish, start, wait_for
from tests.support.logs import logging_restored
from tests.support.processes import grantflow_env, poll, run_grantflow
from tests.support.smtp import smtp_sink
from tests.support.target import Reply, Seen, running_target

CANARY = f"canary{uuid.uuid4().hex}"
BEARER = f"{CANARY}-bearer"
PASSWORD = f"{CANARY}-basic"
QUERY_KEY = f"{CANARY}-query"
REFRESH = f"{CANARY}-refresh"
BASIC_PAIR = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Grantflow's real logging (JSON, debug level, redaction on), written to a buffer, for
    the API server thread, the worker and this test alike; the previous setup is restored."""
    buffer = io.StringIO()
    with logging_restored():
        configure_logging("debug", "json")
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer))
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        yield buffer


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    with captured_logs() as buffer:
        yield buffer


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return allowing_loopback(database, tmp_path)


@pytest.fixture
def api(settings: Settings, database: Database, logs: io.StringIO) -> Iterator[Api]:
    with serving_api(settings, database) as served:
        yield served


def echo(seen: Seen) -> Reply:
    """Answer with everything the request carried; the status comes from the path."""
    status = int(seen.path.split("/status/")[1].split("?")[0]) if "/status/" in seen.path else 200
    body = {"you_sent": {"path": seen.path, "headers": seen.headers}}
    headers = {"X-Echo-Authorization": seen.headers.get("authorization", "")}
    return Reply(status, body, headers=headers)


def refusing_token_endpoint(seen: Seen) -> Reply:
    """An authorization server that refuses the grant and echoes what it got in the error."""
    description = f"refresh token refused; you sent {seen.body} with {seen.headers}"
    return Reply(400, {"error": "invalid_grant", "error_description": description})


def settled(shown: dict[str, Any]) -> bool:
    """Ended, or waiting for a reauthorisation (not for a retry)."""
    return shown["status"] in ("succeeded", "failed") or shown["waiting_reason"] == "reauth"


def dump(database: Database) -> str:
    """Every row of every table in the database (not just the known models), as text."""
    lines = []
    with database.engine.connect() as conn:
        found = sa.inspect(conn)
        for name in found.get_table_names():
            # (the columns only: SQLite's indexes on an expression cannot be reflected)
            table = sa.table(name, *(sa.column(c["name"]) for c in found.get_columns(name)))
            for row in conn.execute(sa.select(table)):
                lines.append(f"{name}: " + " | ".join(str(value) for value in row))
    return "\n".join(lines)


def _workflow(name: str, app_id: str, connection: str, path: str, **step: Any) -> dict[str, Any]:
    return {
        "name": name,
        "application": app_id,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "call",
                "type": "http",
                "config": {
                    "method": "POST",
                    "connection": connection,
                    "path": path,
                    "headers": {"X-Trace": "t-1"},
                    "body": {"user": "{{ input.user }}"},
                },
                **step,
            }
        ],
    }


def _leaks(text: str) -> list[str]:
    """The canary, or a known encoding of one of its secrets, wherever it occurs in `text`."""
    found = []
    # base64 of the canary at each of the three alignments a prefix (e.g. `user:`) can give
    encoded = [base64.b64encode(b"\0" * k + CANARY.encode()).decode()[4:28] for k in range(3)]
    for needle in (CANARY, BASIC_PAIR, *encoded):
        at = text.find(needle)
        if at >= 0:
            found.append(text[max(0, at - 200) : at + 80])
    return found


def test_the_canary_secret_appears_nowhere(
    api: Any,
    admin: httpx.Client,
    settings: Settings,
    database: Database,
    logs: io.StringIO,
    tmp_path: Path,
) -> None:
    """A canary credential echoed back by the target is in no log, response or database row."""
    bodies: list[str] = []

    def seen(response: httpx.Response, status: int = 200) -> Any:
        bodies.append(response.text + json.dumps(dict(response.headers)))
        return ok(response, status)

    with running_target() as target:
        for path in ("/echo", "/status/400", "/status/401", "/status/500", "/"):
            target.respond(path, echo)
        app_id = make_application(admin, "Echo")
        bearer = make_connection(admin, app_id, target.url, name="echo", auth_kind="bearer")
        basic = make_connection(admin, app_id, target.url, name="basic", auth_kind="basic")
        query = make_connection(
            admin,
            app_id,
            target.url,
            name="query",
            auth_kind="api_key_query",
            auth_settings={"param": "key"},
        )
        bodies.append(json.dumps(put_credential(admin, bearer["id"], {"token": BEARER})))
        bodies.append(
            json.dumps(
                put_credential(admin, basic["id"], {"username": "svc", "password": PASSWORD})
            )
        )
        bodies.append(json.dumps(put_credential(admin, query["id"], {"api_key": QUERY_KEY})))
        target.respond("/token", refusing_token_endpoint)
        oauth = make_connection(
            admin,
            app_id,
            target.url,
            name="oauth",
            auth_kind="oauth_refresh_token",
            auth_settings={"token_url": f"{target.url}/token"},
        )
        oauth_secret = {
            "client_id": "gf",
            "client_secret": f"{CANARY}-cs",
            "refresh_token": REFRESH,
        }
        bodies.append(json.dumps(put_credential(admin, oauth["id"], oauth_secret)))
        # a replacement, and a refused one of the wrong shape that carries the canary
        bodies.append(json.dumps(put_credential(admin, bearer["id"], {"token": BEARER})))
        seen(
            admin.put(
                f"{API}/connections/{bearer['id']}/credential",
                json={"token": BEARER, "secret": CANARY},
            ),
            422,
        )

        cases = {
            "ok": ("echo", "/echo", {}),
            "bad": ("echo", "/status/400", {}),
            "unauthorised": ("echo", "/status/401", {}),
            "down": ("echo", "/status/500", {"retry": FAST_RETRY}),
            "basic": ("basic", "/status/400", {}),
            "query ok": ("query", "/echo?page=2", {}),
            "query bad": ("query", "/status/500", {}),
            "oauth": ("oauth", "/echo", {}),
        }
        workflows = {
            name: publish(database, _workflow(name, app_id, conn, path, **step))
            for name, (conn, path, step) in cases.items()
        }
        dry = seen(
            admin.post(
                f"{API}/workflows/{workflows['ok']}/versions/1/dry-run",
                json={"input": {"user": "ann"}},
            )
        )
        assert "<connection echo>/echo" in json.dumps(dry)  # nothing is resolved or sent
        with connection_worker(settings, database, concurrency=4):
            runs = {name: start(database, wf, {"user": "ann"}) for name, wf in workflows.items()}
            shown = {name: wait_for(database, run_id, settled) for name, run_id in runs.items()}
        test_ok = seen(admin.post(f"{API}/connections/{bearer['id']}/test"))
        assert test_ok["ok"] is True, test_ok
        ok(
            admin.patch(
                f"{API}/connections/{basic['id']}", json={"health_check": {"path": "/status/401"}}
            )
        )
        seen(admin.post(f"{API}/connections/{basic['id']}/test"))
        env = grantflow_env(
            database_url=settings.database_url,
            secret_key=settings.secret_key.get_secret_value() if settings.secret_key else "",
            log_level="debug",
        )
        cli = [
            run_grantflow("connections", "list", "Echo", "--json", env=env, cwd=tmp_path),
            run_grantflow("connections", "test", "Echo", "query", "--json", env=env, cwd=tmp_path),
        ]

    assert shown["ok"]["status"] == "succeeded", shown["ok"]["failure"]
    assert shown["query ok"]["status"] == "succeeded", shown["query ok"]["failure"]
    echoed = shown["ok"]["steps"][0]["output"]["you_sent"]["headers"]
    assert echoed["authorization"] == f"Bearer {REDACTED}"  # scrubbed, not dropped
    assert shown["query ok"]["steps"][0]["output"]["you_sent"]["path"].startswith("/echo?page=2")
    for name in ("bad", "unauthorised", "down", "basic", "query bad"):
        assert shown[name]["status"] == "failed", name
    assert shown["down"]["steps"][0]["attempts"] == 3
    assert (shown["oauth"]["status"], shown["oauth"]["waiting_reason"]) == ("waiting", "reauth")
    # the target really received the secrets: the test exercised what it claims
    sent = json.dumps([c.headers | {"path": c.path, "body": c.body} for c in target.calls()])
    assert BEARER in sent
    assert BASIC_PAIR in sent
    assert QUERY_KEY in sent
    assert REFRESH in sent

    assert cli[0].returncode == 0, cli[0].stderr
    assert [c["name"] for c in json.loads(cli[0].stdout)] == ["basic", "echo", "oauth", "query"]
    assert cli[1].returncode == 0, cli[1].stdout + cli[1].stderr
    for result in cli:
        bodies.append(result.stdout + result.stderr)

    for run_id in runs.values():
        seen(admin.get(f"{API}/runs/{run_id}"))
        seen(admin.get(f"{API}/runs/{run_id}/timeline"))
    seen(admin.get(f"{API}/runs", params={"limit": 200}))
    seen(admin.get(f"{API}/connections/{bearer['id']}"))
    seen(admin.get(f"{API}/applications/{app_id}/connections"))
    seen(admin.get(f"{API}/audit", params={"limit": 500}))
    notes = seen(admin.get(f"{API}/notifications"))["items"]  # failed runs' bodies included
    reauth = [n for n in notes if n["kind"] != "run_needs_attention"]
    assert [n["kind"] for n in reauth] == ["reauth_required"]
    assert "invalid_grant" in reauth[0]["body"]
    seen(admin.get(f"{API}/workflows/{workflows['ok']}/versions/1"))

    log_text = logs.getvalue()
    assert "connection.tested" in log_text  # the capture really saw the app's logs
    database_text = dump(database)
    assert REDACTED in database_text  # the dump really holds the runs' records
    assert "you_sent" in database_text
    for where, text in [("logs", log_text), ("database", database_text)] + [
        (f"response {n}", body) for n, body in enumerate(bodies)
    ]:
        assert _leaks(text) == [], f"the canary leaked into {where}: {_leaks(text)}"


# --- generated credentials, echoed in generated forms -------------------------------------------

EXAMPLES = 16  # generated first (hypothesis, derandomized), then each run through the worker
KINDS = {  # connection name -> (auth kind, auth settings, how a credential of it is built)
    "gen-bearer": ("bearer", {}, lambda secret: {"token": secret}),
    "gen-basic": ("basic", {}, lambda secret: {"username": "svc", "password": secret}),
    "gen-query": ("api_key_query", {"param": "key"}, lambda secret: {"api_key": secret}),
}
STATUSES = (200, 400, 503)


@dataclass
class Echoed:
    secret: str
    echo: Echo
    run_id: str


def _echo_workflow(app_id: str, connection: str, status: int) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": "call",
        "type": "http",
        "config": {"method": "POST", "connection": connection, "path": f"/echo/{status}"},
    }
    if status == 400:
        step["on_failure"] = "escalate"  # a person is mailed the failure
    if status == 503:
        step["retry"] = {"max_attempts": 2, "initial_backoff": "PT0.05S", "jitter": "none"}
    name = f"{connection} {status}"
    return {"name": name, "application": app_id, "trigger": {"type": "manual"}, "steps": [step]}


def _received(calls: list[Seen], kind: str, secret: str) -> bool:
    """The target really got the credential (the test exercises what it claims)."""
    last = calls[-1]
    if kind == "bearer":
        return last.headers.get("authorization") == f"Bearer {secret}"
    if kind == "basic":
        pair = base64.b64encode(f"svc:{secret}".encode()).decode()
        return last.headers.get("authorization") == f"Basic {pair}"
    return secret in unquote_plus(last.path)


def _refusing_with_echoes(seen: Seen) -> Reply:
    """A token endpoint refusing the grant with the refresh token JSON-escaped character by
    character just before its description is cut at 300 characters, and the Basic header's
    base64 (client_id:client_secret) echoed too."""
    refresh = str(seen.body).split("refresh_token=")[1].split("&")[0]
    escaped = "".join(f"\\u{ord(c):04X}" for c in unquote_plus(refresh))
    basic = seen.headers.get("authorization", "").removeprefix("Basic ")
    description = "x" * 290 + escaped + f" with {basic}"
    body = f'{{"error": "invalid_grant", "error_description": "{description}"}}'
    return Reply(400, body, content_type="application/json")


@pytest.mark.timeout(300)  # a CLI process alone can take half a minute on a busy machine
def test_a_credential_echoed_in_any_form_appears_nowhere(
    database: Database, tmp_path: Path, logs: io.StringIO
) -> None:
    """Generated credentials echoed in generated forms (JSON-escaped, URL- or form-encoded,
    base64) in 200, 400 and 503 answers appear in no run detail, timeline, connection, audit
    entry, notification, e-mail, /metrics, CLI output, log line or database row."""
    generated = _generated()  # (before any thread runs: hypothesis watches `random`)
    texts: list[tuple[str, Any]] = []
    cases: list[Echoed] = []
    current: dict[str, Any] = {}

    def echo_back(seen: Seen) -> Reply:
        status = int(seen.path.split("/echo/")[1].split("?")[0])
        echo: Echo = current["echo"]
        if current["json"]:
            body = f'{{"before": "ok", "echo": "{echo.written}", "status": {status}}}'
            return Reply(status, body, content_type="application/json")
        return Reply(status, f"you sent [{echo.written}] and that is that")

    with smtp_sink() as sink, running_target() as target:
        settings = allowing_loopback(
            database,
            tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_security="none",
            smtp_from="Grantflow <grantflow@example.com>",
            smtp_retry_seconds=0.05,
            public_url="https://grantflow.example.com",
        )
        email.configure(settings)
        try:
            with (
                serving_api(settings, database) as api,
                api.as_role(Role.ADMIN, "admin@example.com") as admin,
            ):
                for status in STATUSES:
                    target.respond(f"/echo/{status}", echo_back)
                app_id = make_application(admin, "Echoes")
                connections = {
                    name: make_connection(
                        admin, app_id, target.url, name=name, auth_kind=kind, auth_settings=auth
                    )["id"]
                    for name, (kind, auth, _) in KINDS.items()
                }
                workflows = {
                    (name, status): publish(database, _echo_workflow(app_id, name, status))
                    for name in KINDS
                    for status in STATUSES
                }
                target.respond("/token", _refusing_with_echoes)
                oauth = make_connection(
                    admin,
                    app_id,
                    target.url,
                    name="gen-oauth",
                    auth_kind="oauth_refresh_token",
                    auth_settings={"token_url": f"{target.url}/token"},
                )
                oauth_secret = {
                    "client_id": "gf",
                    "client_secret": "cnry-client-S3cret/+=",
                    "refresh_token": "cnry-refresh/é+ x",
                }
                put_credential(admin, oauth["id"], oauth_secret)
                texts.append(
                    ("oauth test", ok(admin.post(f"{API}/connections/{oauth['id']}/test")))
                )

                with connection_worker(settings, database, concurrency=2, tick_seconds=0.05):
                    for name, secret, echo, in_json, status in generated:
                        kind, _, credential = KINDS[name]
                        current.update(echo=echo, json=in_json)
                        put_credential(admin, connections[name], credential(secret))
                        run_id = start(database, workflows[(name, status)], {})
                        shown = wait_for(database, run_id, _settled_or_escalated)
                        assert _received(target.calls(f"/echo/{status}"), kind, secret)
                        expected = {200: "succeeded", 400: "waiting", 503: "failed"}[status]
                        assert shown["status"] == expected, (echo, shown)
                        cases.append(Echoed(secret, echo, run_id))
                    escalated = [c for c in cases if run_of(admin, c.run_id)["status"] == "waiting"]
                    poll(
                        lambda: len(sink.received) >= len(escalated) or None,
                        timeout=120,
                        what=f"{len(escalated)} escalation e-mails",
                    )
                failed_runs = set()
                for case in cases:
                    shown_run = run_of(admin, case.run_id)
                    if shown_run["status"] != "succeeded":
                        failed_runs.add(case.run_id)
                    texts.append(("run", shown_run))
                    texts.append(("timeline", ok(admin.get(f"{API}/runs/{case.run_id}/timeline"))))
                for where, path in [
                    ("runs", f"{API}/runs?limit=200"),
                    ("connections", f"{API}/applications/{app_id}/connections"),
                    ("audit", f"{API}/audit?limit=500"),
                    ("notifications", f"{API}/notifications"),
                    ("emails", f"{API}/emails"),
                    ("inbox", f"{API}/inbox"),
                ]:
                    texts.append((where, ok(admin.get(path))))
                metrics = admin.get("/metrics")
                assert metrics.status_code == 200
                texts.append(("metrics", metrics.text))
                notes = ok(admin.get(f"{API}/notifications"))["items"]
                reauth = [n for n in notes if n["kind"] == "reauth_required"]
                assert reauth, notes
                assert "invalid_grant" in reauth[0]["body"]
        finally:
            email.configure(None)
        assert any("What failed:" in mail.body for mail in sink.received)
        for mail in sink.received:
            texts.append(("e-mail", f"{mail.message['Subject']}\n{mail.body}"))

    env = grantflow_env(
        database_url=settings.database_url,
        secret_key=settings.secret_key.get_secret_value() if settings.secret_key else "",
        log_level="debug",
    )
    # (one CLI process — each takes seconds —: a failed run's detail, quoting the target)
    failed = next(c.run_id for c in reversed(cases) if c.run_id in failed_runs)
    result = run_grantflow("runs", "show", failed, "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] in ("failed", "waiting")
    texts.append(("cli", result.stdout + result.stderr))
    texts.append(("logs", logs.getvalue()))
    texts.append(("database", dump(database)))

    assert len({c.echo.how for c in cases}) > 3  # the examples were varied
    # (and the refresh token's first characters: a description cut before it was scrubbed
    # would keep them)
    refresh = oauth_secret["refresh_token"]
    hidden = [*(c.secret for c in cases), oauth_secret["client_secret"], refresh, refresh[:10]]
    for where, value in texts:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        found = leaks(text, *hidden)
        assert found == [], f"a credential leaked into {where}: {found} (echoes: {cases})"


def _generated() -> list[tuple[str, str, Echo, bool, int]]:
    """Hypothesis's cases: (connection, secret, echo, inside JSON?, status)."""
    drawn: list[tuple[str, str, Echo, bool, int]] = []

    @hypothesis_settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def generate(data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(KINDS)))
        kind = KINDS[name][0]
        secret = "cnry" + data.draw(ASCII_SECRETS if kind == "bearer" else ANY_SECRETS)
        in_json = data.draw(st.booleans())
        echo = data.draw(echoes(secret, in_json=in_json))
        drawn.append((name, secret, echo, in_json, data.draw(st.sampled_from(STATUSES))))

    generate()
    return drawn


def _settled_or_escalated(shown: dict[str, Any]) -> bool:
    return shown["status"] in ("succeeded", "failed") or shown["waiting_reason"] == "escalated"


def run_of(admin: httpx.Client, run_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = ok(admin.get(f"{API}/runs/{run_id}"))
    return shown
