"""CLI start-up benchmark: the CPU time (user + system, from `os.wait4`) of whole `grantflow`
processes, median of N runs. Prints ONE JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/cli.py            # 9 runs of each remote command, 3 of local ones
    .venv/bin/python bench/cli.py --runs 21

It makes a demo workspace (SQLite) in a temporary directory, starts `grantflow serve` on
127.0.0.1 (no worker, no scheduler) and measures:
- help, version: `grantflow --help`, `grantflow --version`;
- remote_runs_list_json, remote_inbox_list_json: the command against that server
  (GRANTFLOW_URL and GRANTFLOW_TOKEN), from a directory with no database;
- local_runs_list_json: the same command on the local database (the API app in the process).
Targets: help and remote_runs_list_json under 300 ms of CPU. `remote_imports` says whether the
remote command loaded SQLAlchemy, FastAPI, pydantic or the engine (it should load none).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

GRANTFLOW = [sys.executable, "-m", "grantflow"]
TARGET_MS = 300
HEAVY = ("sqlalchemy", "fastapi", "pydantic", "grantflow.engine", "grantflow.api")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_ms(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """One process's CPU time (user + system), in milliseconds; it must succeed."""
    process = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    stderr = process.stderr.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {stderr.decode(errors='replace')}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def measure(args: list[str], env: dict[str, str], cwd: Path, runs: int) -> dict[str, Any]:
    cpu_ms(args, env, cwd)  # a first run writes the bytecode caches
    samples = sorted(cpu_ms(args, env, cwd) for _ in range(runs))
    return {
        "median_ms": round(statistics.median(samples), 1),
        "min_ms": round(samples[0], 1),
        "max_ms": round(samples[-1], 1),
        "runs": runs,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTFLOW_")}
    env["XDG_CONFIG_HOME"] = "/nonexistent/grantflow-bench"  # no login profile
    env["GRANTFLOW_LOG_FORMAT"] = "json"
    env.update({f"GRANTFLOW_{k.upper()}": v for k, v in settings.items()})
    return env


def remote_imports(env: dict[str, str], cwd: Path) -> dict[str, bool]:
    """Which heavy modules a remote `runs list --json` loads (run in one process to look)."""
    code = (
        "import sys; sys.argv = ['grantflow', 'runs', 'list', '--json']\n"
        "from grantflow.cli.main import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        f"import json; print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    shown: dict[str, bool] = json.loads(done.stderr.strip().splitlines()[-1])
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each fast command")
    parser.add_argument("--local-runs", type=int, default=3, help="runs of the local command")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grantflow-bench-cli-") as tmp:
        home, operator = Path(tmp) / "server", Path(tmp) / "operator"
        home.mkdir()
        operator.mkdir()
        local = base_env(
            database_url=f"sqlite:///{home / 'grantflow.db'}",
            secret_key_file=str(home / "secret.key"),
        )
        log("creating the demo workspace")
        demo = json.loads(
            subprocess.run(
                [*GRANTFLOW, "demo", "--json"],
                env=local,
                cwd=home,
                capture_output=True,
                check=True,
                text=True,
            ).stdout
        )
        port = free_port()
        server = subprocess.Popen(
            [*GRANTFLOW, "serve", "--port", str(port), "--worker-concurrency", "0",
             "--no-scheduler"],
            env=local, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("grantflow serve did not start")
                time.sleep(0.1)
            remote = base_env(url=url, token=demo["token"])
            approver = base_env(url=url, token=demo["approver_token"])
            results: dict[str, Any] = {}
            for name, args, env, cwd, runs in (
                ("help", ["--help"], base_env(), operator, options.runs),
                ("version", ["--version"], base_env(), operator, options.runs),
                ("remote_runs_list_json", ["runs", "list", "--json"], remote, operator,
                 options.runs),
                ("remote_inbox_list_json", ["inbox", "list", "--json"], approver, operator,
                 options.runs),
                ("local_runs_list_json", ["runs", "list", "--json"], local, home,
                 options.local_runs),
            ):  # fmt: skip
                log(f"measuring {name}")
                results[name] = measure([*GRANTFLOW, *args], env, cwd, runs)
            results["remote_imports"] = remote_imports(remote, operator)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    results["target_ms"] = TARGET_MS
    results["met"] = all(
        results[k]["median_ms"] < TARGET_MS for k in ("help", "remote_runs_list_json")
    ) and not any(results["remote_imports"].values())
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
