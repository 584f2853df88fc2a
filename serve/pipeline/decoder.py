"""Decoder stage: VAE -> frames, un-normalising latents exactly as ``WanPipeline`` does."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from serve.pipeline.device import dtype_for, pick_device, quiet_loading, release_cached_memory

if TYPE_CHECKING:
    import numpy as np
    import torch


class Decoder:
    """Loads only ``vae/`` from a diffusers-format Wan directory."""

    def __init__(self, model_dir: str | Path, device: str | None = None) -> None:
        import torch
        from diffusers import AutoencoderKLWan
        from diffusers.video_processor import VideoProcessor

        self._torch = torch
        quiet_loading()
        self.device = pick_device(device)
        self.dtype = dtype_for(self.device)
        self.vae = AutoencoderKLWan.from_pretrained(Path(model_dir) / "vae", torch_dtype=self.dtype)
        self.vae.to(self.device).eval()
        config = self.vae.config
        self._mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1)
        self._inv_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1)
        self._processor = VideoProcessor(vae_scale_factor=config.scale_factor_spatial)
        # The Wan VAE keeps its causal-conv cache on the module: one decode at a time per instance.
        self._lock = threading.Lock()

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [1, C, F, h, w] -> float frames [F, H, W, 3] in [0, 1]."""
        torch = self._torch
        with self._lock, torch.inference_mode():
            latents = latents.to(self.device, self.dtype)
            mean = self._mean.to(latents.device, latents.dtype)
            inv_std = self._inv_std.to(latents.device, latents.dtype)
            video = self.vae.decode(latents / inv_std + mean, return_dict=False)[0]
            frames = self._processor.postprocess_video(video, output_type="np")
        release_cached_memory(self.device)
        return frames[0]
