"""Hostile documents against a live `grantflow serve` (API, worker and scheduler in one process,
as on a laptop): /healthz latency while hostile documents are published, dry-run and run.
Prints ONE JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/hostile.py             # SQLite in a temporary directory
    .venv/bin/python bench/hostile.py --rounds 5  # more rounds of the hostile set

A prober thread GETs /healthz back to back the whole time (one kept-alive connection, so the
figures are the server's, not a loaded client's connection setup); the figures are its
latencies: p50, p99 and max in ms, and p99 of a quiet baseline measured first. Target: p99 <
100 ms under load. The hostile set: constants
over the limits (`7 ** (10 ** 7)`, `7 ** 6000 > x`), a YAML alias bomb, a 700 KB YAML
document, dry-runs and runs of templates that loop (CPU budget), pad, repeat and concatenate
past the limits; every answer and run outcome is checked and counted in the output.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import create_user
from grantflow.config import load_settings
from grantflow.store import migrate
from grantflow.store.database import open_database

YAML = {"Content-Type": "application/yaml"}
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
RUNNABLE = {
    "cpu": LOOP,
    "pad": "{{ 'x'.ljust(10 ** 9) }}",
    "repeat": "{{ [input.x] * 10 ** 9 }}",
    "double": "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "power": "{{ input.a ** input.b }}",
    "missing": "{{ [input.nope] }}",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def alias_bomb() -> str:
    lines = ['a: &a ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "name: Bomb\ntrigger: {type: manual}\ndescription:\n" + "\n".join(
        "  " + line for line in lines
    )


def big_yaml(number: int = 0) -> str:
    values = "\n".join(f"          k{i}: '{'v' * 60}'" for i in range(10_000))
    return (
        f"name: Big {number}\ntrigger: {{type: manual}}\nsteps:\n  - id: s\n    type: set\n"
        f"    config:\n        values:\n{values}\n"
    )


def one_step(name: str, template: str) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "manual"},
        "steps": [{"id": "s", "type": "set", "config": {"values": {"v": template}}}],
    }


class Prober(threading.Thread):
    """GETs /healthz back to back, keeping each latency (ms)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[float] = []
        self.at: list[float] = []  # when each sample started (perf_counter)
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stopping.is_set():
                started = time.perf_counter()
                self.at.append(started)
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.samples.append((time.perf_counter() - started) * 1000)
                self.failures += not ok
                time.sleep(0.005)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


PHASES: list[tuple[str, float]] = []  # (phase, start) for the per-phase figures


def phase(name: str) -> None:
    PHASES.append((name, time.perf_counter()))


def hostile_round(client: httpx.Client, tally: dict[str, int], number: int) -> list[str]:
    """Publish and dry-run the hostile set, start the runnable ones; the run ids."""

    def count(key: str) -> None:
        tally[key] = tally.get(key, 0) + 1

    phase("publish_constants")
    for name, template in (("Power", "{{ 7 ** (10 ** 7) }}"), ("Compare", "{{ 7 ** 6000 > 1 }}")):
        document = one_step(f"{name} {number}", template)
        created = client.post("/api/v1/workflows", json=document).json()
        wid = created["workflow"]["id"]
        answer = client.post(f"/api/v1/workflows/{wid}/versions/1/publish")
        count(f"publish_constant_{answer.status_code}")
        client.post(f"/api/v1/workflows/{wid}/disable")
    runs = []
    for key, text in (("alias_bomb", alias_bomb()), ("big_yaml", big_yaml(number))):
        phase(key)
        answer = client.post("/api/v1/workflows", content=text, headers=YAML)
        count(f"{key}_{answer.status_code}")
        if answer.status_code == 201:  # the big one: publish and run it too
            wid = answer.json()["workflow"]["id"]
            phase(f"{key}_publish")
            count(
                f"{key}_publish_{client.post(f'/api/v1/workflows/{wid}/versions/1/publish').status_code}"
            )
            phase(f"{key}_run")
            started = client.post(f"/api/v1/workflows/{wid}/runs", json={"input": {}})
            if started.status_code == 201:
                runs.append(started.json()["id"])
    for key, template in RUNNABLE.items():
        phase(f"dry_run_publish_start_{key}")
        created = client.post("/api/v1/workflows", json=one_step(f"Run {key} {number}", template))
        wid = created.json()["workflow"]["id"]
        dry = client.post(f"/api/v1/workflows/{wid}/versions/1/dry-run", json={"input": {"x": 1}})
        count(f"dry_run_{dry.status_code}")
        publish = client.post(f"/api/v1/workflows/{wid}/versions/1/publish")
        count(f"publish_runnable_{publish.status_code}")
        started = client.post(
            f"/api/v1/workflows/{wid}/runs", json={"input": {"x": 1, "a": 7, "b": 6000}}
        )
        if started.status_code == 201:
            runs.append(started.json()["id"])
    return runs


