"""The tutorial (docs/tutorial/index.md) as a reader follows it: its ```sh blocks run in order as
shell commands, against `grantflow demo` and `grantflow serve --sandbox` (what `make run` does)
in a directory of their own, on free ports; a ```yaml title="FILE" block is saved as FILE where
it appears. Placeholders (RUN_ID, TASK_ID, ...) are filled in as the reader copies them from
the output before. Then what the tutorial promises is checked: the onboarding provisioned the
sandbox, the wiki grant is synced, and the failed run succeeded after Retry."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.demo import DEMO_ADMIN, DEMO_APPROVER, NEW_HIRE
from tests.support.processes import (
    ServedProcess,
    grantflow_env,
    grantflow_shim,
    json_output,
    poll,
    run_grantflow,
    serving,
)
from tests.support.services import free_port

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial" / "index.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # the onboarding example's default licence
SETTLED = {"waiting", "paused", "succeeded", "failed", "cancelled", "timed_out"}


@dataclass(frozen=True)
class Block:
    kind: str  # "sh": commands; "file": saved under `name`
    text: str
    name: str | None = None


def tutorial_blocks() -> list[Block]:
    """The tutorial's command blocks and file blocks, in order (output blocks are ```text)."""
    found = []
    for language, info, body in FENCE.findall(TUTORIAL.read_text()):
        titled = re.search(r'title="([^"]+)"', info)
        if language == "sh":
            found.append(Block("sh", body))
        elif titled:
            found.append(Block("file", body, titled[1]))
    return found


def commands(block: str) -> list[str]:
    """One entry per command: continuation lines joined, blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [line.strip() for line in joined.splitlines() if line.strip()]


@dataclass
class Reader:
    """Someone following the tutorial: a directory, their shell's environment, the server."""

    workdir: Path
    env: dict[str, str]
    server: ServedProcess
    sandbox_port: int
    demo: dict[str, Any]

    def api(self, path: str, token: str | None = None) -> Any:
        """What the server answers (the ids a reader copies from the output before; asked
        over the API, which answers at once, where a command would take seconds to start)."""
        headers = {"Authorization": f"Bearer {token or self.demo['token']}"}
        return httpx.get(f"{self.server.url}{path}", headers=headers, timeout=60).json()

    def settle(self) -> None:
        """A reader types at human speed: the runs started so far have moved on (queued and
        running runs have ended or wait on a person) before the next command."""

        def settled() -> bool:
            # a decided approval leaves its run `waiting` until a worker takes it: nothing may
            # be ready or held in the queue either
            queue = self.api("/api/v1/queue")
            if queue["ready"] or queue["leased"]:
                return False
            return all(r["status"] in SETTLED for r in self.api("/api/v1/runs?limit=100")["items"])

        poll(settled, timeout=120, what="the runs to settle")

    # --- what the reader copies from earlier output ---------------------------------------
    def newest_run(self, _command: str) -> str:
        run_id: str = self.api("/api/v1/runs?limit=1")["items"][0]["id"]
        return run_id

    def pending_task(self, command: str) -> str:
        """The newest task waiting in the inbox of the user the command acts as."""
        user = re.search(r"--as (\S+)", command)
        assert user, f"a command with TASK_ID acts --as someone: {command}"
        tokens = {DEMO_ADMIN: self.demo["token"], DEMO_APPROVER: self.demo["approver_token"]}
        tasks = self.api("/api/v1/inbox", tokens[user[1]])["items"]
        assert tasks, f"{user[1]} has nothing in the inbox for: {command}"
        task_id: str = max(t["id"] for t in tasks)
        return task_id

    def wiki_application(self) -> dict[str, Any]:
        apps = self.api("/api/v1/applications?name=Demo Wiki")["items"]
        (wiki,) = [a for a in apps if a["name"] == "Demo Wiki"]
        return dict(wiki)

    def wiki_grant(self, _command: str) -> str:
        """Ada's grant to the Demo Wiki, the one the tutorial dispatches."""
        grants = self.api(f"/api/v1/grants?application_id={self.wiki_application()['id']}")["items"]
        (ada,) = [g["id"] for g in grants if g["identity"]["email"] == "ada@demo.grantflow.dev"]
        return str(ada)

    def wiki_connection(self, _command: str) -> str:
        connections = self.api(f"/api/v1/applications/{self.wiki_application()['id']}/connections")
        (wiki,) = [c["id"] for c in connections if c["name"] == "wiki"]
        return str(wiki)

    def admin_token(self, _command: str) -> str:
        return str(self.demo["token"])

    def placeholders(self) -> dict[str, Callable[[str], str]]:
        return {
            "ADMIN_TOKEN": self.admin_token,
            "RUN_ID": self.newest_run,
            "TASK_ID": self.pending_task,
            "GRANT_ID": self.wiki_grant,
            "CONNECTION_ID": self.wiki_connection,
        }

    def fill(self, command: str) -> str:
        for name, resolve in self.placeholders().items():
            if re.search(rf"\b{name}\b", command):
                command = re.sub(rf"\b{name}\b", resolve(command), command)
        # the tutorial's addresses are the defaults; this reader's ports are free ones
        command = command.replace("http://127.0.0.1:8000", self.server.url)
        return command.replace("127.0.0.1:8470", f"127.0.0.1:{self.sandbox_port}")

    def run(self, command: str) -> str:
        """Run one command as the reader's shell would; its output."""
        exported = re.fullmatch(r"export (\w+)=(\S+)(\s+#.*)?", command)
        if exported:
            self.env[exported[1]] = exported[2]
            return ""
        done = subprocess.run(
            ["bash", "-c", command],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stderr}"
        return done.stdout


