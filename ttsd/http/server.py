"""The HTTP server inside `ttsd run`: uvicorn on its own thread, on a socket bound before the daemon
reports itself started, so a port in use is a clear error at start rather than a log line later."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn
from fastapi import FastAPI

from ttsd.config import parse_http_address
from ttsd.errors import ConfigError
from ttsd.http.speech import StreamEndedEarly

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 256
"""Beyond this many open connections new ones are answered 503: the daemon's file descriptors are
shared with intake, the queue and the workers' pipes."""


class _QuietEarlyEnds(logging.Filter):
    """A stream cut because its job failed is the job's story, logged once by the stream; uvicorn's
    traceback of the broken connection would only repeat it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamEndedEarly))


def bind(address: str) -> socket.socket:
    """A listening socket on `host:port`, or ConfigError saying why not."""
    host, port = parse_http_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve HTTP on {address}: {exc.strerror or exc}") from exc
    sock.listen(128)
    return sock


class HttpServer(threading.Thread):
    """Serves `app` on an already bound socket until `stop`."""

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        super().__init__(name="http", daemon=True)
        self.sock = sock
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            limit_concurrency=MAX_CONNECTIONS,
        )
        self.server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_QuietEarlyEnds())

    @property
    def address(self) -> str:
        """Where it listens, as host:port (the port the system chose when 0 was asked)."""
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except Exception:
            log.exception("the HTTP server stopped")

    def stop(self) -> None:
        """Stop taking requests; streams in progress are cut after a short grace."""
        self.server.should_exit = True
        self.join(STOP_TIMEOUT_S)
        self.sock.close()
