"""`grantflow reports download -o FILE` (its own process): the content is written as it comes
and stands only when its SHA-256 matches. A link and a FIFO are written in place, through
them; a file keeps its permissions; a full disk is said as the file's fault, not the server's;
a body cut short is said as the connection's, not as tampering; an answer without its SHA-256
(a redirect from something in between) is refused; nothing of a part is left behind."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import COMMAND, grantflow_env, poll

pytestmark = pytest.mark.acceptance

REPORT_ID = "01a25250-0000-7000-8000-000000000001"
CONTENT = b"id,name\r\n" + b"".join(b"%d,person %d\r\n" % (i, i) for i in range(2000))
SHA = hashlib.sha256(CONTENT).hexdigest()


class _Server(BaseHTTPRequestHandler):
    """A server answering a report's content as `mode` says: whole, cut short, or with a
    redirect (as a proxy in between might)."""

    mode = "whole"
    release = threading.Event()

    def do_GET(self) -> None:
        if not self.path.endswith(f"/reports/{REPORT_ID}/content"):
            self.send_error(404)
            return
        if self.mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(CONTENT)))
        self.send_header("X-Content-SHA256", SHA)
        self.end_headers()
        if self.mode == "slow":  # the rest comes once the test says so
            self.wfile.write(CONTENT[:1000])
            self.wfile.flush()
            assert self.release.wait(60)
            self.wfile.write(CONTENT[1000:])
            return
        if self.mode == "cut":
            self.wfile.write(CONTENT[:1000])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(CONTENT)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Server]]]:
    handler = type("Handler", (_Server,), {"mode": "whole", "release": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    handler.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def download(
    url: str, cwd: Path, output: str, *, file_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own (optionally with a file size limit: a full disk)."""

    def limited() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**grantflow_env(url=url), "GRANTFLOW_TOKEN": "unused"}
    return subprocess.run(
        [*COMMAND, "reports", "download", REPORT_ID, "-o", output],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=limited,
    )


