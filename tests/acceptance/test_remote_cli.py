"""The CLI against a remote Grantflow: `grantflow serve` (with the demo workspace and the
sandbox) runs in one directory; the operator's commands run in another, with no database at
all, through GRANTFLOW_URL and a token, or the profile `grantflow login` saves."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from grantflow import __version__
from grantflow.demo import DEMO_ADMIN, DEMO_APPROVER
from tests.support.processes import (
    COMMAND,
    ServedProcess,
    grantflow_env,
    json_output,
    poll,
    run_grantflow,
    serving,
)
from tests.support.services import free_port

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]

FAILING = {
    "name": "Fails on bad input",
    "trigger": {"type": "manual"},
    "steps": [{"id": "add", "type": "set", "config": {"values": {"n": "{{ input.n + 1 }}"}}}],
}


@dataclass
class Site:
    """A served Grantflow, its demo workspace, and an operator's empty directory."""

    server: ServedProcess
    demo: dict[str, Any]
    operator: Path  # where commands run: no database, no key file

    def env(self, token: str | None = None, **settings: str) -> dict[str, str]:
        env = grantflow_env(url=self.server.url, **settings)
        if token:
            env["GRANTFLOW_TOKEN"] = token
        return env

    def run(
        self, *args: str, token: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        chosen = env if env is not None else self.env(token or self.demo["token"])
        return run_grantflow(*args, env=chosen, cwd=self.operator)

    def json(self, *args: str, token: str | None = None) -> Any:
        return json_output(self.run(*args, "--json", token=token))

    def refused(self, *args: str, token: str | None = None) -> list[str]:
        done = self.run(*args, token=token)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return done.stderr.splitlines()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("server")
    env = grantflow_env(
        database_url=f"sqlite:///{home / 'grantflow.db'}",
        secret_key_file=home / "secret.key",
        sandbox_port=free_port(),
        sandbox_scim_port=free_port(),
        outbound_allow="",
    )
    demo = json_output(run_grantflow("demo", "--json", env=env, cwd=home))
    with serving(env, home, args=("--sandbox",), timeout=120) as server:
        yield Site(server, demo, tmp_path_factory.mktemp("operator"))


def test_lists_and_shows_through_the_server_with_no_local_database(site: Site) -> None:
    """`runs list`, `runs show` (by a prefix), workflows, grants and connections answer from
    the server; nothing is created in the operator's directory."""
    runs = site.json("runs", "list")
    assert site.demo["onboarding_run_id"] in [r["id"] for r in runs]
    run_id = site.demo["onboarding_run_id"]
    shown = site.json("runs", "show", run_id[:23])
    assert (shown["id"], shown["workflow"]) == (run_id, "Onboard new hire")
    table = site.run("runs", "list")
    assert table.returncode == 0, table.stderr
    assert run_id in table.stdout  # whole, never cut
    names = {w["name"] for w in site.json("workflows", "list")}
    assert {"Onboard new hire", "Offboard leaver"} <= names
    grants = site.json("grants", "list", "--application", "Demo Wiki")
    assert [g["application"]["name"] for g in grants] == ["Demo Wiki"]
    connections = site.json("connections", "list", "Workforce identity")
    assert {c["name"] for c in connections} >= {"directory", "mailer"}
    assert all(c["credential"] is None or "token" not in c["credential"] for c in connections)
    assert sorted(os.listdir(site.operator)) == []


def test_the_approver_approves_the_waiting_run_with_their_token(site: Site) -> None:
    """The approver's token lists the onboarding approval and approves it by an id prefix; the
    decision is theirs, through the CLI, and the run succeeds."""
    token = site.demo["approver_token"]

    def waiting() -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = site.json("inbox", "list", token=token)
        return tasks

    (task,) = poll(waiting, timeout=120, what="the onboarding approval in the inbox")
    assert site.json("inbox", "show", task["id"], token=token)["run_id"] == task["run_id"]
    approved = site.json("inbox", "approve", task["id"][:30], "-m", "welcome", token=token)
    assert approved["status"] == "approved"
    assert [(d["by"], d["via"]) for d in approved["decisions"]] == [(DEMO_APPROVER, "cli")]
    finished = poll(
        lambda: (
            (r := site.json("runs", "show", task["run_id"]))["status"] in ("succeeded", "failed")
            and r
        ),
        timeout=120,
        what="the onboarding run to finish",
    )
    assert finished["status"] == "succeeded", finished["failure"]
    # --as names the person; with a token it must be the token's user
    other = site.refused("inbox", "list", "--as", DEMO_ADMIN, token=token)
    assert other[0] == (
        f"error: --as {DEMO_ADMIN}: this token belongs to {DEMO_APPROVER}; with a token you act "
        "as its user"
    )


LOOPING = {
    "name": "Polls sixty times",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "poll", "type": "set", "config": {"values": {"answer": "pending"}}, "next": "again"},
        {
            "id": "again",
            "type": "condition",
            "branches": [{"when": "true", "next": "poll"}],
            "max_iterations": 60,
        },
    ],
}