def worst_by_phase(prober: Prober) -> dict[str, float]:
    """The slowest /healthz answer that started in each phase (phases of all rounds merged)."""
    worst: dict[str, float] = {}
    for (name, start), (_, end) in itertools.pairwise(PHASES):
        key = name.removeprefix("dry_run_publish_start_")
        for at, latency in zip(prober.at, prober.samples, strict=True):
            if start <= at < end:
                worst[key] = max(worst.get(key, 0.0), round(latency, 1))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the hostile set")
    parser.add_argument("--port", type=int, default=8765)
    options = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="grantflow-hostile-"))
    env = {
        **os.environ,
        "GRANTFLOW_DATABASE_URL": f"sqlite:///{directory}/grantflow.db",
        "GRANTFLOW_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "GRANTFLOW_PORT": str(options.port),
        "GRANTFLOW_LOG_LEVEL": "warning",
    }
    settings = load_settings(
        database_url=env["GRANTFLOW_DATABASE_URL"], secret_key=env["GRANTFLOW_SECRET_KEY"]
    )
    database = open_database(settings.database)
    migrate.upgrade(database)
    with database.transaction() as session:
        actor = Actor.system("bench")
        user = create_user(session, actor, email="bench@example.com", roles=[Role.ADMIN])
        _, token = create_token(session, actor, user_id=user.id, name="bench", ttl_days=1)
    database.dispose()
    grantflow = Path(sys.executable).with_name("grantflow")
    server = subprocess.Popen(
        [str(grantflow), "serve", "--worker-concurrency", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(directory / "serve.log").open("wb"),
    )
    url = f"http://127.0.0.1:{options.port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("grantflow serve did not start; see " + str(directory))
            time.sleep(0.2)
        log("measuring a quiet baseline")
        quiet = Prober(url)
        quiet.start()
        time.sleep(3)
        quiet.stopping.set()
        quiet.join()
        prober = Prober(url)
        prober.start()
        tally: dict[str, int] = {}
        outcomes: dict[str, int] = {}
        started = time.perf_counter()
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as client:
            run_ids: list[str] = []
            for number in range(options.rounds):
                log(f"hostile round {number + 1}/{options.rounds}")
                run_ids += hostile_round(client, tally, number)
            log(f"waiting for {len(run_ids)} runs")
            phase("runs")
            for run_id in run_ids:
                until = time.monotonic() + 300
                while True:
                    shown = client.get(f"/api/v1/runs/{run_id}").json()
                    if shown["status"] in ("succeeded", "failed", "timed_out", "cancelled"):
                        failure = shown.get("failure") or {}
                        key = f"{shown['status']}:{failure.get('class')}:{failure.get('code')}"
                        outcomes[key] = outcomes.get(key, 0) + 1
                        break
                    if time.monotonic() > until:
                        outcomes["unfinished"] = outcomes.get("unfinished", 0) + 1
                        break
                    time.sleep(0.2)
        elapsed = time.perf_counter() - started
        phase("end")
        prober.stopping.set()
        prober.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    samples = prober.samples
    print(
        json.dumps(
            {
                "benchmark": "hostile",
                "database": "sqlite",
                "rounds": options.rounds,
                "seconds": round(elapsed, 1),
                "healthz_requests": len(samples),
                "healthz_failures": prober.failures,
                "healthz_p50_ms": pct(samples, 0.50),
                "healthz_p99_ms": pct(samples, 0.99),
                "healthz_max_ms": round(max(samples), 1),
                "quiet_p99_ms": pct(quiet.samples, 0.99),
                "quiet_median_ms": round(statistics.median(quiet.samples), 1),
                "target_p99_ms": 100,
                "worst_ms_by_phase": worst_by_phase(prober),
                "answers": dict(sorted(tally.items())),
                "runs": dict(sorted(outcomes.items())),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
