"""Workflows over HTTP: documents in JSON and YAML, drafts, the publish gate, versions,
activation and rollback, diff, disable and enable, permissions and the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from sqlalchemy import select

from grantflow.audit.models import AuditEntry
from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.connections.crypto import keyring_for
from grantflow.strict import MAX_JSON_DEPTH
from tests.conftest import Api
from tests.support.provisioning import prepare_examples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
YAML = {"Content-Type": "application/yaml"}


def provisioning(**overrides: Any) -> dict[str, Any]:
    """A small valid document: create the wiki account, then record that it is done."""
    return {
        "name": "Provision wiki",
        "description": "Create the wiki account",
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "create",
                "type": "http",
                "config": {
                    "method": "POST",
                    "url": "https://wiki.example.com/api/users",
                    "body": {"email": "{{ input.email }}"},
                },
                "retry": {"max_attempts": 3},
                "next": "done",
            },
            {
                "id": "done",
                "type": "set",
                "config": {"values": {"id": "{{ steps.create.output }}"}},
            },
        ],
        **overrides,
    }


def created(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body["workflow"]["id"], body


def create(client: httpx.Client, document: dict[str, Any] | None = None) -> str:
    return created(client.post("/api/v1/workflows", json=document or provisioning()))[0]


def publish(client: httpx.Client, workflow_id: str, number: int) -> dict[str, Any]:
    response = client.post(f"/api/v1/workflows/{workflow_id}/versions/{number}/publish")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def workflow(client: httpx.Client, workflow_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def versions(client: httpx.Client, workflow_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/workflows/{workflow_id}/versions")
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def audit_actions(api: Api, workflow_id: str) -> list[str]:
    with api.database.transaction() as session:
        entries = session.execute(
            select(AuditEntry.action, AuditEntry.actor)
            .where(AuditEntry.target_id == workflow_id)
            .order_by(AuditEntry.id)
        ).all()
    return [action for action, _ in entries]


def test_create_from_json_is_draft_version_1(admin: httpx.Client) -> None:
    """A new workflow is draft v1, not dispatching, and says to publish the draft."""
    workflow_id, body = created(admin.post("/api/v1/workflows", json=provisioning()))
    assert body["version"]["number"] == 1
    assert body["version"]["state"] == "draft"
    assert body["version"]["created_by"] == "admin@example.com"
    wf = workflow(admin, workflow_id)
    assert wf["status"] == "draft"
    assert wf["active_version"] is None
    assert wf["draft_version"] == 1
    assert wf["dispatching"] is False
    assert wf["not_dispatching_because"] == [
        "no published version is active; version 1 is a draft: publish it"
    ]
    assert wf["last_run_at"] is None
    assert wf["failed_runs_24h"] == 0


def test_create_from_yaml(admin: httpx.Client) -> None:
    """A YAML body with Content-Type application/yaml creates the workflow as draft v1."""
    text = (EXAMPLES / "onboarding.yaml").read_text()
    workflow_id, body = created(admin.post("/api/v1/workflows", content=text, headers=YAML))
    assert body["workflow"]["name"] == "Onboard new hire"
    assert body["workflow"]["trigger"] == "identity_joined"
    assert body["version"]["state"] == "draft"
    assert [s["id"] for s in body["version"]["document"]["steps"]] == [
        "has_manager",
        "manager_approval",
        "access_approval",
        "create_user",
        "add_groups",
        "create_mailbox",
        "needs_licence",
        "assign_licence",
        "welcome_email",
    ]
    assert body["version"]["document"]["settings"]["execution_timeout"] == "7d"
    assert workflow(admin, workflow_id)["draft_version"] == 1


def test_yaml_and_json_round_trip(admin: httpx.Client) -> None:
    """The YAML export parses to exactly the JSON document, and sending it back changes nothing."""
    text = (EXAMPLES / "onboarding.yaml").read_text()
    workflow_id, body = created(admin.post("/api/v1/workflows", content=text, headers=YAML))
    url = f"/api/v1/workflows/{workflow_id}/versions/1"
    exported = admin.get(url, params={"format": "yaml"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/yaml")
    as_json = admin.get(url).json()
    assert yaml.safe_load(exported.text) == as_json["document"]

    again = admin.put(url, content=exported.text, headers=YAML)
    assert again.status_code == 200, again.text
    assert again.json()["content_hash"] == body["version"]["content_hash"]
    assert (
        admin.put(url, json=as_json["document"]).json()["content_hash"]
        == (body["version"]["content_hash"])
    )


def test_edit_the_draft(admin: httpx.Client, api: Api) -> None:
    """PUT on the draft changes its document in place; it stays version 1."""
    workflow_id = create(admin)
    response = admin.put(
        f"/api/v1/workflows/{workflow_id}/versions/1",
        json=provisioning(description="Create the wiki account and a home page"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["number"] == 1
    fetched = admin.get(f"/api/v1/workflows/{workflow_id}/versions/1").json()
    assert fetched["document"]["description"] == "Create the wiki account and a home page"
    assert [v["number"] for v in versions(admin, workflow_id)] == [1]
    assert audit_actions(api, workflow_id) == ["workflow.created", "workflow.draft_updated"]


def test_a_draft_cannot_be_renamed(admin: httpx.Client) -> None:
    """Changing the name in a draft is a 422 naming the field; create a new workflow instead."""
    workflow_id = create(admin)
    response = admin.put(
        f"/api/v1/workflows/{workflow_id}/versions/1", json=provisioning(name="Renamed")
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert "name cannot change" in error["message"]
    assert error["details"][0]["field"] == "document.name"


def test_publish_makes_version_1_active_and_dispatching(admin: httpx.Client) -> None:
    """Publishing freezes v1, makes it active, and the workflow dispatches runs."""
    workflow_id = create(admin)
    body = publish(admin, workflow_id, 1)
    assert body["version"]["state"] == "published"
    assert body["version"]["active"] is True
    assert body["version"]["published_by"] == "admin@example.com"
    assert body["warnings"] == []
    wf = workflow(admin, workflow_id)
    assert wf["status"] == "published"
    assert wf["active_version"] == 1
    assert wf["draft_version"] is None
    assert wf["dispatching"] is True
    assert wf["not_dispatching_because"] == []


def test_a_published_version_is_never_edited(admin: httpx.Client) -> None:
    """PUT on a published version is a 409 that says to create a new draft; nothing changes."""
    workflow_id = create(admin)
    publish(admin, workflow_id, 1)
    response = admin.put(
        f"/api/v1/workflows/{workflow_id}/versions/1", json=provisioning(description="changed")
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert "is published and can never be edited" in error["message"]
    assert "create a new draft" in error["next_action"]
    assert f"POST /api/v1/workflows/{workflow_id}/versions" in error["next_action"]
    document = admin.get(f"/api/v1/workflows/{workflow_id}/versions/1").json()["document"]
    assert document["description"] == "Create the wiki account"


def test_publishing_twice_is_a_conflict(admin: httpx.Client) -> None:
    """A published version cannot be published again; the error says to activate it."""
    workflow_id = create(admin)
    publish(admin, workflow_id, 1)
    response = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert response.status_code == 409
    assert "already published" in response.json()["error"]["message"]
    assert "activate" in response.json()["error"]["next_action"]


def test_new_draft_publish_rollback_and_diff(admin: httpx.Client) -> None:
    """v2 is drafted and published; activating v1 rolls back; the diff shows the change."""
    workflow_id = create(admin)
    publish(admin, workflow_id, 1)

    draft = admin.post(
        f"/api/v1/workflows/{workflow_id}/versions",
        json=provisioning(description="Create the wiki account, v2"),
    )
    assert draft.status_code == 201, draft.text
    assert (draft.json()["number"], draft.json()["state"]) == (2, "draft")
    wf = workflow(admin, workflow_id)
    assert (wf["active_version"], wf["draft_version"]) == (1, 2)

    publish(admin, workflow_id, 2)
    assert [(v["number"], v["state"], v["active"]) for v in versions(admin, workflow_id)] == [
        (1, "published", False),
        (2, "published", True),
    ]

    rolled_back = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/activate")
    assert rolled_back.status_code == 200, rolled_back.text
    assert rolled_back.json()["active_version"] == 1
    assert rolled_back.json()["dispatching"] is True
    assert [v["active"] for v in versions(admin, workflow_id)] == [True, False]

    diff = admin.get(f"/api/v1/workflows/{workflow_id}/diff", params={"from": 1, "to": 2})
    assert diff.status_code == 200
    assert diff.headers["content-type"].startswith("text/x-diff")
    lines = diff.text.splitlines()
    assert lines[0] == "--- Provision wiki v1"
    assert lines[1] == "+++ Provision wiki v2"
    assert "-description: Create the wiki account" in lines
    assert "+description: Create the wiki account, v2" in lines
    changed = [ln for ln in lines[2:] if ln[:1] in "+-" and not ln.startswith(("---", "+++"))]
    assert len(changed) == 2


def test_diff_of_identical_versions_is_empty(admin: httpx.Client) -> None:
    """Diffing a version with itself yields no text."""
    workflow_id = create(admin)
    response = admin.get(f"/api/v1/workflows/{workflow_id}/diff", params={"from": 1, "to": 1})
    assert response.status_code == 200
    assert response.text == ""


def test_a_draft_cannot_be_activated(admin: httpx.Client) -> None:
    """Activating a draft is a 409 saying to publish it first."""
    workflow_id = create(admin)
    response = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/activate")
    assert response.status_code == 409
    assert response.json()["error"]["next_action"] == "publish version 1 first"


def test_disable_and_enable(admin: httpx.Client) -> None:
    """Disabling stops dispatching and says who did it; enabling brings it back."""
    workflow_id = create(admin)
    publish(admin, workflow_id, 1)
    disabled = admin.post(f"/api/v1/workflows/{workflow_id}/disable")
    assert disabled.status_code == 200
    body = disabled.json()
    assert body["status"] == "disabled"
    assert body["enabled"] is False
    assert body["dispatching"] is False
    [reason] = body["not_dispatching_because"]
    assert reason.startswith("the workflow is disabled by admin@example.com at ")
    assert reason.endswith("; enable it to dispatch runs")

    enabled = admin.post(f"/api/v1/workflows/{workflow_id}/enable").json()
    assert enabled["status"] == "published"
    assert enabled["dispatching"] is True
    assert enabled["not_dispatching_because"] == []


def test_disabled_draft_gives_both_reasons(admin: httpx.Client) -> None:
    """A disabled workflow with only a draft names both reasons it does not dispatch."""
    workflow_id = create(admin)
    body = admin.post(f"/api/v1/workflows/{workflow_id}/disable").json()
    assert len(body["not_dispatching_because"]) == 2
    assert body["not_dispatching_because"][1] == (
        "no published version is active; version 1 is a draft: publish it"
    )


def test_publish_of_an_invalid_draft_lists_every_problem_and_changes_nothing(
    admin: httpx.Client,
) -> None:
    """The gate's 422 lists every problem with code, step, field and message; still a draft."""
    document = provisioning(
        trigger={"type": "schedule", "cron": "0 25 * * *", "timezone": "Europe/Berlin"}
    )
    document["steps"][0]["next"] = "notify"
    document["steps"][1]["config"]["values"]["who"] = "{{ person.email }}"
    document["steps"].append({"id": "cleanup", "type": "ftp"})
    workflow_id = create(admin, document)

    response = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "publish_gate_failed"
    assert "cannot be published" in error["message"]
    details = {(d["code"], d["step"], d["field"]) for d in error["details"]}
    assert details == {
        ("cron_invalid", None, "trigger.cron"),
        ("missing_step", "create", "steps[0].next"),
        ("template_unknown_variable", "done", "steps[1].config.values.who"),
        ("unknown_step_type", "cleanup", "steps[2].type"),
        ("unreachable_step", "done", "steps[1]"),
        ("unreachable_step", "cleanup", "steps[2]"),
    }
    assert all(d["message"] for d in error["details"])
    assert set(error["details"][0]) == {"code", "step", "field", "message"}

    wf = workflow(admin, workflow_id)
    assert (wf["status"], wf["active_version"], wf["draft_version"]) == ("draft", None, 1)
    assert [v["state"] for v in versions(admin, workflow_id)] == ["draft"]
    plan = admin.get(f"/api/v1/workflows/{workflow_id}/versions/1/plan")
    assert plan.status_code == 400
    assert plan.json()["error"]["code"] == "no_plan"


