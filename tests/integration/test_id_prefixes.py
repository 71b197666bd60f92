"""Id prefixes and names on the API's look-ups (what the CLI relies on), the routes the CLI
added (apply, a review item decided by its id, SCIM tokens, an identity's changes), and the
in-process actor that only the process itself can set."""

from __future__ import annotations

import httpx

API = "/api/v1"


def _identities(admin: httpx.Client, *emails: str) -> list[dict[str, object]]:
    created = []
    for email in emails:
        answer = admin.post(f"{API}/identities", json={"email": email})
        assert answer.status_code == 201, answer.text
        created.append(answer.json())
    return created


def test_a_unique_prefix_finds_the_identity_and_a_shared_one_lists_them(
    admin: httpx.Client,
) -> None:
    """GET by a unique prefix, an email or the id answers the identity; a prefix two ids share
    is a 409 naming both; a 3-character prefix is a 400."""
    first, second = _identities(admin, "ana@example.com", "ben@example.com")
    a, b = str(first["id"]), str(second["id"])
    shared = a
    while not b.startswith(shared):
        shared = shared[:-1]
    unique = a[: len(shared) + 4]
    assert admin.get(f"{API}/identities/{unique}").json()["id"] == a
    assert admin.get(f"{API}/identities/ana@example.com").json()["id"] == a
    clash = admin.get(f"{API}/identities/{shared}")
    assert clash.status_code == 409
    error = clash.json()["error"]
    assert error["code"] == "ambiguous_id"
    assert {a, b} <= set(error["candidates"])
    short = admin.get(f"{API}/runs/{a[:3]}")
    assert short.status_code == 400
    assert short.json()["error"]["code"] == "id_prefix_too_short"
    assert admin.get(f"{API}/runs/{'f' * 12}").status_code == 404


def test_an_update_answers_the_changes_it_made(admin: httpx.Client) -> None:
    """PATCH /identities/{id} lists each changed field with its old and new value."""
    (ana,) = _identities(admin, "ana@example.com")
    changed = admin.patch(f"{API}/identities/{ana['id']}", json={"title": "Lead"}).json()
    assert changed["changes"] == {"title": [None, "Lead"]}
    left = admin.post(f"{API}/identities/{ana['id']}/leave").json()
    assert left["changes"]["active"] == [True, False]


def test_apply_creates_then_is_idempotent(admin: httpx.Client) -> None:
    """POST /workflows/apply creates and publishes; the same document again changes nothing."""
    document = {
        "name": "Applied",
        "trigger": {"type": "manual"},
        "steps": [{"id": "a", "type": "set", "config": {"values": {"x": 1}}}],
    }
    first = admin.post(f"{API}/workflows/apply", params={"publish": True}, json=document)
    assert first.status_code == 200, first.text
    assert (first.json()["action"], first.json()["published"]) == ("created", True)
    again = admin.post(f"{API}/workflows/apply", params={"publish": True}, json=document).json()
    assert (again["action"], again["published"], again["version"]) == ("unchanged", False, 1)
    by_name = admin.get(f"{API}/workflows/Applied").json()
    assert by_name["id"] == first.json()["workflow_id"]


def test_a_scim_token_is_made_for_the_provisioning_user(admin: httpx.Client) -> None:
    """POST /scim-tokens answers a token of scope scim, owned by the SCIM provisioning user."""
    made = admin.post(f"{API}/scim-tokens", json={"name": "hr"})
    assert made.status_code == 201, made.text
    assert made.json()["scope"] == "scim"
    owner = admin.get(f"{API}/users/{made.json()['user_id']}").json()
    assert owner["email"] != "admin@example.com"


def test_a_header_named_like_the_in_process_actor_is_no_token(admin: httpx.Client) -> None:
    """Served requests authenticate with a token; a header with the scope key's name is just a
    header (401)."""
    base = str(admin.base_url)
    answer = httpx.get(f"{base}{API}/runs", headers={"grantflow.actor": "system:cli"})
    assert answer.status_code == 401
