"""The append-only, hash-chained audit log: record, query, verify.

May import `grantflow.store`, `grantflow.errors` and `grantflow.auth.actor`.
"""

from __future__ import annotations

from grantflow.audit.log import ChainReport, query, record, verify

__all__ = ["ChainReport", "query", "record", "verify"]
