"""The command line's wait for the workers (`grantflow.cli.waiting`), run in this process
against the real server and database with its intervals shortened, for what takes half a
minute in a real wait: a worker that dies in the middle of an import is noticed, and a worker
started then takes the import over; live workers that leave the work unmoved are named with
what it waits behind, and the command that shows it is run. (A wait with no worker at all, and
Ctrl-C, are taken in tests/acceptance/test_cli_waiting.py.)"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import update

from grantflow.access.models import IdentityImport
from grantflow.auth.permissions import Role
from grantflow.cli import identities, reports, waiting
from grantflow.cli.client import Client, HttpTransport
from grantflow.cli.files import multipart
from grantflow.governance import report_rows
from grantflow.governance import reports as report_service
from grantflow.queue.models import Worker as WorkerRow
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import running_worker
from tests.support.processes import grantflow_env, json_output, poll, run_grantflow

PEOPLE = b"email\nada@example.com\nbob@example.com\ncarl@example.com\n"


@pytest.fixture
def notes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the wait says (still said on stderr), with its intervals a few polls long."""
    monkeypatch.setattr(waiting, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(waiting, "CHECK_SECONDS", 0.2)
    monkeypatch.setattr(waiting, "BUSY_HINT_SECONDS", 0.5)
    said: list[str] = []
    real = waiting.Waiting.note

    def note(self: waiting.Waiting, text: str) -> None:
        said.append(text)
        real(self, text)

    monkeypatch.setattr(waiting.Waiting, "note", note)
    return said


class Looks:
    count = 0  # how many times the wait looked at the work (and, now and then, the workers)


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> Looks:
    seen = Looks()
    real = waiting.Waiting._look_at_workers

    def look(self: waiting.Waiting, now: float, moved: bool) -> None:
        real(self, now, moved)
        seen.count += 1

    monkeypatch.setattr(waiting.Waiting, "_look_at_workers", look)
    return seen


@pytest.fixture
def token(api: Api) -> str:
    return api.user_token("ops@example.com", Role.OPERATOR, Role.AUDITOR)


@pytest.fixture
def client(api: Api, token: str) -> Iterator[Client]:
    """The command line's own client, over HTTP to the test's server."""
    transport = HttpTransport(api.base_url)
    yield Client(transport, token, remote=True)
    transport.close()


def a_live_worker(database: Database) -> str:
    """A worker registered and heart-beating, as far as the server can tell, that takes
    nothing (its process hung, or busy elsewhere)."""
    now = utcnow()
    with database.transaction() as session:
        session.add(
            WorkerRow(
                id="hung-worker",
                hostname="elsewhere",
                pid=1,
                concurrency=1,
                transport="database",
                started_at=now,
                heartbeat_at=now,
                lease_expires_at=now + dt.timedelta(hours=1),
            )
        )
    return "hung-worker"


class Waited:
    """`wait()` run in a thread: its result, or what it raised."""

    def __init__(self, wait: Callable[[], dict[str, Any]]) -> None:
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = wait()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self) -> dict[str, Any]:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the wait did not end"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def start_import(client: Client) -> dict[str, Any]:
    body, kind = multipart({}, "file", "people.csv", "text/csv", PEOPLE)
    started: dict[str, Any] = client.request(
        "POST", "/identity-imports", content=body, content_type=kind
    ).json()
    return started


def said(notes: list[str], text: str) -> str:
    return poll(lambda: next((n for n in notes if text in n), None), timeout=60, what=repr(text))


def test_a_worker_dying_in_the_middle_of_an_import_is_said_and_a_new_one_takes_it_over(
    api: Api, client: Client, notes: list[str], looks: Looks
) -> None:
    hung = a_live_worker(api.database)
    started = start_import(client)
    with api.database.transaction() as session:  # that worker took it
        session.execute(
            update(IdentityImport)
            .where(IdentityImport.id == started["id"])
            .values(status="running")
        )
    waited = Waited(lambda: identities._follow(client, started, quiet=True))
    poll(lambda: looks.count >= 1, timeout=60, what="the wait to see the worker live")
    # the worker dies: its lease runs out with the import still running
    with api.database.transaction() as session:
        gone = utcnow() - dt.timedelta(minutes=5)
        session.execute(
            update(WorkerRow)
            .where(WorkerRow.id == hung)
            .values(heartbeat_at=gone, lease_expires_at=gone)
        )
    assert said(notes, waiting.NO_WORKER) == f"{waiting.NO_WORKER}; waiting"
    with running_worker(api.database, tick_seconds=0.2):  # the advice, taken
        report = waited.done()
    assert (report["status"], report["counts"]["created"]) == ("succeeded", 3)


