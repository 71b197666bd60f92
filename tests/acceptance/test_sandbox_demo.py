"""The first hour, as `make run` and the README's first section do it: `grantflow demo`, then
`grantflow serve --sandbox`, as subprocesses in a directory of their own (SQLite, free ports,
no outbound allowlist); the approver approves the new hire's onboarding from the command line
and the run succeeds against the sandbox targets."""

from __future__ import annotations

import base64
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.demo import DEMO_APPROVER, NEW_HIRE
from grantflow.sandbox import sandbox_token
from tests.support.processes import (
    ServedProcess,
    grantflow_env,
    json_output,
    poll,
    run_grantflow,
    serving,
)
from tests.support.services import free_port
from tests.support.target import Reply, running_target

# (each step is a new process: generous on a loaded machine)
pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]
README = Path(__file__).resolve().parents[2] / "README.md"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # the onboarding example's default licence


@dataclass
class Newcomer:
    """A fresh checkout's working directory and the environment `make run` would have."""

    workdir: Path
    env: dict[str, str]
    sandbox_port: int

    def grantflow(self, *args: str) -> Any:
        return json_output(run_grantflow(*args, env=self.env, cwd=self.workdir))

    def sandbox_state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(
            f"http://127.0.0.1:{self.sandbox_port}/state", timeout=60
        ).json()
        return state


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


def readme_commands() -> list[list[str]]:
    """The commands of the README's first-hour walk-through, in order, comments dropped."""
    text = README.read_text()
    block = text[text.index("In a second terminal") :].split("```sh\n", 1)[1].split("```")[0]
    return [
        shlex.split(line.split("  #")[0])
        for line in block.splitlines()
        if line.startswith(("grantflow ", "curl "))
    ]


def _run(server: ServedProcess, token: str, run_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    shown: dict[str, Any] = httpx.get(
        f"{server.url}/api/v1/runs/{run_id}", headers=headers, timeout=60
    ).json()
    return shown


def test_the_demo_onboarding_is_approved_and_succeeds(
    newcomer: Newcomer, served: tuple[dict[str, Any], ServedProcess]
) -> None:
    """The demo's new hire waits for her manager; the README's commands approve it and the run
    creates her accounts in the sandbox, assigns the licence and sends the welcome mail."""
    demo, server = served
    assert demo["created"] is True
    assert demo["approver_email"] == DEMO_APPROVER
    assert demo["approver_token"].startswith("gft_")

    def waiting_approval() -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = newcomer.grantflow(
            "inbox", "list", "--as", DEMO_APPROVER, "--json"
        )
        return tasks

    (task,) = poll(waiting_approval, timeout=60, what="the onboarding approval in the inbox")
    assert task["run_id"] == demo["onboarding_run_id"]
    assert task["title"] == "Approve the accounts of Katherine Johnson"
    assert newcomer.sandbox_state()["accounts"] == []  # nothing before the approval

    finished: dict[str, Any] = {}
    for command in readme_commands():
        if command[0] == "curl":  # (the sandbox's state, read below on this test's port)
            assert command[1:] == ["http://127.0.0.1:8470/state"]
            continue
        if command[1] == "runs" and not finished:  # "succeeded, a few seconds later"
            finished = poll(
                lambda: (
                    (r := _run(server, demo["token"], task["run_id"]))["status"]
                    in ("succeeded", "failed")
                    and r
                ),
                timeout=120,
                what="the onboarding run to finish",
            )
            assert finished["status"] == "succeeded", finished["failure"]
        args = [{"TASK_ID": task["id"], "RUN_ID": task["run_id"]}.get(a, a) for a in command]
        done = run_grantflow(*args[1:], env=newcomer.env, cwd=newcomer.workdir)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    assert "succeeded" in done.stdout  # `runs show RUN_ID`, the last command
    runs = newcomer.grantflow("runs", "list", "--workflow", "Onboard new hire", "--json")
    assert [(r["id"], r["status"]) for r in runs] == [(task["run_id"], "succeeded")]
    state = newcomer.sandbox_state()
    (account,) = state["accounts"]
    assert (account["userPrincipalName"], account["department"]) == (NEW_HIRE, "Research")
    assert account["assignedLicenses"] == [{"skuId": E3, "disabledPlans": []}]
    (mail,) = state["mails"]
    assert (mail["to"], mail["variables"]["manager"]) == (NEW_HIRE, "Grace Hopper")
    # the HTTP clients' own request lines (full URLs, unredacted) stay out of the log
    assert "HTTP Request" not in server.stderr()


def test_a_second_make_run_changes_nothing_and_works(newcomer: Newcomer) -> None:
    """Running `demo` and `serve --sandbox` again creates nothing new (no token printed, a new
    one-time sign-in link), and the demo connections reach the restarted sandbox."""
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
            (app,) = [
                a
                for a in client.get("/api/v1/applications").json()["items"]
                if a["name"] == "Workforce identity"
            ]
            connections = client.get(f"/api/v1/applications/{app['id']}/connections").json()
            tested = {
                c["name"]: client.post(f"/api/v1/connections/{c['id']}/test").json()
                for c in connections
            }
    assert {name: r["ok"] for name, r in tested.items()} == dict.fromkeys(
        ("directory", "entra", "google", "mailer", "okta", "wiki"), True
    )


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
