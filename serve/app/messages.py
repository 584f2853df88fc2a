"""Small typed messages between stages. Tensors travel beside them through Ray's object store."""

from __future__ import annotations

from dataclasses import dataclass

from serve.pipeline.denoiser import LatentShape


@dataclass(frozen=True)
class EncodeTask:
    """What the TextEncoder needs: the prompt, and the negative one when guidance is on."""

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
    model_version: str
    fps: int
    priority: int = 0  # 0 realtime, 1 batch


@dataclass(frozen=True)
class VideoArtifact:
    """The decoder's result: the encoded video, a thumbnail of its first frame and its frame count."""

    mp4: bytes
    thumbnail_png: bytes
    num_frames: int
