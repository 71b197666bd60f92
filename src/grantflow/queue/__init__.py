"""The queue: which runs are ready for a worker, and who holds them. One small interface with
a database transport (SQLite for one process; PostgreSQL with SKIP LOCKED and LISTEN/NOTIFY).

May import `grantflow.store` and `grantflow.errors` only.
"""

from __future__ import annotations
