"""Advice is a contract: for every entry of the advice table that offers an operation, a
scenario reproduces the failure or wait, takes exactly the action offered (the rendered method
and path, over HTTP against the real app; for a few, the rendered CLI command) and sees the run
reach the outcome the advice promises. An entry with an operation and no scenario fails here."""

from __future__ import annotations

import itertools
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from grantflow import advice
from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.definitions.models import WorkflowVersion
from grantflow.store.database import Database
from tests.conftest import BACKENDS, Api
from tests.support.connections import (
    allowing_loopback,
    connection_worker,
    make_application,
    make_connection,
    put_credential,
    serving_api,
)
from tests.support.engine import publish, start
from tests.support.engine import workflow as chain
from tests.support.idp.graph import Graph
from tests.support.idp.server import running_providers
from tests.support.oauth import running_oauth_server
from tests.support.processes import COMMAND, grantflow_env, run_grantflow
from tests.support.provisioning import EXAMPLE_TOKENS
from tests.support.scim_server import TOKEN as SCIM_TOKEN
from tests.support.scim_server import ScimServer, Tenant, running_scim_server, token_gateway
from tests.support.target import Reply, Target, running_target

API = "/api/v1"
GRAPH_TOKEN = EXAMPLE_TOKENS["entra"]


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return allowing_loopback(database, tmp_path)


@pytest.fixture
def api(settings: Settings, database: Database) -> Iterator[Api]:
    with serving_api(settings, database) as served:
        yield served


@pytest.fixture(scope="module")
def scim_server() -> Iterator[ScimServer]:
    with running_scim_server() as server:
        yield server


@dataclass
class World:
    """What a scenario works with: the app over HTTP, an admin, the database, a target."""

    api: Api
    admin: httpx.Client
    database: Database
    settings: Settings
    target: Target
    scim: ScimServer
    tmp_path: Path
    clients: list[httpx.Client]

    def get(self, run_id: str) -> dict[str, Any]:
        response = self.admin.get(f"{API}/runs/{run_id}")
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    def wait(
        self, run_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 120
    ) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            shown = self.get(run_id)
            if check(shown):
                return shown
            assert time.monotonic() < deadline, f"the run never got there: {shown}"
            time.sleep(0.02)

    def settle(self, run_id: str, *statuses: str) -> dict[str, Any]:
        return self.wait(run_id, lambda d: d["status"] in statuses)

    def worker(self) -> Any:
        return connection_worker(self.settings, self.database)

    def person(self, name: str, *roles: Role) -> httpx.Client:
        client = self.api.client(self.api.user_token(f"{name}@example.com", *roles))
        self.clients.append(client)  # closed when the test ends
        return client

    def cli(self, command: str) -> str:
        """Run a rendered CLI command as a user types it; its output."""
        args = shlex.split(command)
        assert args[0] == "grantflow"
        secret = self.settings.secret_key
        assert secret is not None
        env = grantflow_env(
            database_url=self.database.url.render_as_string(hide_password=False),
            secret_key=secret.get_secret_value(),
        )
        result = run_grantflow(*args[1:], env=env, cwd=self.tmp_path)
        assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
        assert COMMAND  # the same interpreter runs it
        return result.stdout


def advised(shown: dict[str, Any], key: str) -> dict[str, Any]:
    """The run's next action: it must be the table's entry `key`, with a concrete action."""
    nxt = shown["next"]
    assert nxt is not None, shown
    assert nxt["advice"] == key, (nxt, shown.get("failure"))
    entry = advice.TABLE[key]
    assert nxt["operation"] == entry.operation
    action: dict[str, Any] = nxt["action"]
    assert action is not None, nxt
    assert action["operation"] == entry.operation
    assert action["label"].lower() in nxt["next_action"].lower()
    return action


