"""A command that waits for the workers (`identities import`, `reports generate` of a large
report) against a server where no worker runs: it says so at once and names the command that
starts one, and a worker started then lets the same command finish; Ctrl-C stops the waiting,
not the work, and names the command that shows the work later. Each line's advice is taken
here: the worker is started as it says, and the command it names for later is run."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grantflow.auth.permissions import Role
from grantflow.cli.waiting import INTERRUPTED, NO_WORKER
from grantflow.governance import reports
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.processes import (
    COMMAND,
    WorkerProcess,
    grantflow_env,
    json_output,
    poll,
    run_grantflow,
    start_worker,
)

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.postgres,
    pytest.mark.parametrize("database", ["postgresql"], indirect=True),
]

PEOPLE = ["ada@example.com", "bob@example.com", "carl@example.com"]


def _ctrl_c_as_at_a_terminal() -> None:
    """SIGINT as a terminal's command gets it. A command a shell started in the background
    (as CI may run the suite) inherits SIGINT ignored, and Python then installs no Ctrl-C
    handler: the test's SIGINT would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Waiting:
    """A `grantflow` command in its own process, its stderr read line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [*COMMAND, *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ctrl_c_as_at_a_terminal,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def line_with(self, text: str) -> str:
        """The first stderr line holding `text` (fails early if the command exits)."""

        def found() -> str | None:
            hit = next((line for line in self.lines if text in line), None)
            if hit is None and self.process.poll() is not None:
                self._reader.join(timeout=10)
                raise AssertionError(f"exited with {self.process.returncode}: {self.lines}")
            return hit

        hit: str = poll(found, timeout=60, what=f"a line with {text!r}")
        return hit

    def finish(self) -> tuple[int, str, list[str]]:
        """Its exit code, stdout and stderr lines once it exits."""
        self.process.wait(timeout=120)  # (its stdout is small: the pipe holds it)
        assert self.process.stdout is not None
        stdout = self.process.stdout.read()
        self.close()
        return self.process.returncode, stdout, self.lines

    def close(self) -> None:
        """Ended (killed if it still runs) and its pipes closed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def commands() -> Iterator[Callable[[list[str], dict[str, str], Path], Waiting]]:
    """Starts `grantflow` commands that wait; each is ended and closed after the test, whatever
    became of it."""
    started: list[Waiting] = []

    def start(args: list[str], env: dict[str, str], cwd: Path) -> Waiting:
        started.append(Waiting(args, env, cwd))
        return started[-1]

    yield start
    for command in started:
        command.close()


@pytest.fixture
def server_env(api: Api) -> dict[str, str]:
    """A command line talking to the test's server as an operator."""
    env = grantflow_env(url=api.base_url)
    env["GRANTFLOW_TOKEN"] = api.user_token("ops@example.com", Role.OPERATOR, Role.AUDITOR)
    return env