def test_a_malformed_document_is_refused_at_create(admin: httpx.Client) -> None:
    """A document with the wrong shape is a 422 whose details name each field; nothing is saved."""
    document = provisioning()
    document["steps"][0]["id"] = "Create User"
    document["steps"][1]["retries"] = 3
    response = admin.post("/api/v1/workflows", json=document)
    assert response.status_code == 422
    details = {(d["code"], d["field"]) for d in response.json()["error"]["details"]}
    assert details == {
        ("document_invalid", "document.steps[0].id"),
        ("document_invalid", "document.steps[1].retries"),
    }
    assert admin.get("/api/v1/workflows").json()["items"] == []


def test_duplicate_workflow_name_is_a_conflict(admin: httpx.Client) -> None:
    """A second workflow with the same name (any case) is a 409 naming the existing one."""
    workflow_id = create(admin)
    response = admin.post("/api/v1/workflows", json=provisioning(name="PROVISION WIKI"))
    assert response.status_code == 409
    assert response.json()["error"]["existing_id"] == workflow_id


def test_application_reference_is_checked_and_protected(admin: httpx.Client) -> None:
    """A missing application blocks publishing; once it exists the workflow publishes and
    the application cannot be deleted while the workflow uses it."""
    document = provisioning(application="Payroll", trigger={"type": "access_granted"})
    workflow_id = create(admin, document)

    refused = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert refused.status_code == 422
    [problem] = refused.json()["error"]["details"]
    assert problem["code"] == "application_missing"
    assert problem["field"] == "application"
    assert "application 'Payroll' does not exist" in problem["message"]

    app = admin.post("/api/v1/applications", json={"name": "Payroll"})
    assert app.status_code == 201, app.text
    app_id = app.json()["id"]
    published = publish(admin, workflow_id, 1)
    assert published["workflow"]["application_id"] == app_id
    assert published["workflow"]["dispatching"] is True

    deletion = admin.delete(f"/api/v1/applications/{app_id}")
    assert deletion.status_code == 409
    assert deletion.json()["error"]["referenced_by"] == [
        f"workflow 'Provision wiki' ({workflow_id})"
    ]
    assert admin.get(f"/api/v1/applications/{app_id}").status_code == 200


