"""People in the loop: notifications (and later approvals, tasks, the inbox, email).

May import `grantflow.store`, `grantflow.audit`, `grantflow.auth`, `grantflow.errors`.
"""

from __future__ import annotations
