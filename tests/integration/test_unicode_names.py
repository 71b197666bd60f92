"""Names that differ only in case are the same name on SQLite as on PostgreSQL, for every
alphabet (Unicode case folding, not SQLite's ASCII-only lower())."""

from __future__ import annotations

import httpx
import pytest

from grantflow.store.names import name_key

PAIRS = [
    ("Émile", "émile"),
    ("ÉMILE", "e\u0301mile"),  # a decomposed accent is the same letter
    ("Straße", "STRASSE"),
    ("Ωmega", "ωMEGA"),
    ("Жира", "жИРА"),
]


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_an_application_name_differing_only_in_case_is_refused(
    admin: httpx.Client, first: str, second: str
) -> None:
    """The second application is a 409 naming the first, on both databases."""
    created = admin.post("/api/v1/applications", json={"name": first})
    assert created.status_code == 201, created.text
    clash = admin.post("/api/v1/applications", json={"name": second})
    assert clash.status_code == 409, clash.text
    assert first in clash.json()["error"]["message"]
    assert [a["name"] for a in admin.get("/api/v1/applications").json()["items"]] == [first]


def test_a_workflow_binds_to_the_application_whatever_the_case(admin: httpx.Client) -> None:
    """A workflow naming `émile` binds to the application `Émile` (workflow names themselves
    are ASCII), and a second workflow whose name differs only in case is refused."""
    app = admin.post("/api/v1/applications", json={"name": "Émile"}).json()
    document = {
        "name": "Onboard Emile",
        "application": "émile",
        "trigger": {"type": "manual"},
        "steps": [{"id": "a", "type": "set", "config": {"values": {"k": 1}}}],
    }
    created = admin.post("/api/v1/workflows", json=document)
    assert created.status_code == 201, created.text
    assert created.json()["workflow"]["application_id"] == app["id"]
    again = admin.post("/api/v1/workflows", json={**document, "name": "ONBOARD emile"})
    assert again.status_code == 409, again.text
    found = admin.get("/api/v1/workflows", params={"name": "board e"}).json()["items"]
    assert [w["name"] for w in found] == ["Onboard Emile"]


def test_name_keys_fold_case_and_composition() -> None:
    """The caseless key treats case, ß/ss and composed accents alike, and keeps letters apart."""
    for first, second in PAIRS:
        assert name_key(first) == name_key(second)
    assert name_key("Émile") != name_key("Emile")
