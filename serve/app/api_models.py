"""The public HTTP shapes: OpenAI's video API (create, retrieve, list) plus wanserve's extensions."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serve.jobs import Priority, VideoPublic
from serve.params import MAX_FRAMES, MAX_PROMPT_CHARS, GenerationParams, Scheduler, describe_errors
from serve.pipeline.reference_image import MAX_REFERENCE_BYTES
from serve.policy import TEMPORAL_FACTOR, SizeText, parse_size
from serve.refusal import Refusal
from serve.request import VideoRequest

# A 10 MiB image (serve/pipeline/reference_image.py) in base64, with room for a data: URL prefix.
MAX_REFERENCE_BASE64_CHARS = (MAX_REFERENCE_BYTES + 2) // 3 * 4 + 100


class VideoCreate(BaseModel):
    """Body of ``POST /v1/videos`` (JSON or multipart form)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=MAX_PROMPT_CHARS, description="What the video shows.")
    model: str | None = Field(default=None, max_length=64,
                              description="Model version; default: routed by the rollout weights.")
    size: SizeText | None = Field(default=None, description='"WIDTHxHEIGHT", multiples of 32, e.g. "1280x704".')
    seconds: float | None = Field(default=None, gt=0, le=60, description="Duration; sets num_frames from fps.")
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    num_frames: int | None = Field(default=None, description="4k+1 frames; wins over seconds.")
    fps: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    scheduler: Scheduler | None = None
    priority: Priority = "realtime"
    # Tenants may opt in to the shared cache pool (issue: multi-tenant access).
    shared_cache: bool = False
    input_reference: str | None = Field(
        default=None, max_length=MAX_REFERENCE_BASE64_CHARS,
        description="First frame to animate (image-to-video): PNG, JPEG or WebP. In JSON, base64 (or a "
                    "data: URL); in multipart, a file part of this name. URLs are never fetched.")

    @field_validator("input_reference", mode="before")
    @classmethod
    def _reference_object(cls, value: Any) -> Any:
        # The OpenAI SDK's other form: {"image_url": "data:image/png;base64,..."}; never a URL we fetch.
        if isinstance(value, dict):
            if set(value) == {"image_url"} and isinstance(value["image_url"], str):
                return value["image_url"]
            raise ValueError("input_reference: send the image (a multipart file, base64, or "
                             "{\"image_url\": \"data:image/...;base64,...\"}); file ids are not supported here")
        return value

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_may_be_a_string(cls, value: Any) -> Any:
        # OpenAI's API sends seconds as a string ("4").
        return float(value) if isinstance(value, str) and value.strip() else value

    def to_request(self, image: bytes | None = None) -> VideoRequest:
        """The domain request; a Refusal (400) names the field as the client sent it and what is allowed.

        ``image`` is an uploaded ``input_reference`` file (multipart); in JSON it is base64 in the field.
        """
        if self.input_reference is not None:
            image = decode_reference(self.input_reference)
        try:
            params = self.to_params(self.seed)
        except ValidationError as error:
            problems = error.errors()
            param = ".".join(str(part) for part in problems[0]["loc"]) if problems else None
            if param in ("width", "height") and self.size is not None:
                param = "size"  # the client sent "size", not width/height
            raise Refusal(400, "invalid_request", describe_errors(error), param) from None
        except ValueError as error:
            message = str(error)
            raise Refusal(400, "invalid_request", message, message.split(":", 1)[0]) from None
        return VideoRequest(params, priority=self.priority, model=self.model, shared_cache=self.shared_cache,
                            image=image)

    def to_params(self, seed: int | None = None) -> GenerationParams:
        """The generation parameters; raises pydantic's ValidationError or ValueError naming the field."""
        fields: dict[str, Any] = {"prompt": self.prompt}
        if self.size is not None:
            fields["width"], fields["height"] = parse_size(self.size)
        fps = self.fps if self.fps is not None else 24
        for name in ("negative_prompt", "num_frames", "fps", "num_inference_steps", "guidance_scale", "scheduler"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        if self.num_frames is None and self.seconds is not None:
            fields["num_frames"] = frames_for_seconds(self.seconds, fps)
        fields["seed"] = self.seed if self.seed is not None else seed
        return GenerationParams(**fields)


def decode_reference(text: str) -> bytes:
    """The bytes of a base64 ``input_reference`` (optionally a ``data:image/...;base64,`` URL)."""
    value = text.strip()
    if value.lower().startswith(("http://", "https://", "ftp://", "file:")):
        raise Refusal(400, "invalid_request", "input_reference: URLs are not fetched by this server; send the image "
                      "itself, base64 in JSON or as a multipart file part named input_reference", "input_reference")
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise Refusal(400, "invalid_request", "input_reference: a data: URL must be base64 "
                          "(data:image/png;base64,...)", "input_reference")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(400, "invalid_request", "input_reference: not valid base64; send the image's bytes in "
                      "standard base64, or upload it as a multipart file part", "input_reference") from None


def frames_for_seconds(seconds: float, fps: int) -> int:
    """Nearest 4k+1 frame count for a duration, capped at the model's maximum."""
    wanted = max(1, round(seconds * fps))
    snapped = round((wanted - 1) / TEMPORAL_FACTOR) * TEMPORAL_FACTOR + 1
    if snapped > MAX_FRAMES:
        raise ValueError(
            f"seconds: {seconds}s at {fps} fps needs {snapped} frames; at most {MAX_FRAMES} frames "
            f"({MAX_FRAMES / fps:.2f}s at {fps} fps) are allowed"
        )
    return snapped


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoPublic]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True
