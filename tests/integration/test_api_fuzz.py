"""The whole OpenAPI document fuzzed by schemathesis against a live server, on both databases:
no 5xx, and every answer as the document says (status, content type, headers, body schema)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.auth.permissions import Role
from tests.conftest import Api
from tests.support.engine import publish, start, workflow

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# A fixed seed and budget in the suite; an exploratory run may set others (e.g.
# FUZZ_SEED=7 FUZZ_MAX_EXAMPLES=60 pytest tests/integration/test_api_fuzz.py).
# Each database draws its own cases (the seed plus one on PostgreSQL): the two runs together
# try more than either.
SEED = int(os.environ.get("FUZZ_SEED", "20261205"))
# Per operation and phase; with ~120 operations this keeps a run under a minute of two cores
# (the coverage phase adds its own boundary cases on top). SQLite, where a server error is
# rarer (no strict types, no connection to lose), gets fewer.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "7"))
SQLITE_MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "4"))
# The phases to run (schemathesis's --phases), all of them unless named.
PHASES = os.environ.get("FUZZ_PHASES")
# A safety net only: about a minute on an idle 2-core machine, several on a loaded one.
TIMEOUT = int(os.environ.get("FUZZ_TIMEOUT", "900"))
# One half of the operations (the other half is the rest), for two processes side by side.
HALF = r"^/api/v1/(workflows|runs|identities|grants|users|me|tokens|connections|schemas|queue)(/|$)"


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def seed(api: Api, admin: httpx.Client) -> dict[str, list[Any]]:
    """Objects for the fuzzer to act on (their ids are drawn for path parameters half the
    time; the other half are random and answer 404)."""
    app = _ok(admin.post("/api/v1/applications", json={"name": "Fuzz app"}), 201)["id"]
    connection = _ok(
        admin.post(
            f"/api/v1/applications/{app}/connections",
            json={"name": "fuzz", "base_url": "https://fuzz.example.com"},
        ),
        201,
    )["id"]
    wf = publish(
        api.database,
        workflow(
            "fuzzed",
            {"id": "greet", "type": "set", "config": {"values": {"hi": "{{ input.name }}"}}},
            {"id": "pause", "type": "delay", "config": {"duration": "1m"}},
        ),
    )
    run = start(api.database, wf, {"name": "ada"})
    identity = _ok(admin.post("/api/v1/identities", json={"email": "ada@example.com"}), 201)["id"]
    grant = _ok(admin.post("/api/v1/grants", json={"identity": identity, "application": app}), 201)[
        "id"
    ]
    spare = _ok(
        admin.post("/api/v1/users", json={"email": "spare@example.com", "roles": ["viewer"]}), 201
    )["id"]
    spare_token = _ok(admin.post(f"/api/v1/users/{spare}/tokens", json={"name": "spare"}), 201)
    return {
        "app_id": [app],
        "application_id": [app],
        "connection_id": [connection],
        "workflow_id": [wf],
        "number": [1],
        "run_id": [run],
        "identity_id": [identity],
        "grant_id": [grant],
        "user_id": [spare],
        "token_id": [spare_token["id"]],
    }


def config(
    ids: dict[str, list[Any]], own_token: str, seed: int, examples: int, *, refusals: bool
) -> str:
    lines = [
        f"seed = {seed}",
        "workers = 1",
        "request-timeout = 120",  # a loaded machine answers late, not wrongly
        'headers = { Authorization = "Bearer ' + own_token + '" }',
        "[cache]",
        "enabled = false",  # no crash files kept between runs: each run is the seed's alone
        "[generation]",
        f"max-examples = {examples}",
        'database = "none"',  # the same cases every time: nothing carried over between runs
        "[checks]",
        "enabled = true",
        # Valid by the schema but refused for what the schema cannot say (a forged cursor, a
        # name taken, a document the publish gate refuses, a duration too long): 400, 404,
        # 409 and 422 naming the field are the right answers there.
        "[checks.positive_data_acceptance]",
        'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422"]',
        # Invalid by the schema: refused, and a body past the size limit (a list longer than
        # its maxItems can be) is refused with a 413 before it is read.
        "[checks.negative_data_rejection]",
        'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", '
        '"422", "428", "429", "5xx"]',
        *(
            []
            if refusals
            # The coverage phase's requests the API refuses before any database is touched (a
            # method a path does not have; a case invalid by the schema) answer the same on
            # both databases: one of them sends them.
            else [
                "[phases.coverage]",
                "unexpected-methods = []",
                "[phases.coverage.generation]",
                'mode = "positive"',
            ]
        ),
        "[dictionaries]",
        *(f"{name} = {{ values = {json.dumps(values)} }}" for name, values in ids.items()),
        "[parameters]",
        *(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in ids),
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(TIMEOUT + 60)
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(
    api: Api, admin: httpx.Client, tmp_path: Path
) -> None:
    """Every operation, fuzzed with a fixed seed and budget: no 5xx, no undocumented answer."""
    ids = seed(api, admin)
    own_token = admin.headers["Authorization"].removeprefix("Bearer ")
    me = _ok(admin.get("/api/v1/me"))
    mine = _ok(admin.get("/api/v1/me/tokens"))
    toml = tmp_path / "schemathesis.toml"
    postgres = api.database.dialect == "postgresql"
    examples = MAX_EXAMPLES if postgres else SQLITE_MAX_EXAMPLES
    toml.write_text(config(ids, own_token, SEED + postgres, examples, refusals=postgres))
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.fuzz_hooks",
        "PYTHONPATH": str(REPO),
        "FUZZ_OWN_TOKEN_ID": mine[0]["id"],
        "FUZZ_SPARE_TOKEN_ID": ids["token_id"][0],
        "FUZZ_OWN_USER_ID": me["id"],
        "FUZZ_SPARE_USER_ID": ids["user_id"][0],
    }
    # Two single-threaded schemathesis processes side by side, each on half the operations:
    # as fast as two worker threads, without CPython 3.11's ast module failing when two threads
    # parse at once (hypothesis describes its filters with it; "AST constructor recursion depth
    # mismatch").
    halves = [("--include-path-regex", HALF), ("--exclude-path-regex", HALF)]
    processes = [
        subprocess.Popen(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(toml),
                "--no-color",
                "run",
                f"{api.base_url}/api/v1/openapi.json",
                "--checks",
                "all",
                "--max-failures",
                "50",
                *(["--phases", PHASES] if PHASES else []),
                option,
                regex,
            ],
            cwd=tmp_path,  # (whatever schemathesis writes stays out of the repository)
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for option, regex in halves
    ]
    try:
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT)
            # the failures (each with a curl line reproducing it), then the summary
            report = output[output.find("= FAILURES =") :][:40000] + output[-3000:]
            assert process.returncode == 0, f"schemathesis found failures:\n{report}"
            assert "Tested: 0" not in output
    finally:
        for process in processes:  # (only if a failure left one running)
            if process.poll() is None:
                process.kill()
                process.communicate()  # (reads and closes its pipe)
    # The fuzzer's own admin kept working to the end (the hooks kept it armed).
    assert admin.get("/api/v1/me").status_code == 200
    assert Role.ADMIN in _ok(admin.get("/api/v1/me"))["roles"]
