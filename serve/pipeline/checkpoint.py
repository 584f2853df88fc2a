"""Find the model directory: the configured one, or the tiny checkpoint built on first use."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from serve.pipeline.tiny_checkpoint import TINY_CHECKPOINT_VERSION, build_tiny_checkpoint

REQUIRED_PARTS = ("model_index.json", "tokenizer", "text_encoder", "transformer", "vae", "scheduler")


def cache_root() -> Path:
    base = os.environ.get("WANSERVE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "wanserve"
    )
    return Path(base)


def tiny_checkpoint_dir(**transformer_sizes: int) -> Path:
    """The tiny checkpoint in the cache, built once; safe when several processes race to build it.

    ``transformer_sizes`` (build_tiny_checkpoint's ``transformer_*`` knobs) name a wider variant,
    cached beside the default one.
    """
    suffix = "".join(f"-{key.removeprefix('transformer_')}{value}" for key, value in sorted(transformer_sizes.items()))
    target = cache_root() / f"tiny-wan2.2-ti2v-v{TINY_CHECKPOINT_VERSION}{suffix}"
    if (target / "TINY_CHECKPOINT").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        build_tiny_checkpoint(staging, **transformer_sizes)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "TINY_CHECKPOINT").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_model_dir(path: str | Path) -> Path:
    """Refuse a directory that is not in the diffusers Wan layout, naming what is missing."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"model directory {root} does not exist")
    missing = [part for part in REQUIRED_PARTS if not (root / part).exists()]
    if missing:
        raise FileNotFoundError(
            f"{root} is not a diffusers-format Wan2.2 directory: missing {', '.join(missing)} "
            "(expected the layout of Wan-AI/Wan2.2-TI2V-5B-Diffusers)"
        )
    return root


def resolve_model_dir(configured: str | Path | None = None) -> Path:
    """``configured``, else ``$WANSERVE_MODEL_DIR``, else the tiny checkpoint."""
    chosen = configured or os.environ.get("WANSERVE_MODEL_DIR")
    if chosen:
        return check_model_dir(chosen)
    return tiny_checkpoint_dir()