def test_a_long_run_shows_its_last_steps_and_lists_the_rest(site: Site) -> None:
    """A run of 120 step runs (a loop that went over its bound): `runs show` lists its last 50
    and names the command for the rest; `runs steps` lists every one, newest first;
    `runs timeline --last 3` its last events."""
    document = site.operator.parent / "looping.yaml"
    document.write_text(yaml.safe_dump(LOOPING))
    site.json("apply", "-f", str(document), "--publish")
    started = site.json("runs", "start", LOOPING["name"])
    failed = poll(
        lambda: (r := site.json("runs", "show", started["id"]))["status"] == "failed" and r,
        timeout=120,
        what="the loop to go over its bound",
    )
    assert failed["steps_total"] == 120
    assert [s["sequence"] for s in failed["steps"]] == list(range(71, 121))
    shown = site.run("runs", "show", started["id"][:13])
    assert shown.returncode == 0, shown.stderr
    assert f"... 70 earlier step runs (grantflow runs steps {started['id']})" in shown.stdout
    assert shown.stdout.count(" attempts=") == 50
    steps = site.json("runs", "steps", started["id"], "--limit", "500")
    assert [s["sequence"] for s in steps] == list(range(120, 0, -1))
    last = site.json("runs", "timeline", started["id"], "--last", "3")
    assert [e["kind"] for e in last][-1] == "failed"
    assert len(last) == 3


def test_runs_are_listed_by_a_workflows_version_and_a_time_window(site: Site) -> None:
    """`runs list --workflow W --version N` lists that version's runs; a version without a
    workflow is refused with the command to run instead (taken here); `--since` and `--until`
    bound the creation time, and a time the API cannot read is named."""
    document = site.operator.parent / "versioned.yaml"
    versioned: dict[str, Any] = {
        "name": "Versioned",
        "trigger": {"type": "manual"},
        "steps": [{"id": "mark", "type": "set", "config": {"values": {"v": 1}}}],
    }
    document.write_text(yaml.safe_dump(versioned))
    site.json("apply", "-f", str(document), "--publish")
    first = site.json("runs", "start", "Versioned")
    versioned["steps"][0]["config"]["values"]["v"] = 2
    document.write_text(yaml.safe_dump(versioned))
    assert site.json("apply", "-f", str(document), "--publish")["published"] is True
    second = site.json("runs", "start", "Versioned")
    assert (first["version"], second["version"]) == (1, 2)

    def listed(*args: str) -> list[str]:
        return [r["id"] for r in site.json("runs", "list", *args)]

    assert listed("--workflow", "Versioned", "--version", "1") == [first["id"]]
    assert listed("--workflow", "Versioned", "--version", "2") == [second["id"]]
    assert listed("--workflow", "Versioned") == [second["id"], first["id"]]

    refused = site.run("runs", "list", "--version", "1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines() == [
        "error: --version 1: a version number belongs to one workflow; give --workflow too",
        "  next: grantflow runs list --workflow NAME --version 1",
    ]
    (next_line,) = [line for line in refused.stderr.splitlines() if "next:" in line]
    taken = next_line.split("next: grantflow ")[1].replace("NAME", "Versioned").split()
    assert [r["id"] for r in site.json(*taken)] == [first["id"]]

    created = dt.datetime.fromisoformat(second["created_at"].replace("Z", "+00:00"))
    assert listed("--workflow", "Versioned", "--since", created.isoformat()) == [second["id"]]
    assert listed("--workflow", "Versioned", "--until", created.isoformat()) == [first["id"]]
    unreadable = site.run("runs", "list", "--since", "last tuesday")
    assert unreadable.returncode == 2, unreadable.stdout + unreadable.stderr
    assert unreadable.stderr.splitlines() == [
        "error: --since 'last tuesday': not an ISO 8601 date or time",
        "  next: give one such as 2026-01-31 or 2026-01-31T09:00:00Z to --since",
    ]
    (advice,) = [line for line in unreadable.stderr.splitlines() if "next:" in line]
    taken = advice.split("such as ")[1].split(" or ")[1].split()[0]
    assert listed("--workflow", "Versioned", "--since", taken) == [second["id"], first["id"]]


