"""Who may talk to the service: localhost by default; any other address only with a bearer token
(checked on every request) or an explicit ``--no-auth``.

The token is accepted as ``Authorization: Bearer TOKEN`` or, for the page's ``<img>`` thumbnails
and a first visit from a link, as ``?token=TOKEN``; it is compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

__all__ = ["LOCAL_HOSTS", "check_binding", "token_ok"]

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
