"""Daemons with the HTTP front door on, for tests: a free loopback port, the base URL, a client."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import httpx

from tests.support.daemon_harness import DaemonEnv, DaemonProcess


def free_port() -> int:
    """A loopback port nothing listens on now (the daemon binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class HttpDaemon:
    """A running `ttsd run` with its HTTP address."""

    daemon: DaemonProcess
    base_url: str
    api_key: str | None = None

    def client(self, timeout: float = 120) -> httpx.Client:
        """An HTTP client for it (with the API key when there is one)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)


def start_http_daemon(env: DaemonEnv, port: int | None = None, **settings: str) -> HttpDaemon:
    """Start a daemon serving HTTP on 127.0.0.1 (a free port unless given) and wait until it serves."""
    port = port or free_port()
    daemon = env.start(TTS_HTTP=f"127.0.0.1:{port}", **settings)
    daemon.wait_ready()
    return HttpDaemon(daemon, f"http://127.0.0.1:{port}", settings.get("TTS_API_KEY"))
