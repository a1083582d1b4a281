"""Who may talk to the service: localhost by default; any other address only with a bearer token
(checked on every request) or an explicit ``--no-auth``.

The token is accepted as ``Authorization: Bearer TOKEN`` or, for the page's ``<img>`` thumbnails
and a first visit from a link, as ``?token=TOKEN``; it is compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from alexnet_zoo.serve.api_errors import error_body

__all__ = ["LOCAL_HOSTS", "BearerGate", "check_binding", "token_ok"]

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def check_binding(host: str, token: str | None, no_auth: bool) -> None:
    """Raise ValueError when binding to ``host`` would open the index to a network without a token."""
    if token is not None and no_auth:
        raise ValueError("--token and --no-auth exclude each other: pick one")
    if token is not None and not token.strip():
        raise ValueError("--token must not be empty")
    if host not in LOCAL_HOSTS and token is None and not no_auth:
        raise ValueError(f"--host {host} would serve the index beyond this machine without authentication: pass "
                         "--token TOKEN (clients send 'Authorization: Bearer TOKEN') or --no-auth to allow anyone "
                         "who can reach it")


def token_ok(request: Request, token: str | None) -> bool:
    """Whether ``request`` carries ``token`` (always true when the service has none)."""
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else request.query_params.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


class BearerGate:
    """ASGI middleware answering 401 (the error body) to any HTTP request without ``token``. Plain
    ASGI rather than Starlette's ``BaseHTTPMiddleware``, which runs each request in a task group
    of its own with memory streams between it and the app: on two busy cores that was a few
    hundred microseconds of the event loop's time per request, paid even without a token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not token_ok(Request(scope), self.token):
            refusal = JSONResponse(error_body(401, "unauthorized", "this service needs its token",
                                              "an 'Authorization: Bearer TOKEN' header (or ?token=TOKEN)"),
                                   status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)
