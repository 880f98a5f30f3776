"""What stands before every route: the API key, the body size limit, the Host check and the JSON
content type. Pure ASGI, so an oversized body is refused before any of it is read into memory."""

from __future__ import annotations

import hmac
import json
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ttsd.config import is_loopback
from ttsd.http.errors import BodyTooLarge, error_body

PUBLIC_PATHS = frozenset({"/", "/favicon.ico"})
"""The dashboard page itself holds no data: it asks for the key and sends it with every call."""
PUBLIC_PREFIXES = ("/static/",)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def _refuse(
    send: Send, status: int, code: str, message: str, headers: Collection[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(error_body(code, message, None, status)).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class Guard:
    """Refuses, before routing: requests without the API key (when one is set), bodies over the limit
    (413), a Host header naming another site (DNS rebinding onto a loopback port), and bodies that are
    not JSON (a web page can POST a text/plain form to loopback without asking; JSON it cannot)."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int, hosts: Collection[str] | None) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.hosts = None if hosts is None else frozenset(host.lower() for host in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is not None:
            status, code, message = problem
            headers = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            await _refuse(send, status, code, message, headers)
            return
        await self.app(scope, self._bounded(receive), send)

    def _problem(self, scope: Scope) -> tuple[int, str, str] | None:
        if self.hosts is not None and _host_name(_header(scope, b"host")) not in self.hosts:
            return 421, "wrong_host", "this server answers to its own address only (Host header refused)"
        path: str = scope["path"]
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if self.api_key is not None and not public and not self._authorized(scope):
            return 401, "unauthorized", "missing or wrong API key: send Authorization: Bearer <TTS_API_KEY>"
        if scope["method"] in _BODY_METHODS:
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                return 413, "too_large", f"the request body is over {self.max_body_bytes} bytes"
            kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if kind != "application/json" and (length is None or int(length) > 0):
                return 415, "unsupported_media_type", "send the request body as JSON (Content-Type: application/json)"
        return None

    def _authorized(self, scope: Scope) -> bool:
        given = _header(scope, b"authorization") or ""
        scheme, _, token = given.partition(" ")
        expected = (self.api_key or "").encode("utf-8")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("utf-8"), expected)

    def _bounded(self, receive: Receive) -> Receive:
        """A body sent without Content-Length (chunked) is counted as it arrives and cut at the limit."""
        seen = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted


def _host_name(host: str | None) -> str:
    if not host:
        return ""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def allowed_hosts(bind_host: str) -> Collection[str] | None:
    """The Host names a loopback server answers to; None (any) when it was bound for the network,
    where the API key is the guard and clients may use any name for the machine."""
    if not is_loopback(bind_host):
        return None
    return {"localhost", "127.0.0.1", "::1", bind_host}
