"""The serving policy: the one small object the control plane changes and the data plane reads.

It arrives through the policy store (serve/policy_store.py: a versioned Redis hash every router replica
follows, which the operator and the admin endpoint publish to) or, in a local run without Redis,
through the admin endpoint alone. Never through the RayService: Helm owns that. The data plane never
imports the operator: this module and the store's are the whole contract between them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from serve.jobs.model import Priority as Lane
from serve.step_cache import StepCache

Instance = Literal["primary", "backup"]

SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")
SPATIAL_MULTIPLE = 32  # VAE 16x spatial compression x transformer patch 2
TEMPORAL_FACTOR = 4  # frames must be 4k+1


def parse_size(size: str) -> tuple[int, int]:
    """Parse "WxH" into (width, height); raises ValueError with the allowed form."""
    match = SIZE_PATTERN.match(size.strip().lower())
    if not match:
        raise ValueError(f"size must look like WIDTHxHEIGHT (e.g. 1280x704), got {size!r}")
    return int(match.group(1)), int(match.group(2))


def _checked_size(value: str) -> str:
    parse_size(value)
    return value


SizeText = Annotated[str, AfterValidator(_checked_size)]
"""A "WxH" string, checked wherever a model declares a size."""


class TierRoute(BaseModel):
    """A model version a tier moves its traffic to (a few-step distilled checkpoint deployed as its own
    version, say), with the steps and guidance that version is meant to run at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str = Field(min_length=1, max_length=64)
    num_inference_steps: int | None = Field(default=None, ge=1, le=100)
    guidance_scale: float | None = Field(default=None, ge=1.0, le=20.0)


class DegradationTier(BaseModel):
    """Limits that one degradation tier puts on a request. ``None`` means no limit.

    Besides shrinking size, frames and steps, a tier may turn on step caching (``step_cache``) and move
    requests that did not name a version to another model version (``route``). It acts only on the
    lanes it lists: a tier for ``["realtime"]`` degrades interactive traffic while batch traffic keeps
    full quality and waits its turn.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=32)
    # Position in the operator's tier list (0 = full quality); exported as wanserve_degradation_tier.
    level: int = Field(default=0, ge=0)
    max_size: SizeText | None = Field(default=None, description='Largest area served, as "WxH"')
    max_frames: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    step_cache: StepCache | None = None
    route: TierRoute | None = None
    lanes: tuple[Lane, ...] = Field(default=("realtime", "batch"), min_length=1)

    def applies_to(self, lane: Lane) -> bool:
        return lane in self.lanes

    @property
    def max_area(self) -> int | None:
        if self.max_size is None:
            return None
        width, height = parse_size(self.max_size)
        return width * height


FULL = DegradationTier(name="full")
DEFAULT_TIERS: tuple[DegradationTier, ...] = (
    FULL,
    DegradationTier(name="reduced", level=1, max_size="640x480", max_frames=33, max_steps=25),
    DegradationTier(name="minimal", level=2, max_size="320x256", max_frames=9, max_steps=10),
)


class TierThreshold(BaseModel):
    """One rung of the operator's ladder as the data plane shows it: load at or above ``enter_load`` enters
    the tier, below ``exit_load`` (for the stable window) leaves it. The operations page draws these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    level: int = Field(ge=0)
    enter_load: float | None = None
    exit_load: float | None = None


class FaultInjection(BaseModel):
    """Drill-only: make one (version, instance) fail a fraction of its requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    instance: Instance = "primary"
    error_rate: float = Field(ge=0.0, le=1.0)


class ServingPolicy(BaseModel):
    """What the data plane serves right now: tier, traffic weights and active instances."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: DegradationTier = FULL
    # Percent of traffic per model version; versions not listed get no traffic.
    weights: dict[str, float] = Field(default_factory=dict)
    # Which instance serves each version; versions not listed use the primary.
    active_instance: dict[str, Instance] = Field(default_factory=dict)
    faults: tuple[FaultInjection, ...] = ()
    reason: str = ""
    # The operator's whole tier ladder with its load thresholds (empty when no operator publishes).
    ladder: tuple[TierThreshold, ...] = ()

    @model_validator(mode="after")
    def _weights_are_percentages(self) -> ServingPolicy:
        for version, weight in self.weights.items():
            if not 0.0 <= weight <= 100.0:
                raise ValueError(f"weight for {version!r} must be within 0..100, got {weight}")
        if self.weights and sum(self.weights.values()) <= 0:
            raise ValueError("at least one model version needs a weight above 0")
        return self

    def instance_for(self, model_version: str) -> Instance:
        return self.active_instance.get(model_version, "primary")


def snap_size(width: int, height: int, max_area: int | None) -> tuple[int, int]:
    """Shrink (width, height) to fit ``max_area``, keeping the aspect ratio, on the 32-pixel grid."""
    if max_area is None or width * height <= max_area:
        return width, height
    scale = (max_area / (width * height)) ** 0.5
    snapped_w = max(SPATIAL_MULTIPLE, int(width * scale) // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE)
    snapped_h = max(SPATIAL_MULTIPLE, int(height * scale) // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE)
    return snapped_w, snapped_h


def snap_frames(num_frames: int, max_frames: int | None) -> int:
    """Cap ``num_frames`` at ``max_frames``, rounded down to the model's 4k+1 grid."""
    if max_frames is None or num_frames <= max_frames:
        return num_frames
    return max(1, (max_frames - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1)


def snap_steps(steps: int, max_steps: int | None) -> int:
    return steps if max_steps is None else min(steps, max_steps)
