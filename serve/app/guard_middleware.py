"""The request guard as ASGI middleware: every request's size, origin and authentication checks
(serve/app/request_guard.py, serve/tenancy) before any route runs, and the security headers on every answer.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs each request
through an extra task and memory stream, a noticeable share of a cache hit's time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.app.args import AppArgs
from serve.app.errors import ApiError, error_body
from serve.app.request_guard import SECURITY_HEADERS, check_declared_length, check_same_origin
from serve.tenancy import AccessDenied, TenantRegistry, authorize


class Guarded(Protocol):
    """What the guard reads of the application it guards (the Ingress replica)."""

    args: AppArgs
    tenants: TenantRegistry


class RequestGuard:
    """Refuses what may not reach a route (and puts the caller on ``request.state``); adds the headers."""

    def __init__(self, inner: ASGIApp, guarded: Callable[[], Guarded]) -> None:
        self.inner = inner
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        refused = refusal(Request(scope), self.guarded())
        await (refused or self.inner)(scope, receive, send_with_headers)


def refusal(request: Request, guarded: Guarded) -> Response | None:
    """The answer for a request refused before any route runs; None (and the caller on ``request.state``)
    when it may go on."""
    path = request.url.path
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    try:
        check_declared_length(request.headers.get("content-length"), guarded.args.max_body_bytes)
        check_same_origin(request.method, request.headers)
    except ApiError as refused:
        return JSONResponse(error_body(refused.code, refused.message, refused.param), refused.status)
    decision = authorize(path, request.headers.get("authorization"), guarded.tenants, guarded.args.admin_key,
                         guarded.args.metrics_key)
    if isinstance(decision, AccessDenied):
        headers = {}
        if decision.status == 401:
            error = ', error="invalid_token"' if decision.code == "invalid_api_key" else ""
            headers["WWW-Authenticate"] = f'Bearer realm="wanserve"{error}'
        return JSONResponse(error_body(decision.code, decision.message), decision.status, headers=headers)
    request.state.caller = decision
    return None
