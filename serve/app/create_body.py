"""The body of ``POST /v1/videos``: JSON or a multipart form (text fields and one ``input_reference``
file, as the OpenAI SDK sends it), read within the body limit and validated into ``VideoCreate``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.app.api_models import VideoCreate
from serve.app.errors import ApiError, validation_message
from serve.app.request_guard import MAX_FORM_FIELDS, check_text, media_type, parse_json_object, read_body


async def read_create_body(request: Request, max_bytes: int) -> tuple[VideoCreate, bytes | None]:
    """The create body and the uploaded ``input_reference`` file, if any (multipart only)."""
    kind = media_type(request.headers.get("content-type"))
    body = await read_body(request, max_bytes)
    fields: dict[str, Any]
    image: bytes | None = None
    if kind == "multipart/form-data":
        fields, image = await form_fields(request)
    else:
        fields = parse_json_object(body)
    try:
        return VideoCreate.model_validate(fields), image
    except ValidationError as error:
        message, param = validation_message([dict(item) for item in error.errors()])
        raise ApiError(400, "invalid_request", message, param) from None


async def form_fields(request: Request) -> tuple[dict[str, Any], bytes | None]:
    """Text fields, and the one file part allowed: ``input_reference`` (as the OpenAI SDK sends it)."""
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except StarletteHTTPException as error:
        raise ApiError(400, "invalid_form", f"the multipart form was refused: {error.detail}; send text fields and "
                       f"at most one file, input_reference; at most {MAX_FORM_FIELDS} fields") from None
    fields: dict[str, Any] = {}
    image: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key == "input_reference[image_url]":
                key = "input_reference"  # the SDK's {"image_url": ...} form, flattened by multipart
            if value != "":
                fields[key] = value
        elif key == "input_reference":
            image = await value.read()
        else:
            raise ApiError(400, "invalid_form", f"the multipart form has a file part {key[:40]!r}: the only file "
                           "accepted is input_reference", key[:40])
    check_text(fields)
    return fields, image
