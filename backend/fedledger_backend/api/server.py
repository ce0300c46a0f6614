"""Serve an ASGI app with uvicorn on a background thread (tests, benchmarks, the demo).

The listening socket is bound before the thread starts, so the port is known and cannot be
taken in between; ``start`` returns once uvicorn reports startup complete (an event, not a poll).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class BackgroundServer:
    """``with BackgroundServer(app) as srv: httpx.get(srv.url + "/health")``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config.setdefault("log_level", "warning")
        # As `fedledger serve`: no proxy header is believed but by fedledger_backend.api.client_ip.
        config.setdefault("proxy_headers", False)
        config.setdefault("lifespan", "on")
        self.server = _Server(uvicorn.Config(app, **config))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name="uvicorn"
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        if not self.server.ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"uvicorn did not start within {timeout:.0f}s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
