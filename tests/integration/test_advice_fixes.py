"""Advice that used to be refused when taken, each reproduced and now working: a damaged plan
(Recompile, never a 500), a 404 after a non-reversible step (Retry, not the refused Replay with
latest), an existing account (Replay with latest: Retry keeps the old version), and a run paused
by an operator (shown at once with who and when, and Resume). Also the CLI's next action."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.definitions.models import WorkflowVersion
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import allowing_loopback, connection_worker, serving_api
from tests.support.engine import publish, start, wait_for
from tests.support.engine import workflow as chain
from tests.support.processes import grantflow_env, run_grantflow
from tests.support.target import Reply, running_target

API = "/api/v1"


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return allowing_loopback(database, tmp_path)


@pytest.fixture
def api(settings: Settings, database: Database) -> Iterator[Api]:
    with serving_api(settings, database) as served:
        yield served


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


def cli(settings: Settings, database: Database, tmp_path: Path, command: str) -> str:
    """Run a rendered CLI command as a user types it (a subprocess on the same database)."""
    args = shlex.split(command)
    assert args[0] == "grantflow"
    secret = settings.secret_key
    assert secret is not None
    env = grantflow_env(
        database_url=database.url.render_as_string(hide_password=False),
        secret_key=secret.get_secret_value(),
    )
    result = run_grantflow(*args[1:], env=env, cwd=tmp_path)
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


def set_step(step_id: str) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": {"done": True}}}


def _damage(database: Database, workflow_id: str, plan: Any) -> None:
    with database.transaction() as session:
        session.execute(
            update(WorkflowVersion)
            .where(WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.number == 1)
            .values(plan=plan)
        )


def _stored(database: Database, workflow_id: str) -> Any:
    with database.transaction() as session:
        return session.execute(
            select(WorkflowVersion.plan).where(WorkflowVersion.workflow_id == workflow_id)
        ).scalar_one()


# --- a damaged plan ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda plan: ["not", "a", "plan"], id="not-an-object"),
        pytest.param(lambda plan: {**plan, "entry": 7}, id="wrong-type"),
        pytest.param(lambda plan: {**plan, "steps": {}}, id="entry-missing"),
    ],
)
def test_a_damaged_plan_is_a_clear_409_and_recompile_fixes_it(
    api: Api, admin: httpx.Client, database: Database, damage: Any
) -> None:
    """GET .../plan of a damaged stored plan answers 409 plan_integrity_failed offering
    Recompile (never a 500); taking it restores the plan, audited; republish is not advised."""
    wf = publish(database, chain("fragile", set_step("first"), set_step("second")))
    good = _stored(database, wf)
    _damage(database, wf, damage(good))
    body = error(admin.get(f"{API}/workflows/{wf}/versions/1/plan"), 409)
    assert body["code"] == "plan_integrity_failed"
    assert "Recompile" in body["next_action"]
    assert "republish" not in body["next_action"]
    action = body["action"]
    assert (action["method"], action["path"]) == (
        "POST",
        f"{API}/workflows/{wf}/versions/1/recompile",
    )
    assert action["cli"] == f"grantflow workflows recompile {wf} 1"
    ok(admin.request(action["method"], action["path"]))
    assert ok(admin.get(f"{API}/workflows/{wf}/versions/1/plan")) == good
    audit = ok(admin.get(f"{API}/audit", params={"action": "workflow.version_recompiled"}))
    assert [(e["target_id"], e["actor"]) for e in audit["items"]] == [(wf, "admin@example.com")]


def test_recompile_needs_workflow_publish_and_a_published_version(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Recompile is refused to a viewer (403) and for a draft (400 naming that it has no plan)."""
    wf = publish(database, chain("guarded", set_step("first")))
    with api.as_role(Role.VIEWER) as viewer:
        assert error(viewer.post(f"{API}/workflows/{wf}/versions/1/recompile"), 403)
    draft = ok(admin.post(f"{API}/workflows", json=chain("drafty", set_step("a"))), 201)
    draft_id = draft["workflow"]["id"]
    body = error(admin.post(f"{API}/workflows/{draft_id}/versions/1/recompile"), 400)
    assert body["code"] == "no_plan"


