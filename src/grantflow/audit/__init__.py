"""The append-only, keyed hash-chained audit log: record, query, verify, checkpoints.

May import `grantflow.store`, `grantflow.config`, `grantflow.errors`, `grantflow.auth.actor` and
`grantflow.connections.crypto` (the master key's public id).
"""

from __future__ import annotations

from grantflow.audit.log import (
    ChainReport,
    query,
    record,
    reseal,
    schema_is_keyed,
    seal_legacy,
    verify,
)

__all__ = ["ChainReport", "query", "record", "reseal", "schema_is_keyed", "seal_legacy", "verify"]
