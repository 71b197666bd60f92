"""The keyring: AES-256-GCM round trips bound to their row, older keys readable, unknown keys a
clear configuration error, and keys re-read when another process rotated them."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from grantflow.config import load_settings, master_keys, new_key, write_key_file
from grantflow.connections.crypto import Keyring, key_id, keyring_for
from grantflow.errors import ConfigurationError, InternalError

SECRET = {"token": "canary-crypto-5f2b9c", "n": 3}


def _ring(*keys: bytes) -> Keyring:
    return Keyring(lambda: list(keys))


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    """A payload comes back intact; two encryptions of it differ and neither shows it."""
    ring = _ring(new_key())
    first = ring.encrypt(SECRET, "row-1")
    second = ring.encrypt(SECRET, "row-1")
    assert first[0] == second[0] == ring.current_id
    assert first[1] != second[1]
    assert ring.decrypt(*first, "row-1") == SECRET
    assert ring.decrypt(*second, "row-1") == SECRET
    raw = base64.b64decode(first[1])
    assert b"canary-crypto" not in raw
    assert len(raw) == 12 + len(json.dumps(SECRET)) + 16  # nonce, ciphertext, GCM tag


def test_a_ciphertext_moved_to_another_row_or_altered_does_not_decrypt() -> None:
    """The row id is authenticated: a copy on another row, or a flipped bit, fails loudly."""
    ring = _ring(new_key())
    kid, blob = ring.encrypt(SECRET, "row-1")
    with pytest.raises(InternalError) as moved:
        ring.decrypt(kid, blob, "row-2")
    assert "moved" in moved.value.message
    assert moved.value.next_action == "replace the credential"
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    with pytest.raises(InternalError):
        ring.decrypt(kid, base64.b64encode(bytes(raw)).decode(), "row-1")
    assert "canary-crypto" not in str(moved.value)


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    """After a rotation the new key encrypts; ciphertexts under the old key still read."""
    old, fresh = new_key(), new_key()
    sealed_old = _ring(old).encrypt(SECRET, "row")
    both = _ring(fresh, old)
    assert both.current_id == key_id(fresh) != key_id(old)
    assert both.decrypt(*sealed_old, "row") == SECRET
    assert both.encrypt(SECRET, "row")[0] == key_id(fresh)


def test_an_unknown_key_id_is_a_clear_configuration_error() -> None:
    """A ciphertext under a key that is not configured names the key and how to fix it."""
    sealed = _ring(new_key()).encrypt(SECRET, "row")
    with pytest.raises(ConfigurationError) as missing:
        _ring(new_key()).decrypt(*sealed, "row")
    error = missing.value
    assert sealed[0] in error.message
    assert "not configured" in error.message
    assert "GRANTFLOW_SECRET_KEY_FILE" in (error.next_action or "")
    assert error.failure_class == "configuration"


def test_a_key_added_by_another_process_is_picked_up_without_a_restart() -> None:
    """Meeting an unknown key id re-reads the keys; encrypting always uses the newest key."""
    keys = [new_key()]
    ring = Keyring(lambda: list(keys))
    rotated = new_key()
    sealed = _ring(rotated).encrypt(SECRET, "row")
    keys.insert(0, rotated)  # another process rotated
    assert ring.decrypt(*sealed, "row") == SECRET
    assert ring.current_id == key_id(rotated)
    keys[:] = [new_key()]  # ... and retired the old ones
    assert ring.encrypt(SECRET, "row")[0] == key_id(keys[0])


def test_key_file_and_environment_keys(tmp_path: Path) -> None:
    """Key file (0600) and GRANTFLOW_SECRET_KEY (NEW,OLD) load; a bad key is a clear error."""
    path = tmp_path / "secret.key"
    first, second = new_key(), new_key()
    write_key_file(path, [first, second])
    assert path.stat().st_mode & 0o777 == 0o600
    from_file = load_settings(secret_key_file=path, database_url="sqlite:///x.db")
    assert master_keys(from_file) == [first, second]
    assert keyring_for(from_file).current_id == key_id(first)
    encoded = ",".join(base64.urlsafe_b64encode(k).decode() for k in (second, first))
    from_env = load_settings(secret_key=encoded, database_url="sqlite:///x.db")
    assert master_keys(from_env) == [second, first]
    generated = load_settings(secret_key_file=tmp_path / "new" / "k", database_url="sqlite:///x")
    assert len(master_keys(generated)) == 1
    assert (tmp_path / "new" / "k").stat().st_mode & 0o777 == 0o600
    short = base64.urlsafe_b64encode(os.urandom(16)).decode()
    with pytest.raises(ConfigurationError) as bad:
        master_keys(load_settings(secret_key=short, database_url="sqlite:///x.db"))
    assert "GRANTFLOW_SECRET_KEY" in bad.value.message
    assert short not in str(bad.value)
