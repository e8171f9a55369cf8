"""`serve_in_thread`: the service on a loopback port from a thread of this process, for a notebook, a test or a
benchmark that talks to it over real HTTP (a browser, httpx) while it keeps running its own code."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI

from icreward.errors import IcrewardError


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 20.0) -> Iterator[str]:
    """Serve `app` (`create_app`'s) with uvicorn from a daemon thread; yield its base URL once it answers.

    `port` 0 picks a free one. On leaving the block the server finishes its open requests, runs the app's shutdown
    (the batcher and the /explain worker stop) and the port is closed. `IcrewardError` when it has not started
    within `start_timeout` seconds, or has not stopped 15 s after the block.

    ```python
    with serve_in_thread(create_app(icreward.load("default"), "default")) as url:
        httpx.get(f"{url}/healthz")
    ```
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, port))

    def run() -> None:
        with contextlib.suppress(SystemExit):  # how uvicorn ends when the app's startup fails (it has logged why)
            server.run(sockets=[sock])

    thread = threading.Thread(target=run, name="icreward-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise IcrewardError(f"the server did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    if thread.is_alive():
        raise IcrewardError("the server did not stop within 15 s of the block's end")
