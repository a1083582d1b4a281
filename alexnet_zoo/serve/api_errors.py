"""The one error body every failed request gets, and the 4xx errors the service raises.

A client reads ``{"error": {"status", "code", "message", "expected"}}`` whatever went wrong: a bad
upload, an unknown id, a number out of range (FastAPI's own validation errors are rewritten to the
same shape), so a page or a script needs one code path for errors. ``expected`` says what would have
been accepted.
"""

from __future__ import annotations

from typing import Any

from alexnet_zoo.errors import AlexNetZooError

__all__ = ["ApiError", "error_body"]


class ApiError(AlexNetZooError, ValueError):
    """A request the service refuses: ``status`` (a 4xx), a short ``code``, the ``message`` (what
    was wrong, naming the input) and ``expected`` (what would be accepted)."""

    def __init__(self, status: int, code: str, message: str, expected: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.expected = status, code, message, expected


def error_body(status: int, code: str, message: str, expected: str) -> dict[str, Any]:
    """The JSON of every error response (:class:`alexnet_zoo.serve.schemas.ErrorBody`)."""
    return {"error": {"status": status, "code": code, "message": message, "expected": expected}}