def test_trigger_needing_an_application_is_refused_without_one(admin: httpx.Client) -> None:
    """access_revoked with no application names the trigger field in the gate's answer."""
    workflow_id = create(admin, provisioning(trigger={"type": "access_revoked"}))
    response = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert response.status_code == 422
    [problem] = response.json()["error"]["details"]
    assert (problem["code"], problem["field"]) == ("trigger_needs_application", "trigger.type")


def test_validate_runs_the_gate_without_publishing(admin: httpx.Client) -> None:
    """validate returns errors and warnings, and leaves the draft a draft."""
    document = provisioning()
    document["steps"][0]["retry"] = {"max_attempts": 1}
    workflow_id = create(admin, document)
    url = f"/api/v1/workflows/{workflow_id}/versions/1/validate"
    body = admin.post(url).json()
    assert body["ok"] is True
    assert body["errors"] == []
    assert [(w["code"], w["step"]) for w in body["warnings"]] == [
        ("irreversible_without_retry", "create")
    ]

    document["steps"][0]["next"] = "nowhere"
    admin.put(f"/api/v1/workflows/{workflow_id}/versions/1", json=document)
    body = admin.post(url).json()
    assert body["ok"] is False
    assert [(e["code"], e["field"]) for e in body["errors"]] == [
        ("missing_step", "steps[0].next"),
        ("unreachable_step", "steps[1]"),
    ]
    assert workflow(admin, workflow_id)["status"] == "draft"


