"""What every HTTP request must satisfy before any route reads it, and the headers every answer carries.

Tenants share the service, so hostile input is normal input: a body has a byte limit (413), only
JSON and multipart forms are accepted (415: a cross-site HTML form can send neither JSON nor a
key), a browser request from another origin cannot change state (403), ids have a pattern (400),
JSON nests only so deep and text is valid Unicode (400). Each refusal is an ``ApiError`` naming
what was wrong and what is allowed.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from serve.app.errors import ApiError

VIDEO_ID_PATTERN = r"^video_[0-9a-f]{24}$"
_VIDEO_ID = re.compile(VIDEO_ID_PATTERN)
MAX_JSON_DEPTH = 8
MAX_FORM_FIELDS = 32

# Pages are our own static files: nothing inline, nothing from elsewhere, never framed.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Cross-Origin-Opener-Policy": "same-origin",
}

_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_video_id(video_id: str) -> None:
    """Refuse an id that cannot be ours before it reaches a store (it becomes part of Redis keys)."""
    if not _VIDEO_ID.fullmatch(video_id):
        shown = video_id[:40] + ("..." if len(video_id) > 40 else "")
        raise ApiError(400, "invalid_video_id",
                       f"{shown!r} is not a video id: ids look like video_ followed by 24 hex digits", "video_id")


def check_declared_length(content_length: str | None, max_bytes: int) -> None:
    """413 at once when the declared body is too large (a body without a length is counted as read)."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise ApiError(400, "invalid_request", "the Content-Length header is not a number") from None
    if declared > max_bytes:
        raise ApiError(413, "body_too_large", f"the body has {declared} bytes; at most {max_bytes} are accepted")


def check_same_origin(method: str, headers: Any) -> None:
    """A browser page from another site may not change state here (CSRF), keyed or not."""
    if method not in _STATE_CHANGING:
        return
    if headers.get("sec-fetch-site") == "cross-site":
        raise ApiError(403, "cross_origin_refused", "requests from another site's page are refused")
    origin, host = headers.get("origin"), headers.get("host")
    if origin and origin != "null" and host and urlsplit(origin).netloc != host:
        raise ApiError(403, "cross_origin_refused", f"requests from pages of {origin} are refused")
    if origin == "null":
        raise ApiError(403, "cross_origin_refused", "requests from opaque origins (sandboxed pages, files) are refused")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, counted as it streams in: 413 as soon as it passes ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "body_too_large", f"the body has more than {max_bytes} bytes; at most {max_bytes} "
                           "are accepted")
        chunks.append(chunk)
    body = b"".join(chunks)
    # Starlette replays a read body from `_body` to the form parser instead of the spent stream.
    request._body = body
    return body


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (iterative: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_text(fields: dict[str, Any]) -> None:
    """400 if any key or string value of the (already depth-checked) object is not valid Unicode."""
    stack: list[Any] = [fields]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and has_lone_surrogate(item):
            raise ApiError(400, "invalid_text", "the body holds text that is not valid Unicode (a lone surrogate "
                           "such as \\ud800): send UTF-8 text")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object from ``body``, or a 400 saying why not."""
    try:
        value = json.loads(body or b"null")
    except RecursionError:
        raise ApiError(400, "invalid_json", f"the JSON nests too deeply; at most {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON; send a JSON object") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object with at least a prompt")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ApiError(400, "invalid_json", f"the JSON nests too deeply; at most {MAX_JSON_DEPTH} levels")
    check_text(value)
    return value


def media_type(content_type: str | None) -> str:
    """``application/json`` or ``multipart/form-data``, or 415 naming what is accepted."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return "application/json"
    if kind == "multipart/form-data":
        return kind
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {kind or '(none)'!r} is not accepted: send application/json or multipart/form-data")


def has_lone_surrogate(text: str) -> bool:
    """True if ``text`` cannot be UTF-8 (a lone surrogate from a JSON \\ud800 escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
