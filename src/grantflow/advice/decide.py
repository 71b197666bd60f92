"""Choosing the advice for one failure or wait in its situation, and rendering its action for
a concrete object. Context-dependent advice is decided here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grantflow.advice.operations import OPERATIONS
from grantflow.advice.table import TABLE, Advice

AFTER_IRREVERSIBLE = "after_irreversible"


@dataclass(frozen=True)
class Situation:
    """Facts about the run that change which action can work."""

    irreversible_done: tuple[str, ...] = ()  # non-reversible steps this run already completed
    grant_id: str | None = None  # the grant whose event started the run, if any


def key_for(code: str, status_code: int | None = None) -> str:
    """The table key of a failure code: plain HTTP refusals are told apart by status."""
    if code in ("permanent_error", "scim_refused") and status_code is not None:
        if status_code in (401, 403, 404, 409):
            return f"http_{status_code}"
        if 400 <= status_code < 500:
            return "http_4xx"
    return code


def choose(key: str, situation: Situation | None = None) -> Advice | None:
    """The entry for `key` in `situation`: a non-reversible step already acted makes Replay
    with latest refused, so a code offers what works then (its own entry, else a fresh run
    of the grant's workflow, else words only)."""
    entry = TABLE.get(key)
    if entry is None:
        return None
    if situation is None or not situation.irreversible_done:
        return entry
    special = TABLE.get(f"{key}/{AFTER_IRREVERSIBLE}")
    if special is not None:
        return special
    if entry.operation == "run.replay_latest":
        return TABLE["replay_refused" if situation.grant_id else "replay_refused/no_grant"]
    return entry


def advise(
    code: str,
    *,
    failure_class: str | None = None,
    status_code: int | None = None,
    hint: str | None = None,
    situation: Situation | None = None,
) -> dict[str, Any]:
    """The advice fields a failure reason carries: its table key, words and operation."""
    key = key_for(code, status_code)
    entry = choose(key, situation)
    if entry is None:  # a code the table does not know yet: the raise site's words only
        return {
            "advice": key,
            "next_action": hint or "see the step's attempts for details",
            "operation": None,
        }
    words = entry.words(hint)
    if entry.operation is not None:
        label = OPERATIONS[entry.operation].label
        if label.lower() not in words.lower():  # the raise site's words named another way
            words = f"{words}; then {label}"
    return {"advice": entry.key, "next_action": words, "operation": entry.operation}


def render(operation: str | None, **ids: Any) -> dict[str, Any] | None:
    """The concrete action ({operation, label, method, path, cli, ...}) or None."""
    if operation is None:
        return None
    op = OPERATIONS.get(operation)
    return op.render(**ids) if op is not None else None
