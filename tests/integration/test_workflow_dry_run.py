"""Dry-run over HTTP: every step's exact request for a sample context, the branch each
condition takes, credentials redacted, nothing sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.config import Settings
from grantflow.connections.crypto import keyring_for
from grantflow.redaction import REDACTED
from tests.conftest import Api
from tests.support.provisioning import prepare_examples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
YAML = {"Content-Type": "application/yaml"}

ADA = {
    "id": "emp-1815",
    "email": "ada@example.com",
    "display_name": "Ada Lovelace",
    "department": "Research",
    "attributes": {},
    "start_date": "2026-01-05",
    "manager": {"id": "emp-1906", "email": "grace@example.com", "display_name": "Grace Hopper"},
}
INPUT = {"usage_location": "FR"}
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # the onboarding example's default licence


def create_example(client: httpx.Client, name: str = "onboarding.yaml") -> str:
    text = (EXAMPLES / name).read_text()
    response = client.post("/api/v1/workflows", content=text, headers=YAML)
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["workflow"]["id"]
    return workflow_id


def dry_run(
    client: httpx.Client, workflow_id: str, sample: dict[str, Any], number: int = 1
) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/workflows/{workflow_id}/versions/{number}/dry-run", json=sample
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def steps_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in result["steps"]}


def test_onboarding_renders_the_exact_create_user_request(admin: httpx.Client) -> None:
    """create_user shows the SCIM lookups and the POST with its payload rendered from the
    sample; nothing is sent."""
    workflow_id = create_example(admin)
    result = dry_run(admin, workflow_id, {"identity": ADA, "input": INPUT})
    assert result["sent"] is False
    assert result["workflow"] == "Onboard new hire"
    assert (result["version"], result["state"]) == (1, "draft")
    create_user = steps_of(result)["create_user"]
    assert create_user["preview"] == {
        "operation": "scim.create_user",
        "connection": "directory",
        "lookups": [
            {"method": "GET", "endpoint": "/Users", "filter": 'userName eq "ada@example.com"'},
            {
                "method": "GET",
                "endpoint": "/Users",
                "filter": 'emails.value eq "ada@example.com"',
            },
        ],
        "request": {
            "method": "POST",
            "endpoint": "/Users",
            "payload": {
                "userName": "ada@example.com",
                "displayName": "Ada Lovelace",
                "emails": [{"value": "ada@example.com", "type": "work", "primary": True}],
                "externalId": "emp-1815",
                "active": True,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "department": "Research"
                },
            },
            "if_exists": "fail",
        },
    }
    assert create_user["side_effects"] is True
    assert create_user["unresolved"] == []
    assert create_user["next"] == "add_groups"


def test_later_step_outputs_are_listed_as_unresolved(admin: httpx.Client) -> None:
    """References to outputs the dry-run does not have render as <path> and are listed."""
    workflow_id = create_example(admin)
    steps = steps_of(dry_run(admin, workflow_id, {"identity": ADA, "input": INPUT}))
    add_groups = steps["add_groups"]["preview"]
    assert add_groups["lookups"] == [
        {"method": "GET", "endpoint": "/Groups", "filter": 'displayName eq "Research"'}
    ]
    assert add_groups["request"]["endpoint"] == "/Groups/<id of group 'Research'>"
    assert add_groups["request"]["payload"]["Operations"] == [
        {"op": "add", "path": "members", "value": [{"value": "<steps.create_user.output.user_id>"}]}
    ]
    assert steps["add_groups"]["unresolved"] == ["steps.create_user.output.user_id"]
    assert steps["assign_licence"]["preview"]["request"]["url"] == (
        "<connection entra>/v1.0/users/<steps.create_mailbox.output.user_id>/assignLicense"
    )
    assert steps["assign_licence"]["preview"]["request"]["body"] == {
        "addLicenses": [{"skuId": E3, "disabledPlans": []}],
        "removeLicenses": [],
    }


def test_sample_step_outputs_fill_in_references(admin: httpx.Client) -> None:
    """Given sample outputs for earlier steps, their ids are used."""
    workflow_id = create_example(admin)
    sample = {
        "identity": ADA,
        "input": {**INPUT, "licence_sku": "e5-sku"},
        "steps": {"create_user": {"user_id": "u-7031"}, "create_mailbox": {"user_id": "m-7031"}},
    }
    steps = steps_of(dry_run(admin, workflow_id, sample))
    assert steps["add_groups"]["preview"]["request"]["payload"]["Operations"][0]["value"] == [
        {"value": "u-7031"}
    ]
    assert steps["add_groups"]["unresolved"] == []
    assert steps["assign_licence"]["preview"]["request"] == {
        "method": "POST",
        "url": "<connection entra>/v1.0/users/m-7031/assignLicense",
        "body": {"addLicenses": [{"skuId": "e5-sku", "disabledPlans": []}], "removeLicenses": []},
    }


def test_profile_step_preview_hides_the_password(admin: httpx.Client) -> None:
    """The Entra ID account's request shows its properties but never a password."""
    workflow_id = create_example(admin)
    raw = admin.post(
        f"/api/v1/workflows/{workflow_id}/versions/1/dry-run",
        json={"identity": ADA, "input": INPUT},
    )
    request = steps_of(raw.json())["create_mailbox"]["preview"]["request"]
    assert request["url"] == "<connection entra>/v1.0/users"
    assert request["body"]["userPrincipalName"] == "ada@example.com"
    assert request["body"]["usageLocation"] == "FR"
    assert request["body"]["passwordProfile"] == REDACTED
    assert "<generated>" not in raw.text


