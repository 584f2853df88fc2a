"""The three stages chained in one process: what the CLI and the benchmarks run.

The Ray Serve application chains the same classes across deployments; both paths go through
``encode_request`` / ``shape_of`` so they cannot drift apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serve.params import GenerationParams
from serve.pipeline.decoder import Decoder
from serve.pipeline.denoiser import Denoiser, DenoiseRequest, LatentShape, StepCallback
from serve.pipeline.text_encoder import PromptEmbeddings, TextEncoder
from serve.pipeline.video import encode_mp4, encode_png, to_uint8

if TYPE_CHECKING:
    from PIL import Image


def shape_of(params: GenerationParams) -> LatentShape:
    return LatentShape(
        width=params.width,
        height=params.height,
        num_frames=params.num_frames,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        scheduler=params.scheduler,
        step_cache=params.step_cache,
    )


def encode_request(encoder: TextEncoder, params: GenerationParams) -> PromptEmbeddings:
    negatives = [params.negative_prompt] if params.uses_guidance else None
    return encoder.encode([params.prompt], negatives)


@dataclass
class Generation:
    """A finished video: frames, the encoded mp4 and thumbnail, and seconds spent per stage."""

    frames: np.ndarray
    mp4: bytes
    thumbnail_png: bytes
    seed: int
    stage_seconds: dict[str, float] = field(default_factory=dict)


class StagePipeline:
    """TextEncoder -> Denoiser -> Decoder in this process."""

    def __init__(self, model_dir: str | Path, device: str | None = None, compile: bool = False) -> None:
        self.text_encoder = TextEncoder(model_dir, device)
        self.denoiser = Denoiser(model_dir, device, compile=compile)
        self.decoder = Decoder(model_dir, device)

    def generate(
        self,
        params: GenerationParams,
        seed: int,
        on_step: StepCallback | None = None,
        image: Image.Image | None = None,
    ) -> Generation:
        """Text-to-video, or image-to-video when ``image`` (from ``load_reference_image``) is given."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        embeddings = encode_request(self.text_encoder, params)
        timings["text_encoder"] = time.perf_counter() - started

        image_latents = None
        if image is not None:
            started = time.perf_counter()
            image_latents = self.decoder.encode_image(image, params.width, params.height)
            timings["image_encoder"] = time.perf_counter() - started

        started = time.perf_counter()
        request = DenoiseRequest(embeddings, shape_of(params), seed, image_latents)
        latents = self.denoiser.denoise(request, on_step)
        timings["denoiser"] = time.perf_counter() - started

        started = time.perf_counter()
        frames = self.decoder.decode(latents)
        pixels = to_uint8(frames)
        mp4 = encode_mp4(pixels, params.fps)
        timings["decoder"] = time.perf_counter() - started
        return Generation(frames, mp4, encode_png(pixels[0]), seed, timings)
