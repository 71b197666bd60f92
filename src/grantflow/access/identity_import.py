"""CSV bulk import of identities: one row per person, matched to identities by email.

The file is checked as a whole first (encoding, size, header); a problem there refuses the
whole file and writes nothing. Then every row is parsed and validated, and the rows are
written through `identities.create_identity` / `update_identity` (so lifecycle events and
per-identity audit entries are the same as over the API), each in its own SAVEPOINT: a bad
row is reported and never aborts the good ones.

Managers may be named by a row later in the same file: the rows are written managers first
(the second pass), and the report lists them in file order. Re-importing the same file
changes nothing: every row is `unchanged`, and no audit entry or lifecycle event is written.

Cells: surrounding whitespace is ignored. A column the file does not have leaves that field
alone. A blank cell in a column the file has clears an optional field (given_name,
family_name, title, department, manager, start_date, end_date, an `attr.<name>` attribute)
and keeps the current value of display_name, user_name and active (their defaults on create).
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticError
from sqlalchemy import event, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from grantflow.access import identities
from grantflow.access.identity_lookup import find_identity
from grantflow.access.models import Identity, LifecycleEvent
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import GrantflowError, NotFound, PayloadTooLarge, ValidationError
from grantflow.queue.interface import Queue, QueueStats, TransportHealth
from grantflow.queue.workers import WorkerState
from grantflow.store.database import Database
from grantflow.store.faults import fault_text
from grantflow.strict import text_problem

MAX_ROWS = 10_000

TEXT_COLUMNS = ("display_name", "user_name", "given_name", "family_name", "title", "department")
DATE_COLUMNS = ("start_date", "end_date")
COLUMNS = ("email", *TEXT_COLUMNS, "manager", *DATE_COLUMNS, "active")
ATTR_PREFIX = "attr."
# blank cells keep these (they cannot be empty); blank cells clear every other optional field
KEEP_WHEN_BLANK = frozenset({"display_name", "user_name", "active"})

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ATTR_NAME = re.compile(r"^[^\s].{0,99}$")


class Outcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"


class RowError(BaseModel):
    column: str | None = Field(description="the column at fault (None: the row as a whole)")
    message: str


class RowResult(BaseModel):
    row: int = Field(description="the row number in the file; the header is row 1")
    email: str | None
    outcome: Outcome
    identity_id: str | None = Field(None, description="None for rejected rows and dry-run creates")
    changes: dict[str, list[Any]] = Field(
        default_factory=dict, description="updated rows: {column: [old, new]}"
    )
    events: list[str] = Field(
        default_factory=list, description="lifecycle events the row caused (identity_joined, ...)"
    )
    reason: str | None = Field(None, description="rejected rows: what is wrong, column first")
    errors: list[RowError] = Field(default_factory=list)


class ImportCounts(BaseModel):
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0


class ImportReport(BaseModel):
    dry_run: bool = Field(description="true: nothing was written; the outcomes say what would be")
    filename: str | None
    rows: int = Field(description="data rows read (blank rows are skipped)")
    counts: ImportCounts
    results: list[RowResult] = Field(description="one per data row, in file order")


# --- reading the file ---------------------------------------------------------------------------


def _decode(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise ValidationError(
            f"file: the file is not UTF-8 (byte 0x{content[exc.start]:02x} on line {line} is "
            "not valid UTF-8)",
            next_action="save the file as 'CSV UTF-8' (UTF-8, with or without a BOM) and retry",
            code="csv_not_utf8",
            details=[{"field": "file", "message": "not UTF-8"}],
        ) from None


def _delimiter(text: str) -> str:
    """Comma, unless the header line has no comma but semicolons or tabs (spreadsheet exports
    in some locales)."""
    header = text.split("\n", 1)[0]
    if "," not in header:
        for candidate in (";", "\t"):
            if candidate in header:
                return candidate
    return ","


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) per record; the row number counts records, as a spreadsheet does."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text), strict=True)
    number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValidationError(
                f"file: row {number + 1} is not valid CSV: {exc}",
                next_action='fix the quoting on that row (a quote inside a cell is written "")',
                code="csv_malformed",
                details=[{"field": "file", "message": f"row {number + 1}: {exc}"}],
            ) from None
        number += 1
        yield number, cells


@dataclass(frozen=True)
class _Column:
    index: int
    name: str  # the column as reported: "email", "attr.cost_center"
    attribute: str | None = None  # the attribute name of an attr.<name> column


def _header(cells: list[str]) -> list[_Column]:
    columns: list[_Column] = []
    problems: list[str] = []
    details: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(cells):
        label = raw.strip()
        position = index + 1
        if label[: len(ATTR_PREFIX)].lower() == ATTR_PREFIX:
            attribute = label[len(ATTR_PREFIX) :].strip()
            if not _ATTR_NAME.match(attribute):
                problems.append(f"column {position} {label!r} names no attribute (attr.<name>)")
                details.append({"field": f"header.{label}", "message": "attribute name missing"})
                continue
            column = _Column(index, f"{ATTR_PREFIX}{attribute}", attribute)
        else:
            name = re.sub(r"[\s-]+", "_", label.lower())
            if not name:
                problems.append(f"column {position} has no name")
                details.append({"field": f"header.column_{position}", "message": "no name"})
                continue
            if name not in COLUMNS:
                problems.append(f"unknown column {label!r} (column {position})")
                details.append({"field": f"header.{label}", "message": "unknown column"})
                continue
            column = _Column(index, name)
        if column.name in seen:
            problems.append(
                f"column {column.name!r} appears twice (columns {seen[column.name]} and {position})"
            )
            details.append({"field": f"header.{column.name}", "message": "duplicate column"})
            continue
        seen[column.name] = position
        columns.append(column)
    if "email" not in seen:
        problems.append("the required column 'email' is missing")
        details.append({"field": "header.email", "message": "missing"})
    if problems:
        raise ValidationError(
            "file: the header row is not valid: " + "; ".join(problems),
            next_action="the columns are "
            + ", ".join(COLUMNS)
            + " and attr.<name> for custom attributes; only email is required",
            code="csv_header_invalid",
            details=details,
        )
    return columns


# --- one row --------------------------------------------------------------------------------


@dataclass
class Row:
    number: int
    email: str | None
    raw_email: str
    # the known columns the file has: the parsed value, None for a blank cell
    values: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, str | None] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    result: RowResult | None = None

    def reject(self, column: str | None, message: str) -> None:
        self.errors.append(RowError(column=column, message=message))

    @property
    def manager_ref(self) -> str | None:
        value = self.values.get("manager")
        return value.lower() if isinstance(value, str) else None


def _parse_row(number: int, cells: list[str], columns: list[_Column], width: int) -> Row:
    extra = [c for c in cells[width:] if c.strip()]
    by_name = {c.name: (cells[c.index].strip() if c.index < len(cells) else "") for c in columns}
    unstorable = {name: problem for name, v in by_name.items() if (problem := text_problem(v))}
    for name in unstorable:  # (shown, never stored: the row is rejected)
        by_name[name] = by_name[name].replace("\x00", "\\x00")
    row = Row(number=number, email=None, raw_email=by_name["email"])
    for name, problem in unstorable.items():
        row.reject(name, f"the cell {problem}")
    if extra:
        row.reject(None, f"the row has {len(cells)} cells but the header has {width} columns")
    if not row.raw_email:
        row.reject("email", "missing (every row needs an email)")
    else:
        try:
            row.email = identities.normalise_email(row.raw_email)
        except ValueError as exc:
            row.reject("email", f"{row.raw_email!r} is not a valid email address: {exc}")
    for column in columns:
        value = by_name[column.name]
        if column.attribute is not None:
            row.attributes[column.attribute] = value or None
        elif column.name in TEXT_COLUMNS or column.name == "manager":
            row.values[column.name] = value or None
        elif column.name in DATE_COLUMNS:
            row.values[column.name] = _date(row, column.name, value)
        elif column.name == "active":
            row.values["active"] = _active(row, value)
    start, end = row.values.get("start_date"), row.values.get("end_date")
    if isinstance(start, dt.date) and isinstance(end, dt.date) and end < start:
        row.reject("end_date", f"{end.isoformat()} is before start_date {start.isoformat()}")
    return row


def _date(row: Row, column: str, value: str) -> dt.date | None:
    if not value:
        return None
    try:
        if not _ISO_DATE.match(value):
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        row.reject(column, f"{value!r} is not a valid date; write dates as YYYY-MM-DD (2025-03-31)")
        return None


def _active(row: Row, value: str) -> bool | None:
    if not value:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    row.reject("active", f"{value!r} is not one of true, false, yes, no, 1, 0")
    return None


def _check_fields(row: Row) -> None:
    """The field rules of the API (lengths, attribute count) as row errors."""
    sent: dict[str, Any] = {k: v for k, v in row.values.items() if v is not None}
    sent["attributes"] = {k: v for k, v in row.attributes.items() if v is not None}
    try:
        identities.IdentityFields.model_validate(sent)
    except PydanticError as exc:
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else None
            column = "attr.*" if name == "attributes" else name
            row.reject(column, str(err["msg"]).removeprefix("Value error, "))


# --- writing --------------------------------------------------------------------------------


class DiscardingQueue:
    """A dry run's queue: runs it would start are never scheduled (the transaction is rolled
    back anyway; this also keeps a transport outside the database from seeing them)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.kind = queue.kind
        self.reconciles = False
        self.reconcile_seconds = queue.reconcile_seconds

    def schedule(self, session: Session, run_id: str, at: dt.datetime | None = None) -> None:
        return None

    def schedule_many(self, session: Session, run_ids: list[str]) -> None:
        return None

    def done(self, run_id: str) -> None:
        return None

    def reconcile(self, worker_id: str) -> int:
        return 0

    def runs_timers(self) -> bool:
        return False

    def health(self) -> TransportHealth:
        return self.queue.health()

    def remove(self, session: Session, run_id: str) -> None:
        return None

    def holds(self, session: Session, run_id: str, worker_id: str) -> bool:
        return False

    def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[str]:
        return []

    def claimed_row(self, run_id: str) -> None:
        return None

    def extend(self, worker_id: str, lease_seconds: float, run_ids: Collection[str]) -> None:
        return None

    def hand_back(self, worker_id: str, run_ids: Collection[str]) -> list[str]:
        return []

    def release(self, worker_id: str) -> None:
        return None

    def wait(self, timeout: float) -> None:
        return None

    def next_due(self) -> dt.datetime | None:
        return None

    def stats(self, session: Session | None = None) -> QueueStats:
        return self.queue.stats(session)

    def workers(self) -> list[WorkerState]:
        return self.queue.workers()

    def close(self) -> None:
        return None


