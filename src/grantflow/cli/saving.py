"""Writing a download to the file a command was given (`-o FILE`), as it arrives: never whole
in memory, and never leaving a file half written or refused.

A new or regular file is written beside itself (`.NAME.<random>.part`, in the same directory)
and renamed over it once the command accepts the content (its SHA-256 matched): a download
that breaks off or is refused leaves the file as it was, and nothing of the part. A symbolic
link is followed (the link stays, its target is replaced). What is not a regular file (a FIFO,
/dev/stdout, a process substitution) is written in place, as it comes. SIGTERM and SIGHUP
end the command through the same cleanup as Ctrl-C.
"""

from __future__ import annotations

import contextlib
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


class Saving:
    """`with Saving(output) as download:` write into `download`, then `keep()` what should
    stand; leaving the block without it (an error, a refusal) leaves `output` as it was."""

    def __init__(self, output: Path) -> None:
        if output.is_dir() or not output.name:
            raise IsADirectoryError(21, "it is a directory")
        self.target = Path(os.path.realpath(output))  # (a link is followed, and stays)
        self.part: Path | None = None
        self._file: BinaryIO | None = None

    def __enter__(self) -> Download:
        existing = self.target.stat() if self.target.exists() else None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            self._file = self.target.open("wb")  # a FIFO, a terminal: written as it comes
            return Download(self._file)
        descriptor, name = tempfile.mkstemp(
            dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".part"
        )
        self.part = Path(name)
        if existing is not None:  # (the file keeps its permissions)
            os.chmod(descriptor, stat.S_IMODE(existing.st_mode))
        self._file = os.fdopen(descriptor, "wb")
        return Download(self._file)

    def keep(self) -> None:
        """What was written stands: the part is renamed over the file."""
        assert self._file is not None
        self._file.close()
        if self.part is not None:
            self.part.replace(self.target)
            self.part = None

    def __exit__(self, *_: object) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        if self.part is not None:
            self.part.unlink(missing_ok=True)


def _stop(signum: int, _: FrameType | None) -> None:
    raise typer.Exit(128 + signum)


@contextlib.contextmanager
def stopped_through_cleanup() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP end the command as Ctrl-C does, through the `finally`s on the
    way (by default they end the process at once, leaving a part behind). The main thread
    only: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _stop) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
