"""The sandbox targets on their own: one credential, the calls the examples make and nothing
else, the SCIM server's seeded groups, and a clear error when a port is taken."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from grantflow.config import Settings
from grantflow.errors import ConfigurationError
from grantflow.sandbox import sandbox_token
from grantflow.sandbox.servers import Sandbox, start_sandbox
from tests.support.services import free_port

KEY = bytes(range(32))
TOKEN = sandbox_token(KEY)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    started = start_sandbox(Settings(sandbox_port=free_port(), sandbox_scim_port=free_port()), KEY)
    try:
        yield started
    finally:
        started.stop()


def test_the_api_needs_its_credential_and_knows_only_the_examples_calls(
    sandbox: Sandbox,
) -> None:
    """A wrong credential is a 401; an account made through the Graph stand-in is found by
    email through the Okta one; a call the examples never make is a 404."""
    with httpx.Client(base_url=sandbox.saas_url, timeout=60) as api:
        assert api.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        created = api.post(
            "/v1.0/users",
            headers=bearer,
            json={
                "accountEnabled": True,
                "displayName": "Lin Chen",
                "mailNickname": "lin",
                "userPrincipalName": "lin@example.com",
                "passwordProfile": {"password": "S3cret!"},
            },
        )
        assert created.status_code == 201
        assert "passwordProfile" not in created.json()
        okta = {"Authorization": f"SSWS {TOKEN}"}
        deactivated = api.post("/api/v1/users/lin%40example.com/lifecycle/deactivate", headers=okta)
        assert deactivated.status_code == 200
        assert api.get("/v1.0/groups", headers=bearer).status_code == 404
        (account,) = api.get("/state").json()["accounts"]  # /state needs no credential
    assert (account["email"], account["oktaStatus"]) == ("lin@example.com", "DEPROVISIONED")


def test_the_scim_server_holds_the_groups_behind_the_credential(sandbox: Sandbox) -> None:
    """The SCIM server refuses a request without the credential and lists the four groups."""
    with httpx.Client(base_url=sandbox.scim_url, timeout=60) as scim:
        assert scim.get("/Groups").status_code == 401
        groups = scim.get("/Groups", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    names = sorted(g["displayName"] for g in groups["Resources"])
    assert names == ["Engineering", "Finance", "Research", "Sales"]


def test_a_taken_port_is_one_clear_error() -> None:
    """A port already in use stops the sandbox with an error naming the port's variable."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError) as refused:
            start_sandbox(Settings(sandbox_port=free_port(), sandbox_scim_port=port), KEY)
    assert f"cannot listen on 127.0.0.1:{port}" in refused.value.message
    assert "GRANTFLOW_SANDBOX_SCIM_PORT" in str(refused.value.next_action)