def test_an_operator_retries_a_failed_run(site: Site) -> None:
    """A run failed on its input is retried from the command line: it is queued again from
    its failed step and the audit names the operator."""
    document = site.operator.parent / "failing.yaml"
    document.write_text(yaml.safe_dump(FAILING))
    applied = site.json("apply", "-f", str(document), "--publish")
    assert applied["published"] is True
    sample = site.operator.parent / "input.json"
    sample.write_text(json.dumps({"n": "text"}))
    started = site.json("runs", "start", FAILING["name"], "--input", str(sample))
    failed = poll(
        lambda: (r := site.json("runs", "show", started["id"]))["status"] == "failed" and r,
        timeout=120,
        what="the run to fail",
    )
    assert failed["next"] or failed["failure"]
    retried = site.json("runs", "retry", started["id"])
    assert retried["id"] == started["id"]
    assert retried["status"] in ("queued", "running", "failed")
    entries = site.json("audit", "list", "--action", "run.retried", "--target-id", started["id"])
    assert [e["actor"] for e in entries] == [DEMO_ADMIN]


def test_a_scoped_token_is_refused_what_its_role_lacks(site: Site) -> None:
    """A viewer's token reads runs but a retry or a grant is refused with the 403's message and
    its next action; the viewer's own token list works."""
    site.json("users", "create", "--email", "viewer@example.com", "--role", "viewer")
    created = site.json("tokens", "create", "--user", "viewer@example.com", "--name", "ro")
    token = created["token"]
    assert site.json("runs", "list", token=token)
    refused = site.refused("runs", "retry", site.demo["onboarding_run_id"], token=token)
    assert refused == [
        "error: this action needs the permission run:operate",
        "  next: ask an admin for a role that includes run:operate",
    ]
    denied = site.refused(
        "grants", "grant", "--identity", DEMO_APPROVER, "--application", "Demo Wiki",
        token=token,
    )  # fmt: skip
    assert denied[0] == "error: this action needs the permission grant:write"
    mine = site.json("tokens", "list", token=token)
    assert [t["name"] for t in mine] == ["ro"]
    assert token not in json.dumps(mine)


def test_an_application_and_its_connection_are_created_from_the_command_line(
    site: Site,
) -> None:
    """`applications create`, `connections create` with its credential from a file, then
    `connections replace-credential` by an id prefix: the secrets are never printed and the
    credential's metadata names who replaced it."""
    app = site.json("applications", "create", "--name", "Payroll", "--kind", "saas")
    secret = site.operator.parent / "secret.json"
    secret.write_text(json.dumps({"token": "tok-first-8812"}))
    created = site.json(
        "connections", "create", "Payroll", "--name", "api",
        "--base-url", "https://payroll.example.com/v1", "--auth-kind", "bearer",
        "--credential-file", str(secret),
    )  # fmt: skip
    assert (created["application_id"], created["auth_kind"]) == (app["id"], "bearer")
    assert created["credential_set"] is True
    secret.write_text(json.dumps({"token": "tok-second-9913"}))
    replaced = site.run(
        "connections", "replace-credential", created["id"][:30], "--from-file", str(secret),
        "--json",
    )  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    shown = json.loads(replaced.stdout)
    assert shown["credential"]["replaced_by"] == DEMO_ADMIN
    for output in (json.dumps(created), replaced.stdout, replaced.stderr):
        assert "tok-first" not in output
        assert "tok-second" not in output
    bad = site.refused(
        "connections", "create", "Payroll", "--name", "hr", "--base-url", "not a url"
    )
    assert bad[0].startswith("error: --base-url: ")


