"""Signed inbound webhooks over real HTTP on both databases: the signature, the timestamp
window, duplicate deliveries, input validation, the write-only secret and its rotation, and
the deliveries a workflow shows."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from grantflow.audit.models import AuditEntry
from grantflow.auth.permissions import Role
from grantflow.engine.models import Run
from grantflow.safety.models import WebhookSecret
from grantflow.safety.signing import sign
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import publish

SCHEMA = {
    "type": "object",
    "required": ["email"],
    "properties": {"email": {"type": "string"}, "days": {"type": "integer"}},
}


def hook_workflow(name: str = "Inbound hook") -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "webhook", "input_schema": SCHEMA},
        "steps": [
            {"id": "note", "type": "set", "config": {"values": {"who": "{{ input.email }}"}}}
        ],
    }


def new_secret(admin: httpx.Client, workflow_id: str) -> str:
    response = admin.post(f"/api/v1/workflows/{workflow_id}/webhook-secret")
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


def deliver(
    client: httpx.Client,
    key: str,
    secret: str,
    payload: Any,
    *,
    delivery: str | None = None,
    at: int | None = None,
    signature: str | None = None,
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    headers["Grantflow-Signature"] = signature or sign(secret, body, at or int(time.time()))
    if delivery != "":
        headers["Grantflow-Delivery"] = delivery or uuid.uuid4().hex
    return client.post(f"/hooks/{key}", content=body, headers=headers)


def run_count(database: Database, workflow_id: str) -> int:
    with database.transaction() as session:
        return int(
            session.execute(
                select(func.count()).select_from(Run).where(Run.workflow_id == workflow_id)
            ).scalar_one()
        )


def deliveries(admin: httpx.Client, workflow_id: str, failed: bool = False) -> list[dict[str, Any]]:
    response = admin.get(
        f"/api/v1/workflows/{workflow_id}/deliveries", params={"failed": str(failed).lower()}
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_a_validly_signed_delivery_starts_a_run(api: Api, admin: httpx.Client) -> None:
    """A delivery signed with the workflow's secret is 202 with the id of a run whose input
    is the body and whose trigger is webhook."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    with api.client() as sender:
        response = deliver(sender, workflow_id, secret, {"email": "ada@example.com"})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    run = admin.get(f"/api/v1/runs/{run_id}").json()
    assert run["workflow_id"] == workflow_id
    assert run["trigger"] == "webhook"
    assert run["input"] == {"email": "ada@example.com"}
    assert deliveries(admin, workflow_id)[0]["outcome"] == "accepted"


def test_the_workflow_name_is_a_key_too(api: Api, admin: httpx.Client) -> None:
    """/hooks/<workflow name> reaches the same workflow as its id."""
    workflow_id = publish(api.database, hook_workflow("Named hook"))
    secret = new_secret(admin, workflow_id)
    with api.client() as sender:
        response = deliver(sender, "Named hook", secret, {"email": "a@example.com"})
    assert response.status_code == 202, response.text


def test_a_bad_signature_is_401_and_says_nothing_more(api: Api, admin: httpx.Client) -> None:
    """A wrong secret, a tampered body, a malformed header, no header and an unknown workflow
    key all get the same 401; the workflow's deliveries say which it was; no run starts."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    body = json.dumps({"email": "ada@example.com"}).encode()
    now = int(time.time())
    with api.client() as sender:
        answers = [
            deliver(sender, workflow_id, "whsec_wrong", {"email": "ada@example.com"}),
            deliver(sender, workflow_id, secret, body + b" ", signature=sign(secret, body, now)),
            deliver(sender, workflow_id, secret, body, signature="t=abc,v1=zz"),
            sender.post(f"/hooks/{workflow_id}", content=body),
            deliver(sender, "no-such-workflow", secret, body),
        ]
    errors = [a.json()["error"] for a in answers]
    assert [a.status_code for a in answers] == [401] * 5
    assert {(e["code"], e["message"]) for e in errors} == {
        ("webhook_signature_invalid", "the webhook signature is not valid")
    }
    assert all("www-authenticate" not in a.headers for a in answers)
    assert run_count(api.database, workflow_id) == 0
    reasons = [d["reason"] for d in deliveries(admin, workflow_id, failed=True)]
    assert len(reasons) == 4  # (the unknown key belongs to no workflow)
    assert sum("does not match" in r for r in reasons) == 2
    assert sum("missing or malformed" in r for r in reasons) == 2


def test_a_workflow_without_a_secret_refuses_every_delivery(api: Api, admin: httpx.Client) -> None:
    """Before a secret is created, deliveries are 401 and the refusal says to create one."""
    workflow_id = publish(api.database, hook_workflow())
    with api.client() as sender:
        response = deliver(sender, workflow_id, "whsec_guess", {"email": "a@example.com"})
    assert response.status_code == 401
    assert "no webhook secret" in deliveries(admin, workflow_id, failed=True)[0]["reason"]


def test_an_old_or_future_timestamp_is_refused(api: Api, admin: httpx.Client) -> None:
    """A correctly signed delivery whose timestamp is over 5 minutes old (or ahead) is 401
    with code webhook_timestamp_out_of_range, and starts no run."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    now = int(time.time())
    with api.client() as sender:
        old = deliver(sender, workflow_id, secret, {"email": "a@example.com"}, at=now - 301 - 60)
        ahead = deliver(sender, workflow_id, secret, {"email": "a@example.com"}, at=now + 3600)
    for response in (old, ahead):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "webhook_timestamp_out_of_range"
    assert "old" in old.json()["error"]["message"]
    assert "future" in ahead.json()["error"]["message"]
    assert run_count(api.database, workflow_id) == 0


