"""Decoder stage: the VAE. Latents -> frames, un-normalising exactly as ``WanPipeline`` does; and, with
the VAE's encoder half, a reference image -> the first latent frame of an image-to-video request,
exactly as ``WanImageToVideoPipeline`` computes it. One stage holds one copy of the VAE for both."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from serve.pipeline.device import dtype_for, pick_device, quiet_loading, release_cached_memory

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image


class Decoder:
    """Loads only ``vae/`` from a diffusers-format Wan directory; decodes videos and encodes reference images."""

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
        # The Wan VAE keeps its causal-conv cache on the module: one encode or decode at a time per instance.
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

    def encode_image(self, image: Image.Image, width: int, height: int) -> torch.Tensor:
        """A reference image -> its normalised latent [1, C, 1, height/16, width/16], float32 on the CPU.

        The image is first fitted to width x height (``fit_reference_image``: cover, then center-crop).
        The rest is ``WanImageToVideoPipeline.prepare_latents`` with ``expand_timesteps``: the same
        ``preprocess`` to [-1, 1], one frame through the VAE encoder, the distribution's mode (no
        sampling, so no seed is involved), then ``(latent - mean) / std``.
        """
        from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents

        from serve.pipeline.reference_image import fit_reference_image

        torch = self._torch
        fitted = fit_reference_image(image, width, height)
        with self._lock, torch.inference_mode():
            pixels = self._processor.preprocess(fitted, height=height, width=width).to(self.device, torch.float32)
            frame = pixels.unsqueeze(2).to(self.device, self.dtype)
            latent = retrieve_latents(self.vae.encode(frame), sample_mode="argmax").to(torch.float32)
            mean = self._mean.to(latent.device, torch.float32)
            inv_std = self._inv_std.to(latent.device, torch.float32)
            latent = (latent - mean) * inv_std
        release_cached_memory(self.device)
        return latent.cpu()
