"""Per-connection rate limit (a token bucket) and concurrency cap, within one process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from grantflow.errors import TransientError


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it (0 when one was there)."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            self.tokens -= 1
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Limits:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, float, int], TokenBucket] = {}
        self._slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

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
        if rate:
            key = (connection_id, rate, burst or max(1, int(rate)))
            with self._lock:
                bucket = self._buckets.setdefault(key, TokenBucket(key[1], key[2]))
            wait = bucket.reserve()
            if wait > timeout:
                raise TransientError(
                    f"connection {name!r} is at its rate limit of {rate}/s",
                    next_action="raise the connection's rate limit, or wait",
                )
            time.sleep(wait)  # pacing to the configured rate, not a test timing
        if not concurrency:
            yield
            return
        with self._lock:
            slots = self._slots.setdefault(
                (connection_id, concurrency), threading.BoundedSemaphore(concurrency)
            )
        if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TransientError(
                f"connection {name!r} is at its limit of {concurrency} calls at once",
                next_action="raise max_concurrency, or wait",
            )
        try:
            yield
        finally:
            slots.release()
