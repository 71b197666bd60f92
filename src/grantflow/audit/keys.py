"""The keys of the audit chain and of its checkpoints, derived from the master keys.

Each key is HKDF-SHA256 of one master key under its own label, so neither is the master key and
neither opens a credential. An entry stores the id of the master key it was signed under (the
same id `grantflow keys rotate` prints), so a chain written across a rotation verifies as long
as every master key it names is still configured.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from grantflow.connections.crypto import derive_key, key_id

CHAIN_LABEL = b"grantflow audit chain"
CHECKPOINT_LABEL = b"grantflow audit checkpoints"


@dataclass(frozen=True)
class AuditKey:
    id: str  # the master key's public id
    chain: bytes  # signs entries
    checkpoint: bytes  # signs checkpoints


@functools.lru_cache(maxsize=16)
def derive(master: bytes) -> AuditKey:
    return AuditKey(
        key_id(master), derive_key(master, CHAIN_LABEL), derive_key(master, CHECKPOINT_LABEL)
    )


class AuditKeys:
    """The derived keys of every configured master key; `current` signs, all verify."""

    def __init__(self, load: Callable[[], list[bytes]]) -> None:
        self._load = load

    def all(self) -> list[AuditKey]:
        """Re-read on each call: a running process signs under a key rotated in by another."""
        return [derive(master) for master in self._load()]

    def current(self) -> AuditKey:
        return self.all()[0]

    def by_id(self) -> dict[str, AuditKey]:
        return {k.id: k for k in self.all()}


def sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