WAITS = {
    "name": "Waits an hour",
    "trigger": {"type": "manual"},
    "steps": [{"id": "later", "type": "delay", "config": {"duration": "1h"}}],
}
NIGHTLY = {
    "name": "Nightly check",
    "trigger": {"type": "schedule", "cron": "0 3 * * *"},
    "steps": [{"id": "note", "type": "set", "config": {"values": {"done": True}}}],
}


def test_json_of_commands_that_change_things(site: Site) -> None:
    """The commands that act print what they did as JSON: workflows, runs, jobs, users,
    applications, credentials, reviews and reports."""
    folder = site.operator.parent
    waits = folder / "waits.yaml"
    waits.write_text(yaml.safe_dump(WAITS))
    assert site.json("apply", "-f", str(waits))["action"] == "created"
    name = WAITS["name"]
    assert site.json("workflows", "publish", name, "1")["published"] == 1
    assert site.json("workflows", "disable", name)["status"] == "disabled"
    assert site.json("workflows", "enable", name)["enabled"] is True
    assert site.json("workflows", "activate", name, "1")["active_version"] == 1
    assert site.json("workflows", "recompile", name, "1")["recompiled"] is True

    run = site.json("runs", "start", name)
    poll(
        lambda: site.json("runs", "show", run["id"])["status"] == "waiting",
        timeout=120,
        what="the run to wait on its delay",
    )
    assert site.json("runs", "pause", run["id"])["id"] == run["id"]
    assert site.json("runs", "resume", run["id"])["id"] == run["id"]
    assert site.json("runs", "cancel", run["id"])["status"] == "cancelled"
    again = site.json("runs", "replay", run["id"])
    assert again["id"] != run["id"]
    site.json("runs", "cancel", again["id"])

    nightly = folder / "nightly.yaml"
    nightly.write_text(yaml.safe_dump(NIGHTLY))
    site.json("apply", "-f", str(nightly), "--publish")
    (job,) = [j for j in site.json("jobs", "list") if j["name"] == NIGHTLY["name"]]
    assert site.json("jobs", "show", job["id"])["cron"] == "0 3 * * *"
    assert len(site.json("jobs", "preview", job["id"])["next"]) == 10
    assert site.json("jobs", "pause", job["id"])["status"] == "paused"
    assert site.json("jobs", "resume", job["id"])["status"] == "enabled"
    assert site.json("jobs", "disable", job["id"])["status"] == "disabled"
    assert site.json("jobs", "enable", job["id"])["status"] == "enabled"
    fired = site.json("jobs", "run-now", job["id"])
    assert fired["manual"] is True
    assert [o["id"] for o in site.json("jobs", "occurrences", job["id"])] == [fired["id"]]

    site.json("users", "create", "--email", "ops@example.com", "--role", "viewer")
    changed = site.json("users", "set", "--email", "ops@example.com", "--role", "operator")
    assert changed["roles"] == ["operator"]

    site.json("applications", "create", "--name", "Scratch")
    site.json(
        "connections", "create", "Scratch", "--name", "api", "--auth-kind", "bearer",
        "--base-url", "https://scratch.example.com",
    )  # fmt: skip
    secret = folder / "scratch.json"
    secret.write_text(json.dumps({"token": "tok-scratch-7714"}))
    stored = site.json(
        "connections", "set-credential", "Scratch", "api", "--from-file", str(secret)
    )
    assert stored["credential_set"] is True
    assert "tok-scratch" not in json.dumps(stored)
    site.json("applications", "create", "--name", "Unused")
    assert site.json("applications", "delete", "Unused")["deleted"] is True

    config = folder / "review.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "Spot check",
                "reviewer": "users",
                "users": [DEMO_APPROVER],
                "fallback": {"users": [DEMO_ADMIN]},
                "duration": "7d",
            }
        )
    )
    review = site.json("reviews", "start", "-f", str(config))
    assert site.json("reviews", "show", review["id"][:30])["name"] == "Spot check"
    written = site.json("reviews", "report", "Spot check", "--csv", str(folder / "review.csv"))
    assert written["rows"] == review["progress"]["total"]

    report = site.json("reports", "generate", "grants_by_identity")
    copy = folder / "grants.csv"
    downloaded = site.json("reports", "download", report["id"], "-o", str(copy))
    assert downloaded["sha256"] == report["sha256"]
    assert copy.stat().st_size == report["size"]


