"""Small typed messages between stages. Tensors travel beside them through Ray's object store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve.pipeline.denoiser import LatentShape


class Cancelled(Exception):
    """The job was cancelled (``cancel(job_id)`` on a stage, or ``StageHandles.cancel``): its work
    stopped at the next step or chunk boundary and freed its slot; there is no result."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)  # the only argument, so the exception pickles across Ray as it is
        self.job_id = job_id

    def __str__(self) -> str:
        return f"job {self.job_id} was cancelled"


@dataclass(frozen=True)
class EncodeTask:
    """What the TextEncoder needs: the prompt, and the negative one when guidance is on."""

    job_id: str
    model_version: str
    prompt: str
    negative_prompt: str | None
    priority: int = 0  # 0 realtime, 1 batch: who gets the device first


@dataclass(frozen=True)
class DenoiseTask:
    """What the Denoiser needs besides the embeddings."""

    job_id: str
    model_version: str
    shape: LatentShape
    seed: int
    priority: int = 0  # 0 realtime, 1 batch


@dataclass(frozen=True)
class Progress:
    """Denoising steps done so far; streamed back to the ingress for the job's progress."""

    done: int
    total: int


@dataclass(frozen=True)
class LatentsReady:
    """The denoiser's result. ``latents`` is an ObjectRef: the ingress hands it on without reading it."""

    latents: object


@dataclass(frozen=True)
class DecodeTask:
    """What the Decoder needs besides the latents."""

    job_id: str
    model_version: str
    fps: int
    priority: int = 0  # 0 realtime, 1 batch


@dataclass(frozen=True)
class ImageTask:
    """What the Decoder needs to encode an image-to-video request's first frame (already fitted)."""

    job_id: str
    model_version: str
    image: Any  # a PIL image, width x height
    width: int
    height: int
    priority: int = 0  # 0 realtime, 1 batch


@dataclass(frozen=True)
class VideoArtifact:
    """The decoder's result: the encoded video, a thumbnail of its first frame and its frame count."""

    mp4: bytes
    thumbnail_png: bytes
    num_frames: int
