"""The HTTP hygiene every request passes before a route reads it (issue 19, points 9, 10, 12, 13)."""

from __future__ import annotations

import json

import pytest

from serve.app.errors import ApiError
from serve.app.request_guard import (
    MAX_JSON_DEPTH,
    check_declared_length,
    check_same_origin,
    check_video_id,
    json_depth,
    media_type,
    parse_json_object,
)


def _refusal(call, *args) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as raised:
        call(*args)
    return raised.value


@pytest.mark.parametrize("video_id", ["video_" + "a" * 24 + ":video", "video_" + "A" * 24, "video_1", "x" * 5000,
                                      "video_" + "0" * 23 + "g", "../video_" + "0" * 24])
def test_an_id_that_cannot_be_ours_is_400_before_any_store(video_id):
    error = _refusal(check_video_id, video_id)
    assert (error.status, error.code, error.param) == (400, "invalid_video_id", "video_id")
    assert len(error.message) < 200


def test_a_real_id_passes():
    check_video_id("video_" + "0123456789abcdef01234567")


def test_a_declared_body_over_the_limit_is_413():
    error = _refusal(check_declared_length, "2000", 1000)
    assert (error.status, error.code) == (413, "body_too_large") and "1000" in error.message
    check_declared_length("1000", 1000)
    check_declared_length(None, 1000)
    assert _refusal(check_declared_length, "lots", 1000).status == 400


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None,
                                          "text/plain; charset=utf-8", "application/xml"])
def test_only_json_and_multipart_bodies_are_accepted(content_type):
    error = _refusal(media_type, content_type)
    assert (error.status, error.code) == (415, "unsupported_media_type")
    assert "application/json or multipart/form-data" in error.message


def test_json_and_multipart_content_types_are_recognised():
    assert media_type("application/json; charset=utf-8") == "application/json"
    assert media_type("multipart/form-data; boundary=x") == "multipart/form-data"


def test_deep_nesting_is_400_not_a_recursion_error():
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _refusal(parse_json_object, deep).code == "invalid_json"
    nested = {"prompt": "x", "n": json.loads("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))}
    error = _refusal(parse_json_object, json.dumps(nested).encode())
    assert (error.status, error.code) == (400, "invalid_json") and "nests too deeply" in error.message
    assert json_depth({"a": [1, {"b": []}]}) == 4


@pytest.mark.parametrize("body", [b'{"prompt": "a cat \\ud800"}', b'{"\\udfff": 1, "prompt": "x"}'])
def test_a_lone_surrogate_anywhere_is_400(body):
    error = _refusal(parse_json_object, body)
    assert (error.status, error.code) == (400, "invalid_text")


def test_a_body_that_is_not_an_object_is_400():
    assert _refusal(parse_json_object, b"[1, 2]").code == "invalid_request"
    assert _refusal(parse_json_object, b"{nope").code == "invalid_json"


@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "cross-site"},
    {"origin": "https://evil.example", "host": "127.0.0.1:8000"},
    {"origin": "null", "host": "127.0.0.1:8000"},
])
def test_a_page_of_another_origin_cannot_change_state(headers):
    error = _refusal(check_same_origin, "POST", headers)
    assert (error.status, error.code) == (403, "cross_origin_refused")


def test_same_origin_pages_and_scripts_without_an_origin_pass():
    check_same_origin("POST", {"origin": "http://127.0.0.1:8000", "host": "127.0.0.1:8000"})
    check_same_origin("POST", {"host": "127.0.0.1:8000"})  # curl, SDKs
    check_same_origin("GET", {"sec-fetch-site": "cross-site"})  # reads change nothing
