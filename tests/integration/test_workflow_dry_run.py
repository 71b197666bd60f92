"""Dry-run over HTTP: every step's exact request for a sample context, the branch each
condition takes, credentials redacted, nothing sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.logging import REDACTED

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
YAML = {"Content-Type": "application/yaml"}

ADA = {
    "email": "ada@example.com",
    "display_name": "Ada Lovelace",
    "department": "Research",
    "employment_type": "employee",
    "start_date": "2026-01-05",
    "manager": "grace@example.com",
}
INPUT = {"directory_url": "https://dir.example.com/v1", "mail_url": "https://mail.example.com"}


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
    """create_user shows method, URL and body rendered from the sample; nothing is sent."""
    workflow_id = create_example(admin)
    result = dry_run(admin, workflow_id, {"identity": ADA, "input": INPUT})
    assert result["sent"] is False
    assert result["workflow"] == "Onboard new hire"
    assert (result["version"], result["state"]) == (1, "draft")
    create_user = steps_of(result)["create_user"]
    assert create_user["preview"]["request"] == {
        "method": "POST",
        "url": "https://dir.example.com/v1/users",
        "headers": {},
        "query": {},
        "body": {
            "userName": "ada@example.com",
            "displayName": "Ada Lovelace",
            "department": "Research",
            "active": True,
        },
    }
    assert create_user["side_effects"] is True
    assert create_user["unresolved"] == []
    assert create_user["next"] == "add_groups"


def test_later_step_outputs_are_listed_as_unresolved(admin: httpx.Client) -> None:
    """References to outputs the dry-run does not have render as <path> and are listed."""
    workflow_id = create_example(admin)
    steps = steps_of(dry_run(admin, workflow_id, {"identity": ADA, "input": INPUT}))
    add_groups = steps["add_groups"]
    assert add_groups["preview"]["request"]["url"] == (
        "https://dir.example.com/v1/groups/research/members"
    )
    assert add_groups["preview"]["request"]["body"] == {"user_id": "<steps.create_user.output.id>"}
    assert add_groups["unresolved"] == ["steps.create_user.output.id"]
    assert steps["assign_licence"]["preview"]["request"]["url"] == (
        "https://dir.example.com/v1/users/<steps.create_user.output.id>/licenses"
    )
    assert steps["assign_licence"]["preview"]["request"]["body"] == {"sku": "OFFICE_STANDARD"}


def test_sample_step_outputs_fill_in_references(admin: httpx.Client) -> None:
    """Given a sample output for create_user, its id is used (keeping its type)."""
    workflow_id = create_example(admin)
    sample = {
        "identity": ADA,
        "input": {**INPUT, "licence_sku": "E5"},
        "steps": {"create_user": {"id": 7031}},
    }
    steps = steps_of(dry_run(admin, workflow_id, sample))
    assert steps["add_groups"]["preview"]["request"]["body"] == {"user_id": 7031}
    assert steps["add_groups"]["unresolved"] == []
    assert steps["assign_licence"]["preview"]["request"] == {
        "method": "POST",
        "url": "https://dir.example.com/v1/users/7031/licenses",
        "headers": {},
        "query": {},
        "body": {"sku": "E5"},
    }


@pytest.mark.parametrize(
    ("employment_type", "taken", "path"),
    [
        (
            "employee",
            "assign_licence",
            ["create_user", "add_groups", "needs_licence", "assign_licence", "welcome_email"],
        ),
        (
            "contractor",
            "welcome_email",
            ["create_user", "add_groups", "needs_licence", "welcome_email"],
        ),
    ],
)
def test_needs_licence_branches_by_employment_type(
    admin: httpx.Client, employment_type: str, taken: str, path: list[str]
) -> None:
    """An employee gets a licence; a contractor goes straight to the welcome email."""
    workflow_id = create_example(admin)
    identity = {**ADA, "employment_type": employment_type}
    result = dry_run(admin, workflow_id, {"identity": identity, "input": INPUT})
    assert result["path"] == path
    branch = steps_of(result)["needs_licence"]["branch"]
    assert branch["taken"] == taken
    assert branch["by"] == ("condition" if employment_type == "employee" else "default")
    assert branch["evaluated"] == [
        {
            "when": "identity.employment_type != 'contractor'",
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
    assert request["url"] == "https://mail.example.com/send"
    assert request["body"] == {
        "to": "ada@example.com",
        "template": "welcome",
        "variables": {"first_day": "2026-01-05", "manager": "grace@example.com"},
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


def test_a_published_version_can_be_dry_run(admin: httpx.Client) -> None:
    """Dry-run works on a published version too and reports its state."""
    workflow_id = create_example(admin, "offboarding.yaml")
    published = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert published.status_code == 200, published.text
    sample = {
        "identity": {"email": "bob@example.com"},
        "input": {
            "directory_url": "https://dir.example.com",
            "wiki_url": "https://wiki.example.com",
            "crm_url": "https://crm.example.com",
        },
        "steps": {"find_user": {"id": "u-9"}},
    }
    result = dry_run(admin, workflow_id, sample)
    assert result["state"] == "published"
    steps = steps_of(result)
    assert steps["find_user"]["preview"]["request"]["query"] == {"userName": "bob@example.com"}
    assert steps["find_user"]["side_effects"] is False
    assert steps["disable_account"]["preview"]["request"]["url"] == (
        "https://dir.example.com/users/u-9"
    )
    assert steps["remove_from_wiki"]["preview"]["request"]["url"] == (
        "https://wiki.example.com/members/bob%40example.com"
    )
    assert result["path"] == [
        "find_user",
        "disable_account",
        "revoke_sessions",
        "remove_from_wiki",
        "remove_from_crm",
    ]


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
