"""Who is acting: carried into every service call so checks and audit entries name them."""

from __future__ import annotations

from dataclasses import dataclass, field

from grantflow.auth.permissions import Permission
from grantflow.errors import PermissionDenied


@dataclass(frozen=True)
class Actor:
    """A user acting through a token, or Grantflow itself (CLI, scheduler) as `system`."""

    label: str  # the user's email, or e.g. "system:cli"
    user_id: str | None = None
    permissions: frozenset[Permission] = field(default_factory=frozenset)
    token_id: str | None = None
    request_id: str | None = None
    # the token's scope: "api" for the REST API, "scim" for the inbound SCIM endpoint only
    scope: str = "api"

    @classmethod
    def system(cls, label: str = "cli", request_id: str | None = None) -> Actor:
        return cls(
            label=f"system:{label}", permissions=frozenset(Permission), request_id=request_id
        )

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(
                f"this action needs the permission {permission}",
                next_action=f"ask an admin for a role that includes {permission}",
                missing_permission=str(permission),
            )
