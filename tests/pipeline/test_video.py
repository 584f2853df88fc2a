"""mp4 encoding: H.264, yuv420p, the requested fps, every frame kept."""

import imageio_ffmpeg
import numpy as np
import pytest

from serve.pipeline.video import encode_mp4, encode_png, read_mp4_frames, to_uint8


def _gradient(frames=9, height=64, width=96):
    ramp = np.linspace(0, 1, frames * height * width * 3, dtype=np.float32)
    return ramp.reshape(frames, height, width, 3)


def test_mp4_is_h264_yuv420p_at_the_requested_fps(tmp_path):
    data = encode_mp4(to_uint8(_gradient()), fps=12)
    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    meta = next(imageio_ffmpeg.read_frames(str(path)))
    assert meta["codec"] == "h264"
    assert meta["pix_fmt"].startswith("yuv420p")
    assert meta["fps"] == 12
    assert meta["size"] == (96, 64)


def test_mp4_keeps_every_frame_and_roughly_its_pixels():
    pixels = to_uint8(_gradient())
    decoded = read_mp4_frames(encode_mp4(pixels, fps=24))
    assert decoded.shape == pixels.shape
    assert np.abs(decoded.astype(int) - pixels.astype(int)).mean() < 4


def test_float_frames_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(_gradient(), fps=24)


def test_to_uint8_rounds_and_clips():
    assert to_uint8(np.array([-0.1, 0.0, 0.5, 1.0, 1.2])).tolist() == [0, 0, 128, 255, 255]


def test_png_thumbnail_is_a_png():
    assert encode_png(to_uint8(_gradient())[0]).startswith(b"\x89PNG\r\n\x1a\n")