@pytest.mark.parametrize(
    ("employment_type", "taken", "path"),
    [
        (
            "employee",
            "assign_licence",
            [
                "has_manager",
                "manager_approval",
                "create_user",
                "add_groups",
                "create_mailbox",
                "needs_licence",
                "assign_licence",
                "welcome_email",
            ],
        ),
        (
            "contractor",
            "welcome_email",
            [
                "has_manager",
                "manager_approval",
                "create_user",
                "add_groups",
                "create_mailbox",
                "needs_licence",
                "welcome_email",
            ],
        ),
    ],
)
def test_needs_licence_branches_by_employment_type(
    admin: httpx.Client, employment_type: str, taken: str, path: list[str]
) -> None:
    """An employee gets a licence; a contractor goes straight to the welcome email."""
    workflow_id = create_example(admin)
    identity = {**ADA, "attributes": {"employment_type": employment_type}}
    result = dry_run(admin, workflow_id, {"identity": identity, "input": INPUT})
    assert result["path"] == path
    branch = steps_of(result)["needs_licence"]["branch"]
    assert branch["taken"] == taken
    assert branch["by"] == ("condition" if employment_type == "employee" else "default")
    assert branch["evaluated"] == [
        {
            "when": "identity.attributes.employment_type | default('employee') != 'contractor'",
            "next": "assign_licence",
            "result": employment_type == "employee",
        }
    ]
    on_path = {s["id"]: s["on_path"] for s in result["steps"]}
    assert on_path["assign_licence"] is (employment_type == "employee")
    assert result["sent"] is False


def test_welcome_email_body_is_rendered(admin: httpx.Client) -> None:
    """The welcome email's nested body is rendered from the identity."""
    workflow_id = create_example(admin)
    steps = steps_of(dry_run(admin, workflow_id, {"identity": ADA, "input": INPUT}))
    request = steps["welcome_email"]["preview"]["request"]
    assert request["url"] == "<connection mailer>/send"
    assert request["body"] == {
        "to": "ada@example.com",
        "template": "welcome",
        "variables": {"first_day": "2026-01-05", "manager": "Grace Hopper"},
    }


