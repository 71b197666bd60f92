"""The audit chain's key across master-key rotations: entries name the key that signed them,
keep verifying while it is configured, and through a reseal once it is retired."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import update

from grantflow import audit
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.config import Settings, load_settings, master_keys
from grantflow.connections import rotation
from grantflow.connections.crypto import key_id
from grantflow.errors import Conflict
from grantflow.store.database import Database
from tests.support.audit import entries, triggers_off, verify

ACTOR = Actor.system("test")


def _write(database: Database, *targets: str) -> None:
    with database.transaction() as session:
        for target in targets:
            audit.record(session, ACTOR, "application.created", "application", target)


@pytest.fixture
def key_file_settings(database: Database, tmp_path: Path) -> Settings:
    """Settings whose master keys live in a key file (what `keys rotate` rewrites), used by
    the database for the audit chain too."""
    settings = load_settings(
        database_url=database.url.render_as_string(hide_password=False),
        secret_key_file=tmp_path / "secret.key",
    )
    database.use_master_keys(lambda: master_keys(settings))
    return settings


def test_entries_signed_before_a_rotation_still_verify_while_the_old_key_is_kept(
    database: Database,
) -> None:
    """Entries name the master key that signed them; after a rotation (new key first, old key
    kept) old and new entries verify together."""
    old, new = os.urandom(32), os.urandom(32)
    database.use_master_keys(lambda: [old])
    _write(database, "a", "b")
    database.use_master_keys(lambda: [new, old])
    _write(database, "c")

    assert [e.key_id for e in entries(database)] == [key_id(old)] * 2 + [key_id(new)]
    report = verify(database)
    assert report.ok, report.reason
    assert report.checked == 3


def test_entries_under_a_key_dropped_by_hand_are_reported_unverifiable(
    database: Database,
) -> None:
    """A master key removed without `keys rotate --retire-old` (no reseal) leaves its entries
    unverifiable: verify fails naming the first of them and the key to restore."""
    old, new = os.urandom(32), os.urandom(32)
    database.use_master_keys(lambda: [old])
    _write(database, "a", "b")
    database.use_master_keys(lambda: [new])
    _write(database, "c")

    report = verify(database)
    assert not report.ok
    assert report.first_broken_id == entries(database)[0].id
    assert report.reason == (
        f"it is signed under master key {key_id(old)}, which is not configured, and no later "
        "reseal covers it (restore that key to verify the entries signed under it)"
    )
    database.use_master_keys(lambda: [new, old])  # the key restored, as the message says
    assert verify(database).ok


def test_retiring_keys_reseals_the_chain_so_old_entries_stay_checked(
    database: Database, key_file_settings: Settings
) -> None:
    """`keys rotate --retire-old` reseals the chain under the new key: old entries still verify
    without the old key, and a later edit of one of them is caught at the reseal."""
    _write(database, "a", "b", "c")
    old = key_id(master_keys(key_file_settings)[0])
    report = rotation.rotate(database, key_file_settings, ACTOR, retire_old=True)
    assert report.retired == [old]
    assert [key_id(k) for k in master_keys(key_file_settings)] == [report.new_key_id]

    chain = entries(database)
    assert [(e.action, e.key_id) for e in chain[3:]] == [
        ("audit.resealed", report.new_key_id),
        ("keys.rotated", report.new_key_id),
    ]
    assert chain[3].summary["entries"] == 3
    result = verify(database)
    assert result.ok, result.reason
    assert result.checked == 5

    with triggers_off(database) as session:
        session.execute(
            update(AuditEntry).where(AuditEntry.id == chain[1].id).values(target_id="forged")
        )
    damaged = verify(database)
    assert not damaged.ok
    assert damaged.first_broken_id == chain[3].id
    assert damaged.reason == (
        "the entries before this reseal are not the ones it sealed (rewritten since)"
    )


def test_a_chain_that_does_not_verify_is_not_resealed(
    database: Database, key_file_settings: Settings
) -> None:
    """Retiring keys over a damaged chain is refused (the old keys stay, nothing is sealed);
    rotating without --retire-old, as the next action says, still works."""
    _write(database, "a", "b")
    chain = entries(database)
    with triggers_off(database) as session:
        session.execute(
            update(AuditEntry).where(AuditEntry.id == chain[0].id).values(target_id="forged")
        )
    old = key_id(master_keys(key_file_settings)[0])

    with pytest.raises(Conflict) as refused:
        rotation.rotate(database, key_file_settings, ACTOR, retire_old=True)
    assert refused.value.message == (
        f"the audit chain does not verify at entry {chain[0].id}: its content does not match "
        "its hash; retiring master keys now would destroy the evidence"
    )
    assert refused.value.next_action is not None
    assert "rotate without --retire-old" in refused.value.next_action
    assert old in [key_id(k) for k in master_keys(key_file_settings)]
    assert "audit.resealed" not in [e.action for e in entries(database)]

    again = rotation.rotate(database, key_file_settings, ACTOR)
    assert again.retired == []
    assert [key_id(k) for k in master_keys(key_file_settings)][-1] == old
