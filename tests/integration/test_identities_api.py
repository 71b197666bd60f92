"""Identities over the API: creating and validating, listing, moves and leaves with their
lifecycle events and runs, deletion, permissions and the audit trail."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import find_user_by_email
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import API, make_application, ok
from tests.support.engine import publish, running_worker, wait_status
from tests.support.plans import selects_on

IDENTITIES = f"{API}/identities"


def create(admin: httpx.Client, email: str, **fields: Any) -> dict[str, Any]:
    created: dict[str, Any] = ok(admin.post(IDENTITIES, json={"email": email, **fields}), 201)
    return created


def events(admin: httpx.Client, identity_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = ok(admin.get(f"{IDENTITIES}/{identity_id}/events"))
    return listed


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


def global_workflow(name: str, trigger: str) -> dict[str, Any]:
    """A global lifecycle workflow with one local step (no external system)."""
    return {
        "name": name,
        "trigger": {"type": trigger},
        "steps": [
            {"id": "note", "type": "set", "config": {"values": {"who": "{{ identity.email }}"}}}
        ],
    }


def test_create_normalises_the_email_and_fills_the_names(admin: httpx.Client) -> None:
    """The email is stored lower-cased and trimmed; userName defaults to it and the display
    name to the given and family names; with no workflow the joiner is active at once."""
    ada = create(admin, "  Ada.Lovelace@Example.COM ", given_name="Ada", family_name="Lovelace")
    assert ada["email"] == "ada.lovelace@example.com"
    assert ada["user_name"] == "ada.lovelace@example.com"
    assert ada["display_name"] == "Ada Lovelace"
    assert (ada["active"], ada["lifecycle_state"], ada["source"]) == (True, "active", "api")
    assert ok(admin.get(f"{IDENTITIES}/{ada['id']}")) == ada
    [joined] = events(admin, ada["id"])
    assert joined["kind"] == "identity_joined"
    assert joined["dispatch"] == []
    assert joined["no_run_reason"] == (
        "no workflow with trigger identity_joined exists for any application or globally"
    )


def test_a_duplicate_email_is_a_409_naming_the_existing_identity(admin: httpx.Client) -> None:
    ada = create(admin, "ada@example.com")
    body = error(admin.post(IDENTITIES, json={"email": "ADA@example.com "}), 409)
    assert body["code"] == "identity_exists"
    assert body["existing_id"] == ada["id"]
    assert body["message"] == (
        f"email: an identity with email 'ada@example.com' already exists ({ada['id']})"
    )
    assert body["details"] == [{"field": "body.email", "message": "already used"}]


def test_bad_fields_are_a_422_naming_the_field(admin: httpx.Client) -> None:
    """A bad email, a bad date, an end before the start, an unknown field, a missing email."""
    cases = {
        "body.email": {"email": "not-an-email"},
        "body.start_date": {"email": "a@example.com", "start_date": "2025-13-01"},
        "body.favourite_colour": {"email": "a@example.com", "favourite_colour": "blue"},
    }
    for field, payload in cases.items():
        body = error(admin.post(IDENTITIES, json=payload), 422)
        assert [d["field"] for d in body["details"]] == [field], body
        assert field in body["message"]
    unknown = error(admin.post(IDENTITIES, json=cases["body.favourite_colour"]), 422)
    assert "unknown field" in unknown["details"][0]["message"]
    missing = error(admin.post(IDENTITIES, json={"display_name": "Nobody"}), 422)
    assert missing["details"][0]["field"] == "body.email"

    dates = {"email": "a@example.com", "start_date": "2025-02-01", "end_date": "2025-01-31"}
    body = error(admin.post(IDENTITIES, json=dates), 422)
    assert body["message"] == "end_date: must not be before start_date"
    assert body["details"] == [{"field": "body.end_date", "message": "is before start_date"}]
    assert ok(admin.get(IDENTITIES))["items"] == []


def test_a_manager_is_named_by_email_or_id_and_never_oneself(admin: httpx.Client) -> None:
    grace = create(admin, "grace@example.com")
    ada = create(admin, "ada@example.com", manager="GRACE@example.com")
    assert ada["manager_id"] == grace["id"]
    alan = create(admin, "alan@example.com", manager=ada["id"])
    assert alan["manager_id"] == ada["id"]

    unknown = error(
        admin.post(IDENTITIES, json={"email": "x@example.com", "manager": "no@x.io"}), 404
    )
    assert unknown["message"] == "manager: no identity with id, email or userName 'no@x.io'"
    assert unknown["details"] == [{"field": "body.manager", "message": "no such identity"}]

    own = error(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"manager": "ada@example.com"}), 422)
    assert own["message"] == "manager: an identity cannot be its own manager"
    assert (
        ok(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"manager": None}))["manager_id"] is None
    )


def test_list_filters_and_pages(admin: httpx.Client) -> None:
    """Filters by substring, department (any case) and lifecycle state; pages by cursor."""
    for n, department in enumerate(["Sales", "sales", "Research", "Research", "Finance"]):
        create(admin, f"person{n}@example.com", display_name=f"Person {n}", department=department)
    create(admin, "zed@example.com", display_name="Zed Quux")
    gone = create(admin, "gone@example.com")
    ok(admin.post(f"{IDENTITIES}/{gone['id']}/leave"))

    def emails(**params: Any) -> list[str]:
        return sorted(i["email"] for i in ok(admin.get(IDENTITIES, params=params))["items"])

    assert emails(department="SALES") == ["person0@example.com", "person1@example.com"]
    assert emails(q="quux") == ["zed@example.com"]
    assert emails(q="PERSON3") == ["person3@example.com"]
    # the pattern is written into the statement: its quotes and wildcards are only text
    create(admin, "o'hara@example.com", display_name="100% O'Hara_x/y\\z")
    assert emails(q="o'hara") == ["o'hara@example.com"]
    assert emails(q="100%") == ["o'hara@example.com"]
    assert emails(q="a_x/y\\z") == ["o'hara@example.com"]
    assert emails(q="%") == ["o'hara@example.com"]
    assert emails(q="__") == []
    assert emails(q="'; drop table identities; --") == []
    assert emails(lifecycle_state="left") == ["gone@example.com"]
    assert len(emails(lifecycle_state="active")) == 7

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = ok(admin.get(IDENTITIES, params=params))
        assert len(page["items"]) <= 3
        seen.extend(i["id"] for i in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 8
    assert seen == sorted(seen)
    assert error(admin.get(IDENTITIES, params={"cursor": "forged"}), 400)["details"][0][
        "field"
    ] == ("query.cursor")
    assert error(admin.get(IDENTITIES, params={"lifecycle_state": "retired"}), 422)


def test_a_change_while_active_is_a_move(admin: httpx.Client, database: Database) -> None:
    """Without a mover workflow a move records why no run started and stays active; with one
    the identity is a mover until its run finishes, then active again."""
    ada = create(admin, "ada@example.com", title="Engineer", department="Research")
    moved = ok(
        admin.patch(f"{IDENTITIES}/{ada['id']}", json={"title": "Lead", "department": "R&D"})
    )
    assert (moved["title"], moved["lifecycle_state"]) == ("Lead", "active")
    move = events(admin, ada["id"])[-1]
    assert move["kind"] == "identity_moved"
    assert move["details"] == {"changed": ["department", "title"]}
    assert "no workflow with trigger identity_moved" in move["no_run_reason"]

    same = ok(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"title": "Lead"}))
    assert same["updated_at"] == moved["updated_at"]
    assert len(events(admin, ada["id"])) == 2  # no change, no event

    publish(database, global_workflow("Mover", "identity_moved"))
    mover = ok(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"attributes": {"floor": "3"}}))
    assert mover["lifecycle_state"] == "mover"
    latest = events(admin, ada["id"])[-1]
    assert latest["no_run_reason"] is None
    [dispatched] = latest["dispatch"]
    assert dispatched["workflow_name"] == "Mover"
    with running_worker(database):
        wait_status(database, dispatched["run_id"], "succeeded")
    assert ok(admin.get(f"{IDENTITIES}/{ada['id']}"))["lifecycle_state"] == "active"


def test_the_event_list_names_each_workflow_considered(
    admin: httpx.Client, database: Database
) -> None:
    """A join starts the enabled identity_joined workflow and says why the disabled one did
    not; the joiner stays a joiner while its run is in flight."""
    publish(database, global_workflow("Welcome", "identity_joined"))
    disabled = publish(database, global_workflow("Old welcome", "identity_joined"))
    publish(database, global_workflow("Goodbye", "identity_left"))
    ok(admin.post(f"{API}/workflows/{disabled}/disable"))
    ada = create(admin, "ada@example.com")
    assert ada["lifecycle_state"] == "joiner"
    [joined] = events(admin, ada["id"])
    dispatch = {d["workflow_name"]: d for d in joined["dispatch"]}
    assert set(dispatch) == {"Welcome", "Old welcome"}
    assert dispatch["Old welcome"]["skipped"] == "it is disabled"
    assert "run_id" in dispatch["Welcome"]
    assert joined["no_run_reason"] is None
    run = ok(admin.get(f"{API}/runs/{dispatch['Welcome']['run_id']}"))
    assert run["trigger"] == "identity_joined"

    assert error(admin.get(f"{IDENTITIES}/nope/events"), 404)["code"] == "not_found"


def test_deactivating_offboards_and_revokes_every_active_grant(
    admin: httpx.Client, database: Database
) -> None:
    """active:false is identity_left: each active grant is revoked (reason identity_left) and the
    identity is left; it gets no new access until reactivated, which is a join again. The
    person's groups (each run's subject) are read once for the revocations, not once a grant."""
    make_application(admin, "Wiki")
    make_application(admin, "CRM")
    make_application(admin, "Chat")
    ada = create(admin, "ada@example.com")
    grants = [
        ok(admin.post(f"{API}/grants", json={"identity": ada["id"], "application": app}), 201)
        for app in ("Wiki", "CRM", "Chat")
    ]
    with selects_on(database, "identity_groups") as groups:
        left = ok(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"active": False}))
    assert len(groups) == 1, groups  # for the three revocations' runs and the leave's
    assert (left["active"], left["lifecycle_state"]) == (False, "left")
    for grant in grants:
        shown = ok(admin.get(f"{API}/grants/{grant['id']}"))
        assert (shown["status"], shown["revoke_reason"]) == ("revoked", "identity_left")
    kinds = [e["kind"] for e in events(admin, ada["id"])]
    assert kinds == [
        "identity_joined",
        "access_granted",
        "access_granted",
        "access_granted",
        "access_revoked",
        "access_revoked",
        "access_revoked",
        "identity_left",
    ]
    assert sorted(events(admin, ada["id"])[-1]["details"]["revoked_grants"]) == sorted(
        g["id"] for g in grants
    )
    refused = error(
        admin.post(f"{API}/grants", json={"identity": ada["id"], "application": "Wiki"}), 409
    )
    assert refused["code"] == "identity_inactive"

    again = ok(admin.post(f"{IDENTITIES}/{ada['id']}/leave"))
    assert again["updated_at"] == left["updated_at"]  # leaving twice changes nothing
    back = ok(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"active": True}))
    assert (back["active"], back["lifecycle_state"]) == (True, "active")
    assert events(admin, ada["id"])[-1]["kind"] == "identity_joined"


def test_delete_keeps_the_record_and_frees_the_email(admin: httpx.Client) -> None:
    """A deleted identity leaves first, is hidden from the list unless include_deleted, can
    still be read (its events cannot: 404), and its email can be used again (a rehire)."""
    ada = create(admin, "ada@example.com", user_name="ada")
    deleted = ok(admin.delete(f"{IDENTITIES}/{ada['id']}"))
    assert deleted["deleted_at"] is not None
    assert deleted["email"] is None
    assert deleted["user_name"] == f"ada#deleted:{ada['id']}"
    assert deleted["attributes"] == {"deleted_email": "ada@example.com", "deleted_user_name": "ada"}
    assert (deleted["active"], deleted["lifecycle_state"]) == (False, "left")
    audited = ok(admin.get(f"{API}/audit", params={"target_id": ada["id"]}))["items"]
    assert "identity.deleted" in [entry["action"] for entry in audited]
    assert error(admin.get(f"{IDENTITIES}/{ada['id']}/events"), 404)["message"] == (
        f"identity {ada['id']} was deleted"
    )

    assert ok(admin.get(IDENTITIES))["items"] == []
    listed = ok(admin.get(IDENTITIES, params={"include_deleted": "true"}))["items"]
    assert [i["id"] for i in listed] == [ada["id"]]
    assert ok(admin.get(f"{IDENTITIES}/{ada['id']}"))["deleted_at"] is not None

    rehired = create(admin, "ada@example.com", user_name="ada")
    assert rehired["id"] != ada["id"]
    assert error(admin.delete(f"{IDENTITIES}/{ada['id']}"), 404)["message"] == (
        f"identity {ada['id']} was deleted"
    )
    assert error(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"title": "x"}), 404)
    # (a GET looks up an id, an email, a userName or an id prefix)
    assert error(admin.get(f"{IDENTITIES}/missing"), 404)["message"] == (
        "identity: no identity with id, email or userName 'missing'"
    )


def test_readers_read_and_writers_write(api: Api, admin: httpx.Client) -> None:
    """A viewer lists, reads and sees events, and gets 403 naming identity:write on every
    change; an operator may change identities; no token is a 401."""
    ada = create(admin, "ada@example.com")
    path = f"{IDENTITIES}/{ada['id']}"
    with api.as_role(Role.VIEWER) as viewer:
        assert [i["id"] for i in ok(viewer.get(IDENTITIES))["items"]] == [ada["id"]]
        assert ok(viewer.get(path))["email"] == "ada@example.com"
        assert len(ok(viewer.get(f"{path}/events"))) == 1
        for response in (
            viewer.post(IDENTITIES, json={"email": "v@example.com"}),
            viewer.patch(path, json={"title": "x"}),
            viewer.post(f"{path}/leave"),
            viewer.delete(path),
        ):
            body = error(response, 403)
            assert body["missing_permission"] == "identity:write"
            assert body["message"] == "this action needs the permission identity:write"
    with api.as_role(Role.OPERATOR) as operator:
        assert ok(operator.patch(path, json={"title": "Lead"}))["title"] == "Lead"
    with api.client() as anonymous:
        assert error(anonymous.get(IDENTITIES), 401)["code"] == "unauthenticated"
    assert ok(admin.get(path))["title"] == "Lead"


def test_every_change_is_audited_with_its_actor(admin: httpx.Client) -> None:
    ada = create(admin, "ada@example.com", title="Engineer")
    ok(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"title": "Lead"}))
    ok(admin.delete(f"{IDENTITIES}/{ada['id']}"))
    entries = ok(
        admin.get(f"{API}/audit", params={"target_type": "identity", "target_id": ada["id"]})
    )["items"]
    assert [e["action"] for e in entries] == [  # newest first
        "identity.deleted",
        "identity.updated",
        "identity.created",
    ]
    assert {e["actor"] for e in entries} == {"admin@example.com"}
    assert entries[1]["summary"] == {"changes": {"title": ["Engineer", "Lead"]}}
    assert entries[2]["summary"] == {
        "email": "ada@example.com",
        "user_name": "ada@example.com",
        "source": "api",
    }
    prefixed = ok(admin.get(f"{API}/audit", params={"action": "identity.*"}))["items"]
    assert len(prefixed) == 3
    assert ok(admin.get(f"{API}/audit/verify"))["ok"] is True


def test_tokens_are_unaffected_by_identities(api: Api, admin: httpx.Client) -> None:
    """Identities are the directory, users are Grantflow's operators: an identity with a
    user's email leaving and being deleted leaves the user and their token alone; a SCIM
    token does not open the identities API."""
    twin = create(admin, "admin@example.com")
    ok(admin.post(f"{IDENTITIES}/{twin['id']}/leave"))
    ok(admin.delete(f"{IDENTITIES}/{twin['id']}"))
    me = ok(admin.get(f"{API}/me"))
    assert me["email"] == "admin@example.com"
    assert ok(admin.get(f"{API}/me/tokens"))[0]["revoked_at"] is None

    actor = Actor.system("test")
    with api.database.transaction() as session:
        user = find_user_by_email(session, "admin@example.com")
        assert user is not None
        assert user.active
        _, scim = create_token(session, actor, user_id=user.id, name="hr", ttl_days=1, scope="scim")
    with api.client(scim) as hr:
        body = error(hr.get(IDENTITIES), 403)
        assert body["code"] == "wrong_token_scope"
