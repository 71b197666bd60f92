"""Connection limits shared by every worker process, on PostgreSQL.

The rate limit is GCRA (the generic cell rate algorithm, a token bucket kept as one number):
each connection has a theoretical arrival time `tat`; a call reserves the next slot with
`tat = max(tat, now) + 1/rate` and may go once `tat - burst/rate` has passed. Reserving is one
statement (an upsert in autocommit) against the database's own clock, so any number of
processes on any number of hosts draw from one bucket: over any window of W seconds at most
`rate * W + burst` calls start. A reservation that would wait past the caller's timeout is not
taken (the statement's WHERE refuses it), so a refused caller costs nobody a slot.

A 429 from the target sets the connection's `not_before` (now + Retry-After) and empties the
bucket at that time: every worker's next call waits, then calls resume at the rate.

Maximum concurrency is a set of slot rows per connection, each leased to one call (the lease
outlives the call's timeout, so a killed worker's slot frees itself).

SQLite runs every worker in one process: the in-process limiter (`connections.limits`) is
exact there, and is what `limits_for` gives it.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text

from grantflow.connections.limits import DEFAULT_RETRY_AFTER, Limits, rate_limited, too_busy
from grantflow.store.database import Database

_NOW = "extract(epoch FROM clock_timestamp())::float8"

# -> the seconds to wait before calling, or no row when that would be past :max_wait
_RESERVE = text(
    f"WITH c AS (SELECT {_NOW} AS now) "
    "INSERT INTO connection_throttles AS t (connection_id, tat, not_before) "
    "SELECT :id, c.now + :interval, 0 FROM c "
    "ON CONFLICT (connection_id) DO UPDATE "
    "SET tat = GREATEST(t.tat, EXCLUDED.tat - :interval) + :interval "
    "WHERE GREATEST(t.tat, EXCLUDED.tat - :interval) + :interval "
    "- (EXCLUDED.tat - :interval) - :burst * :interval <= :max_wait "
    "AND t.not_before - (EXCLUDED.tat - :interval) <= :max_wait "
    "RETURNING GREATEST(t.tat - (SELECT now FROM c) - :burst * :interval, "
    "t.not_before - (SELECT now FROM c), 0)"
)
# a 429: nothing before now + Retry-After, and the bucket empty then
_THROTTLE = text(
    f"WITH c AS (SELECT {_NOW} AS now) "
    "INSERT INTO connection_throttles AS t (connection_id, tat, not_before) "
    "SELECT :id, c.now + :retry_after + :burst * :interval, c.now + :retry_after FROM c "
    "ON CONFLICT (connection_id) DO UPDATE "
    "SET tat = GREATEST(t.tat, EXCLUDED.tat), "
    "not_before = GREATEST(t.not_before, EXCLUDED.not_before)"
)
_NOT_BEFORE = text(
    f"SELECT GREATEST(not_before - {_NOW}, 0) FROM connection_throttles WHERE connection_id = :id"
)
_MAKE_SLOTS = text(
    "INSERT INTO connection_slots (connection_id, slot) "
    "SELECT :id, n FROM generate_series(0, :count - 1) AS n "
    "ON CONFLICT (connection_id, slot) DO NOTHING"
)
_TAKE_SLOT = text(
    f"UPDATE connection_slots SET holder = :holder, expires_at = {_NOW} + :lease "
    "WHERE (connection_id, slot) = (SELECT connection_id, slot FROM connection_slots "
    "WHERE connection_id = :id AND slot < :count "
    f"AND (holder IS NULL OR expires_at < {_NOW}) "
    "ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING slot"
)
_FREE_SLOT = text(
    "UPDATE connection_slots SET holder = NULL, expires_at = NULL "
    "WHERE connection_id = :id AND slot = :slot AND holder = :holder"
)
_LEASE_MARGIN = 30.0  # a slot's lease outlives its call's timeout by this much
_SLOT_POLL = (0.005, 0.05)  # seconds between tries for a busy slot (random, to spread tries)
_NOT_BEFORE_CACHE = 0.25  # a connection without a rate limit reads its not-before this often


class SharedLimits(Limits):
    """The limiter of a PostgreSQL deployment: the same `hold` and `throttled` as the
    in-process one, with the bucket, the not-before time and the slots in the database."""

    def __init__(self, database: Database) -> None:
        super().__init__()
        self.database = database
        self._holder = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._slots_made: set[tuple[str, int]] = set()
        self._not_before_seen: dict[str, tuple[float, float]] = {}  # id -> (read at, wait)
        self._cache_lock = threading.Lock()

    def _execute(self, statement: Any, **params: Any) -> Any:
        """One statement in autocommit; its first row when it returns rows."""
        with self.database.autocommit.connect() as conn:
            result = conn.execute(statement, params)
            return result.first() if result.returns_rows else None

    def throttled(
        self,
        connection_id: str,
        retry_after: float | None,
        rate: float | None = None,
        burst: int | None = None,
    ) -> None:
        wait = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER
        interval = 1.0 / rate if rate else 0.0
        burst = (burst or max(1, int(rate))) if rate else 0
        self._execute(_THROTTLE, id=connection_id, retry_after=wait, burst=burst, interval=interval)
        with self._cache_lock:
            self._not_before_seen.pop(connection_id, None)

    def _pace(
        self, connection_id: str, name: str, rate: float | None, burst: int | None, timeout: float
    ) -> None:
        if rate:
            row = self._execute(
                _RESERVE,
                id=connection_id,
                interval=1.0 / rate,
                burst=burst or max(1, int(rate)),
                max_wait=timeout,
            )
            if row is None:
                raise rate_limited(name, rate)
            wait = float(row[0])
        else:
            wait = self._wait_not_before(connection_id)
            if wait > timeout:
                raise rate_limited(name, None)
        if wait > 0:
            time.sleep(wait)  # pacing to the shared rate, not a test timing

    def _wait_not_before(self, connection_id: str) -> float:
        now = time.monotonic()
        with self._cache_lock:
            seen = self._not_before_seen.get(connection_id)
        if seen is not None and now - seen[0] < _NOT_BEFORE_CACHE:
            return max(0.0, seen[1] - (now - seen[0]))
        row = self._execute(_NOT_BEFORE, id=connection_id)
        wait = float(row[0]) if row else 0.0
        with self._cache_lock:
            self._not_before_seen[connection_id] = (now, wait)
        return wait

    @contextlib.contextmanager
    def hold(
        self,
        connection_id: str,
        name: str,
        rate: float | None,
        burst: int | None,
        concurrency: int | None,
        timeout: float,
    ) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        self._pace(connection_id, name, rate, burst, timeout)
        if not concurrency:
            yield
            return
        slot = self._take_slot(connection_id, name, concurrency, timeout, deadline)
        try:
            yield
        finally:
            self._execute(_FREE_SLOT, id=connection_id, slot=slot, holder=self._holder)

    def _take_slot(
        self, connection_id: str, name: str, count: int, timeout: float, deadline: float
    ) -> int:
        if (connection_id, count) not in self._slots_made:
            self._execute(_MAKE_SLOTS, id=connection_id, count=count)
            self._slots_made.add((connection_id, count))
        while True:
            row = self._execute(
                _TAKE_SLOT,
                id=connection_id,
                count=count,
                holder=self._holder,
                lease=timeout + _LEASE_MARGIN,
            )
            if row is not None:
                return int(row[0])
            if time.monotonic() >= deadline:
                raise too_busy(name, count)
            time.sleep(random.uniform(*_SLOT_POLL))  # waiting for another worker's slot


def limits_for(database: Database) -> Limits:
    """The limiter for this deployment: shared through PostgreSQL, in-process on SQLite."""
    return SharedLimits(database) if database.dialect == "postgresql" else Limits()
