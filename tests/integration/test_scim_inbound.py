"""Inbound SCIM 2.0 at /scim/v2, over HTTP against the real app, on SQLite and PostgreSQL.

What an HR system or identity provider sees (status codes, SCIM documents, ETags) and what an
admin then sees in Grantflow (the identity, its lifecycle events, its grants, the audit log).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from grantflow.access.models import LifecycleEvent
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token, scim_service_user
from tests.conftest import Api

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
CUSTOM = "urn:example:params:scim:schemas:extension:badge:2.0:User"


def scim_token(api: Api) -> str:
    actor = Actor.system("test")
    with api.database.transaction() as session:
        user_id = scim_service_user(session, actor)
        _, raw = create_token(
            session, actor, user_id=user_id, name="entra", ttl_days=30, scope="scim"
        )
    return raw


@pytest.fixture
def scim(api: Api) -> Iterator[httpx.Client]:
    """A SCIM client as an IdP is configured: base URL /scim/v2 and a token of scope scim."""
    with httpx.Client(
        base_url=f"{api.base_url}/scim/v2",
        headers={
            "Authorization": f"Bearer {scim_token(api)}",
            "Content-Type": "application/scim+json",
        },
        timeout=10,
    ) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body: dict[str, Any] = response.json()
    return body


def error(response: httpx.Response, status: int, scim_type: str | None = None) -> str:
    """The detail of a SCIM Error response (RFC 7644 §3.12)."""
    body = ok(response, status)
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type, body
    detail: str = body["detail"]
    return detail


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def new_user(scim: httpx.Client, user_name: str, **attributes: Any) -> dict[str, Any]:
    return ok(
        scim.post("/Users", json={"schemas": [USER], "userName": user_name, **attributes}), 201
    )


def events(admin: httpx.Client, identity_id: str) -> list[dict[str, Any]]:
    response = admin.get(f"/api/v1/identities/{identity_id}/events")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def kinds(admin: httpx.Client, identity_id: str) -> list[str]:
    return [e["kind"] for e in events(admin, identity_id)]


def identity(admin: httpx.Client, identity_id: str) -> dict[str, Any]:
    response = admin.get(f"/api/v1/identities/{identity_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def audited(admin: httpx.Client, target_id: str) -> list[dict[str, Any]]:
    """The audit entries about a target, oldest first."""
    response = admin.get("/api/v1/audit", params={"target_id": target_id})
    assert response.status_code == 200, response.text
    return sorted(response.json()["items"], key=lambda e: e["id"])


def names(listed: dict[str, Any], attribute: str = "userName") -> list[str]:
    return [r[attribute] for r in listed.get("Resources", [])]


ADA = {
    "schemas": [USER, ENTERPRISE, CUSTOM],
    "userName": "ada@example.com",
    "externalId": "hr-0001",
    "name": {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada Lovelace"},
    "emails": [
        {"value": "Ada.Lovelace@Example.com", "type": "work", "primary": True},
        {"value": "ada@home.example.org", "type": "home"},
    ],
    "phoneNumbers": [{"value": "+44 20 7946 0000", "type": "work"}],
    "title": "Analyst",
    "active": True,
    ENTERPRISE: {"department": "Research", "employeeNumber": "0001"},
    CUSTOM: {"badge": "B-7", "floor": 3},
}


# -- discovery ---------------------------------------------------------------------------------


def test_discovery_describes_users_groups_and_capabilities(scim: httpx.Client) -> None:
    """ServiceProviderConfig, ResourceTypes and Schemas describe what the endpoint supports."""
    config = ok(scim.get("/ServiceProviderConfig"))
    assert config["patch"] == {"supported": True}
    assert config["filter"] == {"supported": True, "maxResults": 1000}
    assert config["sort"] == {"supported": True}
    assert config["etag"] == {"supported": True}
    assert config["bulk"]["supported"] is False
    assert config["changePassword"] == {"supported": False}
    assert [s["type"] for s in config["authenticationSchemes"]] == ["oauthbearertoken"]

    types = ok(scim.get("/ResourceTypes"))
    assert types["schemas"] == [LIST]
    by_id = {t["id"]: t for t in types["Resources"]}
    assert by_id["User"]["endpoint"] == "/Users"
    assert by_id["User"]["schemaExtensions"] == [{"schema": ENTERPRISE, "required": False}]
    assert by_id["Group"]["endpoint"] == "/Groups"
    assert ok(scim.get("/ResourceTypes/Group"))["schema"] == GROUP

    schemas = ok(scim.get("/Schemas"))
    assert {s["id"] for s in schemas["Resources"]} == {USER, GROUP, ENTERPRISE}
    user_schema = ok(scim.get(f"/Schemas/{USER}"))
    assert {"userName", "emails", "active"} <= {a["name"] for a in user_schema["attributes"]}

    error(scim.get("/Schemas/urn:nope"), 404)
    error(scim.get("/ResourceTypes/Printer"), 404)
    error(scim.post("/ServiceProviderConfig", json={}), 405)
    error(scim.get("/Schemas", params={"filter": 'id eq "x"'}), 403)


# -- users: create, read, lifecycle -------------------------------------------------------------


def test_created_user_is_an_identity_that_joined(scim: httpx.Client, admin: httpx.Client) -> None:
    """POST /Users creates an active identity (identity_joined); everything pushed round-trips."""
    response = scim.post("/Users", json=ADA)
    created = ok(response, 201)
    user_id = created["id"]
    assert response.headers["location"] == f"{scim.base_url}/Users/{user_id}".replace(
        "scim/v2//", "scim/v2/"
    )
    assert response.headers["etag"] == 'W/"1"'
    assert created["meta"]["resourceType"] == "User"
    assert created["meta"]["version"] == 'W/"1"'
    assert created["meta"]["location"] == response.headers["location"]

    fetched = ok(scim.get(f"/Users/{user_id}"))
    for key in ("userName", "externalId", "name", "phoneNumbers", "title", "active", CUSTOM):
        assert fetched[key] == ADA[key], key
    assert fetched[ENTERPRISE] == ADA[ENTERPRISE]
    assert set(fetched["schemas"]) == {USER, ENTERPRISE, CUSTOM}
    assert [e["value"].lower() for e in fetched["emails"]] == [
        "ada.lovelace@example.com",
        "ada@home.example.org",
    ]

    person = identity(admin, user_id)
    assert person["email"] == "ada.lovelace@example.com"  # the primary email, lower-cased
    assert person["user_name"] == "ada@example.com"
    assert person["external_id"] == "hr-0001"
    assert person["display_name"] == "Ada Lovelace"
    assert (person["given_name"], person["family_name"]) == ("Ada", "Lovelace")
    assert (person["title"], person["department"]) == ("Analyst", "Research")
    assert person["source"] == "scim"
    assert person["active"] is True
    assert person["lifecycle_state"] == "active"
    assert kinds(admin, user_id) == ["identity_joined"]

    audit = audited(admin, user_id)
    assert [e["action"] for e in audit] == ["identity.created"]
    assert audit[0]["actor"] == "scim-provisioning@grantflow.invalid"


def test_user_pushed_inactive_joins_when_activated(scim: httpx.Client, admin: httpx.Client) -> None:
    """A pre-hire pushed with active false emits nothing until it is activated."""
    user = new_user(scim, "prehire", active=False)
    assert identity(admin, user["id"])["lifecycle_state"] == "joiner"
    assert kinds(admin, user["id"]) == []
    ok(scim.patch(f"/Users/{user['id']}", json=patch({"op": "replace", "value": {"active": True}})))
    assert kinds(admin, user["id"]) == ["identity_joined"]
    assert identity(admin, user["id"])["lifecycle_state"] == "active"


def test_user_name_is_unique_ignoring_case(scim: httpx.Client) -> None:
    """A second user with the same userName (or primary email) is 409 uniqueness."""
    new_user(scim, "Grace", emails=[{"value": "grace@example.com", "primary": True}])
    detail = error(scim.post("/Users", json={"userName": "grace"}), 409, "uniqueness")
    assert "grace" in detail.lower()
    clash = {"userName": "hopper", "emails": [{"value": "GRACE@example.com", "primary": True}]}
    error(scim.post("/Users", json=clash), 409, "uniqueness")
    other = new_user(scim, "hopper")
    renamed = patch({"op": "replace", "path": "userName", "value": "GRACE"})
    error(scim.patch(f"/Users/{other['id']}", json=renamed), 409, "uniqueness")


def test_changes_made_in_grantflow_show_over_scim(scim: httpx.Client, admin: httpx.Client) -> None:
    """The identity's columns win: a title changed through the REST API is what SCIM serves,
    and identities created through the REST API are SCIM users too."""
    user = ok(scim.post("/Users", json=ADA), 201)
    response = admin.patch(f"/api/v1/identities/{user['id']}", json={"title": "Director"})
    assert response.status_code == 200, response.text
    fetched = ok(scim.get(f"/Users/{user['id']}"))
    assert fetched["title"] == "Director"
    assert fetched[CUSTOM] == ADA[CUSTOM]

    made = admin.post(
        "/api/v1/identities", json={"email": "Linus@Example.com", "given_name": "Linus"}
    )
    assert made.status_code == 201, made.text
    found = ok(scim.get("/Users", params={"filter": 'userName eq "linus@example.com"'}))
    assert found["totalResults"] == 1
    (linus,) = found["Resources"]
    assert linus["id"] == made.json()["id"]
    assert linus["active"] is True
    assert linus["emails"] == [{"value": "linus@example.com", "type": "work", "primary": True}]
    assert linus["name"] == {"givenName": "Linus"}


# -- list, filter, paginate ----------------------------------------------------------------------


@pytest.fixture
def directory(scim: httpx.Client) -> list[dict[str, Any]]:
    """Seven users pushed in this order."""
    people = [
        ("ada", "Ada Lovelace", "hr-1", "ada@example.com", True),
        ("grace", "Grace Hopper", "hr-2", "grace@navy.example.org", True),
        ("alan", "Alan Turing", "HR-3", "alan@example.com", False),
        ("edsger", "Edsger Dijkstra", None, "edsger@example.nl", True),
        ("barbara", "Barbara Liskov", "hr-5", "barbara@example.com", True),
        ("ken", None, "hr-6", None, True),
        ("margaret", "Margaret Hamilton", "hr-7", "margaret@example.com", False),
    ]
    users = []
    for user_name, display, external, email, active in people:
        attributes: dict[str, Any] = {"active": active}
        if display:
            attributes["displayName"] = display
        if external:
            attributes["externalId"] = external
        if email:
            attributes["emails"] = [{"value": email, "type": "work", "primary": True}]
        users.append(new_user(scim, user_name, **attributes))
    return users


def test_filters(scim: httpx.Client, directory: list[dict[str, Any]]) -> None:
    """Each operator, and/or/not and parentheses, on the attributes IdPs filter by."""
    ids = {u["userName"]: u["id"] for u in directory}
    first_modified = directory[0]["meta"]["lastModified"]
    cases: list[tuple[str, list[str]]] = [
        ('userName eq "ADA"', ["ada"]),
        ('userName ne "ada"', ["grace", "alan", "edsger", "barbara", "ken", "margaret"]),
        ('userName co "ar"', ["barbara", "margaret"]),
        ('userName sw "a"', ["ada", "alan"]),
        ('userName ew "a"', ["ada", "barbara"]),
        ('userName gt "ken"', ["margaret"]),
        ('userName ge "ken"', ["ken", "margaret"]),
        ('userName lt "alan"', ["ada"]),
        ('userName le "alan"', ["ada", "alan"]),
        ("externalId pr", ["ada", "grace", "alan", "barbara", "ken", "margaret"]),
        ('externalId eq "hr-3"', []),  # externalId is case-exact
        ('externalId eq "HR-3"', ["alan"]),
        ('emails.value eq "GRACE@navy.example.org"', ["grace"]),
        ('emails.value ew ".nl"', ["edsger"]),
        (
            'emails[type eq "work" and value co "example.com"]',
            ["ada", "alan", "barbara", "margaret"],
        ),
        ('displayName sw "a" and active eq true', ["ada"]),
        ("active eq false", ["alan", "margaret"]),
        ("not (active eq false) and not (displayName pr)", ["ken"]),
        ('(userName eq "ada" or userName eq "ken") and externalId pr', ["ada", "ken"]),
        ('userName eq "ada" or userName eq "ken" and externalId eq "nope"', ["ada"]),
        (f'meta.lastModified gt "{first_modified}"', [u["userName"] for u in directory[1:]]),
        (f'meta.lastModified le "{first_modified}"', ["ada"]),
        (f'id eq "{ids["edsger"]}"', ["edsger"]),
        ('meta.resourceType eq "User" and userName sw "m"', ["margaret"]),
    ]
    for text, expected in cases:
        listed = ok(scim.get("/Users", params={"filter": text}))
        assert names(listed) == expected, text
        assert listed["totalResults"] == len(expected), text


def test_pagination(scim: httpx.Client, directory: list[dict[str, Any]]) -> None:
    """startIndex (1-based) and count page through totalResults; sortBy orders."""
    page = ok(scim.get("/Users", params={"startIndex": 3, "count": 2}))
    assert page["schemas"] == [LIST]
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (7, 3, 2)
    assert names(page) == ["alan", "edsger"]
    everyone = []
    for start in range(1, 8, 3):
        everyone += names(ok(scim.get("/Users", params={"startIndex": start, "count": 3})))
    assert everyone == [u["userName"] for u in directory]
    last = ok(scim.get("/Users", params={"startIndex": 7, "count": 5}))
    assert (names(last), last["itemsPerPage"]) == (["margaret"], 1)
    counted = ok(scim.get("/Users", params={"count": 0}))
    assert (counted["totalResults"], counted["Resources"]) == (7, [])
    ordered = ok(scim.get("/Users", params={"sortBy": "userName", "sortOrder": "descending"}))
    assert names(ordered) == sorted(names(ordered), reverse=True)
    none = ok(scim.get("/Users", params={"filter": 'userName eq "nobody"'}))
    assert (none["totalResults"], none["Resources"], none["itemsPerPage"]) == (0, [], 0)


def test_search_with_post_and_partial_attributes(
    scim: httpx.Client, directory: list[dict[str, Any]]
) -> None:
    """POST /Users/.search and POST /.search take a SearchRequest; attributes trims the answer."""
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'userName sw "a"',
        "attributes": ["userName"],
    }
    found = ok(scim.post("/Users/.search", json=body))
    assert [set(r) for r in found["Resources"]] == [{"schemas", "id", "userName"}] * 2
    everywhere = ok(scim.post("/.search", json={**body, "filter": 'userName sw "e"'}))
    assert names(everywhere) == ["edsger"]
    listed = ok(scim.get("/Users", params={"excludedAttributes": "emails,meta", "count": 1}))
    assert "emails" not in listed["Resources"][0]
    assert "meta" not in listed["Resources"][0]


# -- replace and patch -----------------------------------------------------------------------------


def test_replace_user(scim: httpx.Client, admin: httpx.Client) -> None:
    """PUT replaces the user: changed mapped attributes are a move, omitted ones are cleared."""
    user = ok(scim.post("/Users", json=ADA), 201)
    replacement = {
        "schemas": [USER, ENTERPRISE],
        "userName": "ada@example.com",
        "name": {"givenName": "Ada", "familyName": "King"},
        "emails": [{"value": "ada.king@example.com", "type": "work", "primary": True}],
        "active": True,
        ENTERPRISE: {"department": "Computing"},
    }
    response = scim.put(f"/Users/{user['id']}", json=replacement, headers={"If-Match": 'W/"1"'})
    replaced = ok(response)
    assert response.headers["etag"] == 'W/"2"'
    assert replaced["name"] == {"givenName": "Ada", "familyName": "King"}
    assert "title" not in replaced
    assert "phoneNumbers" not in replaced
    assert CUSTOM not in replaced
    assert replaced[ENTERPRISE] == {"department": "Computing"}

    person = identity(admin, user["id"])
    assert (person["family_name"], person["title"], person["department"]) == (
        "King",
        None,
        "Computing",
    )
    assert person["email"] == "ada.king@example.com"
    moved = events(admin, user["id"])[-1]
    assert moved["kind"] == "identity_moved"
    assert moved["details"]["changed"] == [
        "department",
        "display_name",
        "email",
        "external_id",
        "family_name",
        "title",
    ]
    # a stale version is refused, and changes nothing
    stale = scim.put(f"/Users/{user['id']}", json=ADA, headers={"If-Match": 'W/"1"'})
    error(stale, 412)
    assert ok(scim.get(f"/Users/{user['id']}"))["meta"]["version"] == 'W/"2"'
    # the same representation again is no change at all
    ok(scim.put(f"/Users/{user['id']}", json=replacement))
    assert kinds(admin, user["id"]) == ["identity_joined", "identity_moved"]


def test_patch_user(scim: httpx.Client, admin: httpx.Client) -> None:
    """add / replace / remove, with and without a path, valuePath filters included."""
    user = ok(scim.post("/Users", json=ADA), 201)
    url = f"/Users/{user['id']}"
    patched = ok(
        scim.patch(
            url,
            json=patch(
                {"op": "replace", "path": "title", "value": "Lead"},
                {
                    "op": "replace",
                    "path": 'emails[type eq "work"].value',
                    "value": "ada@new.example",
                },
                {"op": "add", "path": "nickName", "value": "Countess"},
                {"op": "remove", "path": 'emails[type eq "home"]'},
                {"op": "remove", "path": f"{ENTERPRISE}:employeeNumber"},
                {"op": "add", "value": {"userType": "Employee", "name": {"middleName": "Byron"}}},
            ),
        )
    )
    assert patched["title"] == "Lead"
    assert patched["nickName"] == "Countess"
    assert patched["userType"] == "Employee"
    assert patched["name"]["middleName"] == "Byron"
    assert patched["name"]["givenName"] == "Ada"  # add merges complex attributes
    assert patched["emails"] == [{"value": "ada@new.example", "type": "work", "primary": True}]
    assert patched[ENTERPRISE] == {"department": "Research"}
    assert patched["meta"]["version"] == 'W/"2"'
    person = identity(admin, user["id"])
    assert (person["title"], person["email"]) == ("Lead", "ada@new.example")
    assert events(admin, user["id"])[-1]["details"]["changed"] == ["email", "title"]

    # attributes of an extension Grantflow does not declare are patched too
    custom = ok(
        scim.patch(
            url,
            json=patch(
                {"op": "replace", "path": f"{CUSTOM}:badge", "value": "B-8"},
                {"op": "remove", "path": f"{CUSTOM}:floor"},
            ),
        )
    )
    assert custom[CUSTOM] == {"badge": "B-8"}
    assert custom["meta"]["version"] == 'W/"3"'
    # ... which is no lifecycle event (no identity field changed), but is audited
    assert kinds(admin, user["id"]) == ["identity_joined", "identity_moved"]
    audit = audited(admin, user["id"])
    assert [e["action"] for e in audit] == [
        "identity.created",
        "identity.updated",
        "identity.updated",
    ]
    assert audit[-1]["summary"]["scim_attributes"] == [CUSTOM]

    # a patch that changes nothing keeps the version
    same = patch({"op": "replace", "path": "title", "value": "Lead"})
    assert ok(scim.patch(url, json=same))["meta"]["version"] == 'W/"3"'


def test_patch_active_false_offboards(scim: httpx.Client, admin: httpx.Client) -> None:
    """active false is a leave: identity_left, and the identity's grants are revoked."""
    user = new_user(scim, "leaver@example.com")
    app = admin.post("/api/v1/applications", json={"name": "Payroll"})
    assert app.status_code == 201, app.text
    grant = admin.post("/api/v1/grants", json={"identity": user["id"], "application": "Payroll"})
    assert grant.status_code == 201, grant.text
    left = ok(
        scim.patch(
            f"/Users/{user['id']}", json=patch({"op": "replace", "path": "active", "value": False})
        )
    )
    assert left["active"] is False
    assert kinds(admin, user["id"])[-1] == "identity_left"
    assert identity(admin, user["id"])["lifecycle_state"] == "left"
    revoked = admin.get(f"/api/v1/grants/{grant.json()['id']}").json()
    assert (revoked["status"], revoked["revoke_reason"]) == ("revoked", "identity_left")


