"""The reference every exactness test compares with: one diffusers pipeline call with our parameters."""

from __future__ import annotations

from typing import Any

import torch

from serve.params import GenerationParams


def reference_frames(pipe: Any, params: GenerationParams, seed: int, output_type: str, **inputs: Any) -> Any:
    """``pipe(...)``'s frames (or latents) for ``params`` and ``seed``; ``inputs`` adds e.g. ``image=``.

    The model's 512-token prompts are passed explicitly: ``__call__``'s defaults are Wan2.1's.
    """
    return pipe(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        height=params.height,
        width=params.width,
        num_frames=params.num_frames,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=512,
        output_type=output_type,
        **inputs,
    ).frames
