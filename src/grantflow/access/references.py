"""What refers to an object, so deleting it can be refused with the referrers named.

Subsystems that point at applications (workflows, connections, grants) register a finder here.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

Finder = Callable[[Session, str], list[str]]

_finders: dict[str, list[Finder]] = {}


def register(target_type: str, finder: Finder) -> None:
    """`finder(session, id)` returns a sentence per referrer, e.g. "workflow 'Onboard' (wf_1)"."""
    _finders.setdefault(target_type, []).append(finder)


def unregister(target_type: str, finder: Finder) -> None:
    _finders.get(target_type, []).remove(finder)


def referrers(session: Session, target_type: str, target_id: str) -> list[str]:
    found: list[str] = []
    for finder in _finders.get(target_type, []):
        found.extend(finder(session, target_id))
    return found
