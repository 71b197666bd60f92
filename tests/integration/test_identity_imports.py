"""CSV imports the workers carry out (`/api/v1/identity-imports`): accepted at once, written a
batch of rows per transaction resuming where the last stopped, each row's outcome kept; a
failed batch undone and tried again; cancelling; refusals; permissions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError

from grantflow.access import identities, identity_import, identity_imports
from grantflow.access.identities import IdentityCreate
from grantflow.access.identity_imports import import_due
from grantflow.access.models import Identity, IdentityImport, IdentityImportRow
from grantflow.auth.permissions import Role
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import API, ok
from tests.support.engine import ACTOR, running_worker
from tests.support.processes import poll

IMPORTS = f"{API}/identity-imports"

# a chain of managers written managers first: p5 before p4 ... before p0; row 8 is bad
CHAIN = (
    "email,display_name,manager\n"
    + "".join(
        f"p{n}@example.com,P{n},{f'p{n + 1}@example.com' if n < 5 else ''}\n" for n in range(6)
    )
    + "bad-email,Nobody,\n"
)


def send(client: httpx.Client, text: str, name: str = "people.csv") -> httpx.Response:
    return client.post(IMPORTS, files={"file": (name, text.encode())})


def emails(database: Database) -> dict[str, str | None]:
    """Each identity's e-mail and its manager's e-mail."""
    with database.transaction() as session:
        people = {i.id: i for i in session.execute(select(Identity)).scalars()}
    return {
        str(p.email): (people[p.manager_id].email if p.manager_id else None)
        for p in people.values()
    }


def all_rows(client: httpx.Client, import_id: str, **params: Any) -> list[dict[str, Any]]:
    rows, cursor = [], None
    while True:
        page = ok(client.get(f"{IMPORTS}/{import_id}/rows", params={**params, "cursor": cursor}))
        rows += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows


def tick(database: Database, now: dt.datetime | None = None) -> bool:
    with database.transaction() as session:
        return import_due(session, DatabaseQueue(database), now)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity_imports, "BATCH_ROWS", 2)


def test_an_import_is_accepted_at_once_and_a_worker_writes_it(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    answer = send(admin, CHAIN)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert answer.headers["Location"] == f"{IMPORTS}/{accepted['id']}"
    assert (accepted["status"], accepted["rows"], accepted["done_rows"]) == ("queued", 7, 0)
    assert accepted["filename"] == "people.csv"
    assert emails(database) == {}  # nothing written in the request

    with running_worker(database, tick_seconds=0.2):
        done = poll(
            lambda: (
                (v := ok(admin.get(f"{IMPORTS}/{accepted['id']}")))["status"] == "succeeded" and v
            ),
            timeout=60,
            what="the import to succeed",
        )
    assert done["counts"] == {"created": 6, "updated": 0, "unchanged": 0, "rejected": 1}
    assert (done["done_rows"], done["percent"], done["error"]) == (7, 100.0, None)
    assert emails(database)["p0@example.com"] == "p1@example.com"
    assert emails(database)["p4@example.com"] == "p5@example.com"

    rows = all_rows(admin, accepted["id"], limit=2)  # in file order, over pages
    assert [r["row"] for r in rows] == [2, 3, 4, 5, 6, 7, 8]
    assert rows[0]["outcome"] == "created"
    assert rows[0]["events"] == ["identity_joined"]
    [rejected] = all_rows(admin, accepted["id"], outcome="rejected")
    assert rejected["row"] == 8
    assert rejected["reason"].startswith("email: ")

    entries = ok(admin.get(f"{API}/audit", params={"action": "identity.imported"}))["items"]
    assert entries[0]["summary"]["import"] == accepted["id"]
    assert entries[0]["summary"]["created"] == 6
    with database.transaction() as session:  # the file is dropped once imported
        assert session.get(IdentityImport, accepted["id"]).content is None  # type: ignore[union-attr]
    listed = ok(admin.get(IMPORTS))["items"]
    assert [i["id"] for i in listed] == [accepted["id"]]


@pytest.mark.usefixtures("small_batches")
def test_each_batch_resumes_where_the_last_stopped_even_in_another_process(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A batch per transaction; with the parsed file forgotten between batches (another
    process's worker), the order and the managers found are the same."""
    import_id = send(admin, CHAIN).json()["id"]
    progress = []
    while True:
        identity_imports._parsed = None  # (as a worker of another process finds it)
        more = tick(database)
        view = ok(admin.get(f"{IMPORTS}/{import_id}"))
        progress.append((view["status"], view["done_rows"]))
        if not more or view["status"] == "succeeded":
            break
    assert progress == [("running", 2), ("running", 4), ("running", 6), ("succeeded", 7)]
    assert emails(database)["p0@example.com"] == "p1@example.com"
    assert emails(database)["p5@example.com"] is None
    assert tick(database) is False  # nothing left


