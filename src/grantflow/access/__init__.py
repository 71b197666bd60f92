"""Applications (and later identities, grants, lifecycle events, reconciliation, inbound SCIM).

May import `grantflow.store`, `grantflow.audit`, `grantflow.auth`, `grantflow.errors`.
"""

from __future__ import annotations