def test_live_workers_leaving_an_import_unmoved_are_said_with_what_it_waits_behind(
    api: Api, client: Client, token: str, notes: list[str], tmp_path: Any
) -> None:
    a_live_worker(api.database)
    started = start_import(client)
    waited = Waited(lambda: identities._follow(client, started, quiet=True))
    hint = said(notes, "not moved for")
    assert hint.endswith("(`grantflow identities imports` lists the imports ahead of it)")
    assert waiting.NO_WORKER not in " ".join(notes)
    # the command it names shows the import, still queued
    env = {**grantflow_env(url=api.base_url), "GRANTFLOW_TOKEN": token}
    listed = json_output(run_grantflow("identities", "imports", "--json", env=env, cwd=tmp_path))
    assert [(i["id"], i["status"]) for i in listed] == [(started["id"], "queued")]
    with api.client(token) as other:  # (the wait's client is its thread's alone)
        assert other.post(f"/api/v1/identity-imports/{started['id']}/cancel").status_code == 200
    assert waited.done()["status"] == "cancelled"


def test_live_workers_leaving_a_report_generating_are_said_with_what_it_waits_behind(
    api: Api,
    client: Client,
    token: str,
    notes: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    monkeypatch.setattr(report_service, "INLINE_ROWS", 0)
    a_live_worker(api.database)
    shown = client.post("/reports", {"kind": "audit_export"})
    assert shown["status"] == "generating"
    waited = Waited(lambda: reports._wait_written(client, shown))
    hint = said(notes, "still generating after")
    assert hint.endswith("(`grantflow reports list` shows the ones generating)")
    env = {**grantflow_env(url=api.base_url), "GRANTFLOW_TOKEN": token}
    listed = json_output(run_grantflow("reports", "list", "--json", env=env, cwd=tmp_path))
    assert [(r["id"], r["status"]) for r in listed] == [(shown["id"], "generating")]
    with running_worker(api.database, tick_seconds=0.2):
        assert waited.done()["status"] == "ready"


def test_a_report_the_workers_fail_to_write_ends_the_wait_with_advice_that_works(
    api: Api, token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """`reports generate` (its own process) waiting for a report the workers cannot write:
    exit 1 and `generate it again`, which, the cause fixed, works. `--no-wait` names the
    download for later, which works once the workers wrote it."""
    monkeypatch.setattr(report_service, "INLINE_ROWS", 0)
    env = {**grantflow_env(url=api.base_url), "GRANTFLOW_TOKEN": token}

    def grantflow(*args: str) -> Any:
        return run_grantflow(*args, env=env, cwd=tmp_path)

    later = grantflow("reports", "generate", "audit_export", "--no-wait")
    assert later.returncode == 0, later.stderr
    download = later.stdout.split("download it once ready: ")[1].strip()
    report_id = download.split()[3]
    assert download == f"grantflow reports download {report_id} -o FILE"

    spec = report_rows.KINDS[report_rows.ReportKind.AUDIT_EXPORT]

    def broken(*_: Any) -> Iterator[dict[str, Any]]:
        raise RuntimeError("the disk is full")
        yield {}

    kind = report_rows.ReportKind.AUDIT_EXPORT
    with running_worker(api.database, tick_seconds=0.2):
        target = tmp_path / "later.csv"

        def downloaded() -> Any:
            done = grantflow(*download.replace("FILE", str(target)).split()[1:])
            return done if done.returncode == 0 else None

        taken = poll(downloaded, timeout=60, what="the report asked with --no-wait, written")
        assert taken.stdout.startswith(f"{target}: ")
        monkeypatch.setitem(
            report_service.KINDS,
            kind,
            report_rows.KindSpec(spec.params, spec.plan, broken, spec.columns, spec.description),
        )
        failed = grantflow("reports", "generate", "audit_export")
        assert failed.returncode == 1
        first, advice = failed.stderr.splitlines()[-2:]
        assert first.endswith("could not be generated: RuntimeError: the disk is full")
        assert advice.strip() == "next: generate it again"
        monkeypatch.setitem(report_service.KINDS, kind, spec)  # the cause fixed
        again = grantflow("reports", "generate", "audit_export")
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("report ")
        assert " sha256 " in again.stdout
