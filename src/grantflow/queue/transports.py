"""The configured transport of a process: `GRANTFLOW_QUEUE_URL` unset is the database; a
`redis://` (or `rediss://`, `unix://`) URL is Valkey/Redis Streams. Code that schedules runs
inside a transaction it was handed (waking waiting runs, a scheduler's listener) finds the
process's transport here by the database it writes to."""

from __future__ import annotations

import weakref

from grantflow.errors import ConfigurationError
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.interface import Queue
from grantflow.store.database import Database

_SCHEMES = ("redis://", "rediss://", "unix://")
_opened: weakref.WeakKeyDictionary[Database, Queue] = weakref.WeakKeyDictionary()


def open_queue(database: Database, url: str | None = None, *, prefix: str = "grantflow") -> Queue:
    """The transport for `url` (None or empty: the database's), remembered for `queue_of`."""
    queue: Queue
    if not url:
        queue = DatabaseQueue(database)
    elif url.startswith(_SCHEMES):
        from grantflow.queue.streams import StreamQueue  # (redis loads only when configured)

        queue = StreamQueue(database, url, prefix=prefix)
    else:
        raise ConfigurationError(
            "GRANTFLOW_QUEUE_URL must start with redis://, rediss:// or unix:// (Valkey or "
            "Redis), or be unset for the database transport",
            next_action="fix GRANTFLOW_QUEUE_URL",
        )
    _opened[database] = queue
    return queue


def queue_of(database: Database) -> Queue:
    """The transport opened for `database` in this process; the database's by default."""
    return _opened.get(database) or DatabaseQueue(database)