def test_warnings_are_kept_with_the_published_version(admin: httpx.Client) -> None:
    """A publishable warning is returned by publish and stored on the version."""
    document = provisioning()
    document["steps"][0]["retry"] = {"max_attempts": 1}
    workflow_id = create(admin, document)
    body = publish(admin, workflow_id, 1)
    assert [w["code"] for w in body["warnings"]] == ["irreversible_without_retry"]
    stored = admin.get(f"/api/v1/workflows/{workflow_id}/versions/1").json()
    assert [w["code"] for w in stored["warnings"]] == ["irreversible_without_retry"]


def test_plan_endpoint_returns_the_compiled_plan(admin: httpx.Client) -> None:
    """A published version has a plan with its entry step, steps, edges and expressions."""
    workflow_id = create(admin)
    publish(admin, workflow_id, 1)
    response = admin.get(f"/api/v1/workflows/{workflow_id}/versions/1/plan")
    assert response.status_code == 200
    plan = response.json()
    assert plan["entry"] == "create"
    assert plan["version"] == 1
    assert plan["workflow"] == "Provision wiki"
    assert set(plan["steps"]) == {"create", "done"}
    assert plan["edges"] == [{"source": "create", "target": "done", "when": None}]
    assert {e["source"] for e in plan["expressions"]} == {
        "{{ input.email }}",
        "{{ steps.create.output }}",
    }
    assert plan["execution_timeout_seconds"] == 3600