class Importer:
    """Writes the parsed rows: each row after the row of its manager, in batches of rows (one
    transaction each, every row in its own savepoint)."""

    def __init__(self, actor: Actor, rows: list[Row]) -> None:
        self.actor = actor
        self.rows = rows
        self.by_key: dict[str, Row] = {}
        for row in rows:
            if row.email is not None:
                self.by_key.setdefault(row.email, row)
            user_name = row.values.get("user_name")
            if isinstance(user_name, str):
                self.by_key.setdefault(user_name.lower(), row)
        # set for each batch
        self._session: Session | None = None
        self.queue: Queue | None = None
        self.existing: dict[str, Identity] = {}
        self.new_events: list[LifecycleEvent] = []

    @property
    def session(self) -> Session:
        assert self._session is not None
        return self._session

    def _manager_row(self, row: Row) -> Row | None:
        """The row of this row's manager, when the manager is in the file (maybe itself)."""
        ref = row.manager_ref
        return self.by_key.get(ref) if ref else None

    def _reject_manager_cycles(self) -> None:
        """Rows whose managers (within the file) lead back to themselves cannot be ordered;
        a row naming itself is the shortest such cycle."""
        done: set[int] = set()
        for row in self.rows:
            path: list[Row] = []
            on_path: dict[int, int] = {}
            current: Row | None = row
            while current is not None and current.number not in done:
                if current.number in on_path:
                    self._reject_cycle(path[on_path[current.number] :])
                    break
                on_path[current.number] = len(path)
                path.append(current)
                current = self._manager_row(current)
            done.update(on_path)

    @staticmethod
    def _reject_cycle(cycle: list[Row]) -> None:
        if len(cycle) == 1:
            cycle[0].reject("manager", "is the identity itself")
            return
        for at, member in enumerate(cycle):
            loop = [*cycle[at:], *cycle[:at]]
            shown = [f"row {r.number}" for r in loop[:4]]
            if len(loop) > 4:
                shown.append(f"... ({len(loop)} rows)")
            path = " -> ".join([*shown, f"row {member.number}"])
            member.reject("manager", f"the managers in this file form a cycle ({path})")

    def order(self) -> list[Row]:
        """Every row, each after the row of its manager (managers first: the second pass).
        Iterative: a chain of managers may be as long as the file."""
        self._reject_manager_cycles()
        ordered: list[Row] = []
        placed: set[int] = set()
        for row in self.rows:
            chain: list[Row] = []
            current: Row | None = row
            while current is not None and current.number not in placed:
                chain.append(current)
                placed.add(current.number)
                current = self._manager_row(current) if not current.errors else None
            ordered.extend(reversed(chain))
        return ordered

    def write(self, session: Session, queue: Queue, batch: list[Row]) -> None:
        self._session, self.queue = session, queue
        self.existing = self._existing(batch)
        event.listen(session, "transient_to_pending", self._collect)
        try:
            for row in batch:
                self._write(row)
        finally:
            event.remove(session, "transient_to_pending", self._collect)
            self._session, self.queue, self.existing = None, None, {}

    def _existing(self, batch: list[Row]) -> dict[str, Identity]:
        emails = sorted({r.email for r in batch if r.email is not None and not r.errors})
        found: dict[str, Identity] = {}
        for start in range(0, len(emails), 500):
            chunk = emails[start : start + 500]
            for identity in self.session.execute(
                select(Identity).where(Identity.email.in_(chunk), Identity.deleted_at.is_(None))
            ).scalars():
                assert identity.email is not None
                found[identity.email] = identity
        return found

    def _collect(self, _session: Session, instance: object) -> None:
        if isinstance(instance, LifecycleEvent):
            self.new_events.append(instance)

    def _resolve_manager(self, row: Row) -> str | None:
        """The manager's identity id; records a row error when there is none."""
        ref = row.values.get("manager")
        if not isinstance(ref, str):
            return None
        manager_row = self._manager_row(row)
        if manager_row is row:
            return None  # rejected as a cycle already
        # (looked up even when the manager's row was written by this import: a batch resumed
        # in another process finds it the same way)
        try:
            identity = find_identity(self.session, ref, field="manager")
        except NotFound:
            if manager_row is not None:
                # (its row came first: rejected, or written and deleted since; a batch resumed
                # in another process knows only what the database says)
                what = (
                    "was rejected, and no such identity exists yet"
                    if manager_row.errors
                    else "was rejected or deleted since, and no such identity exists"
                )
                row.reject("manager", f"{ref!r} is row {manager_row.number}, which {what}")
            else:
                row.reject(
                    "manager", f"no identity with id, email or userName {ref!r} (nor in this file)"
                )
            return None
        if identity.deleted_at is not None:
            row.reject("manager", f"identity {ref!r} was deleted")
            return None
        return identity.id

    def _write(self, row: Row) -> None:
        try:
            manager_id = self._resolve_manager(row) if not row.errors else None
        except GrantflowError as exc:  # (an id prefix of several identities, ...)
            row.reject("manager", exc.message)
        if row.errors:
            self._rejected(row)
            return
        assert row.email is not None
        existing = self.existing.get(row.email)
        try:
            data = (
                identities.IdentityCreate.model_validate(self._create_fields(row, manager_id))
                if existing is None
                else identities.IdentityFields.model_validate(
                    self._update_fields(row, existing, manager_id)
                )
            )
        except PydanticError as exc:
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else None
                row.reject("attr.*" if name == "attributes" else name, str(err["msg"]))
            self._rejected(row)
            return
        if existing is not None and not _differs(existing, data):
            self._done(row, existing, Outcome.UNCHANGED, {})
            return
        assert self.queue is not None
        self.new_events = []
        try:
            with self.session.begin_nested():
                if existing is None:
                    identity = identities.create_identity(
                        self.session, self.actor, self.queue, data, source="csv"
                    )
                    outcome, changes = Outcome.CREATED, {}
                else:
                    identity, changed = identities.update_identity(
                        self.session, self.actor, self.queue, existing.id, data
                    )
                    outcome = Outcome.UPDATED if changed else Outcome.UNCHANGED
                    changes = self._columns(changed)
        except GrantflowError as exc:
            field_name = next(
                (str(d["field"]).removeprefix("body.") for d in exc.details if d.get("field")),
                None,
            )
            row.reject(field_name, exc.message.removeprefix(f"{field_name}: "))
            self._rejected(row)
            return
        except IntegrityError:
            row.reject(None, "the row clashed with a concurrent change; import the file again")
            self._rejected(row)
            return
        except DataError as exc:  # the database refused a value of this row (not the batch)
            row.reject(None, f"the database refused the row: {fault_text(exc)}")
            self._rejected(row)
            return
        self._done(row, identity, outcome, changes)

    def _done(
        self, row: Row, identity: Identity, outcome: Outcome, changes: dict[str, list[Any]]
    ) -> None:
        row.result = RowResult(
            row=row.number,
            email=row.email,
            outcome=outcome,
            identity_id=identity.id,
            changes=changes,
            events=[e.kind for e in self.new_events] if outcome != Outcome.UNCHANGED else [],
        )

    def _rejected(self, row: Row) -> None:
        row.result = RowResult(
            row=row.number,
            email=row.email or row.raw_email or None,
            outcome=Outcome.REJECTED,
            reason="; ".join(
                f"{e.column}: {e.message}" if e.column else e.message for e in row.errors
            ),
            errors=row.errors,
        )

    def _create_fields(self, row: Row, manager_id: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {k: v for k, v in row.values.items() if v is not None}
        fields["email"] = row.email
        fields["manager"] = manager_id
        attributes = {k: v for k, v in row.attributes.items() if v is not None}
        if attributes:
            fields["attributes"] = attributes
        return fields

    def _update_fields(
        self, row: Row, identity: Identity, manager_id: str | None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name, value in row.values.items():
            if value is None and name in KEEP_WHEN_BLANK:
                continue
            fields[name] = manager_id if name == "manager" else value
        if row.attributes:
            merged = dict(identity.attributes or {})
            for name, attr_value in row.attributes.items():
                if attr_value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = attr_value
            fields["attributes"] = merged
        return fields

    def _columns(self, changed: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The service's changes ({field: [old, new]}) named by the file's columns."""
        shown: dict[str, list[Any]] = {}
        for name, (old, new) in changed.items():
            if name == "attributes":
                before, after = old or {}, new or {}
                for key in sorted(set(before) | set(after)):
                    if before.get(key) != after.get(key):
                        shown[f"{ATTR_PREFIX}{key}"] = [before.get(key), after.get(key)]
            elif name == "manager_id":
                shown["manager"] = [self._manager_label(old), self._manager_label(new)]
            else:
                shown[name] = [_plain(old), _plain(new)]
        return shown

    def _manager_label(self, identity_id: str | None) -> str | None:
        if identity_id is None:
            return None
        manager = self.session.get(Identity, identity_id)
        return (manager.email or manager.user_name) if manager else identity_id


def _differs(identity: Identity, data: identities.IdentityFields) -> bool:
    """Would `update_identity` change anything? (the same comparison it makes)"""
    for name, value in data.model_dump(exclude_unset=True).items():
        if getattr(identity, "manager_id" if name == "manager" else name) != value:
            return True
    return False


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


# --- the import ---------------------------------------------------------------------------------


def parse_csv(
    content: bytes, *, max_rows: int = MAX_ROWS, max_bytes: int | None = None
) -> list[Row]:
    """Check the file as a whole (size, encoding, header) and parse every row; a problem with
    the file raises (nothing is imported), a problem with a row is kept on the row."""
    if max_bytes is not None and len(content) > max_bytes:
        raise PayloadTooLarge(
            f"file: {len(content)} bytes is more than the {max_bytes} allowed for an import",
            next_action="split the file, or raise GRANTFLOW_EVIDENCE_MAX_BYTES",
            details=[{"field": "file", "message": f"larger than {max_bytes} bytes"}],
        )
    records = _records(_decode(content))
    first = next(records, None)
    if first is None or not any(cell.strip() for cell in first[1]):
        raise ValidationError(
            "file: the file is empty; the first row must be the header (email, display_name, ...)",
            code="csv_header_invalid",
            details=[{"field": "file", "message": "empty"}],
        )
    columns = _header(first[1])
    width = len(first[1])
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for number, cells in records:
        if not any(cell.strip() for cell in cells):
            continue  # blank lines and rows of empty cells
        if len(rows) >= max_rows:
            raise PayloadTooLarge(
                f"file: more than {max_rows} rows; an import takes at most {max_rows} rows",
                next_action=f"split the file into files of at most {max_rows} rows",
                code="too_many_rows",
                details=[{"field": "file", "message": f"more than {max_rows} rows"}],
            )
        row = _parse_row(number, cells, columns, width)
        if row.email is not None:
            if row.email in seen:
                row.errors.insert(
                    0,
                    RowError(
                        column="email",
                        message=f"{row.email} already appears on row {seen[row.email]}; "
                        "a person appears once per file",
                    ),
                )
            else:
                seen[row.email] = number
        _check_fields(row)
        rows.append(row)
    return rows


def dry_run(
    database: Database,
    actor: Actor,
    queue: Queue,
    content: bytes,
    *,
    filename: str | None = None,
    max_rows: int = MAX_ROWS,
    max_bytes: int | None = None,
) -> ImportReport:
    """What importing the file would do, written in one transaction that is rolled back (a
    created row has no id: it would point nowhere). An import itself is `identity_imports`."""
    actor.require(Permission.IDENTITY_WRITE)
    rows = parse_csv(content, max_rows=max_rows, max_bytes=max_bytes)
    importer = Importer(actor, rows)
    ordered = importer.order()
    with database.transaction() as session:
        savepoint = session.begin_nested()
        importer.write(session, DiscardingQueue(queue), ordered)
        savepoint.rollback()
    results = [row.result for row in rows if row.result is not None]
    for result in results:
        if result.outcome == Outcome.CREATED:
            result.identity_id = None
    return report(True, filename, results)


def report(dry_run: bool, filename: str | None, results: list[RowResult]) -> ImportReport:
    """The report of rows whose results are `results`, in file order."""
    counts = ImportCounts()
    for result in results:
        setattr(counts, result.outcome.value, getattr(counts, result.outcome.value) + 1)
    return ImportReport(
        dry_run=dry_run, filename=filename, rows=len(results), counts=counts, results=results
    )