def test_credentials_are_redacted(admin: httpx.Client) -> None:
    """An Authorization header (and secret-named body keys) never appear in a dry-run."""
    document = {
        "name": "Call with a token",
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "call",
                "type": "http",
                "config": {
                    "method": "POST",
                    "url": "https://api.example.com/users",
                    "headers": {
                        "Authorization": "Bearer {{ input.token }}",
                        "X-Request-Source": "grantflow",
                    },
                    "body": {"user": "{{ input.user }}", "password": "{{ input.password }}"},
                },
                "retry": {"max_attempts": 3},
            }
        ],
    }
    response = admin.post("/api/v1/workflows", json=document)
    assert response.status_code == 201, response.text
    workflow_id = response.json()["workflow"]["id"]
    sample = {"input": {"token": "s3cr3t-token", "user": "ada", "password": "hunter2"}}
    raw = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/dry-run", json=sample)
    assert raw.status_code == 200
    assert "s3cr3t-token" not in raw.text
    assert "hunter2" not in raw.text
    request = steps_of(raw.json())["call"]["preview"]["request"]
    assert request["headers"] == {"Authorization": REDACTED, "X-Request-Source": "grantflow"}
    assert request["body"] == {"user": "ada", "password": REDACTED}


def test_a_published_version_can_be_dry_run(
    admin: httpx.Client, api: Api, settings: Settings
) -> None:
    """Dry-run works on a published version too and reports its state."""
    prepare_examples(api.database, keyring_for(settings))
    workflow_id = create_example(admin, "offboarding.yaml")
    published = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert published.status_code == 200, published.text
    sample = {"identity": {"email": "bob@example.com"}, "steps": {"find_user": {"user_id": "u-9"}}}
    result = dry_run(admin, workflow_id, sample)
    assert result["state"] == "published"
    steps = steps_of(result)
    assert steps["find_user"]["preview"]["lookups"] == [
        {"method": "GET", "endpoint": "/Users", "filter": 'userName eq "bob@example.com"'}
    ]
    assert steps["find_user"]["side_effects"] is False
    assert steps["disable_account"]["preview"]["request"] == {
        "method": "PATCH",
        "endpoint": "/Users/u-9",
        "payload": {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
    }
    assert steps["disable_entra"]["preview"]["request"] == {
        "method": "PATCH",
        "url": "<connection entra>/v1.0/users/bob@example.com",
        "body": {"accountEnabled": False},
    }
    assert steps["remove_from_wiki"]["preview"]["request"]["url"] == (
        "<connection wiki>/members/bob%40example.com"
    )
    assert result["path"] == [
        "find_user",
        "disable_account",
        "disable_entra",
        "revoke_sessions",
        "suspend_google",
        "deactivate_okta",
        "remove_from_wiki",
        "remove_badge",
    ]
    assert steps["remove_badge"]["preview"]["task"]["title"] == (
        "Remove bob@example.com from the badge system"
    )


def test_a_broken_template_shows_as_a_step_error(admin: httpx.Client) -> None:
    """A draft whose template does not compile dry-runs with that step's error, not a 500."""
    document = {
        "name": "Broken draft",
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "first",
                "type": "set",
                "config": {"values": {"x": "{{ input.x }}"}},
                "next": "b",
            },
            {"id": "b", "type": "set", "config": {"values": {"y": "{{ input.y "}}},
        ],
    }
    response = admin.post("/api/v1/workflows", json=document)
    workflow_id = response.json()["workflow"]["id"]
    result = dry_run(admin, workflow_id, {"input": {"x": 1}})
    steps = steps_of(result)
    assert steps["first"]["preview"] == {"output": {"x": 1}}
    assert "b.config.values.y" in steps["b"]["error"]
    assert result["path"] == ["first", "b"]


def test_an_unknown_sample_key_is_a_422(admin: httpx.Client) -> None:
    """The sample context accepts identity, grant, input, application and steps only."""
    workflow_id = create_example(admin)
    response = admin.post(
        f"/api/v1/workflows/{workflow_id}/versions/1/dry-run", json={"person": {}}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.person"
