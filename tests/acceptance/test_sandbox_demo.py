"""The demo workspace `make run` starts: `grantflow demo`, then `grantflow serve --sandbox`, as
subprocesses in a directory of their own (SQLite, free ports, no outbound allowlist). A second
`make run` changes nothing, and the outbound guard lets the sandbox in but no other loopback
port. (The walk through it — approving the onboarding, a first workflow, a Retry — is the
tutorial's, run by test_tutorial.py.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.sandbox import sandbox_token
from tests.support.processes import (
    ServedProcess,
    grantflow_env,
    json_output,
    run_grantflow,
    serving,
)
from tests.support.services import free_port
from tests.support.target import Reply, running_target

# (each step is a new process: generous on a loaded machine)
pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]


@dataclass
class Newcomer:
    """A fresh checkout's working directory and the environment `make run` would have."""

    workdir: Path
    env: dict[str, str]
    sandbox_port: int

    def grantflow(self, *args: str) -> Any:
        return json_output(run_grantflow(*args, env=self.env, cwd=self.workdir))


@pytest.fixture
def newcomer(tmp_path: Path) -> Newcomer:
    sandbox_port = free_port()
    env = grantflow_env(
        database_url=f"sqlite:///{tmp_path / 'grantflow.db'}",
        secret_key_file=tmp_path / "secret.key",
        sandbox_port=sandbox_port,
        sandbox_scim_port=free_port(),
        outbound_allow="",  # nothing allowlisted: the sandbox is reachable on its own
    )
    return Newcomer(tmp_path, env, sandbox_port)


@pytest.fixture
def served(newcomer: Newcomer) -> Iterator[tuple[dict[str, Any], ServedProcess]]:
    """`make run`: the demo workspace, then Grantflow with the sandbox."""
    demo = newcomer.grantflow("demo", "--json")
    with serving(newcomer.env, newcomer.workdir, args=("--sandbox",), timeout=120) as server:
        yield demo, server


def test_a_second_make_run_changes_nothing_and_works(newcomer: Newcomer) -> None:
    """Running `demo` and `serve --sandbox` again creates nothing new (no token printed, a new
    one-time sign-in link), and every demo connection reaches the restarted sandbox."""
    first = newcomer.grantflow("demo", "--json")
    again = newcomer.grantflow("demo", "--json")
    assert again["created"] is False
    assert (again["token"], again["approver_token"]) == (None, None)
    # each run prints a fresh one-time console sign-in link for the admin
    links = [first["sign_in_url"], again["sign_in_url"]]
    assert all(link.startswith("http://127.0.0.1:8000/login/link/") for link in links)
    assert links[0] != links[1]
    with serving(newcomer.env, newcomer.workdir, args=("--sandbox",), timeout=120) as server:
        client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {first['token']}"}, timeout=60
        )
        with client:
            tested = {}
            for app in client.get("/api/v1/applications").json()["items"]:
                for c in client.get(f"/api/v1/applications/{app['id']}/connections").json():
                    answer = client.post(f"/api/v1/connections/{c['id']}/test").json()
                    tested[f"{app['name']}/{c['name']}"] = answer["ok"]
    workforce = ("directory", "entra", "google", "mailer", "okta", "wiki")
    assert tested == {
        **{f"Workforce identity/{name}": True for name in workforce},
        "Demo Wiki/wiki": True,  # (the tutorial's first workflow uses it)
    }


def test_the_guard_allows_the_sandbox_and_no_other_loopback_port(
    newcomer: Newcomer, served: tuple[dict[str, Any], ServedProcess]
) -> None:
    """With the sandbox running and nothing allowlisted, the sandbox answers the workspace's
    credential but a connection to another server on 127.0.0.1 is refused by the guard."""
    demo, server = served
    headers = {"Authorization": f"Bearer {demo['token']}"}
    with (
        running_target() as other,
        httpx.Client(base_url=server.url, headers=headers, timeout=60) as client,
    ):
        other.on("/", Reply(200, {"ok": True}))
        (wiki,) = [
            a
            for a in client.get("/api/v1/applications").json()["items"]
            if a["name"] == "Demo Wiki"
        ]
        created = client.post(
            f"/api/v1/applications/{wiki['id']}/connections",
            json={"name": "local", "base_url": other.url, "auth_kind": "none"},
        )
        assert created.status_code == 201, created.text
        tested = client.post(f"/api/v1/connections/{created.json()['id']}/test").json()
    assert tested["ok"] is False
    assert tested["error_class"] == "safety"
    assert "127.0.0.1 is a loopback address" in tested["message"]
    assert other.calls("/") == []
    # the sandbox's own credential is derived from this workspace's master key
    key = base64.urlsafe_b64decode((newcomer.workdir / "secret.key").read_text().split()[0])
    answered = httpx.get(
        f"http://127.0.0.1:{newcomer.sandbox_port}/",
        headers={"Authorization": f"Bearer {sandbox_token(key)}"},
        timeout=60,
    )
    assert answered.status_code == 200
