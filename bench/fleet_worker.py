"""`grantflow worker ARGS...` for bench/fleet.py, counting every statement psycopg sends from the
process. On SIGUSR1 (and at exit) it writes the count so far to
$GRANTFLOW_BENCH_COUNTS/<pid>.json: {"statements": N, "at": <time.time() of the write>}."""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from common import StatementCounter

COUNTS = Path(os.environ["GRANTFLOW_BENCH_COUNTS"])
counter = StatementCounter().__enter__()
counter.on = True


def write_counts(*_args: int | FrameType | None) -> None:
    target = COUNTS / f"{os.getpid()}.json"
    scratch = target.with_suffix(".tmp")
    total = sum(counter.by_thread.values())
    scratch.write_text(json.dumps({"statements": total, "at": time.time()}))
    scratch.replace(target)  # (the reader never sees half a file)


signal.signal(signal.SIGUSR1, write_counts)
atexit.register(write_counts)

from grantflow.cli.main import main  # noqa: E402  (after the counter wraps psycopg)

sys.argv = ["grantflow", "worker", *sys.argv[1:]]
main()
