"""Identity imports: a CSV file accepted at once and written a batch of rows per transaction.

- `start` checks the file as a whole (size, encoding, header, rows: `identity_import`), refuses
  it with nothing written when that fails, and stores it as a queued import.
- `advance` writes the import's next `BATCH_ROWS` rows, in the order `Importer.order` gives
  (managers first), in the caller's transaction, and keeps what each row came to. The workers'
  timer (`import_due`) carries imports through a batch per transaction; `import_csv` (the
  `POST /identities/import` that answers with the report) carries one through in the request.
  Both lock the import's row first, so they take turns on it.
- A batch that fails (an error in no row of its own: the database, a fault) is undone, its
  error kept on the import, and tried again `RETRY` later; `cancel` stops an import between
  batches. The rows written stay written either way.

A batch resumes from the stored file: parsing and ordering it again is deterministic. The last
import parsed is kept in this process (`_Parsed`) while its batches follow one another.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import insert, or_, select
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access.identity_import import (
    MAX_ROWS,
    Importer,
    ImportReport,
    Outcome,
    Row,
    RowResult,
    dry_run,
    parse_csv,
    report,
)
from grantflow.access.models import IdentityImport, IdentityImportRow
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.engine.runs import Fanout
from grantflow.errors import Conflict, InternalError, NotFound
from grantflow.queue.interface import Queue
from grantflow.store.after_commit import after_commit
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from grantflow.store.faults import fault_text
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import INTEGER_KEYS, Page, decode_cursor, page_of

log = structlog.get_logger("grantflow.access")

BATCH_ROWS = 50  # rows per transaction: each holds the audit chain while it writes
RETRY = dt.timedelta(minutes=1)  # after a batch failed
MAX_FAILURES = 3  # a batch that failed this often in a row fails the import (no endless retry)
FILENAME_LENGTH = 255


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # its batch failed MAX_FAILURES times in a row
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self not in (ImportStatus.QUEUED, ImportStatus.RUNNING)


_OPEN = (ImportStatus.QUEUED.value, ImportStatus.RUNNING.value)


def start(
    session: Session,
    actor: Actor,
    content: bytes,
    *,
    filename: str | None = None,
    max_rows: int = MAX_ROWS,
    max_bytes: int | None = None,
) -> IdentityImport:
    """Check the file (refused as a whole: 413/422, nothing stored) and queue its import."""
    actor.require(Permission.IDENTITY_WRITE)
    rows = parse_csv(content, max_rows=max_rows, max_bytes=max_bytes)
    imported = IdentityImport(
        status=ImportStatus.QUEUED.value,
        filename=filename[:FILENAME_LENGTH] if filename else None,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        content=content,
        rows=len(rows),
        done_rows=0,
        created=0,
        updated=0,
        unchanged=0,
        rejected=0,
        runs_started=0,
        failures=0,
        created_by=actor.label,
        created_by_id=actor.user_id,
        created_at=utcnow(),
    )
    session.add(imported)
    session.flush()
    return imported


# --- writing, a batch at a time -------------------------------------------------------------
@dataclass
class _Parsed:
    """An import's file parsed and ordered, and the row it stopped at (a batch that did not
    commit leaves this ahead of the database: then it is parsed again)."""

    import_id: str
    importer: Importer
    ordered: list[Row]
    done_rows: int


_parsed: _Parsed | None = None
_parsed_lock = threading.Lock()


def _prepared(imported: IdentityImport) -> _Parsed:
    global _parsed
    with _parsed_lock:
        kept, _parsed = _parsed, None  # (taken: another thread's batch parses its own)
    if kept is not None and kept.import_id == imported.id and kept.done_rows == imported.done_rows:
        return kept
    if imported.content is None:
        raise InternalError(f"identity import {imported.id} has no file left to import")
    rows = parse_csv(imported.content, max_rows=max(imported.rows, 1))
    importer = Importer(_actor(imported), rows)
    return _Parsed(imported.id, importer, importer.order(), imported.done_rows)


def _actor(imported: IdentityImport) -> Actor:
    """Who started the import, with what writing its rows needs (checked when it started)."""
    return Actor(
        label=imported.created_by,
        user_id=imported.created_by_id,
        permissions=frozenset({Permission.IDENTITY_WRITE}),
    )


def advance(
    session: Session,
    queue: Queue,
    imported: IdentityImport,
    now: dt.datetime | None = None,
    *,
    batch_rows: int | None = None,
) -> bool:
    """Write the next batch of `imported` (locked by the caller); True while rows are left."""
    now = now or utcnow()
    parsed = _prepared(imported)
    end = imported.done_rows + (batch_rows or BATCH_ROWS)
    batch = parsed.ordered[imported.done_rows : end]
    # (the runs its rows start are spread as one event's: GRANTFLOW_FANOUT_BATCH at a time)
    fanout = session.info["fanout"] = Fanout(imported.created_at, imported.runs_started)
    parsed.importer.write(session, queue, batch)
    imported.runs_started = fanout.started
    results = [row.result for row in batch if row.result is not None]
    if results:
        session.execute(
            insert(IdentityImportRow),
            [
                {
                    "import_id": imported.id,
                    "row": r.row,
                    "outcome": r.outcome.value,
                    "result": r.model_dump(mode="json"),
                }
                for r in results
            ],
        )
    for result in results:
        name = result.outcome.value
        setattr(imported, name, getattr(imported, name) + 1)
    imported.done_rows += len(batch)
    imported.error = imported.retry_at = None
    imported.failures = 0
    if imported.done_rows < len(parsed.ordered):
        parsed.done_rows = imported.done_rows
        after_commit(session, lambda _: _keep(parsed))  # (a batch not committed is parsed again)
        return True
    _finish(session, imported, now)
    return False


def _keep(parsed: _Parsed) -> None:
    global _parsed
    with _parsed_lock:
        _parsed = parsed


def _finish(session: Session, imported: IdentityImport, now: dt.datetime) -> None:
    imported.status = ImportStatus.SUCCEEDED.value
    imported.finished_at = now
    imported.content = None  # (what each row came to stays; the file is not needed any more)
    if imported.created or imported.updated:
        # an import that changed nothing leaves no trace (importing a file again is a no-op)
        audit.record(
            session,
            _actor(imported),
            "identity.imported",
            "identity",
            None,
            {
                "import": imported.id,
                "filename": imported.filename,
                "sha256": imported.sha256,
                "rows": imported.rows,
                **counts(imported),
            },
        )


def _advance_or_failure(
    session: Session,
    queue: Queue,
    imported: IdentityImport,
    now: dt.datetime,
    batch_rows: int | None = None,
) -> bool:
    """`advance` in a savepoint. An error no row of the batch caught (a fault, a deadlock) is
    kept on the import in words safe to show (`fault_text`: never the row's data), and tried
    again after RETRY; the MAX_FAILURES-th in a row fails the import and drops its file."""
    if imported.status == ImportStatus.QUEUED:  # (outside the savepoint: it stands if that fails)
        imported.status = ImportStatus.RUNNING.value
        imported.started_at = now
    try:
        with session.begin_nested():
            return advance(session, queue, imported, now, batch_rows=batch_rows)
    except Exception as exc:  # (whatever it is, the other imports go on)
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise  # the database is gone: nothing can be recorded (the timer runs it again)
        why = fault_text(exc)
        imported.error = why
        imported.failures += 1
        log.error(
            "identity.import_batch_failed",
            import_id=imported.id,
            at_row=imported.done_rows,
            failures=imported.failures,
            error=why,
            # (the traceback of a database error repeats the statement and the row's values)
            exc_info=None if isinstance(exc, StatementError) else exc,
        )
        if imported.failures >= MAX_FAILURES:
            imported.status = ImportStatus.FAILED.value
            imported.finished_at = now
            imported.retry_at = None
            imported.content = None
        else:
            imported.retry_at = now + RETRY
        return False


def import_due(session: Session, queue: Queue, now: dt.datetime | None = None) -> bool:
    """The workers' timer, each call one transaction: a batch of the oldest import waiting.
    True when it wrote one (the worker calls again at once)."""
    now = now or utcnow()
    imported = session.execute(
        select(IdentityImport)
        .where(
            IdentityImport.status.in_(_OPEN),
            or_(IdentityImport.retry_at.is_(None), IdentityImport.retry_at <= now),
        )
        .order_by(IdentityImport.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if imported is None:
        return False
    _advance_or_failure(session, queue, imported, now)
    return True


def import_csv(
    database: Database,
    actor: Actor,
    queue: Queue,
    content: bytes,
    *,
    filename: str | None = None,
    dry_run_only: bool = False,
    max_rows: int = MAX_ROWS,
    max_bytes: int | None = None,
    batch_rows: int | None = None,
) -> ImportReport:
    """Import the file in this call, a batch per transaction, and report every row (the
    workers may take turns with it). An interrupted import is finished by the workers."""
    if dry_run_only:
        return dry_run(
            database, actor, queue, content, filename=filename, max_rows=max_rows,
            max_bytes=max_bytes,
        )  # fmt: skip
    with database.transaction() as session:
        import_id = start(
            session, actor, content, filename=filename, max_rows=max_rows, max_bytes=max_bytes
        ).id
    while True:
        with database.transaction() as session:
            imported = get(session, import_id, lock=True)
            status = ImportStatus(imported.status)
            if status == ImportStatus.SUCCEEDED:
                break
            if status.ended:  # (cancelled meanwhile, or failed by a worker)
                raise Conflict(
                    f"identity import {import_id} was {status} after {imported.done_rows} of "
                    f"{imported.rows} rows",
                    next_action="see what its rows came to: "
                    f"GET /api/v1/identity-imports/{import_id}/rows",
                    code="import_ended",
                )
            _advance_or_failure(session, queue, imported, utcnow(), batch_rows)
            error, done = imported.error, imported.done_rows
        if error:  # (raised once the error is committed on the import)
            raise InternalError(
                f"identity import {import_id} stopped at row {done} of {imported.rows}: {error}",
                next_action="the workers try it again in a minute: follow it at "
                f"GET /api/v1/identity-imports/{import_id}",
            )
    with database.transaction() as session:
        imported = get(session, import_id)
        results = [RowResult.model_validate(row["result"]) for row in rows_of(session, imported)]
        return report(False, filename, results)


# --- reading and cancelling -----------------------------------------------------------------
def get(session: Session, import_id: str, *, lock: bool = False) -> IdentityImport:
    found = session.get(
        IdentityImport, import_id, with_for_update=lock or None, populate_existing=lock
    )
    if found is None:
        found = by_prefix(session, IdentityImport, import_id, "identity import", lock=lock)
    if found is None:
        raise NotFound(
            f"identity import {import_id!r} not found",
            next_action="list imports: GET /api/v1/identity-imports",
        )
    return found


def cancel(session: Session, actor: Actor, import_id: str) -> IdentityImport:
    """Stop an import between batches (waiting for one being written): its rows written stay."""
    actor.require(Permission.IDENTITY_WRITE)
    imported = get(session, import_id, lock=True)
    if ImportStatus(imported.status).ended:
        raise Conflict(
            f"identity import {imported.id} already {imported.status} at "
            f"{imported.finished_at:%Y-%m-%d %H:%M:%S}Z",
            code="import_ended",
        )
    imported.status = ImportStatus.CANCELLED.value
    imported.finished_at = utcnow()
    imported.cancelled_by = actor.label
    imported.content = None
    imported.error = imported.retry_at = None
    audit.record(
        session,
        actor,
        "identity.import_cancelled",
        "identity_import",
        imported.id,
        {"filename": imported.filename, "rows": imported.rows, "done_rows": imported.done_rows,
         **counts(imported)},
    )  # fmt: skip
    return imported


def counts(imported: IdentityImport) -> dict[str, int]:
    return {o.value: getattr(imported, o.value) for o in Outcome}


def view(imported: IdentityImport) -> dict[str, Any]:
    total = imported.rows
    return {
        "id": imported.id,
        "status": imported.status,
        "filename": imported.filename,
        "sha256": imported.sha256,
        "size": imported.size,
        "rows": total,
        "done_rows": imported.done_rows,
        "percent": round(100.0 * imported.done_rows / total, 1) if total else 100.0,
        "counts": counts(imported),
        "error": imported.error,
        "retry_at": imported.retry_at,
        "failures": imported.failures,
        "created_by": imported.created_by,
        "created_at": imported.created_at,
        "started_at": imported.started_at,
        "finished_at": imported.finished_at,
        "cancelled_by": imported.cancelled_by,
        "rows_url": f"/api/v1/identity-imports/{imported.id}/rows",
    }


def list_imports(
    session: Session,
    *,
    status: ImportStatus | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[IdentityImport]:
    """Newest first (ids are time-ordered)."""
    stmt = select(IdentityImport)
    if status is not None:
        stmt = stmt.where(IdentityImport.status == status.value)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(IdentityImport.id < after)
    rows = session.execute(stmt.order_by(IdentityImport.id.desc()).limit(limit + 1)).scalars()
    return page_of(list(rows), limit, lambda i: i.id)


def rows_of(
    session: Session,
    imported: IdentityImport,
    *,
    outcome: Outcome | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """What the rows came to, in file order (`limit`: a page of them, after `cursor`)."""
    stmt = select(IdentityImportRow.row, IdentityImportRow.result).where(
        IdentityImportRow.import_id == imported.id
    )
    if outcome is not None:
        stmt = stmt.where(IdentityImportRow.outcome == outcome.value)
    after = decode_cursor(cursor, int, INTEGER_KEYS)
    if after is not None:
        stmt = stmt.where(IdentityImportRow.row > after)
    stmt = stmt.order_by(IdentityImportRow.row)
    if limit is not None:
        stmt = stmt.limit(limit + 1)
    return [{"row": row, "result": result} for row, result in session.execute(stmt)]


def rows_page(
    session: Session,
    imported: IdentityImport,
    *,
    outcome: Outcome | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[dict[str, Any]]:
    found = rows_of(session, imported, outcome=outcome, cursor=cursor, limit=limit)
    page = page_of(found, limit, lambda r: r["row"])
    return Page(items=[r["result"] for r in page.items], next_cursor=page.next_cursor)
