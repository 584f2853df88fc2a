"""Generation parameters: one typed model shared by the CLI and the HTTP API.

Defaults are the model's own (1280x704, 121 frames, 24 fps, 50 steps, guidance 5.0), not
``WanPipeline.__call__``'s Wan2.1 defaults. Every limit says what is allowed when it refuses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serve.policy import SPATIAL_MULTIPLE, TEMPORAL_FACTOR, parse_size
from serve.step_cache import StepCache

Scheduler = Literal["unipc", "dpm++"]

MIN_SIDE, MAX_SIDE = 64, 1280
MAX_FRAMES = 121
MAX_STEPS = 100
MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1


class GenerationParams(BaseModel):
    """What to generate. Validated on construction; invalid values raise with what is allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    width: int = Field(default=1280, ge=MIN_SIDE, le=MAX_SIDE)
    height: int = Field(default=704, ge=MIN_SIDE, le=MAX_SIDE)
    num_frames: int = Field(default=121, ge=1, le=MAX_FRAMES)
    fps: int = Field(default=24, ge=1, le=60)
    num_inference_steps: int = Field(default=50, ge=1, le=MAX_STEPS)
    guidance_scale: float = Field(default=5.0, ge=1.0, le=20.0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    scheduler: Scheduler = "unipc"
    # Set by a degradation tier (serve/step_cache.py), not by clients: it changes the pixels, so it is
    # in the cache key like every other field.
    step_cache: StepCache | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain some text")
        return value

    @field_validator("width", "height")
    @classmethod
    def _on_spatial_grid(cls, value: int) -> int:
        if value % SPATIAL_MULTIPLE:
            lower = value // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE
            raise ValueError(
                f"must be a multiple of {SPATIAL_MULTIPLE} (VAE 16x compression x patch 2); "
                f"nearest allowed: {max(lower, MIN_SIDE)} or {min(lower + SPATIAL_MULTIPLE, MAX_SIDE)}"
            )
        return value

    @field_validator("num_frames")
    @classmethod
    def _on_temporal_grid(cls, value: int) -> int:
        if value % TEMPORAL_FACTOR != 1:
            lower = (value - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1
            raise ValueError(
                f"must be 4k+1 (1, 5, 9, ..., {MAX_FRAMES}) for the VAE's 4x temporal compression; "
                f"nearest allowed: {lower} or {lower + TEMPORAL_FACTOR}"
            )
        return value

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    @property
    def uses_guidance(self) -> bool:
        """Classifier-free guidance runs (and needs negative embeddings) only above 1.0."""
        return self.guidance_scale > 1.0


# Named presets. "default" is the model's own; "fast" is for previews.
PROFILES: dict[str, dict[str, int]] = {
    "default": {"width": 1280, "height": 704, "num_frames": 121, "fps": 24, "num_inference_steps": 50},
    "fast": {"width": 640, "height": 480, "num_frames": 17, "fps": 24, "num_inference_steps": 25},
}


def size_fields(size: str) -> dict[str, int]:
    """"WxH" -> {"width": W, "height": H}; raises ValueError saying the allowed form."""
    width, height = parse_size(size)
    return {"width": width, "height": height}


def describe_errors(error: ValidationError) -> str:
    """One readable line per problem: which field, what was wrong and what is allowed."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "request"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)
