"""load_reference_image accepts PNG, JPEG and WebP and refuses everything else, saying what is allowed."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from serve.pipeline.reference_image import (
    MAX_REFERENCE_BYTES,
    ReferenceImageError,
    load_reference_image,
)


def _picture(width=60, height=40):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_header_only(width, height):
    """A PNG that declares width x height but carries no pixel data at all."""

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_are_accepted_as_rgb(fmt):
    image = load_reference_image(_encode(_picture(), fmt))
    assert image.mode == "RGB" and image.size == (60, 40)


def test_png_pixels_come_through_unchanged():
    picture = _picture()
    assert np.array_equal(np.asarray(load_reference_image(_encode(picture, "PNG"))), np.asarray(picture))


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (_encode(_picture(), "GIF"), "a GIF file"),
        (_encode(_picture(), "BMP"), "a BMP file"),
        (_encode(_picture(), "TIFF"), "a TIFF file"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "an SVG"),
        (b"just some text", "not a PNG, JPEG or WebP file"),
        (b"", "not a PNG, JPEG or WebP file"),
    ],
    ids=["gif", "bmp", "tiff", "svg", "text", "empty"],
)
def test_other_formats_are_refused_naming_what_was_sent_and_what_is_allowed(data, named):
    with pytest.raises(ReferenceImageError) as refused:
        load_reference_image(data)
    assert refused.value.code == "unsupported_image_format"
    assert named in str(refused.value) and "send a PNG, JPEG or WebP image" in str(refused.value)


def test_too_many_bytes_are_refused_before_reading_the_image():
    data = _encode(_picture(), "PNG")
    with pytest.raises(ReferenceImageError) as refused:
        load_reference_image(data + b"\0" * MAX_REFERENCE_BYTES)
    assert refused.value.code == "image_too_large"
    assert "at most 10,485,760 bytes (10 MiB)" in str(refused.value)


def test_the_byte_cap_is_a_parameter():
    data = _encode(_picture(), "PNG")
    assert load_reference_image(data, max_bytes=len(data)).size == (60, 40)
    with pytest.raises(ReferenceImageError, match=f"at most {len(data) - 1:,} bytes"):
        load_reference_image(data, max_bytes=len(data) - 1)


def test_too_many_pixels_declared_in_a_tiny_png_header_are_refused_before_decoding():
    data = _png_header_only(5000, 5000)
    assert len(data) < 100
    # No pixel data follows the header: had the loader tried to decode, this would read "unreadable".
    with pytest.raises(ReferenceImageError) as refused:
        load_reference_image(data)
    assert refused.value.code == "image_too_many_pixels"
    assert "5000x5000 = 25,000,000 pixels" in str(refused.value)
    assert "at most 16,777,216 pixels" in str(refused.value)


def test_the_pixel_cap_is_a_parameter():
    data = _encode(_picture(60, 40), "PNG")
    assert load_reference_image(data, max_pixels=2400).size == (60, 40)
    with pytest.raises(ReferenceImageError, match="60x40 = 2,400 pixels"):
        load_reference_image(data, max_pixels=2399)


def test_pillows_decompression_bomb_warning_is_a_refusal(monkeypatch):
    # Between MAX_IMAGE_PIXELS and twice that Pillow only warns; here that is an error too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with pytest.raises(ReferenceImageError) as refused:
        load_reference_image(_encode(_picture(60, 40), "PNG"))
    assert refused.value.code == "image_too_many_pixels"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_a_truncated_file_is_refused(fmt, keep):
    data = _encode(_picture(), fmt)
    with pytest.raises(ReferenceImageError) as refused:
        load_reference_image(data[: int(len(data) * keep)])
    assert refused.value.code == "image_unreadable"
    assert "truncated or corrupt" in str(refused.value)
    assert "<_io.BytesIO" not in str(refused.value)


def test_exif_orientation_is_applied():
    picture = Image.new("RGB", (60, 40), "white")
    picture.paste((255, 0, 0), (0, 0, 10, 10))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    upright = load_reference_image(_encode(picture, "JPEG", exif=exif, quality=95))
    assert upright.size == (40, 60)
    red, green, _ = upright.getpixel((35, 5))  # ... is in the displayed top-right corner
    assert red > 200 and green < 60


def test_transparent_pixels_are_laid_on_white():
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert np.asarray(load_reference_image(_encode(clear, "PNG"))).min() == 255


def test_sixteen_bit_greyscale_keeps_its_tones():
    # A plain convert would clip every value above 255 to white.
    values = np.arange(64 * 8).reshape(8, 64) * 128
    pixels = np.asarray(load_reference_image(_encode(Image.fromarray(values.astype(np.uint16)), "PNG")))
    assert np.abs(pixels[..., 0] - values / 256).max() <= 1
