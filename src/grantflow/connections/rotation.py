"""Master-key rotation without downtime: the new key goes first into the key file (old keys
stay readable), every credential (and webhook secret) is re-encrypted under it in small
transactions, and only then may the old keys be retired (after the audit chain is resealed
under the new key). Running processes pick the new key up when they meet it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.config import Settings, master_keys, new_key, write_key_file
from grantflow.connections.crypto import Keyring, key_id
from grantflow.connections.models import Credential
from grantflow.errors import ConfigurationError
from grantflow.safety.models import WebhookSecret
from grantflow.store.database import Database

BATCH = 100
Sealed = TypeVar("Sealed", Credential, WebhookSecret)


@dataclass(frozen=True)
class RotationReport:
    new_key_id: str
    reencrypted: int
    retired: list[str]


def _reencrypt(database: Database, keyring: Keyring, table: type[Sealed]) -> int:
    """Every secret of `table` (credentials, webhook secrets) under the current key."""
    count = 0
    while True:
        with database.transaction() as session:
            batch = list(
                session.execute(
                    select(table)
                    .where(table.key_id != keyring.current_id)
                    .order_by(table.id)
                    .limit(BATCH)
                    .with_for_update()
                ).scalars()
            )
            for row in batch:
                payload = keyring.decrypt(row.key_id, row.ciphertext, row.id)
                row.key_id, row.ciphertext = keyring.encrypt(payload, row.id)
            count += len(batch)
        if len(batch) < BATCH:
            return count


def rotate(
    database: Database, settings: Settings, actor: Actor, *, retire_old: bool = False
) -> RotationReport:
    if settings.secret_key is not None:
        raise ConfigurationError(
            "the master key comes from GRANTFLOW_SECRET_KEY, which this command cannot change",
            next_action="use a key file (GRANTFLOW_SECRET_KEY_FILE), or set "
            "GRANTFLOW_SECRET_KEY to 'NEW,OLD' and restart",
        )
    old = master_keys(settings)
    fresh = new_key()
    write_key_file(settings.secret_key_file, [fresh, *old])
    keyring = Keyring(lambda: master_keys(settings))
    count = _reencrypt(database, keyring, Credential) + _reencrypt(database, keyring, WebhookSecret)
    retired: list[str] = []
    if retire_old:
        # The audit entries signed under the old keys stay verifiable through a reseal signed
        # under the new one (refused, keeping the old keys, if the chain does not verify).
        with database.transaction() as session:
            audit.reseal(session, actor)
        write_key_file(settings.secret_key_file, [fresh])
        retired = [key_id(k) for k in old]
    with database.transaction() as session:
        audit.record(
            session,
            actor,
            "keys.rotated",
            "master_key",
            key_id(fresh),
            {"reencrypted": count, "retired": retired},
        )
    return RotationReport(key_id(fresh), count, retired)
