"""The reference image of an image-to-video request: read it safely, then fit it to the video's size.

``load_reference_image`` is the gate for untrusted bytes. It accepts PNG, JPEG and WebP only (the
magic bytes and Pillow's own detection must agree), refuses too many bytes, and refuses too many
pixels from the header *before* any pixel is decoded, so a small file that declares a huge canvas
costs nothing. Pillow's decompression-bomb warning is an error here too. Every refusal is a
``ReferenceImageError`` whose message says what was wrong and what is allowed.

``fit_reference_image`` is the resize rule: scale to *cover* the video's size keeping the aspect
ratio (Lanczos), then center-crop. It is the rule of Wan2.2's own TI2V code (``i2v`` in
``wan/textimage2video.py``): the image is never stretched and never letterboxed; only the edges
that fall outside the video's aspect ratio are cut. diffusers' ``WanImageToVideoPipeline``
instead stretches the image to ``(height, width)`` in ``video_processor.preprocess``; for an
image that already has the video's size that resize is the identity (Pillow returns a copy), so
fitting first and then running the same ``preprocess`` gives diffusers' tensor exactly.
See docs/image-to-video.md.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_REFERENCE_BYTES = 10 * 1024 * 1024
MAX_REFERENCE_PIXELS = 4096 * 4096
ALLOWED_FORMATS = "PNG, JPEG or WebP"

# Signatures of formats people often send by mistake, so the refusal can name what was sent.
_KNOWN_OTHERS = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"%PDF", "PDF"),
)


class ReferenceImageError(ValueError):
    """A reference image that cannot be used; ``code`` is stable, the message says what is allowed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def sniff_format(data: bytes) -> str | None:
    """"PNG", "JPEG" or "WEBP" from the magic bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe_other(data: bytes) -> str:
    for magic, name in _KNOWN_OTHERS:
        if data.startswith(magic):
            return f"a {name} file"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg")) or b"<svg" in head:
        return "an SVG (text) file"
    return "not a PNG, JPEG or WebP file"


def load_reference_image(
    data: bytes, *, max_bytes: int = MAX_REFERENCE_BYTES, max_pixels: int = MAX_REFERENCE_PIXELS
) -> Image.Image:
    """Untrusted bytes -> an RGB image, upright as its EXIF orientation says; raises ReferenceImageError.

    Only the first frame of an animated PNG or WebP is used. Transparent pixels are laid on white.
    """
    if len(data) > max_bytes:
        raise ReferenceImageError(
            "image_too_large",
            f"the reference image is {len(data):,} bytes; at most {max_bytes:,} bytes "
            f"({max_bytes / 2**20:g} MiB) are accepted",
        )
    sniffed = sniff_format(data)
    if sniffed is None:
        raise ReferenceImageError(
            "unsupported_image_format",
            f"the reference image is {_describe_other(data)}; send a {ALLOWED_FORMATS} image",
        )
    limit = max_pixels if Image.MAX_IMAGE_PIXELS is None else min(max_pixels, Image.MAX_IMAGE_PIXELS)
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here any bomb is a refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            # Only the plugin the magic bytes name may read the file, so Pillow's own detection can
            # never wander into another format's decoder. (A phone JPEG may come back as "MPO".)
            image = Image.open(io.BytesIO(data), formats=[sniffed])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels(None, limit) from None
        except (OSError, SyntaxError, ValueError) as error:
            raise _unreadable(sniffed, error) from None
        # The header is read, no pixel yet: refuse a huge canvas before paying to decode it.
        if image.width * image.height > limit:
            raise _too_many_pixels(image.size, limit)
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels(image.size, limit) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise _unreadable(sniffed, error) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: Pillow's plain convert clips to 255, which would turn the image white.
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _too_many_pixels(size: tuple[int, int] | None, limit: int) -> ReferenceImageError:
    declared = "more pixels than Pillow's decompression-bomb limit" if size is None else (
        f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
    )
    return ReferenceImageError(
        "image_too_many_pixels",
        f"the reference image declares {declared}; at most {limit:,} pixels "
        f"(for example 4096x4096) are accepted: downscale it first",
    )


def _unreadable(sniffed: str, error: BaseException) -> ReferenceImageError:
    # Pillow's "cannot identify image file" names a Python object, which means nothing to a client.
    detail = "its header cannot be read" if isinstance(error, UnidentifiedImageError) else str(error)
    return ReferenceImageError(
        "image_unreadable",
        f"the reference image looks like {sniffed} but cannot be decoded ({detail}); "
        f"it may be truncated or corrupt: send a complete {ALLOWED_FORMATS} file",
    )


def fit_reference_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale ``image`` to cover width x height keeping its aspect ratio (Lanczos), then center-crop.

    An image that already has the size is returned as a copy, so fitting twice changes nothing.
    """
    if width < 1 or height < 1:
        raise ValueError(f"the target size must be positive, got {width}x{height}")
    if image.size == (width, height):
        return image.copy()
    scale = max(width / image.width, height / image.height)
    scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resized = image.resize(scaled, Image.Resampling.LANCZOS)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return resized.crop((left, top, left + width, top + height))