@pytest.fixture
def workers(database: Database, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Where a test starts `grantflow worker` on its database, as the advice says; stopped
    at the end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_a_worker(database: Database, tmp_path: Path, started: list[WorkerProcess]) -> None:
    env = grantflow_env(
        database_url=database.url.render_as_string(hide_password=False),
        secret_key=base64.urlsafe_b64encode(database.master_keys()[0]).decode(),
    )
    started.append(start_worker(env, tmp_path, "--concurrency", "1"))


def people_csv(tmp_path: Path, name: str) -> Path:
    """PEOPLE, at a domain of their own per file."""
    path = tmp_path / f"{name}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "display_name"])
        writer.writerows([email.replace("example", name), email[:3]] for email in PEOPLE)
    return path


def stopped_with_ctrl_c(command: Waiting, noun: str, resume: str) -> str:
    """The waiting `command` said no worker runs; Ctrl-C stopped it (exit 130), naming the
    command that shows the work later (`resume`, `{}` for the work's id). The work's id."""
    said = command.line_with("no worker is running")
    work_id = re.match(rf"{noun} (\S+): ", said).group(1)  # type: ignore[union-attr]
    assert said == f"{noun} {work_id}: {NO_WORKER}; waiting"
    command.process.send_signal(signal.SIGINT)
    code, _, lines = command.finish()
    assert code == INTERRUPTED
    shown = resume.format(work_id)
    assert lines[-1] == f"stopped waiting; {noun} {work_id} goes on in the workers: {shown}"
    assert not any("Traceback" in line for line in lines)
    return work_id


def test_an_import_without_a_worker_says_so_and_ctrl_c_names_where_it_goes_on(
    api: Api,
    database: Database,
    server_env: dict[str, str],
    workers: list[WorkerProcess],
    commands: Callable[[list[str], dict[str, str], Path], Waiting],
    tmp_path: Path,
) -> None:
    first = commands(["identities", "import", str(people_csv(tmp_path, "a"))], server_env, tmp_path)
    # Ctrl-C: the waiting stops, the import stays with the workers
    import_id = stopped_with_ctrl_c(first, "import", "grantflow identities imports {}")
    resume = f"grantflow identities imports {import_id}"
    shown = json_output(run_grantflow(*resume.split()[1:], "--json", env=server_env, cwd=tmp_path))
    assert (shown["id"], shown["status"], shown["done_rows"]) == (import_id, "queued", 0)

    # another import waits; the advice is taken: a worker is started, and the command ends
    second = commands(
        ["identities", "import", str(people_csv(tmp_path, "b")), "--json"], server_env, tmp_path
    )
    second.line_with(NO_WORKER)
    start_a_worker(database, tmp_path, workers)
    code, stdout, lines = second.finish()
    assert code == 0, lines
    report = json.loads(stdout)
    assert (report["status"], report["counts"]["created"]) == ("succeeded", len(PEOPLE))
    assert sorted(r["email"] for r in report["results"]) == [
        email.replace("example", "b") for email in PEOPLE
    ]

    # and the import left to the workers by Ctrl-C was done by them too
    def done() -> dict[str, object] | None:
        view = json_output(
            run_grantflow(*resume.split()[1:], "--json", env=server_env, cwd=tmp_path)
        )
        return view if view["status"] == "succeeded" else None

    finished = poll(done, timeout=60, what="the first import to be done")
    assert finished["done_rows"] == len(PEOPLE)


def test_a_large_report_without_a_worker_says_so_and_ctrl_c_names_its_download(
    api: Api,
    database: Database,
    server_env: dict[str, str],
    workers: list[WorkerProcess],
    commands: Callable[[list[str], dict[str, str], Path], Waiting],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reports, "INLINE_ROWS", 2)  # (the server runs in this process)
    with api.as_role(Role.ADMIN, "admin@example.com") as admin:
        for email in PEOPLE:  # audit entries: more rows than a request writes
            assert admin.post("/api/v1/identities", json={"email": email}).status_code == 201
    args = ["reports", "generate", "audit_export"]
    first = commands(args, server_env, tmp_path)
    report_id = stopped_with_ctrl_c(first, "report", "grantflow reports download {} -o FILE")
    resume = f"grantflow reports download {report_id} -o FILE"

    # the report is still being written: its download says so
    early = run_grantflow(
        "reports", "download", report_id, "-o", str(tmp_path / "early.csv"),
        env=server_env, cwd=tmp_path,
    )  # fmt: skip
    assert early.returncode == 1
    assert early.stderr.startswith(f"error: report {report_id} is being generated"), early.stderr

    # the advice taken: a worker started, a waiting `generate -o` ends with the file written
    second = commands([*args, "-o", str(tmp_path / "second.csv")], server_env, tmp_path)
    second.line_with(NO_WORKER)
    start_a_worker(database, tmp_path, workers)
    code, stdout, lines = second.finish()
    assert code == 0, lines
    digest = re.search(r"sha256 ([0-9a-f]{64})", stdout).group(1)  # type: ignore[union-attr]
    assert hashlib.sha256((tmp_path / "second.csv").read_bytes()).hexdigest() == digest

    # and the first report's download, as Ctrl-C named it, works once the worker wrote it
    target = tmp_path / "first.csv"

    def downloaded() -> str | None:
        done = run_grantflow(
            *resume.replace("FILE", str(target)).split()[1:], env=server_env, cwd=tmp_path
        )
        return done.stdout if done.returncode == 0 else None

    said = poll(downloaded, timeout=60, what="the first report's download")
    content = target.read_bytes()
    assert (
        said.strip()
        == f"{target}: {len(content)} bytes, sha256 {hashlib.sha256(content).hexdigest()}"
    )
    assert "identity.created" in content.decode()
