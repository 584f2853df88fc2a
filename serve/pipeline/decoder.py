"""Decoder stage: the VAE. Latents -> frames, un-normalising exactly as ``WanPipeline`` does; and, with
the VAE's encoder half, a reference image -> the first latent frame of an image-to-video request,
exactly as ``WanImageToVideoPipeline`` computes it. One stage holds one copy of the VAE for both.

The Wan VAE decodes latent frame by latent frame, carrying a causal cache (``_feat_map``) from one
frame to the next. ``AutoencoderKLWan._decode`` keeps that cache on the module and decodes a whole
video in one call; here each video owns its cache (``DecodeState``), so a decode can stop after any
latent frame, let other work use the device, and go on: ``start_decode`` / ``decode_chunk``. The
calls are those of ``_decode``, in its order, so the frames are the ones a whole decode gives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serve.pipeline.device import dtype_for, pick_device, quiet_loading, release_cached_memory

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image


@dataclass
class DecodeState:
    """A video part-way through decoding: its latents after ``post_quant_conv``, its own causal
    cache and the next latent frame to decode."""

    latents: torch.Tensor
    """[1, C, F, h, w] on the decoder's device."""
    feat_map: list[Any]
    next_frame: int = 0
    pixel_frames: list[np.ndarray] = field(default_factory=list)
    """Decoded frames so far, one array [n, H, W, 3] per chunk."""

    @property
    def total(self) -> int:
        return int(self.latents.shape[2])

    @property
    def finished(self) -> bool:
        return self.next_frame >= self.total


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
        # The VAE's encoder keeps its causal-conv cache on the module, and a chunk should have the device
        # to itself: one encode or decode chunk at a time per instance.
        self._lock = threading.Lock()

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [1, C, F, h, w] -> float frames [F', H, W, 3] in [0, 1] (F' = 4 (F - 1) + 1)."""
        import numpy as np

        state = self.start_decode(latents)
        while not state.finished:
            self.decode_chunk(state, state.total)
        return np.concatenate(state.pixel_frames)

    def start_decode(self, latents: torch.Tensor) -> DecodeState:
        """Un-normalise as ``WanPipeline`` does and apply ``post_quant_conv`` (kernel 1: per frame)."""
        torch = self._torch
        if self.vae.use_tiling:
            raise ValueError("chunked decoding follows AutoencoderKLWan._decode, which tiling replaces: disable tiling")
        with self._lock, torch.inference_mode():
            latents = latents.to(self.device, self.dtype)
            mean = self._mean.to(latents.device, latents.dtype)
            inv_std = self._inv_std.to(latents.device, latents.dtype)
            x = self.vae.post_quant_conv(latents / inv_std + mean)
        return DecodeState(latents=x, feat_map=[None] * self.vae._cached_conv_counts["decoder"])

    def decode_chunk(self, state: DecodeState, latent_frames: int = 1) -> np.ndarray:
        """Decode the next ``latent_frames`` latent frames of ``state``; their pixel frames [n, H, W, 3]
        (4 per latent frame, 1 for the first) are returned and kept in ``state.pixel_frames``."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        torch = self._torch
        stop = min(state.next_frame + max(latent_frames, 1), state.total)
        with self._lock, torch.inference_mode():
            pieces = []
            for index in range(state.next_frame, stop):
                pieces.append(self.vae.decoder(
                    state.latents[:, :, index : index + 1],
                    feat_cache=state.feat_map,
                    feat_idx=[0],
                    first_chunk=index == 0,
                ))
            out = torch.cat(pieces, 2)
            if self.vae.config.patch_size is not None:
                out = unpatchify(out, patch_size=self.vae.config.patch_size)
            out = torch.clamp(out, min=-1.0, max=1.0)
            frames: np.ndarray = self._processor.postprocess_video(out, output_type="np")[0]
        state.next_frame = stop
        state.pixel_frames.append(frames)
        if state.finished:
            state.feat_map.clear()  # the cache is the big part of a state: free it with the last chunk
            release_cached_memory(self.device)
        return frames

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