def _make_run_is_demo_then_serve() -> None:
    """The fixture stands in for `make run`: check that that is what the Makefile's run does."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nrun:") :].split("\n\n")[0]
    assert "grantflow demo" in recipe
    assert "grantflow serve --sandbox" in recipe


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    """Every command of the tutorial succeeds in order on a fresh demo workspace, and ends with
    an approved onboarding, a synced wiki grant and a failed run fixed by Retry."""
    _make_run_is_demo_then_serve()
    sandbox_port = free_port()
    venv_bin = Path(sys.executable).parent  # where `. .venv/bin/activate` puts grantflow
    # `grantflow` as the reader types it, forked from the fork server (imports paid once)
    shim = grantflow_shim(tmp_path / "bin")
    env = grantflow_env(
        database_url=f"sqlite:///{tmp_path / 'grantflow.db'}",
        secret_key_file=tmp_path / "secret.key",
        sandbox_port=sandbox_port,
        sandbox_scim_port=free_port(),
        outbound_allow="",  # nothing allowlisted: the sandbox is reachable on its own
    )
    env["PATH"] = os.pathsep.join([str(shim), str(venv_bin), env.get("PATH", "")])
    env["COLUMNS"] = "200"  # a terminal wide enough for the ids
    demo = json_output(run_grantflow("demo", "--json", env=env, cwd=tmp_path))

    outputs: list[tuple[str, str]] = []
    with serving(env, tmp_path, args=("--sandbox",), timeout=120) as server:
        reader = Reader(tmp_path, env, server, sandbox_port, demo)
        for block in tutorial_blocks():
            if block.kind == "file":
                assert block.name
                (tmp_path / block.name).write_text(block.text)
                continue
            for command in commands(block.text):
                if command in ("make run", ". .venv/bin/activate"):
                    continue  # done above: the demo, the server, and PATH
                reader.settle()
                filled = reader.fill(command)
                outputs.append((command, reader.run(filled)))
        reader.settle()
        state = httpx.get(f"http://127.0.0.1:{sandbox_port}/state", timeout=60).json()
        runs = reader.api("/api/v1/runs?limit=100")["items"]
        onboarding = [r for r in runs if r["workflow"] == "Onboard new hire"]
        wiki_runs = [r for r in runs if r["workflow"] == "Wiki access"]  # newest first
        grants = reader.api(f"/api/v1/grants?application_id={reader.wiki_application()['id']}")[
            "items"
        ]
        timeline = reader.api(f"/api/v1/runs/{wiki_runs[0]['id']}/timeline")
        stderr = server.stderr()

    assert len(outputs) > 20
    assert env["TOKEN"] == demo["token"]
    # 3. the onboarding, approved, provisioned the sandbox
    assert [r["status"] for r in onboarding] == ["succeeded"]
    account = next(a for a in state["accounts"] if a["userPrincipalName"] == NEW_HIRE)
    assert account["department"] == "Research"
    assert account["assignedLicenses"] == [{"skuId": E3, "disabledPlans": []}]
    (mail,) = state["mails"]
    assert (mail["to"], mail["variables"]["manager"]) == (NEW_HIRE, "Grace Hopper")
    # 4. the grant waiting for a workflow got one
    chips = {g["identity"]["email"]: g["automation"]["state"] for g in grants}
    assert chips == {"ada@demo.grantflow.dev": "synced", "alan@demo.grantflow.dev": "synced"}
    # 5. Alan's run failed on the disabled connection, said what to do, and Retry fixed it
    shown = [out for cmd, out in outputs if cmd.startswith("grantflow runs show")]
    failed = next(out for out in shown if "Wiki access v1  failed" in out)
    assert "next: set its credential or enable it, test it, then Retry the run" in failed
    assert "grantflow runs retry" in failed
    tested = next(out for cmd, out in outputs if cmd.endswith("/test"))
    assert json.loads(tested)["ok"] is True
    assert [r["status"] for r in wiki_runs] == ["succeeded", "succeeded"]  # Retry: no new run
    events = timeline["events"]
    kinds = [e["kind"] for e in events]
    assert kinds.index("failed") < kinds.index("succeeded")
    assert any((e.get("data") or {}).get("operation") == "retry" for e in events)
    assert state["wiki_members"] == ["ada@demo.grantflow.dev", "alan@demo.grantflow.dev"]
    # the HTTP clients' own request lines (full URLs, unredacted) stay out of the log
    assert "HTTP Request" not in stderr