def test_the_cli_recompile_command_the_advice_renders_works(
    api: Api, admin: httpx.Client, database: Database, settings: Settings, tmp_path: Path
) -> None:
    """The rendered `grantflow workflows recompile ID N` repairs the plan a run failed on; the
    run's Retry then succeeds."""
    wf = publish(database, chain("fragile-cli", set_step("first"), set_step("second")))
    good = _stored(database, wf)
    _damage(database, wf, {**good, "steps": {}})
    run_id = start(database, wf)
    shown = ok(admin.get(f"{API}/runs/{run_id}"))
    assert shown["failure"]["code"] == "plan_integrity_failed"
    command = shown["next"]["action"]["cli"]
    assert "recompiled" in cli(settings, database, tmp_path, command)
    assert _stored(database, wf) == good
    ok(admin.post(f"{API}/runs/{run_id}/retry"))
    with connection_worker(settings, database):
        done = wait_for(database, run_id, lambda d: d["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded"


# --- a 404 after a non-reversible step ---------------------------------------------------


def test_a_404_after_a_non_reversible_step_offers_retry_which_works(
    api: Api, admin: httpx.Client, database: Database, settings: Settings, tmp_path: Path
) -> None:
    """Before a step acted, a 404 advises Replay with latest; after a non-reversible step acted
    (where that replay is refused) it advises Retry, and the rendered `grantflow runs retry`
    resumes the run without repeating the acted step."""
    with running_target() as target:
        target.on("/accounts", Reply(201, {"id": "a-1"}))
        target.on("/groups/eng", Reply(404, {"error": "no such group"}))
        first = {
            "id": "create_account",
            "type": "http",
            "config": {"method": "POST", "url": f"{target.url}/accounts"},
        }
        join = {
            "id": "join",
            "type": "http",
            "config": {"method": "POST", "url": f"{target.url}/groups/eng"},
        }
        alone = start(database, publish(database, chain("join-only", join)))
        acted = start(database, publish(database, chain("create-then-join", first, join)))
        with connection_worker(settings, database):
            for run_id in (alone, acted):
                wait_for(database, run_id, lambda d: d["status"] == "failed")
            before = ok(admin.get(f"{API}/runs/{alone}"))["next"]
            after = ok(admin.get(f"{API}/runs/{acted}"))["next"]
            assert before["action"]["label"] == "Replay with latest"
            assert after["action"]["label"] == "Retry"
            assert "Replay with latest is refused" in after["next_action"]
            refused = error(admin.post(f"{API}/runs/{acted}/replay", params={"latest": True}), 409)
            assert refused["code"] == "replay_refused"
            target.on("/groups/eng", Reply(200, {"ok": True}))  # created in the target
            cli(settings, database, tmp_path, after["action"]["cli"])
            done = wait_for(database, acted, lambda d: d["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    assert len(target.calls("/accounts")) == 1


# --- a paused run --------------------------------------------------------------------------


def test_a_run_paused_by_an_operator_says_so_at_once_with_resume(
    api: Api, database: Database, settings: Settings, tmp_path: Path
) -> None:
    """Pausing shows at once (not when stuck) that an operator paused it, who and when, and
    offers Resume; `grantflow runs show` prints it with the command, which resumes the run."""
    wf = publish(database, chain("pausable", set_step("only")))
    run_id = start(database, wf)
    with api.as_role(Role.OPERATOR, "olga@example.com") as olga:
        shown = ok(olga.post(f"{API}/runs/{run_id}/pause"))
        assert shown["status"] == "paused"
        assert shown["stuck"] is None
        paused = shown["paused"]
        assert (paused["by"], paused["reason"], paused["requested"]) == (
            "olga@example.com",
            "operator",
            False,
        )
        assert paused["at"]
        nxt = shown["next"]
        assert nxt["advice"] == "paused.operator"
        assert "olga@example.com" in nxt["next_action"]
        assert nxt["action"]["path"] == f"{API}/runs/{run_id}/resume"
        printed = cli(settings, database, tmp_path, f"grantflow runs show {run_id}")
        assert "paused by olga@example.com" in printed
        assert f"Resume: grantflow runs resume {run_id}" in printed
        cli(settings, database, tmp_path, nxt["action"]["cli"])
        with connection_worker(settings, database):
            done = wait_for(database, run_id, lambda d: d["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    assert done["paused"] is None
    assert done["next"] is None
