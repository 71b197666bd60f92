"""Per-connection rate limit (a token bucket), concurrency cap and "not before" time (set by a
429 with Retry-After), within one process. The right limiter for SQLite, where one process
runs every worker; on PostgreSQL `grantflow.safety.ratelimit` shares them across processes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from grantflow.errors import TransientError

DEFAULT_RETRY_AFTER = 1.0  # a 429 without Retry-After holds the connection this long


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def reserve(self, not_before: float = 0.0) -> float:
        """Take a token; the seconds to wait before using it (0 when one was there)."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if not_before > now:  # the target said wait: the bucket starts empty then
                self.tokens = min(self.tokens, -(not_before - now) * self.rate)
            self.tokens -= 1
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def drain(self, until: float) -> None:
        """The target answered 429: nothing is sent before `until`, then at the rate."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.tokens, -(until - now) * self.rate)
            self.updated = now


def rate_limited(name: str, rate: float | None) -> TransientError:
    what = f"its rate limit of {rate}/s" if rate else "a pause its target asked for (429)"
    return TransientError(
        f"connection {name!r} is at {what}",
        next_action="raise the connection's rate limit, or wait",
    )


def too_busy(name: str, concurrency: int) -> TransientError:
    return TransientError(
        f"connection {name!r} is at its limit of {concurrency} calls at once",
        next_action="raise max_concurrency, or wait",
    )


class Limits:
    """The in-process limiter. `hold` waits (at most `timeout`) for the rate limit and a
    concurrency slot; `throttled` records a target's 429 so every call slows down."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, float, int], TokenBucket] = {}
        self._slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._not_before: dict[str, float] = {}  # connection id -> time.monotonic()
        self._lock = threading.Lock()

    def throttled(
        self,
        connection_id: str,
        retry_after: float | None,
        rate: float | None = None,
        burst: int | None = None,
    ) -> None:
        """A 429 from the target: no call through the connection before Retry-After, then
        calls at the rate (the bucket is empty then)."""
        until = time.monotonic() + (retry_after if retry_after is not None else DEFAULT_RETRY_AFTER)
        with self._lock:
            self._not_before[connection_id] = max(self._not_before.get(connection_id, 0), until)
            buckets = [b for key, b in self._buckets.items() if key[0] == connection_id]
        for bucket in buckets:
            bucket.drain(until)

    def _pace(
        self, connection_id: str, name: str, rate: float | None, burst: int | None, timeout: float
    ) -> None:
        with self._lock:
            not_before = self._not_before.get(connection_id, 0.0)
        if rate:
            key = (connection_id, rate, burst or max(1, int(rate)))
            with self._lock:
                bucket = self._buckets.setdefault(key, TokenBucket(key[1], key[2]))
            wait = bucket.reserve(not_before)
        else:
            wait = max(0.0, not_before - time.monotonic())
        if wait > timeout:
            raise rate_limited(name, rate)
        if wait > 0:
            time.sleep(wait)  # pacing to the configured rate, not a test timing

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
        """Wait for the connection's rate limit and a concurrency slot, at most `timeout`."""
        deadline = time.monotonic() + timeout
        self._pace(connection_id, name, rate, burst, timeout)
        if not concurrency:
            yield
            return
        with self._lock:
            slots = self._slots.setdefault(
                (connection_id, concurrency), threading.BoundedSemaphore(concurrency)
            )
        if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise too_busy(name, concurrency)
        try:
            yield
        finally:
            slots.release()
