"""Who may use the dashboard, checked once per request before any route runs.

Three checks, in a plain ASGI middleware (``Guard``):

- **Token.** With a token, every request but ``/static`` and ``/login`` carries it, as
  ``Authorization: Bearer T`` or the ``queuectl_token`` cookie that ``POST /login`` sets. Without
  it the API, ``/metrics`` and the chart answer 401; pages redirect to the sign-in page.
- **Origin.** A POST whose ``Origin`` (or, lacking one, ``Referer``) names another host or port
  than its ``Host`` header names is refused with 403: another site's page cannot make a
  signed-in browser act (the cookie is ``SameSite=Strict`` too).
- **Host, without a token.** A dashboard without a token listens on loopback only, and then
  answers only requests addressed to a loopback name: a page on another site whose name was
  re-pointed at 127.0.0.1 (DNS rebinding) would otherwise read and act as a local user.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = (
    "COOKIE",
    "TOKEN_ENV",
    "Guard",
    "cookie_token",
    "cookie_value",
    "is_loopback",
    "same_origin",
    "token_matches",
)

#: The cookie ``POST /login`` sets.
COOKIE = "queuectl_token"
#: Where ``queuectl dashboard`` and ``worker start --dashboard`` read a token not given as an option.
TOKEN_ENV = "QUEUECTL_DASHBOARD_TOKEN"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths anyone may read: the sign-in page and what it needs.
_OPEN_PREFIXES = ("/static/", "/login", "/logout")
#: Paths that answer JSON or data rather than pages: 401, not a redirect.
_DATA_PREFIXES = ("/api/", "/metrics", "/chart.svg")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison, so that timing does not tell how much of a guess was right."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def cookie_value(token: str) -> str:
    """The token as the cookie holds it: percent-encoded, so that any token is a plain cookie value."""
    return quote(token, safe="")


def cookie_token(value: str) -> str:
    """The inverse of ``cookie_value``."""
    return unquote(value)


def _split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` of a Host header (``[::1]:8080`` too): the lowercased name and the port."""
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        return value.lower(), None
    return (parts.hostname or "").lower(), port


def same_origin(origin: str, host_header: str) -> bool:
    """Whether ``origin`` (an ``Origin`` value or a ``Referer`` URL) names the host and port that
    ``host_header`` names. The scheme is not compared: behind a proxy that terminates TLS, the
    browser's ``https`` origin reaches this server as plain HTTP, with the proxy's Host header."""
    parts = urlsplit(origin)
    try:
        port = parts.port
    except ValueError:
        return False
    if not parts.scheme or not parts.hostname:
        return False  # "null", or something that is no URL
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    own_host, own_port = _split_host(host_header)
    return parts.hostname.lower() == own_host and (port or default) == (own_port or default)


class Guard:
    """The ASGI middleware that applies the checks of this module's docstring."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path: str = scope["path"]
        host = headers.get("host", "")
        if self.token is None and not is_loopback(_split_host(host)[0]):
            await _json(send, 403, "this dashboard answers only requests to a loopback address")
            return
        if scope["method"] == "POST":
            origin = headers.get("origin") or headers.get("referer")
            if origin is not None and not same_origin(origin, host):
                await _json(send, 403, "actions are accepted only from this dashboard's own pages")
                return
        if self.token is not None and not path.startswith(_OPEN_PREFIXES) and not self._signed_in(headers):
            if path.startswith(_DATA_PREFIXES):
                await _json(
                    send,
                    401,
                    "a token is required: send Authorization: Bearer TOKEN, or sign in at /login",
                    [(b"www-authenticate", b"Bearer")],
                )
            else:
                await _send(send, 303, b"", [(b"location", b"/login")])
            return
        await self.app(scope, receive, send)

    def _signed_in(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token_matches(credentials.strip(), self.token):
            return True
        cookie = _cookie(headers.get("cookie", ""), COOKIE)
        return token_matches(None if cookie is None else cookie_token(cookie), self.token)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lowercase name (the last of repeated ones; cookies are joined)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        found[name] = f"{found[name]}; {value}" if name == "cookie" and name in found else value
    return found


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return value
    return None


async def _json(
    send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": error}).encode()
    await _send(send, status, body, [(b"content-type", b"application/json"), *(headers or [])])


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
