"""Where a stage runs and in which dtype: bf16 on CUDA, fp32 on CPU."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:1") or the best available device."""
    import torch

    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} was asked for but CUDA is not available here")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_key(device: torch.device) -> str:
    """What names this device on this host, the same in every process: ``cpu``, or a GPU's UUID
    (Ray gives each replica its own ``CUDA_VISIBLE_DEVICES``, so ``cuda:0`` names different GPUs)."""
    import torch

    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"cuda-{uuid}" if uuid is not None else f"cuda-{os.environ.get('CUDA_VISIBLE_DEVICES', '')}-{index}"


def dtype_for(device: torch.device) -> torch.dtype:
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def release_cached_memory(device: torch.device) -> None:
    """Give cached CUDA blocks back after a request so co-located stages can use them."""
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()


def quiet_loading() -> None:
    """Stage processes log requests, not per-shard loading bars from transformers/diffusers."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
