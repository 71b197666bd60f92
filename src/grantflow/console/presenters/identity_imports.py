"""Identity imports as the console shows them: the API's view of an import
(`access.identity_imports.view`) with its progress in words, and what each row came to
(`rows_page`'s results) with the reason, the changes or the lifecycle events of the row."""

from __future__ import annotations

from typing import Any

from grantflow.access.identity_import import Outcome
from grantflow.access.identity_imports import ImportStatus

REFRESH_SECONDS = 3  # how often an import's page reloads itself while the import goes on

# how an outcome reads as a chip (rejected rows need a person)
_TONES = {Outcome.CREATED: "good", Outcome.UPDATED: "good", Outcome.REJECTED: "bad"}


def import_view(view: dict[str, Any]) -> dict[str, Any]:
    """An import (`identity_imports.view`) with its page, its name and its progress in words;
    `live` while the workers have yet to finish it."""
    counts = view["counts"]
    return {
        **view,
        **{f"{outcome}_count": counts[outcome] for outcome in counts},
        "url": f"/identity-imports/{view['id']}",
        "name": view["filename"] or f"import {view['id'][:8]}",
        "progress": f"{view['done_rows']} of {view['rows']} rows ({view['percent']:g}%)",
        "live": not ImportStatus(view["status"]).ended,
    }


def _value(value: Any) -> str:
    return "(empty)" if value in (None, "") else str(value)


def result_row(result: dict[str, Any]) -> dict[str, Any]:
    """One row's outcome (`RowResult` as stored) with the lines that explain it: a rejected
    row's problems, an updated row's changes (`column: old → new`), the events it caused."""
    outcome = Outcome(result["outcome"])
    if outcome == Outcome.REJECTED:
        errors = result.get("errors") or []
        lines = [
            f"{e['column']}: {e['message']}" if e.get("column") else e["message"] for e in errors
        ] or [result.get("reason") or "rejected"]
    else:
        lines = [
            f"{column}: {_value(old)} → {_value(new)}"
            for column, (old, new) in sorted((result.get("changes") or {}).items())
        ]
    identity_id = result.get("identity_id")
    return {
        "row": result["row"],
        "email": result.get("email"),
        "outcome": outcome.value,
        "tone": _TONES.get(outcome, ""),
        "lines": lines,
        "events": list(result.get("events") or []),
        "identity_url": f"/identities/{identity_id}" if identity_id else None,
    }
