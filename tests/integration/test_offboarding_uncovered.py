"""A leaver's grant in a system no revoke or offboarding workflow covers is flagged the moment
the identity leaves: a security incident naming the system, not only a control run later."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.store.database import Database
from tests.support.connections import API, make_application, ok
from tests.support.engine import publish


def workflow(name: str, trigger: str, app_id: str | None = None) -> dict[str, Any]:
    """A workflow of one set step (no external system needed to cover an application)."""
    return {
        "name": name,
        **({"application": app_id} if app_id else {}),
        "trigger": {"type": trigger},
        "steps": [
            {"id": "note", "type": "set", "config": {"values": {"who": "{{ identity.email }}"}}}
        ],
    }


def leaver(admin: httpx.Client, email: str, *apps: str) -> dict[str, Any]:
    """An identity granted each application, then leaving."""
    person: dict[str, Any] = ok(admin.post(f"{API}/identities", json={"email": email}), 201)
    for app in apps:
        ok(admin.post(f"{API}/grants", json={"identity": email, "application": app}), 201)
    ok(admin.post(f"{API}/identities/{person['id']}/leave"))
    return person


def open_incidents(admin: httpx.Client) -> list[dict[str, Any]]:
    shown = ok(admin.get(f"{API}/incidents", params={"status": "open"}))
    return sorted(shown["items"], key=lambda i: i["system"])


def test_an_uncovered_system_raises_an_incident_when_the_identity_leaves(
    admin: httpx.Client, database: Database
) -> None:
    """Wiki (no workflow) and Chat (its revoke workflow disabled) get an incident each, with a
    notification, at once; CRM (a revoke workflow) and Files (an identity_left workflow of its
    own) get none. Resolving needs a comment (the advice, taken, works); publishing a revoke
    workflow for Wiki, as the instruction says, covers the next leaver."""
    wiki = make_application(admin, "Wiki")
    crm = make_application(admin, "CRM")
    chat = make_application(admin, "Chat")
    files = make_application(admin, "Files")
    publish(database, workflow("CRM revoke", "access_revoked", crm))
    chat_wf = publish(database, workflow("Chat revoke", "access_revoked", chat))
    ok(admin.post(f"{API}/workflows/{chat_wf}/disable"))
    publish(database, workflow("Files offboarding", "identity_left", files))
    ada = leaver(admin, "ada@example.com", "Wiki", "CRM", "Chat", "Files")

    flagged = open_incidents(admin)
    assert [(i["system"], i["kind"], i["run_id"]) for i in flagged] == [
        ("Chat", "revocation_not_automated", None),
        ("Wiki", "revocation_not_automated", None),
    ]
    chat_incident, wiki_incident = flagged
    assert wiki_incident["identity_id"] == ada["id"]
    assert wiki_incident["application_id"] == wiki
    assert wiki_incident["summary"].startswith(
        "ada@example.com left, but no revoke or offboarding workflow covers Wiki"
    )
    assert (
        "no workflow with trigger access_revoked exists for application 'Wiki'"
        in (wiki_incident["summary"])
    )
    assert "workflow 'Chat revoke': it is disabled" in chat_incident["summary"]
    assert wiki_incident["instruction"].startswith(
        "Revoke ada@example.com's access in Wiki by hand now, then resolve this incident with a "
        "comment"
    )
    grants = ok(admin.get(f"{API}/grants", params={"identity_id": ada["id"]}))["items"]
    assert wiki_incident["grant_id"] in [g["id"] for g in grants]
    notes = ok(admin.get(f"{API}/notifications", params={"kind": "security_incident"}))["items"]
    assert sorted(n["data"]["system"] for n in notes) == ["Chat", "Wiki"]

    refused = admin.post(f"{API}/incidents/{wiki_incident['id']}/resolve")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "comment_required"
    assert error["next_action"].startswith(
        "resolve it with a comment saying how the access was removed "
        f'(POST /api/v1/incidents/{wiki_incident["id"]}/resolve {{"comment": "..."}}'
    )
    assert error["action"]["operation"] == "incident.resolve"
    assert error["action"]["needs"] == "a comment saying how the access was removed"
    resolved = ok(
        admin.post(
            error["action"]["path"],
            json={"comment": "removed from the Wiki admin page, ticket IT-7"},
        )
    )
    assert (resolved["status"], resolved["resolution"]) == ("resolved", "manual")
    assert [i["system"] for i in open_incidents(admin)] == ["Chat"]

    publish(database, workflow("Wiki revoke", "access_revoked", wiki))
    leaver(admin, "bob@example.com", "Wiki")
    assert [i["system"] for i in open_incidents(admin)] == ["Chat"]


def test_a_global_offboarding_workflow_covers_every_system(
    admin: httpx.Client, database: Database
) -> None:
    """With a global identity_left workflow, a leaver's grant in a system without a revoke
    workflow raises no incident."""
    make_application(admin, "Wiki")
    publish(database, workflow("Goodbye", "identity_left"))
    leaver(admin, "ada@example.com", "Wiki")
    assert open_incidents(admin) == []
