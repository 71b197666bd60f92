"""The publish gate's connection rule on a real database: a connection is looked up by name
within the workflow's application; a missing one is an error, one without its credential a
warning."""

from __future__ import annotations

from typing import Any

import pytest

from grantflow.definitions.gate import check
from grantflow.definitions.workflows import DatabaseReferences
from grantflow.errors import ValidationError
from grantflow.store.database import Database
from tests.support.engine import publish
from tests.support.provisioning import fresh_keyring, make_application, make_connection


def scim_document(application: str | None, connection: str = "directory") -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "Provision",
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "create",
                "type": "scim.create_user",
                "config": {"connection": connection, "user_name": "{{ input.email }}"},
                "retry": {"max_attempts": 3},
            }
        ],
    }
    if application is not None:
        document["application"] = application
    return document


def gate(db: Database, raw: dict[str, Any]) -> Any:
    with db.transaction() as session:
        return check(raw, DatabaseReferences(session))


def test_missing_connection_is_an_error_naming_it(database: Database) -> None:
    """A connection the application does not have is connection_missing at the step's field."""
    make_application(database, "Directory")
    result = gate(database, scim_document("Directory"))
    assert [(p.code, p.step, p.field) for p in result.errors] == [
        ("connection_missing", "create", "steps[0].config.connection")
    ]
    assert "connection 'directory' of application 'Directory' does not exist" in (
        result.errors[0].message
    )


def test_a_connection_of_another_application_does_not_count(database: Database) -> None:
    """Connections are looked up within the workflow's application only."""
    other = make_application(database, "Other")
    make_application(database, "Directory")
    make_connection(
        database,
        None,
        other,
        "directory",
        "https://scim.example.com/v2",
        kind="scim",
        auth_kind="none",
    )
    result = gate(database, scim_document("Directory"))
    assert [p.code for p in result.errors] == ["connection_missing"]


def test_a_workflow_without_application_cannot_name_a_connection(database: Database) -> None:
    """Without `application` there is nowhere to find the connection: the error says so."""
    result = gate(database, scim_document(None))
    assert [p.code for p in result.errors] == ["connection_missing"]
    assert "set `application`" in result.errors[0].message


def test_connection_without_credential_is_a_warning(database: Database) -> None:
    """An existing connection whose auth kind needs a credential that is not set yet publishes,
    with a warning at the step's field."""
    app = make_application(database, "Directory")
    make_connection(
        database,
        None,
        app,
        "directory",
        "https://scim.example.com/v2",
        kind="scim",
        auth_kind="bearer",
    )
    result = gate(database, scim_document("Directory"))
    assert result.errors == []
    assert [(p.code, p.step, p.field) for p in result.warnings] == [
        ("connection_credential_missing", "create", "steps[0].config.connection")
    ]
    assert "has no credential yet" in result.warnings[0].message
    publish(database, scim_document("Directory"))  # warnings never block publishing


@pytest.mark.parametrize("auth_kind", ["bearer", "none"])
def test_connection_ready_to_use_passes_cleanly(database: Database, auth_kind: str) -> None:
    """A connection with its credential (or one that needs none) gives no error or warning."""
    app = make_application(database, "Directory")
    secret = {"token": "t-0123456789"} if auth_kind == "bearer" else None
    make_connection(
        database,
        fresh_keyring(),
        app,
        "directory",
        "https://scim.example.com/v2",
        kind="scim",
        auth_kind=auth_kind,
        secret=secret,
    )
    result = gate(database, scim_document("Directory"))
    assert (result.errors, result.warnings) == ([], [])


def test_publishing_with_a_missing_connection_is_refused(database: Database) -> None:
    """Publish refuses the version, naming the missing connection."""
    make_application(database, "Directory")
    with pytest.raises(ValidationError) as refused:
        publish(database, scim_document("Directory", connection="nope"))
    assert refused.value.code == "publish_gate_failed"
    assert "connection 'nope'" in refused.value.message
