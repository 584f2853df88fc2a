"""A request refused for a reason its sender can act on: the one error type of the service's logic.

The HTTP layer renders it as ``{"error": {"code", "message", "param"}}`` with its status; the logic
that raises it (admission, planning, the request guard) knows nothing of HTTP beyond the status.
"""

from __future__ import annotations


class Refusal(Exception):
    """Status, a stable code, what was wrong and what is allowed, and headers such as Retry-After."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers or {}
