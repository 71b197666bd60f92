"""Writing a download to the file a command was given (`-o FILE`), as it arrives: never whole
in memory, and never leaving a regular file half written or refused.

A new or regular file is written beside itself (`.NAME.<random>.part`, in the same directory)
and renamed over it once the command accepts the content (its SHA-256 matched): a download
that breaks off or is refused leaves the file as it was, and nothing of the part. A symbolic
link is opened by the kernel (with its protections: a link planted in a shared directory is
not followed where it may not be) and a regular file behind it is replaced the same way; a
FIFO is written in place as the content comes, and so is this process's own descriptor
(/dev/stdout, /dev/fd/N: a process substitution), through itself: what it holds stays and what
is written after the download follows it.
Replacing a file makes it the downloader's (owner and group) and splits its hard links. A new
file gets the permissions the umask gives; an existing one keeps its own, and one that is not
writable is refused as before. SIGTERM and SIGHUP (unless ignored, as under nohup) end the
command through the same cleanup as Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import typer


class Download:
    """The file being written: its size and SHA-256 so far."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.size = 0
        self._sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._sha256.update(data)
        self.size += len(data)
        self.file.write(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def descriptor_named(path: Path) -> int | None:
    """The descriptor of this process that `path` names — /dev/stdout and /dev/stderr (links
    to /proc/self/fd/N), /dev/fd/N, /proc/self/fd/N, however spelt — or None for any other
    path. Refused (OSError) when it is none the command may write: standard input, output and
    error are, and a pipe it was given (a process substitution); a file or a socket the
    process opened itself (its database, its connection to the server) is not."""
    candidate = os.path.normpath(os.path.abspath(path))
    for _ in range(8):  # (a few links deep: /dev/stdout -> /proc/self/fd/1)
        directory, name = os.path.split(candidate)
        if name.isascii() and name.isdigit() and _descriptors(os.path.realpath(directory)):
            return _writable(int(name), str(path))
        try:
            target = os.readlink(candidate)
        except OSError:
            return None
        candidate = os.path.normpath(os.path.join(directory, target))
    return None


def _descriptors(directory: str) -> bool:
    """Is `directory` (resolved) this process's, or one of its threads', table of descriptors?"""
    pid = os.getpid()
    return directory == f"/proc/{pid}/fd" or (
        directory.startswith(f"/proc/{pid}/task/") and directory.endswith("/fd")
    )


def _writable(descriptor: int, given: str) -> int:
    if descriptor <= 2:
        return descriptor
    try:
        kind = os.fstat(descriptor).st_mode
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror) from None
    except OverflowError:  # (a number no descriptor has)
        raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None
    if not stat.S_ISFIFO(kind):
        raise OSError(
            errno.EBADF,
            f"{given} names a descriptor that is neither standard output or error nor a pipe "
            "(a file or a socket, maybe the command's own): give the file's path to -o instead",
        )
    return descriptor


class Saving:
    """`with Saving(output) as download:` write into `download`, then `keep()` what should
    stand; leaving the block without it (an error, a refusal) leaves a regular `output` as it
    was."""

    def __init__(self, output: Path) -> None:
        if not output.name or output.is_dir():
            raise IsADirectoryError(21, "it is a directory")
        self.output = output
        self.part: Path | None = None
        self.in_place = False  # written as it came, where it was (no part to rename)
        self._file: BinaryIO | None = None

    def __enter__(self) -> Download:
        descriptor = descriptor_named(self.output)
        if descriptor is not None:
            # this process's own descriptor (/dev/stdout, /dev/fd/N): written through it, in
            # place, after what it holds; reopening the file behind it would write over that
            # (or replace the file under the shell that redirected into it)
            self._file = os.fdopen(os.dup(descriptor), "wb")
            self.in_place = True
            return Download(self._file)
        existing = os.lstat(self.output) if os.path.lexists(self.output) else None
        if existing is not None and stat.S_ISLNK(existing.st_mode):
            self._through_link()
            existing = os.lstat(self.output) if os.path.lexists(self.output) else None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            self._file = self.output.open("wb")  # a FIFO, a terminal: as given, as it comes
            self.in_place = True
            return Download(self._file)
        if existing is not None and not os.access(self.output, os.W_OK):
            raise PermissionError(13, "Permission denied")
        # (a stop — Ctrl-C, SIGTERM, SIGHUP — waits until the part is known: one between its
        # creation and here would leave it behind)
        _deferring.set()
        try:
            descriptor, name = tempfile.mkstemp(
                dir=self.output.parent, prefix=f".{self.output.name}.", suffix=".part"
            )
        except BaseException:
            _stop_deferred()
            raise
        self.part = Path(name)
        try:
            _stop_deferred()  # (a stop that came meanwhile is raised here, and cleaned up)
            mode = existing.st_mode if existing is not None else 0o666 & ~_umask()
            os.chmod(descriptor, stat.S_IMODE(mode))
            self._file = os.fdopen(descriptor, "wb")
        except BaseException:
            if self._file is None:
                os.close(descriptor)
            self.part.unlink(missing_ok=True)
            self.part = None
            raise
        return Download(self._file)

    def _through_link(self) -> None:
        """A link is opened by the kernel (with its protections: one planted in a shared
        directory is not followed where it may not be), without truncating; what it opened
        becomes the output, so that a regular file behind the link is replaced only once the
        content is accepted, like any other."""
        try:
            descriptor = os.open(self.output, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return  # a FIFO with no reader yet, a link to nothing yet: written through
            raise
        try:
            opened = os.readlink(f"/proc/self/fd/{descriptor}")
        except OSError:  # (no /proc) the link's own resolution
            opened = os.path.realpath(self.output)
        finally:
            os.close(descriptor)
        if os.path.isabs(opened) and os.path.lexists(opened):
            self.output = Path(opened)

    def keep(self) -> None:
        """What was written stands: the part is renamed over the file."""
        assert self._file is not None
        self._file.close()
        if self.part is not None:
            self.part.replace(self.output)
            self.part = None

    def __exit__(self, *_: object) -> None:
        try:
            if self._file is not None and not self._file.closed:
                self._file.close()
        finally:
            if self.part is not None:
                self.part.unlink(missing_ok=True)


_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_deferring = threading.Event()  # a stop now is held until `_stop_deferred`
_held: list[int] = []


def _stop(signum: int, _: FrameType | None) -> None:
    """Python runs handlers in the main thread, whichever thread the kernel picked."""
    if _deferring.is_set():
        _held.append(signum)
        return
    _raise_stop(signum)


def _raise_stop(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise typer.Exit(128 + signum)


def _stop_deferred() -> None:
    """Stops are no longer held; one that came meanwhile is raised now."""
    _deferring.clear()
    if _held:
        _raise_stop(_held.pop())
        _held.clear()


@contextlib.contextmanager
def stopped_through_cleanup() -> Iterator[None]:
    """Within: Ctrl-C, SIGTERM and SIGHUP end the command through the `finally`s on the way
    (by default the last two end the process at once, leaving a part behind), and wait while
    a part is being created. A signal ignored (as nohup ignores SIGHUP) stays so. The main
    thread only: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for number in _STOPS:
        if signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, _stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
