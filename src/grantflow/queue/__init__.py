"""The queue: which runs are ready for a worker, and who holds them. One small interface with
two transports: the database (SQLite for one process; PostgreSQL with SKIP LOCKED and
LISTEN/NOTIFY) and Valkey/Redis Streams, which carries "ready" while the database keeps every
queue item and lease (`streams.py`). `transports.py` opens the configured one.

May import `grantflow.store`, `grantflow.errors` and `grantflow.redaction` only.
"""

from __future__ import annotations
