"""Users, roles -> permissions, API tokens, and the actor every service call is made by.

May import `grantflow.store`, `grantflow.audit`, `grantflow.errors`.
"""

from __future__ import annotations

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import ROLE_PERMISSIONS, Permission, Role

__all__ = ["ROLE_PERMISSIONS", "Actor", "Permission", "Role"]
