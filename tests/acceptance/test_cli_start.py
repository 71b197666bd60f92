"""The CLI started where there is no Grantflow: one line saying what is missing and the command
that fixes it, never a traceback; and a progress bar only for a person at a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import COMMAND, grantflow_env, json_output, run_grantflow

pytestmark = pytest.mark.acceptance


def test_a_data_command_in_an_empty_directory_says_the_database_is_missing(
    tmp_path: Path,
) -> None:
    """No GRANTFLOW_DATABASE_URL and no ./var/grantflow.db: exit 2, one error line naming the
    variable, one `next:` line naming `grantflow migrate`; nothing is created."""
    done = run_grantflow("runs", "list", env=grantflow_env(), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    error, next_line = done.stderr.splitlines()
    assert error == (
        "error: no Grantflow database at sqlite:///./var/grantflow.db (GRANTFLOW_DATABASE_URL): "
        "the file does not exist"
    )
    assert next_line.startswith("  next: set GRANTFLOW_DATABASE_URL")
    assert "`grantflow migrate`" in next_line
    assert os.listdir(tmp_path) == []


def test_a_database_without_the_schema_says_to_migrate(tmp_path: Path) -> None:
    """An existing but empty SQLite file: one line saying it has no Grantflow schema, and
    `grantflow migrate`; after migrating, the same command works."""
    sqlite3.connect(tmp_path / "empty.db").close()
    env = grantflow_env(
        database_url=f"sqlite:///{tmp_path / 'empty.db'}", secret_key_file=tmp_path / "k"
    )
    done = run_grantflow("identities", "list", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    error, next_line = done.stderr.splitlines()
    assert error.startswith(f"error: the database sqlite:///{tmp_path / 'empty.db'}")
    assert "(GRANTFLOW_DATABASE_URL) has no Grantflow schema" in error
    assert next_line.startswith("  next: run `grantflow migrate`")
    json_output(run_grantflow("migrate", "--json", env=env, cwd=tmp_path))
    assert json_output(run_grantflow("identities", "list", "--json", env=env, cwd=tmp_path)) == []


def test_help_lists_every_command_without_loading_them(tmp_path: Path) -> None:
    """`grantflow --help` lists the commands under two headings; it needs no database."""
    done = run_grantflow("--help", env=grantflow_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Commands (through the API" in done.stdout
    assert "Commands on the database" in done.stdout
    for name in ("runs", "inbox", "login", "serve", "migrate", "keys"):
        assert f"\n  {name} " in done.stdout


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as stdout and stderr; its exit code and output."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [*COMMAND, *args], env={**env, "TERM": "xterm", "COLUMNS": "100"}, cwd=cwd,
        stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    return process.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_an_import_shows_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    """On a terminal the import draws a progress bar; with --json, or into a pipe, it prints
    only its result."""
    env = grantflow_env(
        database_url=f"sqlite:///{tmp_path / 'g.db'}", secret_key_file=tmp_path / "k"
    )
    json_output(run_grantflow("migrate", "--json", env=env, cwd=tmp_path))
    people = tmp_path / "people.csv"
    people.write_text("email,display_name\nkim@example.com,Kim\n")
    code, shown = _on_a_terminal(["identities", "import", str(people)], env, tmp_path)
    assert code == 0, shown
    assert "importing people.csv" in shown
    assert "1 rows: 1 created" in shown
    people.write_text("email,display_name\nlee@example.com,Lee\n")
    code, quiet = _on_a_terminal(["identities", "import", str(people), "--json"], env, tmp_path)
    assert code == 0, quiet
    assert "importing" not in quiet
    assert json.loads(quiet)["counts"]["created"] == 1
    piped = run_grantflow("identities", "import", str(people), env=env, cwd=tmp_path)
    assert piped.returncode == 0
    assert "importing" not in piped.stdout + piped.stderr


def test_shell_completion_completes_commands(tmp_path: Path) -> None:
    """Bash completion (what `--install-completion` installs) completes command names, loading
    only the group being completed."""
    env = {**grantflow_env(), "_GRANTFLOW_COMPLETE": "complete_bash"}
    env.update(COMP_WORDS="grantflow runs re", COMP_CWORD="2")
    script = Path(sys.executable).with_name("grantflow")  # (the installed entry point)
    done = subprocess.run(
        [script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {"retry", "replay", "resume"}
    # the shell named, not found among this process's ancestors (a test runner started
    # from something other than a shell has none)
    named = {**grantflow_env(), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = run_grantflow("--show-completion", "bash", env=named, cwd=tmp_path)
    assert "complete_bash" in shown.stdout
