"""Secrets at rest: AES-256-GCM under the master key, bound to the row they belong to; and the
keys other subsystems derive from the master key (HKDF-SHA256, one label each).

`cryptography` is imported where a key is first used, not with this module: its native library
is about 7 MB of a process's memory, and a worker whose runs use no stored credential and write
no audit entry never needs it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any

from grantflow.config import Settings, master_keys
from grantflow.errors import ConfigurationError, InternalError

_NONCE_BYTES = 12


def derive_key(master: bytes, label: bytes, length: int = 32) -> bytes:
    """A key of `length` bytes for one purpose (`label`), HKDF-SHA256 of a master key: neither
    the master key nor a key derived under another label can be computed from it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(master)


def key_id(key: bytes) -> str:
    """A short public name for a key (a hash prefix), stored with each ciphertext."""
    return hashlib.sha256(b"grantflow-key-id" + key).hexdigest()[:16]


class Keyring:
    """The master keys: the first encrypts, all decrypt. `reload` re-reads them, so a process
    that meets a key it does not know (another process rotated) picks it up without a restart."""

    def __init__(self, load: Callable[[], list[bytes]]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._current = ""
        self.reload()

    def reload(self) -> None:
        keys = self._load()
        with self._lock:
            self._keys = {key_id(k): k for k in keys}
            self._current = key_id(keys[0])

    @property
    def current_id(self) -> str:
        return self._current

    def encrypt(self, payload: dict[str, Any], bound_to: str) -> tuple[str, str]:
        """(key id, base64 nonce+ciphertext) for a JSON payload; `bound_to` (the row id) is
        authenticated data, so a ciphertext copied to another row does not decrypt.
        The keys are re-read first: after `grantflow keys rotate --retire-old` a running
        process must encrypt under the new key, never under one that was just retired."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.reload()
        with self._lock:
            kid, key = self._current, self._keys[self._current]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, json.dumps(payload).encode(), bound_to.encode())
        return kid, base64.b64encode(nonce + sealed).decode()

    def decrypt(self, kid: str, blob: str, bound_to: str) -> dict[str, Any]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self._keys.get(kid)
        if key is None:
            self.reload()
            key = self._keys.get(kid)
        if key is None:
            raise ConfigurationError(
                f"a credential is encrypted under master key {kid}, which is not configured",
                next_action="restore that key into GRANTFLOW_SECRET_KEY_FILE (keep old keys "
                "until `grantflow keys rotate` finishes), or replace the credential",
            )
        raw = base64.b64decode(blob)
        try:
            plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound_to.encode())
        except InvalidTag:
            raise InternalError(
                "a stored credential failed its integrity check (altered or moved)",
                next_action="replace the credential",
            ) from None
        data: dict[str, Any] = json.loads(plain)
        return data


def keyring_for(settings: Settings) -> Keyring:
    return Keyring(lambda: master_keys(settings))