def take(
    client: httpx.Client, action: dict[str, Any], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Take the action exactly as rendered: its method and path."""
    response = client.request(action["method"], action["path"], json=body)
    assert response.status_code in (200, 201), response.text
    taken: dict[str, Any] = response.json()
    return taken


def http(step_id: str, url: str, method: str = "GET", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "http", "config": {"method": method, "url": url}, **fields}


def set_step(step_id: str, **values: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": values or {"done": True}}}


SCENARIOS: dict[str, Callable[[World], None]] = {}


def scenario(*keys: str) -> Callable[[Callable[[World], None]], Callable[[World], None]]:
    def register(function: Callable[[World], None]) -> Callable[[World], None]:
        for key in keys:
            SCENARIOS[key] = function
        return function

    return register


# --- the engine ----------------------------------------------------------------------------


@scenario("plan_integrity_failed")
def _plan_damaged(w: World) -> None:
    wf = publish(w.database, chain("adv-plan", set_step("first"), set_step("second")))
    with w.database.transaction() as session:
        plan = session.execute(
            select(WorkflowVersion.plan).where(WorkflowVersion.workflow_id == wf)
        ).scalar_one()
        broken = {**plan, "steps": {k: v for k, v in plan["steps"].items() if k != "first"}}
        session.execute(
            update(WorkflowVersion).where(WorkflowVersion.workflow_id == wf).values(plan=broken)
        )
    run_id = start(w.database, wf)
    action = advised(w.get(run_id), "plan_integrity_failed")
    assert action["path"] == f"{API}/workflows/{wf}/versions/1/recompile"
    take(w.admin, action)
    # the words: "... then Retry the run"
    take(w.admin, advice.render("run.retry", run_id=run_id) or {})
    with w.worker():
        shown = w.settle(run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded", shown["failure"]


@scenario("execution_timeout")
def _execution_timeout(w: World) -> None:
    doc = chain(
        "adv-slow",
        {"id": "nap", "type": "delay", "config": {"duration": "PT5S"}},
        set_step("after"),
        settings={"execution_timeout": "PT4S"},
    )
    began = time.monotonic()
    run_id = start(w.database, publish(w.database, doc))
    with w.worker():
        action = advised(w.settle(run_id, "timed_out"), "execution_timeout")
        # Retry once the slow wait is over (what "find why it was slow" leads to): the new
        # deadline then only has to cover picking the run up again, even on a loaded machine.
        time.sleep(max(0.0, began + 5.5 - time.monotonic()))
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed", "timed_out")["status"] == "succeeded"


@scenario("loop_bound_exceeded")
def _loop(w: World) -> None:
    def doc(again: str) -> dict[str, Any]:
        return {
            "name": "adv-loop",
            "trigger": {"type": "manual"},
            "steps": [
                {**set_step("work"), "next": "check", "max_iterations": 2},
                {
                    "id": "check",
                    "type": "condition",
                    "branches": [{"when": again, "next": "work"}],
                    "max_iterations": 2,
                },
            ],
        }

    run_id = start(w.database, publish(w.database, doc("true")))
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "loop_bound_exceeded")
        publish(w.database, doc("false"))  # the fixed exit condition
        new = take(w.admin, action)
        assert new["version"] == 2
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"


@scenario("expression_error")
def _expression(w: World) -> None:
    def doc(value: str) -> dict[str, Any]:
        return chain("adv-expr", set_step("greet", text=value))

    wf = publish(w.database, doc("{{ input.profile.name }}"))
    run_id = start(w.database, wf, {"name": "ann"})
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "expression_error")
        publish(w.database, doc("{{ input.name }}"))
        new = take(w.admin, action)
        shown = w.settle(new["id"], "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert shown["steps"][0]["output"] == {"text": "ann"}


@scenario("cancelled")
def _cancelled(w: World) -> None:
    run_id = start(w.database, publish(w.database, chain("adv-cancel", set_step("only"))))
    cancelled = w.admin.post(f"{API}/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    action = advised(cancelled.json(), "cancelled")
    new = take(w.admin, action)
    with w.worker():
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"


@scenario("paused.operator")
def _paused(w: World) -> None:
    run_id = start(w.database, publish(w.database, chain("adv-pause", set_step("only"))))
    paused = w.admin.post(f"{API}/runs/{run_id}/pause").json()
    assert paused["status"] == "paused"
    action = advised(paused, "paused.operator")
    take(w.admin, action)
    with w.worker():
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


# --- calls to external systems ------------------------------------------------------------


def _fails_then_fixed(
    w: World, key: str, reply: Reply, *, prefix: list[dict[str, Any]] | None = None
) -> None:
    """A GET of /thing answers `reply`; the target is fixed; the action offered (Retry)
    resumes the same run, which succeeds without repeating what already succeeded."""
    w.target.on("/thing", reply)
    w.target.on("/accounts", Reply(201, {"id": "a-1"}))
    steps = [*(prefix or []), http("fetch", f"{w.target.url}/thing")]
    run_id = start(w.database, publish(w.database, chain("adv-" + key.replace("/", "-"), *steps)))
    with w.worker():
        action = advised(w.settle(run_id, "failed", "timed_out"), key)
        assert action["operation"] == "run.retry"
        w.target.on("/thing", Reply(200, {"ok": True}))
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"
    assert len(w.target.calls("/accounts")) == (1 if prefix else 0)


@scenario("transient_error")
def _transient(w: World) -> None:
    _fails_then_fixed(w, "transient_error", Reply(503, {"error": "down"}))


@scenario("step_timeout")
def _step_timeout(w: World) -> None:
    w.target.on("/thing", Reply(200, {}, delay=2))
    step = http("fetch", f"{w.target.url}/thing", timeout="PT0.3S")
    run_id = start(w.database, publish(w.database, chain("adv-step-timeout", step)))
    with w.worker():
        action = advised(w.settle(run_id, "failed", "timed_out"), "step_timeout")
        w.target.on("/thing", Reply(200, {"ok": True}))
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed", "timed_out")["status"] == "succeeded"


@scenario("http_409")
def _conflict(w: World) -> None:
    _fails_then_fixed(w, "http_409", Reply(409, {"error": "conflict"}))


@scenario("http_404/after_irreversible")
def _not_found_after_acting(w: World) -> None:
    acted = http("create_account", f"{w.target.url}/accounts", "POST")
    _fails_then_fixed(w, "http_404/after_irreversible", Reply(404), prefix=[acted])


def _replay_with_fixed_url(w: World, key: str, status: int) -> None:
    """The step's URL is wrong (the target refuses it); publishing the fixed workflow and
    taking the action (Replay with latest) runs the new version, which succeeds."""
    w.target.on("/v1/thing", Reply(status, {"error": "no"}))
    w.target.on("/v2/thing", Reply(200, {"ok": True}))

    def doc(path: str) -> dict[str, Any]:
        return chain("adv-" + key.replace("/", "-"), http("fetch", f"{w.target.url}{path}", "GET"))

    run_id = start(w.database, publish(w.database, doc("/v1/thing")))
    with w.worker():
        action = advised(w.settle(run_id, "failed"), key)
        publish(w.database, doc("/v2/thing"))
        new = take(w.admin, action)
        assert (new["replay_of"], new["version"]) == (run_id, 2)
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"


@scenario("replay_refused")
def _replay_refused(w: World) -> None:
    """A grant's run acted (a non-reversible POST), then failed on a wrong URL: Replay with
    latest is refused, and the advice is to dispatch the grant once the workflow is fixed."""
    w.target.on("/accounts", Reply(201, {"id": "a-1"}))
    w.target.on("/v1/groups", Reply(400, {"error": "bad path"}))
    w.target.on("/v2/groups", Reply(200, {"ok": True}))
    app_id = make_application(w.admin, "Granted app")

    def doc(path: str) -> dict[str, Any]:
        return {
            "name": "adv-granted",
            "application": app_id,
            "trigger": {"type": "access_granted"},
            "steps": [
                {**http("create_account", f"{w.target.url}/accounts", "POST"), "next": "join"},
                http("join", f"{w.target.url}{path}", "POST"),
            ],
        }

    publish(w.database, doc("/v1/groups"))
    person = w.admin.post(f"{API}/identities", json={"email": "ada@example.com"})
    assert person.status_code == 201, person.text
    granted = w.admin.post(
        f"{API}/grants", json={"identity": "ada@example.com", "application": app_id}
    )
    assert granted.status_code == 201, granted.text
    grant = granted.json()
    (first,) = grant["automation"]["runs"]
    with w.worker():
        shown = w.settle(first["id"], "failed")
        action = advised(shown, "replay_refused")
        assert action["path"] == f"{API}/grants/{grant['id']}/dispatch"
        publish(w.database, doc("/v2/groups"))
        refused = w.admin.post(f"{API}/runs/{first['id']}/replay", params={"latest": True})
        assert refused.status_code == 409
        assert refused.json()["error"]["action"] == action  # the refusal offers the same
        take(w.admin, action)
        runs = w.admin.get(f"{API}/grants/{grant['id']}").json()["automation"]["runs"]
        (again,) = [r for r in runs if r["id"] != first["id"]]
        assert w.settle(again["id"], "succeeded", "failed")["status"] == "succeeded"
        assert w.get(again["id"])["version"] == 2


@scenario("http_404")
def _not_found(w: World) -> None:
    _replay_with_fixed_url(w, "http_404", 404)


@scenario("http_4xx")
def _bad_request(w: World) -> None:
    _replay_with_fixed_url(w, "http_4xx", 400)


def _credential_fixed(w: World, key: str, status: int) -> None:
    """The target refuses the connection's credential; replacing it, then the action (Retry)
    succeeds."""
    w.target.respond(
        "/thing",
        lambda seen: (
            Reply(200, {"ok": True})
            if seen.headers.get("authorization") == "Bearer good"
            else Reply(status, {"error": "no"})
        ),
    )
    app_id = make_application(w.admin, f"App {status}")
    connection = make_connection(w.admin, app_id, w.target.url, auth_kind="bearer")
    put_credential(w.admin, connection["id"], {"token": "wrong"})
    step = {"id": "fetch", "type": "http", "config": {"connection": "crm", "path": "/thing"}}
    run_id = start(
        w.database, publish(w.database, {**chain(f"adv-{key}", step), "application": app_id})
    )
    with w.worker():
        action = advised(w.settle(run_id, "failed"), key)
        put_credential(w.admin, connection["id"], {"token": "good"})
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


@scenario("http_401")
def _unauthorized(w: World) -> None:
    _credential_fixed(w, "http_401", 401)


@scenario("http_403")
def _forbidden(w: World) -> None:
    _credential_fixed(w, "http_403", 403)


# --- connections ---------------------------------------------------------------------------


@scenario("connection_disconnected")
def _disconnected(w: World) -> None:
    w.target.on("/thing", Reply(200, {"ok": True}))
    app_id = make_application(w.admin, "Disabled app")
    connection = make_connection(w.admin, app_id, w.target.url, auth_kind="none")
    step = {"id": "fetch", "type": "http", "config": {"connection": "crm", "path": "/thing"}}
    wf = publish(w.database, {**chain("adv-disconnected", step), "application": app_id})
    patch = w.admin.patch(f"{API}/connections/{connection['id']}", json={"enabled": False})
    assert patch.status_code == 200, patch.text
    run_id = start(w.database, wf)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "connection_disconnected")
        patch = w.admin.patch(f"{API}/connections/{connection['id']}", json={"enabled": True})
        assert patch.status_code == 200, patch.text
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


@scenario("connection_missing")
def _connection_missing(w: World) -> None:
    w.target.on("/thing", Reply(200, {"ok": True}))
    app_id = make_application(w.admin, "Moved app")
    connection = make_connection(w.admin, app_id, w.target.url, auth_kind="none")
    uses = {"id": "fetch", "type": "http", "config": {"connection": "crm", "path": "/thing"}}
    doc = {**chain("adv-missing", uses), "application": app_id}
    wf = publish(w.database, doc)
    run_id = start(w.database, wf)  # queued on version 1, which uses the connection
    publish(w.database, {**doc, "steps": [set_step("only")]})  # version 2 does not
    deleted = w.admin.delete(f"{API}/connections/{connection['id']}")
    assert deleted.status_code == 200, deleted.text
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "connection_missing")
        make_connection(w.admin, app_id, w.target.url, auth_kind="none")
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


@scenario("url_invalid")
def _url_invalid(w: World) -> None:
    w.target.on("/thing", Reply(200, {"ok": True}))

    def doc(url: str) -> dict[str, Any]:
        return chain("adv-url", http("fetch", url))

    run_id = start(w.database, publish(w.database, doc("{{ input.base }}/thing")), {"base": "ftp:"})
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "url_invalid")
        publish(w.database, doc(f"{w.target.url}/thing"))
        new = take(w.admin, action)
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"


@scenario("redirect_refused")
def _redirect_refused(w: World) -> None:
    port = w.target.url.rsplit(":", 1)[1]
    w.target.on("/thing", Reply(302, headers={"Location": f"http://localhost:{port}/moved"}))
    w.target.on("/moved", Reply(200, {"ok": True}))
    app_id = make_application(w.admin, "Moving app")
    connection = make_connection(w.admin, app_id, w.target.url, auth_kind="none")
    step = {"id": "fetch", "type": "http", "config": {"connection": "crm", "path": "/thing"}}
    wf = publish(w.database, {**chain("adv-redirect", step), "application": app_id})
    run_id = start(w.database, wf)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "redirect_refused")
        patch = w.admin.patch(
            f"{API}/connections/{connection['id']}", json={"allowed_hosts": ["localhost"]}
        )
        assert patch.status_code == 200, patch.text
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"
    assert len(w.target.calls("/moved")) == 1


@scenario("reauth_required", "waiting.reauth")
def _reauth(w: World) -> None:
    with running_oauth_server(expires_in=600, rotate=True) as server:
        client = server.register_client()
        app_id = make_application(w.admin, "OAuth app")
        connection = make_connection(
            w.admin,
            app_id,
            f"{server.url}/api",
            auth_kind="oauth_refresh_token",
            auth_settings={"token_url": server.token_url},
        )

        def secret() -> dict[str, str]:
            return {
                "client_id": client.client_id,
                "client_secret": client.client_secret,
                "refresh_token": server.issue_refresh_token(client.client_id),
            }

        put_credential(w.admin, connection["id"], secret())
        server.revoke_refresh()
        step = {"id": "fetch", "type": "http", "config": {"connection": "crm", "path": "/resource"}}
        wf = publish(w.database, {**chain("adv-reauth", step), "application": app_id})
        run_id = start(w.database, wf)
        with w.worker():
            shown = w.wait(run_id, lambda d: d["waiting_reason"] == "reauth")
            assert shown["failure"]["advice"] == "reauth_required"
            assert shown["failure"]["action"]["operation"] == "connection.set_credential"
            action = advised(shown, "waiting.reauth")
            assert action["path"] == f"{API}/connections/{connection['id']}/credential"
            assert action["needs"]
            take(w.admin, action, body=secret())
            assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


# --- SCIM ----------------------------------------------------------------------------------


def _scim_app(w: World, tenant: Tenant, token: str = SCIM_TOKEN) -> tuple[str, str]:
    app_id = make_application(w.admin, f"Directory {tenant.url[-16:]}")
    connection = make_connection(
        w.admin, app_id, tenant.url, kind="scim", auth_kind="bearer", name="directory"
    )
    put_credential(w.admin, connection["id"], {"token": token})
    return app_id, connection["id"]


def scim_step(step_id: str, kind: str, **config: Any) -> dict[str, Any]:
    return {"id": step_id, "type": f"scim.{kind}", "config": {"connection": "directory", **config}}


ADA = {"email": "ada@example.com", "name": "Ada Lovelace"}


def _create(**config: Any) -> dict[str, Any]:
    return scim_step(
        "create",
        "create_user",
        user_name="{{ input.email }}",
        display_name="{{ input.name }}",
        emails=["{{ input.email }}"],
        **config,
    )


@scenario("not_found")
def _scim_not_found(w: World) -> None:
    tenant = w.scim.tenant()
    app_id, _ = _scim_app(w, tenant)
    step = scim_step("off", "deactivate_user", user_name="{{ input.email }}")
    wf = publish(w.database, {**chain("adv-scim-404", step), "application": app_id})
    run_id = start(w.database, wf, ADA)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "not_found")
        tenant.create("User", {"userName": "ada@example.com", "active": True})
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"
    (user,) = tenant.users(userName="ada@example.com")
    assert user.active is False


@scenario("group_missing")
def _scim_group_missing(w: World) -> None:
    tenant = w.scim.tenant()
    tenant.create("User", {"userName": "ada@example.com"})
    app_id, _ = _scim_app(w, tenant)
    step = scim_step("join", "add_to_group", user_name="{{ input.email }}", group="engineering")
    wf = publish(w.database, {**chain("adv-scim-group", step), "application": app_id})
    run_id = start(w.database, wf, ADA)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "group_missing")
        tenant.create("Group", {"displayName": "engineering"})
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


@scenario("already_exists")
def _scim_exists(w: World) -> None:
    tenant = w.scim.tenant()
    tenant.create("User", {"userName": "ada@example.com"})
    app_id, _ = _scim_app(w, tenant)
    wf = publish(w.database, {**chain("adv-scim-exists", _create()), "application": app_id})
    run_id = start(w.database, wf, ADA)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "already_exists")
        publish(
            w.database,
            {**chain("adv-scim-exists", _create(if_exists="adopt")), "application": app_id},
        )
        # why not Retry: it resumes on the run's own version, which still says fail
        take(w.admin, advice.render("run.retry", run_id=run_id) or {})
        again = w.wait(run_id, lambda d: d["status"] == "failed" and d["retry_count"] == 1)
        assert again["failure"]["code"] == "already_exists"
        new = take(w.admin, action)
        shown = w.settle(new["id"], "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert shown["steps"][0]["output"]["adopted"] is True
    assert len(tenant.users()) == 1


@scenario("already_exists/after_irreversible")
def _scim_exists_after_acting(w: World) -> None:
    tenant = w.scim.tenant()
    existing = tenant.create("User", {"userName": "ada@example.com"})
    app_id, _ = _scim_app(w, tenant)
    w.target.on("/tickets", Reply(201, {"id": "t-1"}))
    ticket = http("open_ticket", f"{w.target.url}/tickets", "POST")
    doc = {**chain("adv-scim-exists-acted", ticket, _create()), "application": app_id}
    run_id = start(w.database, publish(w.database, doc), ADA)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "already_exists/after_irreversible")
        client = tenant.client()
        client.delete(client.get_resource_model("User"), existing.id)
        client.client.close()
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"
    assert len(w.target.calls("/tickets")) == 1
    assert [u.user_name for u in tenant.users()] == ["ada@example.com"]


@scenario("step_config_invalid")
def _scim_config_invalid(w: World) -> None:
    tenant = w.scim.tenant()
    app_id, _ = _scim_app(w, tenant)

    def doc(active: str) -> dict[str, Any]:
        return {**chain("adv-scim-config", _create(active=active)), "application": app_id}

    run_id = start(w.database, publish(w.database, doc("{{ input.name }}")), ADA)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "step_config_invalid")
        publish(w.database, doc("true"))
        new = take(w.admin, action)
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"


@scenario("unauthorized")
def _scim_unauthorized(w: World) -> None:
    tenant = w.scim.tenant()
    app_id, connection_id = _scim_app(w, tenant, token="not-the-token")
    wf = publish(w.database, {**chain("adv-scim-401", _create()), "application": app_id})
    run_id = start(w.database, wf, ADA)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "unauthorized")
        put_credential(w.admin, connection_id, {"token": SCIM_TOKEN})
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


@scenario("wrong_connection_kind")
def _scim_wrong_kind(w: World) -> None:
    tenant = w.scim.tenant()
    app_id = make_application(w.admin, "Mixed directory")
    plain = make_connection(w.admin, app_id, tenant.url, auth_kind="bearer", name="plain")
    put_credential(w.admin, plain["id"], {"token": SCIM_TOKEN})

    def doc(connection: str) -> dict[str, Any]:
        create = _create()
        create["config"]["connection"] = connection
        return {**chain("adv-scim-kind", create), "application": app_id}

    run_id = start(w.database, publish(w.database, doc("plain")), ADA)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "wrong_connection_kind")
        scim = make_connection(
            w.admin, app_id, tenant.url, kind="scim", auth_kind="bearer", name="directory"
        )
        put_credential(w.admin, scim["id"], {"token": SCIM_TOKEN})
        publish(w.database, doc("directory"))
        new = take(w.admin, action)
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"
    assert [u.user_name for u in tenant.users()] == ["ada@example.com"]


@scenario("forbidden")
def _scim_forbidden(w: World) -> None:
    tenant = w.scim.tenant()
    with token_gateway(tenant, lambda token: token == "allowed", refusal=403) as url:
        app_id = make_application(w.admin, "Gated directory")
        connection = make_connection(
            w.admin, app_id, url, kind="scim", auth_kind="bearer", name="directory"
        )
        put_credential(w.admin, connection["id"], {"token": "lacks-rights"})
        wf = publish(w.database, {**chain("adv-scim-403", _create()), "application": app_id})
        run_id = start(w.database, wf, ADA)
        with w.worker():
            action = advised(w.settle(run_id, "failed"), "forbidden")
            put_credential(w.admin, connection["id"], {"token": "allowed"})
            take(w.admin, action)
            assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"
    assert [u.user_name for u in tenant.users()] == ["ada@example.com"]


@scenario("scim_invalid_request")
def _scim_invalid_request(w: World) -> None:
    tenant = w.scim.tenant()
    app_id, _ = _scim_app(w, tenant)

    def doc(attributes: dict[str, Any]) -> dict[str, Any]:
        return {**chain("adv-scim-invalid", _create(attributes=attributes)), "application": app_id}

    run_id = start(w.database, publish(w.database, doc({"nickName": {"not": "a string"}})), ADA)
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "scim_invalid_request")
        publish(w.database, doc({"nickName": "ada"}))
        new = take(w.admin, action)
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"


# --- identity providers ----------------------------------------------------------------------


SKU = "c7df2760-2c81-4ef7-b578-5b5392b571df"


def _entra(
    w: World,
    key: str,
    setup: Callable[[Graph], None],
    fix: Callable[[Graph], None],
    step: dict[str, Any],
) -> None:
    """An entra.* step fails with `key`; the cause is fixed in Entra (`fix`); the action
    offered (Retry) resumes the run, which succeeds."""
    graph = Graph(GRAPH_TOKEN)
    setup(graph)
    with running_providers(graph) as providers:
        app_id = make_application(w.admin, f"Entra {key}")
        connection = make_connection(
            w.admin, app_id, providers.url, kind="entra", name="entra", auth_kind="bearer"
        )
        put_credential(w.admin, connection["id"], {"token": GRAPH_TOKEN})
        step = {**step, "config": {"connection": "entra", **step["config"]}}
        doc = {**chain("adv-" + key.replace("_", "-"), step), "application": app_id}
        run_id = start(w.database, publish(w.database, doc))
        with w.worker():
            action = advised(w.settle(run_id, "failed"), key)
            fix(graph)
            take(w.admin, action)
            assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


CREATE_ADA = {
    "id": "create",
    "type": "entra.create_user",
    "config": {
        "user_principal_name": "ada@contoso.com",
        "display_name": "Ada Lovelace",
        "usage_location": "GB",
    },
}
ASSIGN = {
    "id": "licence",
    "type": "entra.assign_license",
    "config": {"user_id": "u", "sku_id": SKU},
}


def _with_ada(graph: Graph, location: str | None = "GB") -> None:
    graph.users["u"] = {
        "id": "u",
        "userPrincipalName": "ada@contoso.com",
        "usageLocation": location,
        "assignedLicenses": [],
    }
    graph.seats[SKU] = 1


@scenario("permission_denied")
def _entra_denied(w: World) -> None:
    def setup(graph: Graph) -> None:
        graph.read_only = True

    def fix(graph: Graph) -> None:  # the app is granted User.ReadWrite.All
        graph.read_only = False

    _entra(w, "permission_denied", setup, fix, CREATE_ADA)


@scenario("throttled")
def _entra_throttled(w: World) -> None:
    def setup(graph: Graph) -> None:
        graph.throttle = 1000

    def fix(graph: Graph) -> None:
        graph.throttle = 0

    _entra(w, "throttled", setup, fix, CREATE_ADA)


@scenario("no_licenses")
def _entra_no_seats(w: World) -> None:
    def setup(graph: Graph) -> None:
        _with_ada(graph)
        graph.seats[SKU] = 0

    def fix(graph: Graph) -> None:  # a seat bought
        graph.seats[SKU] = 1

    _entra(w, "no_licenses", setup, fix, ASSIGN)


@scenario("usage_location_missing")
def _entra_no_location(w: World) -> None:
    def fix(graph: Graph) -> None:
        graph.users["u"]["usageLocation"] = "GB"

    _entra(w, "usage_location_missing", lambda g: _with_ada(g, None), fix, ASSIGN)


@scenario("license_conflict")
def _entra_conflict(w: World) -> None:
    def setup(graph: Graph) -> None:
        _with_ada(graph)
        graph.conflicting.add(SKU)

    def fix(graph: Graph) -> None:  # the clashing licence removed
        graph.conflicting.clear()

    _entra(w, "license_conflict", setup, fix, ASSIGN)


# --- people --------------------------------------------------------------------------------


def _task(step_id: str, **config: Any) -> dict[str, Any]:
    config = {"title": "Set up the desk", "assignees": {"users": ["desk@example.com"]}, **config}
    return {"id": step_id, "type": "task", "config": config}


@scenario("waiting.task")
def _waiting_task(w: World) -> None:
    desk = w.person("desk", Role.OPERATOR)
    run_id = start(w.database, publish(w.database, chain("adv-task", _task("desk"))))
    with w.worker():
        shown = w.wait(run_id, lambda d: d["waiting_reason"] == "task")
        take(desk, advised(shown, "waiting.task"))
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


@scenario("waiting.approval")
def _waiting_approval(w: World) -> None:
    boss = w.person("boss", Role.APPROVER)
    step = {
        "id": "approve",
        "type": "approval",
        "config": {"title": "Grant access?", "approvers": {"users": ["boss@example.com"]}},
    }
    run_id = start(w.database, publish(w.database, chain("adv-approval", step)))
    with w.worker():
        shown = w.wait(run_id, lambda d: d["waiting_reason"] == "approval")
        take(boss, advised(shown, "waiting.approval"))
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


@scenario("failed_by_person")
def _failed_by_person(w: World) -> None:
    desk = w.person("desk", Role.OPERATOR)
    run_id = start(w.database, publish(w.database, chain("adv-task-fail", _task("desk"))))
    with w.worker():
        shown = w.wait(run_id, lambda d: d["waiting_reason"] == "task")
        failing = dict(
            shown["next"]["action"],
            path=shown["next"]["action"]["path"].replace("/submit", "/fail"),
        )
        take(desk, failing, body={"comment": "no desk free today"})
        action = advised(w.settle(run_id, "failed"), "failed_by_person")
        new = take(w.admin, action)
        shown = w.wait(new["id"], lambda d: d["waiting_reason"] == "task")
        take(desk, advised(shown, "waiting.task"))
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"


@scenario("task_timed_out")
def _task_timed_out(w: World) -> None:
    desk = w.person("desk", Role.OPERATOR)

    def doc(timeout: str) -> dict[str, Any]:
        return chain("adv-task-late", _task("desk", timeout=timeout, on_timeout="fail"))

    run_id = start(w.database, publish(w.database, doc("PT1S")))
    with w.worker():
        action = advised(w.settle(run_id, "failed"), "task_timed_out")
        publish(w.database, doc("P1D"))
        new = take(w.admin, action)
        shown = w.wait(new["id"], lambda d: d["waiting_reason"] == "task")
        take(desk, advised(shown, "waiting.task"))
        assert w.settle(new["id"], "succeeded", "failed")["status"] == "succeeded"


@scenario("waiting.escalated")
def _escalated(w: World) -> None:
    w.target.on("/thing", Reply(503, {"error": "down"}))
    step = http("fetch", f"{w.target.url}/thing", on_failure="escalate")
    run_id = start(w.database, publish(w.database, chain("adv-escalate", step)))
    with w.worker():
        shown = w.wait(run_id, lambda d: d["waiting_reason"] == "escalated")
        action = advised(shown, "waiting.escalated")
        w.target.on("/thing", Reply(200, {"ok": True}))
        take(w.admin, action)
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


@scenario("waiting.safety")
def _paused_for_safety(w: World) -> None:
    doc = chain("adv-breaker", set_step("only"))
    wf = publish(w.database, {**doc, "safety": {"max_runs_per_minute": 1}})
    with w.worker():
        w.settle(start(w.database, wf), "succeeded")
        held = start(w.database, wf)  # the second run in a minute trips the breaker
        w.wait(held, lambda d: d["waiting_reason"] == "safety")
        action = advised(w.get(held), "waiting.safety")
        assert action["path"] == f"{API}/workflows/{wf}/resume-safety"
        take(w.admin, action)
        assert w.settle(held, "succeeded", "failed")["status"] == "succeeded"


@scenario("waiting.spend_cap")
def _spend_cap(w: World) -> None:
    wf = publish(w.database, chain("adv-capped", set_step("one"), set_step("two")))
    cap = {"workflow": wf, "kind": "steps", "period": "day"}
    assert w.admin.put(f"{API}/spend-caps", json={**cap, "cap": 1}).status_code == 200
    run_id = start(w.database, wf)
    with w.worker():
        shown = w.wait(run_id, lambda d: d["waiting_reason"] == "spend_cap")
        action = advised(shown, "waiting.spend_cap")
        assert (action["method"], action["path"]) == ("PUT", f"{API}/spend-caps")
        take(w.admin, action, body={**cap, "cap": 10})  # raised: it goes on by itself
        assert w.settle(run_id, "succeeded", "failed")["status"] == "succeeded"


# --- the table test ------------------------------------------------------------------------

# Entries whose scenario lives with the feature's own tests, which take the rendered action
# the same way (the test named here must exist).
TAKEN_ELSEWHERE = {
    "no_run.workflow_disabled": "test_grant_dispatch.py::"
    "test_a_grant_made_while_its_workflow_was_disabled_runs_once_enabled_and_dispatched",
    "no_run.unpublished": "test_grant_dispatch.py::"
    "test_a_grant_made_while_its_workflow_was_unpublished_runs_once_published",
    "dispatch.workflow_disabled": "test_grant_dispatch.py::"
    "test_dispatch_refuses_while_the_workflow_is_disabled_and_enabling_it_works",
    "dispatch.run_in_flight": "test_grant_dispatch.py::"
    "test_dispatch_refuses_while_a_run_is_in_flight_and_names_it",
    "dispatch.grant_revoked": "test_grant_dispatch.py::"
    "test_a_revoked_grant_is_not_dispatched_and_granting_again_works",
    "comment_required": "test_offboarding_uncovered.py::"
    "test_an_uncovered_system_raises_an_incident_when_the_identity_leaves",
    "waiting.no_one_can_act": "test_empty_roles.py::"
    "test_a_run_waiting_on_an_empty_role_says_who_can_fix_it",
}

WITH_OPERATION = sorted(key for key, entry in advice.TABLE.items() if entry.operation)
WITHOUT_OPERATION = sorted(key for key, entry in advice.TABLE.items() if not entry.operation)


# Each scenario runs on one database, the two taking turns down the sorted table: every action
# is taken, and each database takes half of them (the services under them run on both in their
# own tests).
ON_ONE_DATABASE = [
    pytest.param(
        key,
        backend,
        id=f"{backend}-{key}",
        marks=[pytest.mark.postgres] if backend == "postgresql" else [],
    )
    for key, backend in zip(
        [key for key in WITH_OPERATION if key not in TAKEN_ELSEWHERE],
        itertools.cycle(BACKENDS),
        strict=False,
    )
]


@pytest.mark.parametrize("key", sorted(TAKEN_ELSEWHERE))
def test_advice_taken_elsewhere_names_a_test_that_exists(key: str) -> None:
    """An entry whose scenario lives with its feature's tests names one that exists."""
    module, name = TAKEN_ELSEWHERE[key].split("::")
    text = (Path(__file__).parent / module).read_text()
    assert f"def {name}(" in text, f"{key}: {TAKEN_ELSEWHERE[key]} does not exist"


@pytest.mark.parametrize(("key", "database"), ON_ONE_DATABASE, indirect=["database"])
def test_taking_the_advice_works(
    key: str,
    api: Api,
    admin: httpx.Client,
    database: Database,
    settings: Settings,
    scim_server: ScimServer,
    tmp_path: Path,
) -> None:
    """The table entry's failure or wait, reproduced, offers its action; taking exactly that
    action (the rendered method and path) brings the run to the outcome the words promise."""
    run_scenario = SCENARIOS.get(key)
    if run_scenario is None:
        pytest.fail(f"table entry {key!r} offers an operation but has no scenario that takes it")
    clients: list[httpx.Client] = []
    try:
        with running_target() as target:
            world = World(api, admin, database, settings, target, scim_server, tmp_path, clients)
            run_scenario(world)
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("key", WITHOUT_OPERATION)
def test_advice_without_an_operation_offers_no_action(key: str) -> None:
    """Where no single action can work the advice is words only: no operation, no action."""
    advised_ = advice.advise(key, hint="the raise site's words")
    assert advised_["operation"] is None
    assert advice.render(advised_["operation"], run_id="r-1") is None
    assert advised_["next_action"]


def test_every_scenario_belongs_to_an_entry_with_an_operation() -> None:
    """No scenario is left over from an entry that lost its operation (table and tests agree)."""
    assert set(SCENARIOS) - set(WITH_OPERATION) == set()
    assert set(TAKEN_ELSEWHERE) - set(WITH_OPERATION) == set()
    assert set(TAKEN_ELSEWHERE) & set(SCENARIOS) == set()
    assert advice.check_table() == []
