"""PATCH (RFC 7644 §3.5.2): operations applied by scim2-models to the served representation.

Applying to the representation (rather than to the stored row) is what makes every path work
the same way, valuePath filters included: `emails[type eq "work"].value`,
`members[value eq "<id>"]`. The operations apply as a whole: one that fails leaves the
resource as it was, and the request changes nothing.
"""

from __future__ import annotations

from typing import Any

from scim2_models import InvalidValueException, PatchOp, Resource, SCIMException

from grantflow.access.scim.resources import POLICY


def apply_patch(operations: PatchOp[Any], resource: Resource[Any]) -> bool:
    """Apply the operations in place; whether anything changed."""
    try:
        return operations.patch(resource, scim_policy=POLICY)
    except SCIMException:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidValueException(detail=str(exc)) from None