@pytest.mark.usefixtures("small_batches")
def test_a_failed_batch_is_undone_kept_on_the_import_and_tried_again(
    api: Api, admin: httpx.Client, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_id = send(admin, CHAIN).json()["id"]
    assert tick(database)  # rows of the first batch
    real_write = identity_import.Importer.write

    def broken(self: Any, session: Any, queue: Any, batch: list[Any]) -> None:
        real_write(self, session, queue, batch[:1])  # one row written, then a fault
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(identity_import.Importer, "write", broken)
    assert tick(database)
    view = ok(admin.get(f"{IMPORTS}/{import_id}"))
    assert view["status"] == "running"
    assert view["done_rows"] == 2
    assert view["error"] == "RuntimeError: the disk is full"
    retry_at = dt.datetime.fromisoformat(view["retry_at"])
    with database.transaction() as session:  # the batch's first row was undone with it
        written = session.execute(select(IdentityImportRow.row)).scalars().all()
    assert len(written) == 2
    assert len(emails(database)) == 2
    assert tick(database) is False  # not before retry_at

    monkeypatch.setattr(identity_import.Importer, "write", real_write)  # the cause is fixed
    while tick(database, retry_at + dt.timedelta(seconds=1)):
        pass
    view = ok(admin.get(f"{IMPORTS}/{import_id}"))
    assert (view["status"], view["error"], view["retry_at"]) == ("succeeded", None, None)
    assert view["counts"]["created"] == 6
    assert emails(database)["p3@example.com"] == "p4@example.com"


@pytest.mark.usefixtures("small_batches")
def test_cancelling_stops_an_import_between_batches(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    import_id = send(admin, CHAIN).json()["id"]
    assert tick(database)
    cancelled = ok(admin.post(f"{IMPORTS}/{import_id}/cancel"))
    assert (cancelled["status"], cancelled["done_rows"]) == ("cancelled", 2)
    assert cancelled["cancelled_by"] == "admin@example.com"
    assert tick(database) is False
    assert len(emails(database)) == 2  # the rows written stay; no others are written

    again = admin.post(f"{IMPORTS}/{import_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "import_ended"
    assert "already cancelled" in again.json()["error"]["message"]
    entries = ok(admin.get(f"{API}/audit", params={"action": "identity.import_cancelled"}))
    assert entries["items"][0]["target_id"] == import_id


def test_rows_the_database_or_a_lookup_refuses_are_rejected_not_the_batch(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A manager named by an id prefix two identities share, and a cell with a NUL character,
    reject their rows; the other rows are imported and the import ends (it was retried every
    minute for ever)."""
    queue = DatabaseQueue(database)
    with database.transaction() as session:
        ids = [
            identities.create_identity(
                session, ACTOR, queue, IdentityCreate(email=f"m{n}@example.com")
            ).id
            for n in range(2)
        ]
    shared = ids[0][: next(i for i, (a, b) in enumerate(zip(*ids, strict=True)) if a != b)]
    assert len(shared) >= 4
    text = (
        "email,display_name,manager\n"
        f"ok@example.com,Ok,\n"
        f"amb@example.com,Amb,{shared}\n"
        "nul@example.com,Nu\x00l,\n"
    )
    import_id = send(admin, text).json()["id"]
    while tick(database):
        pass
    view = ok(admin.get(f"{IMPORTS}/{import_id}"))
    assert (view["status"], view["error"]) == ("succeeded", None)
    assert view["counts"] == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 2}
    rows = {r["row"]: r for r in all_rows(admin, import_id, outcome="rejected")}
    assert rows[3]["errors"][0]["column"] == "manager"
    assert "matches 2" in rows[3]["reason"] or "ambiguous" in rows[3]["reason"].lower()
    assert rows[4]["reason"] == "display_name: the cell must not contain a NUL character (\\u0000)"


def test_a_batch_failing_three_times_fails_the_import_saying_nothing_of_its_rows(
    api: Api, admin: httpx.Client, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error kept and shown is the driver's first line, never the statement's values; the
    third failure in a row fails the import and drops its file."""
    import_id = send(admin, "email,attr.ssn\nssn@example.com,123-45-6789\n", "x" * 300).json()
    assert len(import_id["filename"]) == 255  # (a longer name is cut, not a 500)

    def refused(self: Any, session: Any, queue: Any, batch: list[Any]) -> None:
        raise DataError(
            "INSERT INTO identities (attributes) VALUES (%(attributes)s)",
            {"attributes": '{"ssn": "123-45-6789"}'},
            Exception("value too long for type character varying(320)\nDETAIL: 123-45-6789"),
        )

    monkeypatch.setattr(identity_import.Importer, "write", refused)
    at = dt.datetime.now(dt.UTC)
    for attempt in range(identity_imports.MAX_FAILURES):
        assert tick(database, at + attempt * identity_imports.RETRY)
        view = ok(admin.get(f"{IMPORTS}/{import_id['id']}"))
        assert view["error"] == "Exception: value too long for type character varying(320)"
        assert view["failures"] == attempt + 1
    assert (view["status"], view["retry_at"], view["done_rows"]) == ("failed", None, 0)
    assert "123-45" not in str(view)
    with database.transaction() as session:
        assert session.get(IdentityImport, view["id"]).content is None  # type: ignore[union-attr]
    assert tick(database, at + dt.timedelta(hours=1)) is False


@pytest.mark.usefixtures("small_batches")
def test_a_manager_deleted_between_batches_rejects_the_row_that_names_them(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A batch finds a manager written by an earlier batch in the database, as a batch resumed
    in another process does: one deleted since is refused, not assigned."""
    import_id = send(admin, CHAIN).json()["id"]
    queue = DatabaseQueue(database)
    assert tick(database)  # p5, then p4
    with database.transaction() as session:
        p4 = select(Identity.id).where(Identity.email == "p4@example.com")
        identities.delete_identity(session, ACTOR, queue, session.execute(p4).scalar_one())
    while tick(database):
        pass
    [p3] = [r for r in all_rows(admin, import_id) if r["email"] == "p3@example.com"]
    assert p3["outcome"] == "rejected"
    assert p3["reason"] == (
        "manager: 'p4@example.com' is row 6, which was rejected or deleted since, and no such "
        "identity exists"
    )


def test_a_file_refused_as_a_whole_stores_no_import(api: Api, admin: httpx.Client) -> None:
    header = send(admin, "mail,name\nada@example.com,Ada\n")
    assert header.status_code == 422
    assert header.json()["error"]["code"] == "csv_header_invalid"
    not_utf8 = admin.post(
        IMPORTS, files={"file": ("p.csv", "email\nzoë@example.com\n".encode("latin-1"))}
    )
    assert not_utf8.status_code == 422
    wrong_kind = admin.post(IMPORTS, content=b"email\n", headers={"Content-Type": "text/plain"})
    assert wrong_kind.status_code == 415
    assert ok(admin.get(IMPORTS))["items"] == []
    assert admin.get(f"{IMPORTS}/0190ffff").status_code == 404
    bad_cursor = admin.get(IMPORTS, params={"cursor": "nonsense"})
    assert bad_cursor.status_code == 400


def test_reading_imports_needs_identity_read_and_starting_one_identity_write(
    api: Api, admin: httpx.Client
) -> None:
    import_id = send(admin, CHAIN).json()["id"]
    with api.as_role(Role.AUDITOR) as auditor:
        assert ok(auditor.get(f"{IMPORTS}/{import_id}"))["status"] == "queued"
        assert ok(auditor.get(f"{IMPORTS}/{import_id}/rows"))["items"] == []
        assert send(auditor, CHAIN).status_code == 403
        assert auditor.post(f"{IMPORTS}/{import_id}/cancel").status_code == 403
    with api.client() as anonymous:
        assert anonymous.get(IMPORTS).status_code == 401


def test_the_waiting_import_is_an_import_too(api: Api, admin: httpx.Client) -> None:
    """`POST /identities/import` writes every row in the request and answers with the report;
    the import is listed like the others."""
    report = ok(admin.post(f"{API}/identities/import", files={"file": ("p.csv", CHAIN.encode())}))
    assert report["counts"] == {"created": 6, "updated": 0, "unchanged": 0, "rejected": 1}
    [listed] = ok(admin.get(IMPORTS))["items"]
    assert (listed["status"], listed["done_rows"], listed["filename"]) == ("succeeded", 7, "p.csv")
    assert [r["row"] for r in all_rows(admin, listed["id"])] == [
        r["row"] for r in report["results"]
    ]


@pytest.mark.usefixtures("small_batches")
def test_the_waiting_import_that_stops_says_where_to_follow_it_and_the_workers_finish_it(
    api: Api, admin: httpx.Client, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = identity_import.Importer.write

    def broken(self: Any, session: Any, queue: Any, batch: list[Any]) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(identity_import.Importer, "write", broken)
    stopped = admin.post(f"{API}/identities/import", files={"file": ("p.csv", CHAIN.encode())})
    assert stopped.status_code == 500
    error = stopped.json()["error"]
    assert "stopped at row 0 of 7: RuntimeError: the disk is full" in error["message"]
    follow = error["next_action"].split("follow it at GET ")[1]
    monkeypatch.setattr(identity_import.Importer, "write", real_write)  # the cause is fixed
    view = ok(admin.get(follow))
    while tick(database, dt.datetime.fromisoformat(view["retry_at"])):
        pass
    assert ok(admin.get(follow))["status"] == "succeeded"  # followed, as it said


@pytest.mark.usefixtures("small_batches")
def test_a_waiting_import_cancelled_meanwhile_is_a_409_naming_its_rows(
    api: Api, admin: httpx.Client, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled by someone else between two of its batches, the waiting request says so (it
    answered a normal report of the rows written so far)."""
    real_advance = identity_imports.advance

    def then_cancelled(session: Any, queue: Any, imported: Any, *args: Any, **kw: Any) -> bool:
        more = real_advance(session, queue, imported, *args, **kw)
        imported.status, imported.cancelled_by = "cancelled", "someone@example.com"
        return more

    monkeypatch.setattr(identity_imports, "advance", then_cancelled)
    answer = admin.post(f"{API}/identities/import", files={"file": ("p.csv", CHAIN.encode())})
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "import_ended"
    assert "was cancelled after 2 of 7 rows" in error["message"]
    rows = ok(admin.get(error["next_action"].split("GET ")[1]))["items"]  # the action, taken
    assert len(rows) == 2


def test_an_unknown_import_says_where_the_imports_are(api: Api, admin: httpx.Client) -> None:
    missing = admin.get(f"{IMPORTS}/0190aaaa-0000-7000-8000-000000000009")
    assert missing.status_code == 404
    action = missing.json()["error"]["next_action"]
    assert action == "list imports: GET /api/v1/identity-imports"
    assert ok(admin.get(action.split("GET ")[1]))["items"] == []  # the action, taken
