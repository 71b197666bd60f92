"""Tables defined once in code (as NetBox's `tables.py`): their columns, how each cell is shown,
and the actions a user may take per row, each with the permission of the route it posts to —
`partials/table.html` renders any of them and shows an action only to whom `can()` allows.

Rows are plain dicts; a column reads `row[key]` and, for links, the URL in `row[link]`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from grantflow.auth.permissions import Permission

# how a value reads as a chip: good (done, healthy), bad (needs a person), warn (in between)
_GOOD = {
    "succeeded", "connected", "active", "published", "synced", "enabled", "fired", "passed",
    "ok", "keep", "resolved", "closed", "dispatching", "healthy", "yes",
}  # fmt: skip
_BAD = {
    "failed", "reauth_required", "unhealthy", "needs_attention", "timed_out", "revoke",
    "failing", "paused_safety", "missed", "open_incident", "overdue", "not dispatching",
    "error", "broken",
}  # fmt: skip
_WARN = {
    "pending", "waiting", "running", "queued", "paused", "draft", "disabled", "skipped",
    "joiner", "mover", "leaver", "cancelled", "retrying", "disconnected", "open", "closing",
}  # fmt: skip


def tone(value: Any) -> str:
    """The chip class of a status word: good, bad, warn, or '' (neutral)."""
    word = str(value).lower()
    if word in _GOOD:
        return "good"
    if word in _BAD:
        return "bad"
    if word in _WARN:
        return "warn"
    return ""


@dataclass(frozen=True)
class Column:
    label: str
    key: str
    kind: str = "text"  # text | code | when | chip | link | list | bool | number
    link: str | None = None  # for kind "link": the row key holding the URL


@dataclass(frozen=True)
class RowAction:
    """A button on a row: a POST to `path` (formatted with the row), shown when the viewer
    holds `permission` and, if `when` names a row key, that key is true."""

    label: str
    path: str
    permission: Permission
    when: str | None = None
    style: str = ""  # "", "primary", "danger"


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    actions: tuple[RowAction, ...] = ()
    empty: str = "Nothing to show."

    def rows(self, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The rows with their applicable actions under `_actions` (permission still to be
        checked by the template with `can`)."""
        shown = []
        for item in items:
            row = dict(item)
            row["_actions"] = [
                {
                    "label": action.label,
                    "path": action.path.format(**row),
                    "permission": str(action.permission),
                    "style": action.style,
                }
                for action in self.actions
                if action.when is None or row.get(action.when)
            ]
            shown.append(row)
        return shown
