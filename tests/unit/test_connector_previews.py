"""What the publish gate and a dry-run see of the SCIM and identity-provider steps: config
rules, and previews that show the operation (method, endpoint, payload) and never a secret."""

from __future__ import annotations

from typing import Any

import pytest

from grantflow.definitions.gate import check
from grantflow.redaction import REDACTED
from grantflow.steps.idp.common import segment
from grantflow.steps.registry import get_step_type


def preview(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    step_type = get_step_type(kind)
    assert step_type is not None
    return step_type.preview(config)


class Refs:
    def application_id(self, id_or_name: str) -> str | None:
        return "app-1"

    def connection_problem(self, name: str, application_id: str | None) -> str | None:
        return None

    def connection_warning(self, name: str, application_id: str | None) -> str | None:
        return None

    def role_warning(self, role: str) -> str | None:
        return None

    def user_problem(self, key: str) -> str | None:
        return None


def gate_errors(kind: str, config: dict[str, Any]) -> list[tuple[str | None, str]]:
    raw = {
        "name": "G",
        "application": "A",
        "trigger": {"type": "manual"},
        "steps": [{"id": "s", "type": kind, "config": config, "retry": {"max_attempts": 2}}],
    }
    return [(p.field, p.message) for p in check(raw, Refs()).errors]


def test_scim_create_user_preview_shows_lookups_and_payload_without_secrets() -> None:
    """The preview lists the lookups and the POST /Users payload; a password is redacted."""
    shown = preview(
        "scim.create_user",
        {
            "connection": "directory",
            "user_name": "ada@example.com",
            "emails": ["ada@example.com"],
            "name": {"given_name": "Ada", "family_name": "Lovelace"},
            "attributes": {"password": "hunter2-hunter2"},
        },
    )
    assert shown["operation"] == "scim.create_user"
    assert shown["connection"] == "directory"
    assert [x["filter"] for x in shown["lookups"]] == [
        'userName eq "ada@example.com"',
        'emails.value eq "ada@example.com"',
    ]
    request = shown["request"]
    assert (request["method"], request["endpoint"]) == ("POST", "/Users")
    assert request["payload"]["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert request["payload"]["password"] == REDACTED
    assert "hunter2" not in repr(shown)


def test_scim_previews_of_changes_name_method_and_endpoint() -> None:
    """Deactivate (PATCH or PUT), update, remove from group and delete show their request."""
    patch = preview("scim.deactivate_user", {"connection": "d", "user_id": "u-1"})
    assert (patch["request"]["method"], patch["request"]["endpoint"]) == ("PATCH", "/Users/u-1")
    put = preview("scim.deactivate_user", {"connection": "d", "user_name": "ada", "method": "put"})
    assert put["request"]["method"] == "PUT"
    assert put["lookups"][0]["filter"] == 'userName eq "ada"'
    update = preview(
        "scim.update_user", {"connection": "d", "user_id": "u-1", "display_name": "Ada L."}
    )
    assert update["request"]["payload"]["Operations"] == [
        {"op": "replace", "value": {"displayName": "Ada L."}}
    ]
    leave = preview(
        "scim.remove_from_group", {"connection": "d", "user_id": "u-1", "group_id": "g-1"}
    )
    assert leave["request"]["payload"]["Operations"] == [
        {"op": "remove", "path": 'members[value eq "u-1"]'}
    ]
    gone = preview("scim.delete_user", {"connection": "d", "user_id": "u-1"})
    assert gone["request"] == {"method": "DELETE", "endpoint": "/Users/u-1"}


def test_filter_values_are_quoted_as_scim_strings() -> None:
    """A quote in a user name cannot break out of the lookup's filter."""
    shown = preview("scim.find_user", {"connection": "d", "user_name": 'a" or userName pr "'})
    assert shown["lookups"][0]["filter"] == r'userName eq "a\" or userName pr \""'


@pytest.mark.parametrize(
    ("kind", "config", "field", "phrase"),
    [
        ("scim.deactivate_user", {"connection": "d"}, "steps[0].config", "exactly one of user_id"),
        (
            "scim.add_to_group",
            {"connection": "d", "user_id": "u", "group": "g", "group_id": "1"},
            "steps[0].config",
            "exactly one of group or group_id",
        ),
        (
            "scim.create_user",
            {"connection": "d", "user_name": "u", "active": "maybe"},
            "steps[0].config.active",
            "'maybe' is not true or false",
        ),
        (
            "scim.update_user",
            {"connection": "d", "user_id": "u"},
            "steps[0].config",
            "at least one attribute",
        ),
        ("entra.assign_license", {"connection": "e"}, "steps[0].config.user_id", "Field required"),
    ],
)
def test_gate_refuses_bad_connector_configs(
    kind: str, config: dict[str, Any], field: str, phrase: str
) -> None:
    """Each config rule is a gate error at the field it concerns."""
    errors = gate_errors(kind, config)
    assert any(at == field and phrase in message for at, message in errors), errors


def test_templated_flags_pass_the_gate() -> None:
    """A template may stand for a boolean (it is checked once rendered)."""
    config = {"connection": "d", "user_name": "u", "active": "{{ input.active }}"}
    assert gate_errors("scim.create_user", config) == []


def test_profile_previews_show_the_provider_request() -> None:
    """Entra, Okta and Google previews show the documented method and path; passwords never."""
    entra = preview(
        "entra.create_user",
        {"connection": "entra", "user_principal_name": "ada@contoso.com", "display_name": "Ada"},
    )
    assert entra["request"]["url"] == "<connection entra>/v1.0/users"
    assert entra["request"]["body"]["mailNickname"] == "ada"
    assert entra["request"]["body"]["passwordProfile"] == REDACTED
    okta = preview(
        "okta.create_user",
        {
            "connection": "okta",
            "login": "ada@example.com",
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
        },
    )
    assert okta["request"]["url"] == "<connection okta>/api/v1/users?activate=true"
    suspend = preview(
        "google.suspend_user", {"connection": "g", "user_key": "ada@example.com", "method": "PATCH"}
    )
    assert suspend["request"] == {
        "method": "PATCH",
        "url": "<connection g>/admin/directory/v1/users/ada@example.com",
        "body": {"suspended": True},
    }
    member = preview("entra.add_group_member", {"connection": "e", "group_id": "g", "user_id": "u"})
    assert member["request"]["url"] == "<connection e>/v1.0/groups/g/members/$ref"
    assert member["request"]["body"] == {
        "@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u"
    }


def test_path_segments_are_escaped_but_placeholders_shown() -> None:
    """Ids in paths are percent-encoded (an @ stays); a dry-run placeholder stays readable."""
    assert segment("a/b c@d") == "a%2Fb%20c@d"
    assert segment("<steps.create.output.id>") == "<steps.create.output.id>"


def test_lookups_have_no_side_effects_and_changes_do() -> None:
    """scim.find_user changes nothing; every other connector step changes its target."""
    for kind in (
        "scim.create_user",
        "scim.delete_user",
        "entra.revoke_sessions",
        "okta.create_user",
    ):
        step_type = get_step_type(kind)
        assert step_type is not None
        assert step_type.side_effects(None) is True
    finder = get_step_type("scim.find_user")
    assert finder is not None
    assert finder.side_effects(None) is False


def test_http_preview_hides_secret_query_parameters_in_the_url_and_the_query() -> None:
    """A dry-run of an `http` step never shows a token given in its URL or its query."""
    shown = preview(
        "http",
        {
            "method": "GET",
            "url": "https://api.example.com/v1/users?token=t0p-s3cret&page=2",
            "query": {"api_key": "k3y-s3cret", "limit": 10},
        },
    )["request"]
    assert shown["url"] == "https://api.example.com/v1/users?token=***&page=2"
    assert shown["query"] == {"api_key": REDACTED, "limit": 10}
