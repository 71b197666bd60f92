"""A worker process loads what a worker uses: `grantflow worker`'s module, loaded as the command
line loads it in a fresh interpreter, brings in none of the web stack, the console, the
scheduler, the demo, the publishing machinery (the gate, YAML, JSON Schema, cron) or the
terminal libraries (rich, pygments), nor `cryptography` until a key is used, nor a step type's
module (and its libraries) until a step of that type runs: they would only cost an idle worker
memory
(docs/explanation/benchmarks.md, "The engine: the fixed cost of a run")."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from grantflow.steps import registry
from grantflow.steps.registry import ENTRY_POINT_GROUP, get_step_type, load_entry

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
    # loaded when a credential is decrypted or a key derived (about 7 MB), not before
    "cryptography",
    # SQLite's driver, in a process on PostgreSQL
    "sqlite3",
    # loaded by a worker's first SCIM step, not before
    "grantflow.steps.scim",
    "scim2_models",
    "httpx2",
    "httpcore2",
    "scim2_client",
    # what httpx and structlog import when installed, for terminal output a worker never makes
    "rich",
    "pygments",
    "colorama",
    # what structlog imports when installed, for context per greenlet; a worker's are threads
    "greenlet",
)

# `grantflow worker`'s module, loaded as the command line loads it
WORKER_COMMAND = (
    "from grantflow.cli.lazy import load; from grantflow.cli.main import COMMANDS; "
    "load('worker', COMMANDS['worker'])"
)


def _loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running `code`."""
    return list(
        json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"{code}; import json, sys; print(json.dumps(list(sys.modules)))",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    )


def test_the_worker_command_imports_no_module_a_worker_never_uses() -> None:
    loaded = _loaded_after(WORKER_COMMAND)
    assert "grantflow.engine.worker" in loaded  # (the check looks at a real worker's imports)
    found = sorted(
        m for m in loaded if any(m == n or m.startswith(n + ".") for n in NEVER_IN_A_WORKER)
    )
    assert found == []


def test_a_step_type_is_imported_when_a_step_of_it_runs_and_not_before() -> None:
    loaded = _loaded_after(
        f"{WORKER_COMMAND}; from grantflow.steps.registry import get_step_type; "
        "assert get_step_type('set') and get_step_type('http')"
    )
    assert "grantflow.steps.control" in loaded
    assert "grantflow.steps.http" in loaded
    others = sorted(
        m for m in loaded if m.startswith(("grantflow.steps.scim", "grantflow.steps.idp", "scim2_"))
    )
    assert others == []
    # a SCIM step's first run brings its module in
    loaded = _loaded_after(
        "from grantflow.steps.registry import get_step_type; get_step_type('scim.create_user')"
    )
    assert "grantflow.steps.scim" in loaded
    assert "scim2_models" in loaded


def test_the_terminal_libraries_a_worker_went_without_can_still_be_imported() -> None:
    """They are hidden while the worker's module loads, not after: `grantflow worker --help`
    and whatever needs them later still get them."""
    loaded = _loaded_after(f"{WORKER_COMMAND}; import rich.console, pygments, greenlet")
    assert "rich.console" in loaded
    assert "pygments" in loaded
    assert "greenlet" in loaded


def test_hiding_a_package_makes_its_import_fail_within_and_not_after() -> None:
    loaded = _loaded_after(
        "from grantflow.cli.lazy import hiding\n"
        "with hiding(('pygments', 'typer')):\n"
        "    import typer  # already imported: not hidden\n"
        "    try:\n"
        "        import pygments\n"
        "    except ImportError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError('pygments was imported while hidden')\n"
        "import pygments.lexer"
    )
    assert "pygments.lexer" in loaded


@pytest.fixture
def misnamed_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed step types plus a plugin whose entry point is named otherwise than the
    step type it holds (`okta.set` holding `set`'s type, standing in for a plugin's own)."""
    installed = dict(registry._entry_points())
    entry = EntryPoint("okta.renamed", "grantflow.steps.control:SET_STEP", ENTRY_POINT_GROUP)
    installed.pop("set")
    monkeypatch.setattr(registry, "_entry_points", lambda: {**installed, entry.name: entry})
    registry._loaded.cache_clear()
    registry.step_types.cache_clear()
    yield
    registry._loaded.cache_clear()
    registry.step_types.cache_clear()


@pytest.mark.usefixtures("misnamed_plugin")
def test_a_plugin_whose_entry_point_is_named_otherwise_is_found_by_its_type() -> None:
    found = get_step_type("set")
    assert found is not None
    assert found.name == "set"
    assert get_step_type("okta.renamed") is None
    assert "set" in registry.step_types()


def _cached() -> int:
    """Entries held by every cache in the registry."""
    caches = (getattr(f, "cache_info", None) for f in vars(registry).values() if callable(f))
    return sum(info().currsize for info in caches if info is not None)


def test_unknown_names_are_not_kept() -> None:
    """Names come from requests (`GET /schemas/steps/{type}`, documents): asking for unknown
    ones holds nothing more than asking for one."""
    assert get_step_type("no.such.type") is None  # (loads every type once)
    held = _cached()
    for n in range(100):
        assert get_step_type(f"no.such.type{n}") is None
    assert _cached() == held


def test_an_entry_point_that_holds_no_step_type_is_refused() -> None:
    entry = EntryPoint("weird", "grantflow.steps.control:SetConfig", ENTRY_POINT_GROUP)
    with pytest.raises(TypeError, match="is not a StepType"):
        load_entry(entry)


def test_a_worker_settled_on_its_run_listeners_holds_no_scheduler_nor_validator() -> None:
    """After its first timer tick (which loads every run listener) and a `set` step, a worker
    still holds neither the scheduler with cron (the tick flags overdue jobs without them) nor
    a JSON Schema validator (only a start with an input schema needs one)."""
    loaded = _loaded_after(
        f"{WORKER_COMMAND}; from grantflow.engine import hooks; hooks.load(); "
        "from grantflow.steps.registry import get_step_type; get_step_type('set')"
    )
    assert "grantflow.schedules.listeners" in loaded
    unused = ("jsonschema", "grantflow.schedules.scheduler", "croniter", "cron_descriptor")
    assert [m for m in loaded if any(m == n or m.startswith(n + ".") for n in unused)] == []
