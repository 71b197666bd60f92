"""The periodic checkpoint writer that `serve` and `scheduler` run beside their work."""

from __future__ import annotations

import threading

import structlog

from grantflow.audit.checkpoints import destinations, write
from grantflow.config import Settings
from grantflow.errors import GrantflowError
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.audit")


class CheckpointWriter:
    """Writes a checkpoint at start, then every `audit_checkpoint_seconds`, while a
    destination is configured. A failed write is logged and retried at the next interval."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.interval = settings.audit_checkpoint_seconds
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0 and bool(destinations(self.settings))

    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                write(self.database, self.settings)
            except (GrantflowError, OSError) as exc:
                log.warning("audit.checkpoint.failed", error=str(exc))
            except Exception:  # a database outage must not end the writer for good
                log.exception("audit.checkpoint.failed")
            self.stopping.wait(self.interval)
