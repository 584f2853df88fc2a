"""A video request in the service's own terms, whatever API or CLI it came through."""

from __future__ import annotations

from dataclasses import dataclass

from serve.jobs.model import Priority
from serve.params import GenerationParams


@dataclass(frozen=True)
class VideoRequest:
    """What to generate (``params``; a missing seed is derived from the prompt; ``image``, the first
    frame for image-to-video), which model version (None: routed by the rollout weights), how
    urgently, and from which cache pool."""

    params: GenerationParams
    priority: Priority = "realtime"
    model: str | None = None
    shared_cache: bool = False
    # The first frame to animate (image-to-video), as uploaded; checked and decoded at admission.
    image: bytes | None = None