def test_workflow_schema_is_published(admin: httpx.Client) -> None:
    """The JSON Schema of documents has name, trigger and steps, and accepts the examples."""
    response = admin.get("/api/v1/schemas/workflow")
    assert response.status_code == 200
    schema = response.json()
    assert {"name", "trigger", "steps"} <= set(schema["properties"])
    assert set(schema["required"]) >= {"name", "trigger"}
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("onboarding.yaml", "offboarding.yaml"):
        validator.validate(yaml.safe_load((EXAMPLES / name).read_text()))
    assert not validator.is_valid({"name": "x", "trigger": {"type": "manual"}, "colour": "red"})


def test_malformed_yaml_is_a_400_naming_the_line(admin: httpx.Client) -> None:
    """A YAML syntax error is a 400 whose message gives the line number."""
    text = "name: Broken\ntrigger:\n  type: manual\nsteps: [\n  - id: a\n    type: http\n"
    response = admin.post("/api/v1/workflows", content=text, headers=YAML)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_document"
    assert "line 5" in error["message"]
    assert admin.get("/api/v1/workflows").json()["items"] == []


def test_malformed_json_and_empty_bodies_are_400(admin: httpx.Client) -> None:
    """Broken JSON and a missing body are 400s with their own codes."""
    broken = admin.post(
        "/api/v1/workflows", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "malformed_json"
    empty = admin.post("/api/v1/workflows", content=b"", headers=YAML)
    assert empty.status_code == 400
    assert empty.json()["error"]["code"] == "missing_body"


@pytest.mark.parametrize(
    ("depth", "media_type", "status"),
    [
        (100, "application/json", 422),
        (100, "application/yaml", 422),
        (5000, "application/json", 422),  # (refused at the door: past 128 levels, any JSON body)
        (200, "application/yaml", 422),  # (YAML too, before anything is built)
        (5000, "application/yaml", 422),  # (past libyaml's own cap: the same refusal)
    ],
)
def test_absurdly_nested_documents_are_refused_not_a_500(
    admin: httpx.Client, depth: int, media_type: str, status: int
) -> None:
    """A config nested deeper than can be stored is a 422 naming the limit, in JSON and in
    YAML alike, never a server error."""
    nested = "[" * depth + "]" * depth
    text = (
        '{"name": "Deep", "trigger": {"type": "manual"}, "steps": [{"id": "a", "type": "set",'
        f' "config": {{"values": {{"k": {nested}}}}}}}]}}'
    )
    response = admin.post("/api/v1/workflows", content=text, headers={"Content-Type": media_type})
    assert response.status_code == status, response.text
    if status == 422:
        [problem] = response.json()["error"]["details"]
        if depth > MAX_JSON_DEPTH:
            assert problem == {
                "field": "body" if media_type == "application/json" else "document",
                "message": f"is nested more than {MAX_JSON_DEPTH} levels deep",
                "type": "too_deep",
            }
        else:
            assert problem["code"] == "document_invalid"
            assert "nested more than 64 levels deep" in problem["message"]
    else:
        assert response.json()["error"]["code"] in ("malformed_json", "malformed_document")
    assert admin.get("/api/v1/workflows").json()["items"] == []


def test_unstorable_characters_are_a_422_on_both_databases(admin: httpx.Client) -> None:
    """A NUL or an unpaired surrogate (which PostgreSQL cannot store) is a 422 naming the field."""
    body = (
        b'{"name": "Nul", "description": "a\\u0000b", "trigger": {"type": "manual"},'
        b' "steps": [{"id": "a", "type": "set", "config": {"values": {"k": "\\ud800"}}}]}'
    )
    response = admin.post(
        "/api/v1/workflows", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    fields = {d["field"] for d in response.json()["error"]["details"]}
    assert fields == {"body.description", "body.steps[0].config.values.k"}


def test_unknown_workflow_and_version_are_404(admin: httpx.Client) -> None:
    """Reading a workflow or version that does not exist is a 404 saying so."""
    assert admin.get("/api/v1/workflows/nope").status_code == 404
    workflow_id = create(admin)
    response = admin.get(f"/api/v1/workflows/{workflow_id}/versions/7")
    assert response.status_code == 404
    assert "has no version 7" in response.json()["error"]["message"]


def test_viewer_reads_but_cannot_create_or_publish(api: Api, admin: httpx.Client) -> None:
    """A viewer can read workflows; create needs workflow:edit, publish workflow:publish."""
    workflow_id = create(admin)
    with api.as_role(Role.VIEWER) as viewer:
        assert viewer.get("/api/v1/workflows").status_code == 200
        assert viewer.get(f"/api/v1/workflows/{workflow_id}").status_code == 200
        assert viewer.get("/api/v1/schemas/workflow").status_code == 200
        denied = viewer.post("/api/v1/workflows", json=provisioning(name="Other"))
        not_published = viewer.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
        not_disabled = viewer.post(f"/api/v1/workflows/{workflow_id}/disable")
    assert denied.status_code == 403
    assert denied.json()["error"]["missing_permission"] == "workflow:edit"
    assert not_published.status_code == 403
    assert not_published.json()["error"]["missing_permission"] == "workflow:publish"
    assert not_disabled.status_code == 403
    assert workflow(admin, workflow_id)["status"] == "draft"


def test_editor_creates_and_publishes(api: Api) -> None:
    """An editor holds workflow:edit and workflow:publish; the version records who published."""
    with api.as_role(Role.EDITOR, "editor@example.com") as editor:
        workflow_id = create(editor)
        body = publish(editor, workflow_id, 1)
    assert body["version"]["published_by"] == "editor@example.com"
    assert body["workflow"]["status"] == "published"


def test_every_change_is_audited(admin: httpx.Client, api: Api) -> None:
    """Create, edit, publish, new draft, rollback, disable and enable each leave an entry."""
    workflow_id = create(admin)
    base = f"/api/v1/workflows/{workflow_id}"
    admin.put(f"{base}/versions/1", json=provisioning(description="edited"))
    publish(admin, workflow_id, 1)
    admin.post(f"{base}/versions", json=provisioning(description="second"))
    publish(admin, workflow_id, 2)
    admin.post(f"{base}/versions/1/activate")
    admin.post(f"{base}/disable")
    admin.post(f"{base}/enable")
    assert audit_actions(api, workflow_id) == [
        "workflow.created",
        "workflow.draft_updated",
        "workflow.version_published",
        "workflow.version_activated",
        "workflow.draft_created",
        "workflow.version_published",
        "workflow.version_activated",
        "workflow.version_activated",
        "workflow.disabled",
        "workflow.enabled",
    ]
    with api.database.transaction() as session:
        actors = set(
            session.execute(
                select(AuditEntry.actor).where(AuditEntry.target_id == workflow_id)
            ).scalars()
        )
        rollback = (
            session.execute(
                select(AuditEntry.summary)
                .where(AuditEntry.action == "workflow.version_activated")
                .order_by(AuditEntry.id.desc())
            )
            .scalars()
            .first()
        )
    assert actors == {"admin@example.com"}
    assert rollback == {"version": 1, "previous": 2}


@pytest.mark.parametrize("name", ["onboarding.yaml", "offboarding.yaml"])
def test_examples_pass_the_gate_and_publish(
    admin: httpx.Client, api: Api, settings: Settings, name: str
) -> None:
    """Once the application and connections they name exist (with credentials) and someone
    holds each role they route tasks to, each shipped example is created from YAML and
    publishes with no errors or warnings."""
    prepare_examples(api.database, keyring_for(settings))
    api.user_token("approver@example.com", Role.APPROVER)
    api.user_token("operator@example.com", Role.OPERATOR)
    text = (EXAMPLES / name).read_text()
    workflow_id, _ = created(admin.post("/api/v1/workflows", content=text, headers=YAML))
    body = publish(admin, workflow_id, 1)
    assert body["warnings"] == []
    assert body["workflow"]["status"] == "published"
    assert body["workflow"]["dispatching"] is True


def test_list_filters_by_trigger_and_name(admin: httpx.Client) -> None:
    """The list can be narrowed by trigger type and by a name substring."""
    for name in ("onboarding.yaml", "offboarding.yaml"):
        admin.post("/api/v1/workflows", content=(EXAMPLES / name).read_text(), headers=YAML)
    left = admin.get("/api/v1/workflows", params={"trigger": "identity_left"}).json()["items"]
    assert [w["name"] for w in left] == ["Offboard leaver"]
    named = admin.get("/api/v1/workflows", params={"name": "ONBOARD"}).json()["items"]
    assert [w["name"] for w in named] == ["Onboard new hire"]