def test_a_csv_import_is_handed_to_the_workers_and_followed_to_its_end(site: Site) -> None:
    """On a server, `identities import` hands the file to the workers and waits for them: the
    same report and exit codes as an import in the request; `--no-wait` answers with the
    import; `imports` lists and shows them; a finished import cannot be cancelled."""
    people = site.operator / "joiners.csv"
    people.write_text(
        "email,display_name,manager\n"
        "jo@example.com,Jo,kai@example.com\n"
        "kai@example.com,Kai,\n"
        "bad-email,Nobody,\n"
    )
    done = site.run("identities", "import", str(people), "--json")
    assert done.returncode == 3, done.stderr  # a row was rejected; the others imported
    report = json.loads(done.stdout)
    assert (report["status"], report["filename"]) == ("succeeded", "joiners.csv")
    assert report["counts"] == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 1}
    assert [r["row"] for r in report["results"]] == [2, 3, 4]
    assert report["results"][0]["events"] == ["identity_joined"]
    assert site.json("identities", "show", "jo@example.com")["manager"] == "kai@example.com"

    queued = site.json("identities", "import", str(people), "--no-wait")
    assert queued["status"] in ("queued", "running", "succeeded")
    shown = poll(
        lambda: (
            (v := site.json("identities", "imports", queued["id"][:13]))["status"] == "succeeded"
            and v
        ),
        timeout=120,
        what="the second import to be done by the workers",
    )
    assert shown["counts"] == {"created": 0, "updated": 0, "unchanged": 2, "rejected": 1}
    assert [r["row"] for r in shown["rejected_rows"]] == [4]
    listed = site.json("identities", "imports")
    assert [i["id"] for i in listed[:2]] == [queued["id"], report["import_id"]]
    refused = site.refused("identities", "cancel-import", queued["id"])
    assert refused[0].startswith(f"error: identity import {queued['id']} already succeeded")


def test_ids_by_prefix_and_the_refusal_of_an_ambiguous_or_short_one(site: Site) -> None:
    """A unique id prefix works like the id; one that several ids share lists them; one shorter
    than 4 characters is refused."""
    identities = site.json("identities", "list")
    ids = sorted(i["id"] for i in identities)
    shared = ids[0]
    while not all(i.startswith(shared) for i in ids):
        shared = shared[:-1]
    assert len(shared) >= 4  # made in the same second: time-ordered ids share their start
    ambiguous = site.refused("identities", "show", shared)
    assert ambiguous[0].startswith(f"error: identity id prefix {shared!r} is ambiguous: ")
    assert ids[0] in ambiguous[0]
    assert ambiguous[1] == "  next: give more characters of the id (or the whole id)"
    unique = ids[0][: len(shared) + 6]
    assert site.json("identities", "show", unique)["id"] == ids[0]
    short = site.refused("runs", "show", "01a")
    assert short == [
        "error: run id '01a' is too short: an id prefix needs at least 4 characters",
        "  next: give more characters of the id (or the whole id)",
    ]


