"""The real app served by uvicorn on 127.0.0.1 in a thread, talked to over TCP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from tests.support.services import free_port


class _PromptServer(uvicorn.Server):
    """uvicorn's server, stopping within milliseconds. uvicorn looks at `should_exit` every
    0.1 s and its shutdown sleeps another 0.1 s before closing connections: fine once per
    process, but over the suite's thousand-odd API tests that was minutes of waiting. Here the
    main loop waits on an event, and shutdown closes the listening socket, asks every
    connection to finish its response and waits only as long as that takes."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stopping = threading.Event()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if not self._stopping.is_set():  # a stop before the loop was known sets the flag only
            await self._wake.wait()

    def stop(self) -> None:
        self._stopping.set()
        self.should_exit = True  # also stops a server still starting up
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # an idle keep-alive closes now; a busy one after its response
        deadline = time.monotonic() + 10
        while self.server_state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        for task in self.server_state.tasks:
            task.cancel()


@contextmanager
def serve_in_thread(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (on `port`, or a free one) until the block ends."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = _PromptServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.002)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(timeout=10)
