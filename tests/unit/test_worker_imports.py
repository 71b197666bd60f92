"""A worker process loads what a worker uses: `grantflow worker`'s module, imported in a fresh
interpreter, brings in none of the web stack, the console, the scheduler, the demo or the
publishing machinery (the gate, YAML, JSON Schema, cron), nor the SCIM client until a SCIM step
runs: they would only cost an idle worker memory
(docs/explanation/benchmarks.md, "The engine: the fixed cost of a run")."""

from __future__ import annotations

import json
import subprocess
import sys

NEVER_IN_A_WORKER = (
    "fastapi",
    "starlette",
    "uvicorn",
    "grantflow.api",
    "grantflow.console",
    "grantflow.demo",
    "grantflow.schedules.scheduler",
    "grantflow.definitions.gate",
    "grantflow.definitions.workflows",
    "yaml",
    "jsonschema",
    "croniter",
    "argon2",
    # loaded by a worker's first SCIM step, not before
    "httpx2",
    "httpcore2",
    "scim2_client",
)


def test_the_worker_command_imports_no_module_a_worker_never_uses() -> None:
    loaded = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys, grantflow.cli.worker; print(json.dumps(list(sys.modules)))",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert "grantflow.engine.worker" in loaded  # (the check looks at a real worker's imports)
    found = sorted(
        m for m in loaded if any(m == n or m.startswith(n + ".") for n in NEVER_IN_A_WORKER)
    )
    assert found == []