def test_a_duplicate_delivery_id_starts_no_second_run(api: Api, admin: httpx.Client) -> None:
    """The same delivery id sent again (re-signed, as a sender's retry is) answers 200 with the
    first run's id and starts nothing; the same signed request under another delivery id (a
    replay) is a duplicate too."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    body = json.dumps({"email": "ada@example.com"}).encode()
    now = int(time.time())
    with api.client() as sender:
        first = deliver(sender, workflow_id, secret, body, delivery="evt-1", at=now)
        retry = deliver(sender, workflow_id, secret, body, delivery="evt-1", at=now + 1)
        replay = deliver(sender, workflow_id, secret, body, delivery="evt-2", at=now)
    assert first.status_code == 202, first.text
    assert retry.status_code == 200, retry.text
    assert replay.status_code == 200, replay.text
    run_id = first.json()["run_id"]
    assert retry.json()["run_id"] == replay.json()["run_id"] == run_id
    assert retry.json()["duplicate"] is True
    assert run_count(api.database, workflow_id) == 1
    outcomes = [d["outcome"] for d in deliveries(admin, workflow_id)]
    assert sorted(outcomes) == ["accepted", "duplicate", "duplicate"]


def test_concurrent_twins_start_one_run(api: Api, admin: httpx.Client) -> None:
    """Eight copies of one delivery sent at once start exactly one run; every answer names it."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    body = json.dumps({"email": "ada@example.com"}).encode()
    signature = sign(secret, body, int(time.time()))
    answers: list[httpx.Response] = []
    gate = threading.Barrier(8)

    def send() -> None:
        with api.client() as sender:
            gate.wait()
            answers.append(
                deliver(sender, workflow_id, secret, body, delivery="twin", signature=signature)
            )

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202], [a.text for a in answers]
    assert len({a.json()["run_id"] for a in answers}) == 1
    assert run_count(api.database, workflow_id) == 1


def test_an_invalid_body_is_422_naming_the_field(api: Api, admin: httpx.Client) -> None:
    """A body that breaks the trigger's input schema is 422 input_invalid naming each field;
    the recorded refusal names the fields but not the values sent."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    with api.client() as sender:
        wrong_type = deliver(sender, workflow_id, secret, {"email": "a@x.com", "days": "sevenX"})
        missing = deliver(sender, workflow_id, secret, {"days": 3})
        not_json = deliver(sender, workflow_id, secret, b"{not json")
        not_object = deliver(sender, workflow_id, secret, [1, 2])
    error = wrong_type.json()["error"]
    assert wrong_type.status_code == 422
    assert error["code"] == "input_invalid"
    assert [d["field"] for d in error["details"]] == ["input.days"]
    assert missing.status_code == 422
    assert "'email' is a required property" in missing.json()["error"]["message"]
    assert not_json.status_code == 400
    assert not_object.status_code == 422
    assert run_count(api.database, workflow_id) == 0
    reasons = " ".join(d["reason"] for d in deliveries(admin, workflow_id, failed=True))
    assert "input.days (type)" in reasons
    assert "sevenX" not in reasons


def test_a_missing_delivery_id_is_refused(api: Api, admin: httpx.Client) -> None:
    """A signed delivery without Grantflow-Delivery is 400 naming the header."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    with api.client() as sender:
        response = deliver(sender, workflow_id, secret, {"email": "a@x.com"}, delivery="")
    assert response.status_code == 400
    assert "Grantflow-Delivery" in response.json()["error"]["message"]