def parts(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def test_a_download_follows_a_link_keeps_a_files_mode_and_writes_a_fifo_in_place(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    url, _ = server
    real = tmp_path / "real.csv"
    real.write_bytes(b"old")
    real.chmod(0o600)
    (tmp_path / "link.csv").symlink_to(real)
    done = download(url, tmp_path, "link.csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"link.csv: {len(CONTENT)} bytes, sha256 {SHA}"
    assert (tmp_path / "link.csv").is_symlink()
    assert real.read_bytes() == CONTENT
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    real.chmod(0o640)  # replaced by the rename, the file keeps its mode
    assert download(url, tmp_path, "real.csv").returncode == 0
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert download(url, tmp_path, "new.csv").returncode == 0  # a new one: as the umask says
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o666 & ~mask

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done = download(url, tmp_path, str(fifo))
    reader.join(timeout=60)
    assert done.returncode == 0, done.stderr
    assert read == [CONTENT]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert parts(tmp_path) == []


def test_a_body_cut_short_is_the_connections_fault_and_leaves_the_file_as_it_was(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    url, handler = server
    handler.mode = "cut"
    kept = tmp_path / "report.csv"
    kept.write_bytes(b"the last good download")
    done = download(url, tmp_path, "report.csv")
    assert done.returncode == 1
    first, advice = done.stderr.splitlines()
    assert first == (
        f"error: cannot reach Grantflow at {url}: the connection was closed "
        f"{len(CONTENT) - 1000} bytes before the end of the answer"
    )
    assert advice.strip().startswith("next: check GRANTFLOW_URL")
    assert kept.read_bytes() == b"the last good download"
    assert parts(tmp_path) == []
    handler.mode = "whole"  # the server back: the advice's command works
    again = download(url, tmp_path, "report.csv")
    assert again.returncode == 0, again.stderr
    assert kept.read_bytes() == CONTENT


def test_an_answer_without_its_sha256_is_refused(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    url, handler = server
    handler.mode = "redirect"
    done = download(url, tmp_path, "report.csv")
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"error: report {REPORT_ID} came without its SHA-256 (X-Content-SHA256)"
    )
    assert not (tmp_path / "report.csv").exists()
    assert parts(tmp_path) == []


def test_a_full_disk_is_said_as_the_files_fault(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    url, _ = server
    done = download(url, tmp_path, "report.csv", file_limit=4096)
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["error: cannot write report.csv: File too large"]
    assert parts(tmp_path) == []
    assert not (tmp_path / "report.csv").exists()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_download_stopped_by_a_signal_leaves_no_part(
    server: tuple[str, type[_Server]], tmp_path: Path, stop: signal.Signals
) -> None:
    url, handler = server
    handler.mode = "slow"
    env = {**grantflow_env(url=url), "GRANTFLOW_TOKEN": "unused"}
    command = subprocess.Popen(
        [*COMMAND, "reports", "download", REPORT_ID, "-o", "report.csv"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        poll(lambda: parts(tmp_path), timeout=60, what="the download to begin its part")
        command.send_signal(stop)
        assert command.wait(timeout=60) == 128 + stop
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert parts(tmp_path) == []
    assert not (tmp_path / "report.csv").exists()


def to_standard_output(url: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """`reports download -o /dev/stdout` in a process of its own, its output captured."""
    return subprocess.run(
        [*COMMAND, "reports", "download", REPORT_ID, "-o", "/dev/stdout"],
        env={**grantflow_env(url=url), "GRANTFLOW_TOKEN": "unused"},
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_a_download_to_standard_output_is_the_content_alone(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    """`-o /dev/stdout` into a pipe: the content, as it comes, and the summary on stderr."""
    url, _ = server
    done = to_standard_output(url, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == CONTENT
    assert done.stderr.decode().strip() == f"/dev/stdout: {len(CONTENT)} bytes, sha256 {SHA}"


@pytest.mark.parametrize(
    ("mode", "named"),
    [
        ("ab", "/dev/stdout"),
        ("wb", "/dev/stdout"),
        ("ab", "/dev/fd/../fd/1"),
        ("ab", "/proc/thread-self/fd/1"),
    ],
)
def test_standard_output_redirected_to_a_file_is_written_through_its_descriptor(
    server: tuple[str, type[_Server]], tmp_path: Path, mode: str, named: str
) -> None:
    """`-o /dev/stdout` with standard output sent to a file (`>> out`, or `> out` shared with
    the commands around it, as `{ echo; grantflow …; echo; } > out`): the content goes where
    the descriptor is, after what was written before; the file is not replaced, so what is
    written after lands in it too."""
    url, _ = server
    out = tmp_path / "out.csv"
    out.write_bytes(b"kept\n")
    with out.open(mode) as sink:
        sink.write(b"before\n")
        sink.flush()
        done = subprocess.run(
            [*COMMAND, "reports", "download", REPORT_ID, "-o", named],
            env={**grantflow_env(url=url), "GRANTFLOW_TOKEN": "unused"},
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
        sink.write(b"after\n")
    assert done.returncode == 0, done.stderr
    kept = b"kept\n" if mode == "ab" else b""
    assert out.read_bytes() == kept + b"before\n" + CONTENT + b"after\n"
    assert parts(tmp_path) == []


def test_a_descriptor_of_a_file_is_refused_with_the_path_to_give_instead(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    """`-o /dev/fd/N` naming a file's descriptor (the command's own, its database's, or one it
    was handed): refused, the file untouched; its path, as the error says, works."""
    url, _ = server
    target = tmp_path / "handed.csv"
    target.write_bytes(b"as it was")
    env = {**grantflow_env(url=url), "GRANTFLOW_TOKEN": "unused"}
    with target.open("r+b") as handed:
        number = handed.fileno()
        done = subprocess.run(
            [*COMMAND, "reports", "download", REPORT_ID, "-o", f"/dev/fd/{number}"],
            env=env,
            cwd=tmp_path,
            pass_fds=(number,),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines()[0] == (
        f"error: cannot write /dev/fd/{number}: /dev/fd/{number} names a descriptor that is "
        "neither standard output or error nor a pipe (a file or a socket, maybe the command's "
        "own): give the file's path to -o instead"
    )
    assert target.read_bytes() == b"as it was"
    assert download(url, tmp_path, "handed.csv").returncode == 0
    assert target.read_bytes() == CONTENT
    assert parts(tmp_path) == []


def test_a_body_cut_short_on_standard_output_says_to_discard_what_was_written(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    """A pipe cannot be taken back: when the content is cut short after some of it went to
    standard output, the command says so (and how much), besides the connection's error."""
    url, handler = server
    handler.mode = "cut"
    done = to_standard_output(url, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout == CONTENT[:1000]
    assert (
        "the 1,000 bytes already written to /dev/stdout are not the report: discard them"
        in done.stderr.decode()
    )


def test_a_link_cut_short_leaves_the_file_behind_it_as_it_was(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    url, handler = server
    real = tmp_path / "real.csv"
    real.write_bytes(b"the last good download")
    (tmp_path / "link.csv").symlink_to(real)
    handler.mode = "cut"
    assert download(url, tmp_path, "link.csv").returncode == 1
    assert real.read_bytes() == b"the last good download"
    assert (tmp_path / "link.csv").is_symlink()
    assert parts(tmp_path) == []


def test_json_and_the_content_both_on_standard_output_is_refused(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    url, _ = server
    done = subprocess.run(
        [*COMMAND, "reports", "download", REPORT_ID, "-o", "/dev/stdout", "--json"],
        env={**grantflow_env(url=url), "GRANTFLOW_TOKEN": "unused"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "--json and the content would both go to standard output" in done.stderr
    assert done.stdout == ""