def test_login_saves_a_private_profile_that_later_commands_use(site: Site) -> None:
    """`login --token-stdin` checks the token and saves URL and token (mode 0600, never
    printed); a command with no URL or token then uses it; `logout` forgets it."""
    config = site.operator.parent / "config"
    env = grantflow_env()
    env["XDG_CONFIG_HOME"] = str(config)
    logged = subprocess.run(
        [*COMMAND, "login", "--url", site.server.url, "--token-stdin"],
        input=site.demo["approver_token"] + "\n",
        env=env,
        cwd=site.operator,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert logged.returncode == 0, logged.stderr
    assert site.demo["approver_token"] not in logged.stdout + logged.stderr
    assert f"logged in to {site.server.url} as {DEMO_APPROVER}" in logged.stdout
    profile = config / "grantflow" / "profile.toml"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    again = subprocess.run(
        [*COMMAND, "login", "--url", site.server.url, "--token-stdin", "--json"],
        input=site.demo["approver_token"] + "\n",
        env=env,
        cwd=site.operator,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json_output(again) == {
        "url": site.server.url.rstrip("/"),
        "email": DEMO_APPROVER,
        "profile": str(profile),
    }
    listed = run_grantflow("runs", "list", "--json", env=env, cwd=site.operator)
    assert site.demo["onboarding_run_id"] in [r["id"] for r in json_output(listed)]
    out = json_output(run_grantflow("logout", "--json", env=env, cwd=site.operator))
    assert out["logged_out"] is True
    assert not profile.exists()
    local = run_grantflow("runs", "list", env=env, cwd=site.operator)
    assert local.returncode == 2  # no profile: the local database, which is not there
    assert "GRANTFLOW_DATABASE_URL" in local.stderr


def test_a_header_cannot_act_as_the_in_process_cli(site: Site) -> None:
    """The in-process actor is an ASGI scope key no request can set: a served request with a
    header of that name and no token is refused."""
    answered = httpx.get(
        f"{site.server.url}/api/v1/runs", headers={"grantflow.actor": "system:cli"}, timeout=60
    )
    assert answered.status_code == 401
    remote = site.run("runs", "list", env=grantflow_env(url=site.server.url))
    assert remote.returncode == 2
    assert remote.stderr.splitlines()[0].startswith("error: GRANTFLOW_TOKEN: talking to ")


def test_version(site: Site) -> None:
    """`grantflow --version` prints the package version and needs nothing else."""
    done = run_grantflow("--version", env=grantflow_env(), cwd=site.operator)
    assert (done.returncode, done.stdout) == (0, f"grantflow {__version__}\n")


# --- --json on every command that prints data ---------------------------------------------


READS: list[tuple[str, ...]] = [
    ("runs", "list"),
    ("runs", "show", "{run}"),
    ("runs", "timeline", "{run}"),
    ("runs", "evidence", "list", "{run}"),
    ("queue", "status"),
    ("workflows", "list"),
    ("workflows", "show", "Onboard new hire"),
    ("workflows", "versions", "Onboard new hire"),
    ("workflows", "export", "Onboard new hire"),
    ("workflows", "diff", "Onboard new hire", "1", "1"),
    ("workflows", "validate", "Onboard new hire", "1"),
    ("workflows", "dry-run", "Onboard new hire"),
    ("grants", "list"),
    ("grants", "show", "{grant}"),
    ("identities", "list"),
    ("identities", "show", DEMO_APPROVER),
    ("identities", "events", DEMO_APPROVER),
    ("identities", "imports"),
    ("applications", "list"),
    ("applications", "show", "Demo Wiki"),
    ("connections", "list", "Workforce identity"),
    ("connections", "show", "{connection}"),
    ("connections", "test", "Workforce identity", "directory"),
    ("incidents", "list"),
    ("jobs", "list"),
    ("jobs", "preview", "--cron", "0 9 * * 1"),
    ("reviews", "list"),
    ("controls", "list"),
    ("controls", "evaluations"),
    ("reports", "list"),
    ("users", "list"),
    ("tokens", "list"),
    ("tokens", "list", "--user", DEMO_ADMIN),
    ("audit", "list"),
    ("inbox", "list"),
]


@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_json_of_each_reading_command_parses(site: Site, command: tuple[str, ...]) -> None:
    """Each command that prints data prints JSON with --json, through the server."""
    grant = site.json("grants", "list")[0]["id"]
    app = site.json("applications", "show", "Workforce identity")["id"]
    connection = site.json("connections", "list", app)[0]["id"]
    ids = {"run": site.demo["onboarding_run_id"], "grant": grant, "connection": connection}
    args = [a.format(**ids) for a in command]
    done = site.run(*args, "--json")
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)


ESCALATES = {
    "name": "Asks the lead",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "add",
            "type": "set",
            "on_failure": "escalate",
            "config": {"values": {"n": "{{ input.n + 1 }}"}},
            "next": "ask",
        },
        {
            "id": "ask",
            "type": "approval",
            "config": {"title": "Go on?", "approvers": {"users": ["lead@example.com"]}},
        },
    ],
}
WIKI_GRANT = {
    "name": "Wiki access",
    "application": "Demo Wiki",
    "trigger": {"type": "access_granted"},
    "steps": [{"id": "note", "type": "set", "config": {"values": {"done": True}}}],
}
HOOKED = {
    "name": "Hooked",
    "trigger": {"type": "webhook"},
    "safety": {"max_runs_per_minute": 1},
    "steps": [{"id": "note", "type": "set", "config": {"values": {"done": True}}}],
}