def test_delete_user(scim: httpx.Client, admin: httpx.Client, api: Api) -> None:
    """DELETE offboards the user; it is gone from SCIM and its userName can be used again."""
    user = new_user(scim, "temp@example.com", emails=[{"value": "temp@example.com"}])
    group = ok(
        scim.post("/Groups", json={"displayName": "Temps", "members": [{"value": user["id"]}]}), 201
    )
    deleted = scim.delete(f"/Users/{user['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    error(scim.get(f"/Users/{user['id']}"), 404)
    error(scim.delete(f"/Users/{user['id']}"), 404)
    error(
        scim.patch(
            f"/Users/{user['id']}", json=patch({"op": "replace", "path": "title", "value": "x"})
        ),
        404,
    )
    listed = ok(scim.get("/Users", params={"filter": 'userName eq "temp@example.com"'}))
    assert listed["totalResults"] == 0
    assert "members" not in ok(scim.get(f"/Groups/{group['id']}"))
    with api.database.transaction() as session:  # (its events answer 404 once it is deleted)
        left = session.execute(
            select(LifecycleEvent.kind)
            .where(LifecycleEvent.identity_id == user["id"])
            .order_by(LifecycleEvent.id.desc())
        ).scalars()
        assert next(left) == "identity_left"
    person = identity(admin, user["id"])
    assert person["deleted_at"] is not None
    assert person["lifecycle_state"] == "left"

    rehired = new_user(scim, "temp@example.com", emails=[{"value": "temp@example.com"}])
    assert rehired["id"] != user["id"]
    assert kinds(admin, rehired["id"]) == ["identity_joined"]


# -- groups ----------------------------------------------------------------------------------------


def test_groups_and_membership_moves(scim: httpx.Client, admin: httpx.Client) -> None:
    """Group CRUD; a membership change of an active identity emits identity_moved (groups)."""
    ada = new_user(scim, "ada")
    alan = new_user(scim, "alan")
    pre = new_user(scim, "prehire", active=False)
    created = ok(
        scim.post(
            "/Groups",
            json={
                "schemas": [GROUP],
                "displayName": "Engineering",
                "externalId": "grp-eng",
                "members": [{"value": ada["id"], "display": "Ada"}, {"value": pre["id"]}],
            },
        ),
        201,
    )
    group_url = f"/Groups/{created['id']}"
    assert [m["value"] for m in created["members"]] == [ada["id"], pre["id"]]
    assert created["members"][0]["display"] == "Ada"
    moved = events(admin, ada["id"])[-1]
    assert (moved["kind"], moved["details"]["changed"]) == ("identity_moved", ["groups"])
    assert kinds(admin, pre["id"]) == []  # not active: no move
    assert [g["display"] for g in ok(scim.get(f"/Users/{ada['id']}"))["groups"]] == ["Engineering"]

    error(scim.post("/Groups", json={"displayName": "engineering"}), 409, "uniqueness")
    found = ok(scim.get("/Groups", params={"filter": 'displayName eq "ENGINEERING"'}))
    assert [g["id"] for g in found["Resources"]] == [created["id"]]
    member_of = ok(
        scim.get(
            "/Groups",
            params={
                "filter": f'id eq "{created["id"]}" and members eq "{ada["id"]}"',
                "excludedAttributes": "members",
            },
        )
    )
    assert member_of["totalResults"] == 1
    assert "members" not in member_of["Resources"][0]
    assert (
        ok(scim.get("/Groups", params={"filter": f'members eq "{alan["id"]}"'}))["totalResults"]
        == 0
    )

    # PATCH: add alan, remove ada by a valuePath filter
    patched = ok(
        scim.patch(
            group_url,
            json=patch(
                {"op": "add", "path": "members", "value": [{"value": alan["id"]}]},
                {"op": "remove", "path": f'members[value eq "{ada["id"]}"]'},
            ),
        )
    )
    assert [m["value"] for m in patched["members"]] == [pre["id"], alan["id"]]
    assert kinds(admin, alan["id"]) == ["identity_joined", "identity_moved"]
    assert kinds(admin, ada["id"]) == ["identity_joined", "identity_moved", "identity_moved"]

    # PUT replaces the members and the name
    replaced = ok(
        scim.put(
            group_url,
            json={"schemas": [GROUP], "displayName": "Platform", "members": [{"value": ada["id"]}]},
        )
    )
    assert replaced["displayName"] == "Platform"
    assert "externalId" not in replaced
    assert [m["value"] for m in replaced["members"]] == [ada["id"]]
    assert replaced["meta"]["version"] == 'W/"3"'

    deleted = scim.delete(group_url)
    assert deleted.status_code == 204
    error(scim.get(group_url), 404)
    assert kinds(admin, ada["id"])[-1] == "identity_moved"
    assert "groups" not in ok(scim.get(f"/Users/{ada['id']}"))
    audit = audited(admin, created["id"])
    assert [e["action"] for e in audit] == [
        "identity_group.created",
        "identity_group.updated",
        "identity_group.updated",
        "identity_group.deleted",
    ]


def test_group_members_must_be_users(scim: httpx.Client) -> None:
    """A member that is not a user served here is 400 invalidValue (no nested groups)."""
    group = ok(scim.post("/Groups", json={"displayName": "Ops"}), 201)
    detail = error(
        scim.post("/Groups", json={"displayName": "Nested", "members": [{"value": group["id"]}]}),
        400,
        "invalidValue",
    )
    assert "nested groups" in detail
    add = patch({"op": "add", "path": "members", "value": [{"value": "no-such-user"}]})
    error(scim.patch(f"/Groups/{group['id']}", json=add), 400, "invalidValue")
    error(scim.post("/Groups", json={"displayName": ""}), 400, "invalidValue")


# -- Microsoft Entra's provisioning client -----------------------------------------------------


def test_entra_provisioning_cycle(scim: httpx.Client, admin: httpx.Client) -> None:
    """What Entra sends, in the order it sends it: match by userName before creating, create
    with string booleans, PATCH with capitalised op names, path-less values with dotted and URN
    keys, the manager as a bare id, `active` as the string "False", members removed by value."""
    # aadOptscim062020 is a flag Entra's admins append to the tenant URL: it is ignored
    lookup = ok(
        scim.get(
            "/Users",
            params={"filter": 'userName eq "ada@contoso.com"', "aadOptscim062020": "true"},
        )
    )
    assert (lookup["totalResults"], lookup["Resources"]) == (0, [])
    manager = new_user(scim, "boss@contoso.com")
    created = ok(
        scim.post(
            "/Users",
            json={
                "schemas": [USER, ENTERPRISE],
                "externalId": "ada",
                "userName": "ada@contoso.com",
                "active": "True",
                "displayName": "Ada Lovelace",
                "emails": [{"primary": "True", "type": "work", "value": "ada@contoso.com"}],
                "name": {"formatted": "Ada Lovelace", "familyName": "Lovelace", "givenName": "Ada"},
                ENTERPRISE: {"manager": {"value": manager["id"]}},
            },
        ),
        201,
    )
    assert created["active"] is True
    assert created[ENTERPRISE]["manager"]["value"] == manager["id"]
    assert created[ENTERPRISE]["manager"]["$ref"].endswith(f"/Users/{manager['id']}")
    url = f"/Users/{created['id']}"

    updated = ok(
        scim.patch(
            url,
            json=patch(
                {
                    "op": "Replace",
                    "value": {"name.givenName": "Augusta", f"{ENTERPRISE}:department": "Math"},
                },
                {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": manager["id"]},
                {
                    "op": "Replace",
                    "path": 'emails[type eq "home"].value',
                    "value": "ada@home.example",
                },
                {"op": "Replace", "path": "title", "value": "Countess"},
            ),
        )
    )
    assert updated["name"]["givenName"] == "Augusta"
    assert updated[ENTERPRISE]["department"] == "Math"
    assert updated[ENTERPRISE]["manager"]["value"] == manager["id"]
    # a filter matching no entry creates it (Entra expects that of emails[type eq "home"])
    assert {"value": "ada@home.example", "type": "home"} in updated["emails"]
    person = identity(admin, created["id"])
    assert (person["given_name"], person["department"], person["manager_id"]) == (
        "Augusta",
        "Math",
        manager["id"],
    )

    group = ok(
        scim.post(
            "/Groups", json={"displayName": "Contoso", "members": [{"value": created["id"]}]}
        ),
        201,
    )
    removed = ok(
        scim.patch(
            f"/Groups/{group['id']}",
            json=patch({"op": "Remove", "path": "members", "value": [{"value": created["id"]}]}),
        )
    )
    assert "members" not in removed

    disabled = ok(
        scim.patch(url, json=patch({"op": "Replace", "path": "active", "value": "False"}))
    )
    assert disabled["active"] is False
    assert kinds(admin, created["id"]) == [
        "identity_joined",
        "identity_moved",
        "identity_moved",
        "identity_moved",
        "identity_left",
    ]
    cleared = ok(scim.patch(url, json=patch({"op": "Remove", "path": f"{ENTERPRISE}:manager"})))
    assert "manager" not in cleared.get(ENTERPRISE, {})


# -- errors ------------------------------------------------------------------------------------


def test_errors_are_scim_errors(api: Api, scim: httpx.Client) -> None:
    """Bad input is a 4xx SCIM Error with the right scimType, never a 500."""
    user = new_user(scim, "someone")
    url = f"/Users/{user['id']}"
    error(scim.post("/Users", content=b'{"userName": '), 400, "invalidSyntax")
    error(scim.post("/Users", content=b""), 400, "invalidSyntax")
    error(scim.post("/Users", json=["not", "an", "object"]), 400, "invalidSyntax")
    error(
        scim.post("/Users", json={"schemas": [USER], "displayName": "no userName"}),
        400,
        "invalidValue",
    )
    assert "emails" in error(
        scim.post("/Users", json={"userName": "x", "emails": [{"value": "not-an-email"}]}),
        400,
        "invalidValue",
    )
    assert "manager" in error(
        scim.post("/Users", json={"userName": "y", ENTERPRISE: {"manager": "no-such-id"}}),
        400,
        "invalidValue",
    )
    error(scim.get("/Users", params={"filter": 'userName eq "x" and'}), 400, "invalidFilter")
    error(scim.get("/Users", params={"filter": "shoeSize gt 40"}), 400, "invalidFilter")
    error(scim.get("/Users", params={"filter": 'password eq "hunter2"'}), 400, "invalidFilter")
    error(scim.get("/Users", params={"count": "many"}), 400, "invalidValue")
    error(
        scim.patch(url, json=patch({"op": "frobnicate", "path": "title", "value": "x"})),
        400,
        "invalidValue",
    )
    error(scim.patch(url, json=patch({"op": "remove"})), 400, "noTarget")
    error(
        scim.patch(url, json=patch({"op": "replace", "path": "id", "value": "x"})),
        400,
        "mutability",
    )
    error(scim.patch(url, json=patch({"op": "remove", "path": "userName"})), 400, "mutability")
    error(
        scim.patch(url, json=patch({"op": "add", "path": "shoeSize[x eq 1]", "value": 1})),
        400,
        "invalidPath",
    )
    error(scim.patch(url, json={"schemas": [PATCH_OP], "Operations": []}), 400, "invalidValue")
    error(scim.get("/Users/no-such-user"), 404)
    error(scim.get("/Printers"), 404)
    error(scim.put("/Users", json={}), 405)
    error(scim.post("/Users", content=b"userName=x", headers={"Content-Type": "text/plain"}), 415)
    too_big = b'{"userName": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert "larger than the limit" in error(scim.post("/Users", content=too_big), 413)
    error(scim.get("/Users", params={"cursor": ""}), 501)
    # the identity was left untouched by all of that
    assert ok(scim.get(url))["meta"]["version"] == 'W/"1"'


def test_only_scim_tokens_work(api: Api, scim: httpx.Client) -> None:
    """No token is 401, an API token (even an admin's) is 403, both as SCIM errors; a SCIM
    token is 403 on the REST API."""
    with httpx.Client(base_url=f"{api.base_url}/scim/v2") as anonymous:
        response = anonymous.get("/Users")
        error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        error(anonymous.get("/Users", headers={"Authorization": "Bearer gft_wrong"}), 401)
        # the token is checked before the body is read
        garbled = {"Content-Type": "application/scim+json"}
        error(anonymous.post("/Users", content=b"{not json", headers=garbled), 401)
    with api.as_role(Role.ADMIN, "root@example.com") as admin_client:
        detail = error(admin_client.get("/scim/v2/Users"), 403)
        assert "scope 'api'" in detail
    rest = httpx.get(f"{api.base_url}/api/v1/identities", headers=dict(scim.headers))
    assert rest.status_code == 403
    assert rest.json()["error"]["code"] == "wrong_token_scope"


def test_etags_and_conditional_requests(scim: httpx.Client) -> None:
    """GET answers the version as ETag; If-None-Match gives 304; If-Match guards writes."""
    user = new_user(scim, "etag@example.com")
    url = f"/Users/{user['id']}"
    got = scim.get(url)
    assert got.headers["etag"] == 'W/"1"'
    assert scim.get(url, headers={"If-None-Match": 'W/"1"'}).status_code == 304
    title = patch({"op": "replace", "path": "title", "value": "x"})
    error(scim.patch(url, json=title, headers={"If-Match": 'W/"7"'}), 412)
    assert ok(scim.patch(url, json=title, headers={"If-Match": 'W/"1"'}))["title"] == "x"
    assert scim.get(url, headers={"If-None-Match": 'W/"1"'}).status_code == 200
    error(scim.delete(url, headers={"If-Match": 'W/"1"'}), 412)
    assert scim.delete(url, headers={"If-Match": "*"}).status_code == 204
