"""PATCH bodies say what null does, and do it: over real HTTP on both databases, for every PATCH
route and every field of its body, a field the OpenAPI document shows as nullable is cleared by
null (200), and one it does not is refused with a 422 naming the field, changing nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from grantflow.config import Settings
from tests.conftest import Api
from tests.support.admin_objects import Seeded, seed
from tests.support.connections import API, ok

PATCHES = {
    "/api/v1/applications/{app_id}": "application_id",
    "/api/v1/connections/{connection_id}": "connection_id",
    "/api/v1/identities/{identity_id}": "identity_id",
    "/api/v1/jobs/{job_id}": "job_id",
    "/api/v1/users/{user_id}": "user_id",
}


@pytest.fixture
def seeded(api: Api, settings: Settings) -> Seeded:
    return seed(api.database, settings)


def _body_schema(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    name = schema["$ref"].rsplit("/", 1)[-1]
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def _nullable(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null" or any(
        branch.get("type") == "null" for branch in schema.get("anyOf", [])
    )


def test_null_clears_what_the_document_says_and_is_refused_elsewhere(
    admin: httpx.Client, seeded: Seeded
) -> None:
    document = ok(admin.get(f"{API}/openapi.json"))
    patches = {path: ops["patch"] for path, ops in document["paths"].items() if "patch" in ops}
    assert set(patches) == set(PATCHES), "a new PATCH route: add it here"
    refused_somewhere = cleared_somewhere = False
    for template, attribute in PATCHES.items():
        url = template.replace(template[template.index("{") :], getattr(seeded, attribute))
        properties = _body_schema(document, patches[template])["properties"]
        for field, schema in properties.items():
            before = ok(admin.get(url))
            response = admin.patch(url, json={field: None})
            if _nullable(schema):
                assert response.status_code == 200, (url, field, response.text)
                assert response.json().get(field) in (None, before.get(field)), (url, field)
                cleared_somewhere = True
                if before.get(field) is not None:  # put it back (e.g. an identity's email)
                    ok(admin.patch(url, json={field: before[field]}))
                continue
            assert response.status_code == 422, (url, field, response.text)
            error = response.json()["error"]
            assert error["details"][0]["field"] == f"body.{field}", (url, error)
            assert "cannot be null" in error["details"][0]["message"], (url, error)
            assert ok(admin.get(url)) == before, (url, field)
            refused_somewhere = True
    assert refused_somewhere
    assert cleared_somewhere


def test_a_field_left_out_keeps_its_value(admin: httpx.Client, seeded: Seeded) -> None:
    """Only the fields sent change (null is not needed to keep a value)."""
    url = f"{API}/applications/{seeded.application_id}"
    before = ok(admin.get(url))
    after = ok(admin.patch(url, json={"description": "the CRM"}))
    assert after["description"] == "the CRM"
    assert {k: v for k, v in after.items() if k not in ("description", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("description", "updated_at")
    }
