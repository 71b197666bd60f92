"""A process that has imported the `grantflow` command once and forks a child per command.

A local `grantflow` command spends most of its 2 s importing the API app; the suite runs about
a thousand of them. This server imports it all once, then for each request forks: the child
takes the request's environment, working directory, stdin and argv, runs `grantflow.cli.main`
exactly as `python -m grantflow` does, and exits with its code. Each command is still its own
process on the real database; only the imports are shared. (`tests.support.processes`
decides when to use it; the process-level tests start the real command.)

Protocol, on a Unix socket: the client sends one JSON object and shuts down its write side;
the server answers one JSON object: {"returncode", "stdout", "stderr"} or {"timeout": true}.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
import traceback
from typing import Any

PRELOAD = (
    "grantflow.cli.main",
    "grantflow.cli.local",
    "grantflow.cli.direct",
    "grantflow.cli.client",
    "grantflow.api.app",
    "grantflow.store.migrate",
    "grantflow.engine",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "psycopg",
    "alembic.command",
)


def preload() -> None:
    from grantflow.cli.main import COMMANDS

    for name in PRELOAD:
        importlib.import_module(name)
    for entry in COMMANDS.values():
        importlib.import_module(entry.target.partition(":")[0])


def _exit_code(exc: SystemExit) -> int:
    """What the interpreter makes of SystemExit(code) (a message goes to stderr, exit 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _command(request: dict[str, Any], stdin: int, stdout: int, stderr: int) -> None:
    """In the forked child: become `grantflow ARGS...` and exit."""
    code = 1
    try:
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import grantflow

        # as `python -m grantflow` sets them (click names the program from these)
        entry = os.path.join(os.path.dirname(grantflow.__file__), "__main__.py")
        sys.argv = [entry, *request["args"]]
        sys.modules["__main__"].__package__ = "grantflow"
        from grantflow.cli.main import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve_one(connection: socket.socket) -> None:
    """In a child of the server: run one request in a grandchild and answer with its result."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    request = json.loads(b"".join(chunks))
    with (
        tempfile.TemporaryFile() as stdin,
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
    ):
        if request.get("input") is not None:
            stdin.write(request["input"].encode())
            stdin.seek(0)
        pid = os.fork()
        if pid == 0:
            connection.close()
            _command(request, stdin.fileno(), stdout.fileno(), stderr.fileno())
        exited = os.pidfd_open(pid)
        ready, _, _ = select.select([exited], [], [], request["timeout"])
        if not ready:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        stdout.seek(0)
        stderr.seek(0)
        answer: dict[str, Any] = {
            "timeout": not ready,
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": stdout.read().decode(errors="replace"),
            "stderr": stderr.read().decode(errors="replace"),
        }
    connection.sendall(json.dumps(answer).encode())
    connection.close()


def main(path: str) -> None:
    preload()
    sys.stdout.flush()
    sys.stderr.flush()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("ready", flush=True)
    while True:
        # stdin closes when the test process that started this server exits
        ready, _, _ = select.select([server, sys.stdin], [], [])
        if sys.stdin in ready:
            return
        connection, _ = server.accept()
        if os.fork() == 0:
            server.close()
            try:
                _serve_one(connection)
            finally:
                os._exit(0)
        connection.close()


if __name__ == "__main__":
    main(sys.argv[1])