def test_json_of_the_inbox_safety_and_grant_commands(site: Site) -> None:
    """Escalated failures retried, skipped and failed, an approval reassigned then rejected, a
    webhook workflow's secret, status and deliveries, a spend cap, a workflow resumed after its
    breaker tripped, and a grant's workflow dispatched again: each prints what it did as JSON."""
    folder = site.operator.parent
    site.json("users", "create", "--email", "lead@example.com", "--role", "operator")
    site.json("users", "create", "--email", "deputy@example.com", "--role", "operator")
    lead = site.json("tokens", "create", "--user", "lead@example.com", "--name", "lead")["token"]
    deputy = site.json("tokens", "create", "--user", "deputy@example.com", "--name", "d")["token"]
    document = folder / "asks.yaml"
    document.write_text(yaml.safe_dump(ESCALATES))
    site.json("apply", "-f", str(document), "--publish")

    def pending(token: str, kind: str, count: int) -> list[dict[str, Any]]:
        def listed() -> list[dict[str, Any]] | None:
            found = [t for t in site.json("inbox", "list", token=token) if t["kind"] == kind]
            return found if len(found) == count else None

        tasks: list[dict[str, Any]] = poll(listed, timeout=120, what=f"{count} {kind} tasks")
        return tasks

    # three runs fail on their missing input and escalate to the operators
    failing = [site.json("runs", "start", ESCALATES["name"])["id"] for _ in range(3)]
    escalations = {t["run_id"]: t for t in pending(lead, "escalation", 3)}
    retried = site.json("inbox", "retry", escalations[failing[0]]["id"], token=lead)
    skipped = site.json("inbox", "skip", escalations[failing[1]]["id"], "-m", "n", token=lead)
    failed = site.json("inbox", "fail", escalations[failing[2]]["id"], "-m", "no", token=lead)
    assert (retried["status"], skipped["status"], failed["status"]) == (
        "retried",
        "skipped",
        "failed",
    )
    assert site.json("runs", "show", failing[2])["status"] == "failed"

    # the skipped run goes on to its approval: routed to the deputy, who rejects it
    (approval,) = pending(lead, "approval", 1)
    moved = site.json("inbox", "reassign", approval["id"], "--to", "deputy@example.com")
    assert [a for a in moved["assignees"] if "deputy" in a]
    rejected = site.json("inbox", "reject", approval["id"], "-m", "not now", token=deputy)
    assert rejected["status"] == "rejected"

    hooked = folder / "hooked.yaml"
    hooked.write_text(yaml.safe_dump(HOOKED))
    site.json("apply", "-f", str(hooked), "--publish")
    secret = site.json("workflows", "webhook-secret", "Hooked")
    assert secret["secret"]
    assert secret["shown_once"] is True
    assert site.json("workflows", "webhook", "Hooked")["secret_set"] is True
    assert site.json("workflows", "deliveries", "Hooked") == []
    capped = site.json(
        "usage", "set-cap", "--workflow", "Hooked", "--kind", "runs", "--period", "day",
        "--cap", "50",
    )  # fmt: skip
    assert capped["cap"] == 50

    # two runs in a minute trip the breaker of one a minute: the workflow pauses for safety
    for _ in range(2):
        site.json("runs", "start", "Hooked")
    poll(
        lambda: site.json("workflows", "show", "Hooked").get("paused_for_safety"),
        timeout=120,
        what="the breaker to pause the workflow",
    )
    resumed = site.json("workflows", "resume-safety", "Hooked")
    assert resumed["name"] == "Hooked"
    assert resumed["status"] == "published"
    assert site.json("workflows", "show", "Hooked").get("paused_for_safety") is None

    # the demo's wiki grant was made with no workflow to start: one is published, then the
    # grant is dispatched to it
    wiki = folder / "wiki.yaml"
    wiki.write_text(yaml.safe_dump(WIKI_GRANT))
    site.json("apply", "-f", str(wiki), "--publish")
    (grant,) = site.json("grants", "list", "--application", "Demo Wiki")
    dispatched = site.json("grants", "dispatch", grant["id"])
    assert dispatched["id"] == grant["id"]
    (started,) = dispatched["automation"]["runs"]
    assert dispatched["automation"]["event"]["kind"] == "access_granted"
    assert site.json("runs", "show", started["id"])["workflow"] == "Wiki access"