def test_the_secret_is_write_only_and_rotation_retires_the_old_one(
    api: Api, admin: httpx.Client
) -> None:
    """The secret is in the create and rotate answers only: stored encrypted, absent from
    GET, the audit log and deliveries; after a rotation the old secret is refused."""
    workflow_id = publish(api.database, hook_workflow())
    first = new_secret(admin, workflow_id)
    shown = admin.get(f"/api/v1/workflows/{workflow_id}/webhook").json()
    assert shown["secret_set"] is True
    assert first not in json.dumps(shown)
    second_answer = admin.post(f"/api/v1/workflows/{workflow_id}/webhook-secret").json()
    second = second_answer["secret"]
    assert second_answer["rotated"] is True
    assert second != first
    with api.client() as sender:
        assert deliver(sender, workflow_id, first, {"email": "a@x.com"}).status_code == 401
        assert deliver(sender, workflow_id, second, {"email": "a@x.com"}).status_code == 202
    with api.database.transaction() as session:
        stored = session.execute(select(WebhookSecret.ciphertext)).scalar_one()
        entries = session.execute(
            select(AuditEntry).where(AuditEntry.action.like("workflow.webhook_secret%"))
        ).scalars()
        actions = [(e.action, json.dumps(e.summary)) for e in entries]
    assert first not in stored
    assert second not in stored
    assert [a for a, _ in actions] == [
        "workflow.webhook_secret_created",
        "workflow.webhook_secret_rotated",
    ]
    assert all(first not in s and second not in s for _, s in actions)
    assert second not in json.dumps(deliveries(admin, workflow_id))


def test_secrets_need_credential_write(api: Api) -> None:
    """A viewer may see the webhook's status but not create a secret (403 credential:write)."""
    workflow_id = publish(api.database, hook_workflow())
    with api.as_role(Role.VIEWER) as viewer:
        refused = viewer.post(f"/api/v1/workflows/{workflow_id}/webhook-secret")
        assert refused.status_code == 403
        assert refused.json()["error"]["missing_permission"] == "credential:write"
        assert viewer.get(f"/api/v1/workflows/{workflow_id}/webhook").status_code == 200


def test_only_webhook_workflows_have_a_secret(api: Api, admin: httpx.Client) -> None:
    """A manual workflow has no webhook: 409 not_a_webhook_workflow; its key is a 401."""
    document = {**hook_workflow("Manual one"), "trigger": {"type": "manual"}}
    workflow_id = publish(api.database, document)
    response = admin.post(f"/api/v1/workflows/{workflow_id}/webhook-secret")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_a_webhook_workflow"
    with api.client() as sender:
        assert deliver(sender, workflow_id, "whsec_x", {"email": "a"}).status_code == 401


def test_a_disabled_workflow_refuses_signed_deliveries(api: Api, admin: httpx.Client) -> None:
    """A valid delivery to a disabled workflow is 409 workflow_disabled and is listed failed."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    assert admin.post(f"/api/v1/workflows/{workflow_id}/disable").status_code == 200
    with api.client() as sender:
        response = deliver(sender, workflow_id, secret, {"email": "a@x.com"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "workflow_disabled"
    assert "disabled" in deliveries(admin, workflow_id, failed=True)[0]["reason"]


def test_only_the_last_100_refusals_are_kept(api: Api, admin: httpx.Client) -> None:
    """After 105 refused deliveries the workflow lists exactly 100, the newest."""
    workflow_id = publish(api.database, hook_workflow())
    new_secret(admin, workflow_id)
    with api.client() as sender:
        for n in range(105):
            deliver(sender, workflow_id, "whsec_wrong", {"n": n}, delivery=f"bad-{n}")
    listed = deliveries(admin, workflow_id, failed=True)
    assert len(listed) == 100
    assert listed[0]["delivery_id"] == "bad-104"


def test_a_delivery_while_paused_for_safety_is_accepted_and_held(
    api: Api, admin: httpx.Client
) -> None:
    """While the workflow is paused for safety a valid delivery is still 202: its run is held
    (queued, reason safety), not dropped, and the answer says so."""
    workflow_id = publish(api.database, hook_workflow())
    secret = new_secret(admin, workflow_id)
    with api.database.transaction() as session:
        from grantflow.definitions.models import Workflow

        row = session.get(Workflow, workflow_id)
        assert row is not None
        row.safety_pause = {
            "breaker": "runs_per_minute",
            "figures": {"limit": 1},
            "tripped_at": "t",
        }
    with api.client() as sender:
        response = deliver(sender, workflow_id, secret, {"email": "a@x.com"})
    assert response.status_code == 202, response.text
    assert response.json()["held_for_safety"] is True
    run = admin.get(f"/api/v1/runs/{response.json()['run_id']}").json()
    assert (run["status"], run["waiting_reason"]) == ("queued", "safety")
