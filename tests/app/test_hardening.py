"""Hostile input against the real app: every refusal is a 4xx in the API's error shape (issue 19)."""

from __future__ import annotations

import httpx
import pytest

from tests.app.helpers import metric_value, small_body

pytestmark = pytest.mark.integration


def _error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()["error"]
    return body


def test_every_answer_carries_the_security_headers(client):
    for path in ("/", "/docs", "/v1/videos", "/v1/videos/nope", "/openapi.json"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert "default-src 'self'" in headers["Content-Security-Policy"], path


def test_the_docs_page_loads_nothing_from_elsewhere(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "http" not in page.text
    assert client.get("/swagger/swagger-ui-bundle.js").status_code == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(client):
    error = _error(client.post("/v1/videos", content=b"{" + b" " * (17 * 2**20) + b"}",
                               headers={"Content-Type": "application/json"}), 413)
    assert error["code"] == "body_too_large"


def test_form_encoded_and_text_bodies_are_415(client):
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        response = client.post("/v1/videos", content=b"prompt=a+cat", headers={"Content-Type": content_type})
        assert _error(response, 415)["code"] == "unsupported_media_type"


def test_a_multipart_file_part_is_refused(client):
    response = client.post("/v1/videos", data={"prompt": "a cat"}, files={"junk": ("x.bin", b"\0" * 1000)})
    assert _error(response, 400)["code"] == "invalid_form"


def test_a_multipart_form_of_text_fields_still_works(client):
    body = {key: str(value) for key, value in small_body().items()}
    response = client.post("/v1/videos", files={name: (None, value) for name, value in body.items()})
    assert response.status_code == 200, response.text


def test_a_crafted_id_is_400_and_redis_stays_in_service(client):
    own = client.post("/v1/videos", json=small_body()).json()["id"]
    before = metric_value(client.get("/metrics").text, "wanserve_redis_errors_total")
    for video_id in (f"{own}:video", f"{own}:thumbnail", "video_" + "Z" * 24):
        assert _error(client.get(f"/v1/videos/{video_id}"), 400)["code"] == "invalid_video_id"
        assert _error(client.delete(f"/v1/videos/{video_id}"), 400)["code"] == "invalid_video_id"
    assert metric_value(client.get("/metrics").text, "wanserve_redis_errors_total") == before
    assert client.get(f"/v1/videos/{own}").status_code == 200


def test_a_lone_surrogate_and_deep_nesting_are_400_not_500(client):
    surrogate = client.post("/v1/videos", content=b'{"prompt": "a cat \\ud83d"}',
                            headers={"Content-Type": "application/json"})
    assert _error(surrogate, 400)["code"] == "invalid_text"
    deep = client.post("/v1/videos", content=b"[" * 50_000 + b"]" * 50_000,
                       headers={"Content-Type": "application/json"})
    assert _error(deep, 400)["code"] == "invalid_json"


def test_an_unknown_model_never_becomes_a_metric_label(client):
    for index in range(5):
        client.post("/v1/videos", json=small_body(model=f"made-up-{index}"))
    assert "made-up-" not in client.get("/metrics").text


def test_a_page_of_another_site_cannot_submit_jobs(client):
    response = client.post("/v1/videos", json=small_body(), headers={"Origin": "https://evil.example"})
    assert _error(response, 403)["code"] == "cross_origin_refused"
