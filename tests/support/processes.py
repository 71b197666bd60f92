"""The real `grantflow` command as a subprocess: one-shot commands and a served process."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.services import free_port

COMMAND = [sys.executable, "-m", "grantflow"]


def grantflow_env(**settings: str | Path) -> dict[str, str]:
    """This process's environment without any GRANTFLOW_* variable, plus `settings`
    (`database_url="..."` becomes GRANTFLOW_DATABASE_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GRANTFLOW_")}
    env["GRANTFLOW_LOG_FORMAT"] = "json"
    # The tests' external systems listen on 127.0.0.1, which the outbound guard refuses
    # unless allowlisted.
    env["GRANTFLOW_OUTBOUND_ALLOW"] = "127.0.0.1"
    # no `grantflow login` profile of the machine's user may turn a test's CLI remote
    env["XDG_CONFIG_HOME"] = "/nonexistent/grantflow-tests"

    env.update({f"GRANTFLOW_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def run_grantflow(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `grantflow ARGS...` to completion in its own process and capture its output.

    The process is forked from a server that has imported Grantflow once
    (`tests.support.cli_fork_server`): a local command would otherwise spend about 2 s of CPU
    importing the API app. GRANTFLOW_TEST_CLI=exec runs `python -m grantflow` instead."""
    if os.environ.get("GRANTFLOW_TEST_CLI") == "exec":
        return subprocess.run(
            [*COMMAND, *args],
            env=env,
            cwd=cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    request = {"args": list(args), "env": env, "cwd": str(cwd), "timeout": timeout}
    answer = _fork_server().run({**request, "input": input}, timeout)
    if answer["timeout"]:
        raise subprocess.TimeoutExpired([*COMMAND, *args], timeout)
    return subprocess.CompletedProcess(
        [*COMMAND, *args], answer["returncode"], answer["stdout"], answer["stderr"]
    )


class ForkServer:
    """The fork server of this test process (started on first use, gone when this process
    exits: it stops when its stdin closes)."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="grantflow-cli-")
        self.path = os.path.join(self.directory, "fork.sock")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cli_fork_server", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[2],
            env={k: v for k, v in os.environ.items() if not k.startswith("GRANTFLOW_")},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        atexit.register(shutil.rmtree, self.directory, True)
        if line.strip() != b"ready":
            raise RuntimeError(f"the CLI fork server did not start (exit {self.process.wait()})")

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout + 30)  # the server kills the command at `timeout`
            connection.connect(self.path)
            connection.sendall(json.dumps(request).encode())
            connection.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        answer: dict[str, Any] = json.loads(b"".join(chunks))
        return answer


_SERVER: list[ForkServer] = []

_SHIM = """#!{python} -S
# `grantflow` for a test's shell: the command runs forked from the test's fork server
# (tests/support/processes.py), with this process's arguments, environment, directory and stdin.
import json, os, socket, sys

request = {{
    "args": sys.argv[1:],
    "env": dict(os.environ),
    "cwd": os.getcwd(),
    "timeout": 600,
    "input": None if sys.stdin.isatty() else sys.stdin.read(),
}}
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
    connection.connect({socket_path!r})
    connection.sendall(json.dumps(request).encode())
    connection.shutdown(socket.SHUT_WR)
    answer = json.loads(b"".join(iter(lambda: connection.recv(65536), b"")))
sys.stdout.write(answer["stdout"])
sys.stderr.write(answer["stderr"])
sys.exit(answer["returncode"])
"""


def grantflow_shim(directory: Path) -> Path:
    """A directory holding a `grantflow` executable that runs each command through this
    process's fork server (put it first on a shell's PATH): a test that runs commands as a
    reader types them pays no import time per command. GRANTFLOW_TEST_CLI=exec: the
    virtualenv's real `grantflow` instead."""
    if os.environ.get("GRANTFLOW_TEST_CLI") == "exec":
        return Path(sys.executable).parent
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "grantflow"
    shim.write_text(_SHIM.format(python=sys.executable, socket_path=_fork_server().path))
    shim.chmod(0o755)
    return directory


def _fork_server() -> ForkServer:
    if not _SERVER or _SERVER[0].process.poll() is not None:
        _SERVER[:] = [ForkServer()]
    return _SERVER[0]


def json_output(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a successful command printed on stdout."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def poll(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Call `condition` until it returns something truthy or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class ServedProcess:
    """A running `grantflow serve`, its base URL, and its stderr captured in a file."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def log_events(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as JSON (a line that is not JSON fails the parse)."""
        return [json.loads(line) for line in self.stderr().splitlines() if line.strip()]

    def wait_for_log(self, match: Callable[[dict[str, Any]], bool], timeout: float = 30) -> Any:
        """The first log event `match` accepts, waiting for it to be written."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.log_events() if match(e)), None)

        return poll(found, timeout=timeout, what="a matching log event")

    def terminate(self, timeout: float = 15) -> int:
        """Send SIGTERM and wait for the process to exit; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def _healthy(served: ServedProcess) -> bool:
    if served.process.poll() is not None:
        raise AssertionError(
            f"grantflow serve exited with {served.process.returncode}:\n{served.stderr()}"
        )
    try:
        answered = httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
    # (the port was free when chosen: another test's server may have taken it since, and
    # answered for this one, which then fails to bind)
    return answered and _listening(served.process.pid, int(served.url.rsplit(":", 1)[1]))


def _listening(pid: int, port: int) -> bool:
    """Whether process `pid` holds the socket listening on `port` (Linux's /proc; elsewhere,
    assumed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            return True
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return True
    return False


@contextlib.contextmanager
def serving(
    env: dict[str, str], cwd: Path, timeout: float = 90, args: tuple[str, ...] = ()
) -> Iterator[ServedProcess]:
    """Start `grantflow serve ARGS...` on a free port and wait until /healthz answers over
    TCP."""
    port = free_port()
    stderr_path = cwd / f"serve-{port}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*COMMAND, "serve", "--port", str(port), *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    served = ServedProcess(process, f"http://127.0.0.1:{port}", stderr_path)
    try:
        poll(lambda: _healthy(served), timeout=timeout, what="grantflow serve to answer /healthz")
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class WorkerProcess:
    """A running `grantflow worker`, its stderr (JSON log lines) captured in a file."""

    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_events(self) -> list[dict[str, Any]]:
        """Every complete stderr line parsed as JSON (a partly written last line is left out)."""
        text = self.stderr_path.read_text()
        lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for_log(self, event: str, timeout: float = 60) -> dict[str, Any]:
        """The first log line whose event is `event`; fails early if the process exits."""

        def found() -> dict[str, Any] | None:
            hit = next((e for e in self.log_events() if e.get("event") == event), None)
            if hit is None and self.process.poll() is not None:
                raise AssertionError(
                    f"grantflow worker exited with {self.process.returncode} before logging "
                    f"{event}:\n{self.stderr_path.read_text()}"
                )
            return hit

        found_event: dict[str, Any] = poll(found, timeout=timeout, what=f"log event {event}")
        return found_event

    def worker_id(self, timeout: float = 60) -> str:
        """The worker id it registered under (from its `worker.started` line)."""
        worker: str = self.wait_for_log("worker.started", timeout)["worker"]
        return worker

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        return self.process.returncode


def start_worker(env: dict[str, str], cwd: Path, *args: str) -> WorkerProcess:
    """Start one `grantflow worker ARGS...`; the caller must stop it (`WorkerProcess.stop`)."""
    stderr_path = cwd / f"worker-{time.monotonic_ns()}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*COMMAND, "worker", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    return WorkerProcess(process, stderr_path)
