"""Connections: how Grantflow reaches an application (base URL, auth kind, limits, health), the
write-only encrypted credentials bound to them, OAuth token handling, and the outbound guard.

May import `grantflow.store`, `grantflow.audit`, `grantflow.auth`, `grantflow.access`,
`grantflow.config`, `grantflow.errors`.
"""

from __future__ import annotations
