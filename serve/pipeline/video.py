"""Frames -> browser-playable H.264 mp4 (yuv420p, faststart) and a PNG thumbnail."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, rounding as image libraries do."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """Encode uint8 frames [F, H, W, 3] as H.264 mp4 bytes through imageio-ffmpeg."""
    import imageio_ffmpeg

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    with tempfile.TemporaryDirectory(prefix="wanserve-") as tmp:
        path = Path(tmp) / "video.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            bitrate=None,
            macro_block_size=16,
            # faststart puts the index first so browsers can play while downloading.
            output_params=["-crf", "18", "-preset", "veryfast", "-movflags", "+faststart"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return path.read_bytes()


def encode_png(frame: np.ndarray) -> bytes:
    """One uint8 frame [H, W, 3] -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def read_mp4_frames(data: bytes) -> np.ndarray:
    """Decode mp4 bytes back to uint8 frames [F, H, W, 3] (for tests and tools)."""
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory(prefix="wanserve-") as tmp:
        path = Path(tmp) / "video.mp4"
        path.write_bytes(data)
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3) for chunk in reader]
    return np.stack(frames)
