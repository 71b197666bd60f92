"""A report's file: written as its rows come, in chunks of CHUNK_BYTES (`ReportChunk`), with its
size and SHA-256 counted on the way; read back a chunk at a time. Rows are never all in memory,
so a report's size is bounded by the database, not by a process.

CSV: a header row, then one row per record, each cell through `csv_cell` (text a spreadsheet
would run as a formula is prefixed with '). JSON: `{"kind", "generated_at", "params",
"columns", "rows": [...], "row_count"}`, indented by two spaces.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from grantflow.governance.models import Report, ReportChunk

CHUNK_BYTES = 1024 * 1024
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A value as CSV text; text a spreadsheet would read as a formula is prefixed with '."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


class ChunkWriter:
    """Bytes into the report's chunks, in order; `size` and `sha256` of all of them."""

    def __init__(self, session: Session, report_id: str) -> None:
        self.session = session
        self.report_id = report_id
        self.size = 0
        self.seq = 0
        self._digest = hashlib.sha256()
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        self._digest.update(data)
        while len(self._buffer) >= CHUNK_BYTES:
            self._store(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    def close(self) -> str:
        """Store what is left; the SHA-256 of everything written."""
        if self._buffer or self.seq == 0:
            self._store(bytes(self._buffer))
            self._buffer.clear()
        return self._digest.hexdigest()

    def _store(self, data: bytes) -> None:
        self.session.execute(
            insert(ReportChunk), {"report_id": self.report_id, "seq": self.seq, "data": data}
        )
        self.seq += 1


def write_csv(out: ChunkWriter, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    """The rows as CSV; how many."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
        count += 1
        if buffer.tell() >= CHUNK_BYTES:
            out.write(buffer.getvalue().encode("utf-8"))
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue().encode("utf-8"))
    return count


def write_json(
    out: ChunkWriter, head: dict[str, Any], columns: list[str], rows: Iterable[dict[str, Any]]
) -> int:
    """The rows as one JSON document (`head`'s fields first); how many."""
    opened = json.dumps({**head, "columns": columns}, indent=2, ensure_ascii=False)
    out.write((opened[:-2] + ',\n  "rows": [').encode("utf-8"))
    count = 0
    parts: list[str] = []
    for row in rows:
        ordered = {c: row.get(c) for c in columns}
        shown = json.dumps(ordered, indent=2, ensure_ascii=False).replace("\n", "\n    ")
        parts.append(("," if count else "") + "\n    " + shown)
        count += 1
        if len(parts) >= 1000:
            out.write("".join(parts).encode("utf-8"))
            parts.clear()
    parts.append(("\n  ]" if count else "]") + f',\n  "row_count": {count}\n}}\n')
    out.write("".join(parts).encode("utf-8"))
    return count


def count(session: Session, report_id: str) -> int:
    """How many chunks the report's file has (one for a report stored before 0032)."""
    found = session.execute(
        select(func.count()).where(ReportChunk.report_id == report_id)
    ).scalar_one()
    return max(int(found), 1)


def chunk(session: Session, report_id: str, seq: int) -> bytes | None:
    """Chunk `seq` of the report's file, or None past its last (a report stored before 0032
    is its one piece: chunk 0)."""
    data = session.execute(
        select(ReportChunk.data).where(ReportChunk.report_id == report_id, ReportChunk.seq == seq)
    ).scalar_one_or_none()
    if data is None and seq == 0:
        return session.execute(
            select(Report.content).where(Report.id == report_id)
        ).scalar_one_or_none()
    return data
