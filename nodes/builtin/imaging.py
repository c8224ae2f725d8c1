"""Pillow work behind the ``image.*`` node types: bounded decoding, then resize, crop, convert, watermark.

Everything here is synchronous and CPU-bound; the node types call it through ``ctx.to_thread``.
Images are hostile input (any execute key can send one), so decoding is bounded:

- **Pixels.** A decompression bomb is a small file whose header claims a huge canvas (a PNG of
  100000×100000 zeros is a few hundred kilobytes). The header is read first and anything above
  ``max_pixels`` fails with ``invalid_input`` before a byte of pixels is decoded, so memory stays
  at what ``max_pixels`` allows (4 bytes a pixel at most). Pillow has its own check on
  ``Image.MAX_IMAGE_PIXELS`` (a warning above it, an error above twice it, both at ``open``);
  it is set to the same ceiling on every call — the ceiling is one value per process, so threads
  agree — and both its warning (an exception where warnings are errors, as under pytest) and
  its error become ``invalid_input`` too.
- **Truncated or corrupt data** raises inside Pillow (``OSError``, ``SyntaxError``…) and becomes
  ``invalid_input``; ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off, so half an image never
  passes as a whole one.

This module imports Pillow at the top: it is imported only when an ``image.*`` node runs, so an
installation without the ``media`` extra still starts (its types are listed as unavailable).
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps, features

from nodes import errors

FORMATS: dict[str, tuple[str, str, str]] = {
    "png": ("PNG", "image/png", "png"),
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "webp": ("WEBP", "image/webp", "webp"),
}
"""Output formats: our name → (Pillow's name, content type, file extension)."""

_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error,
    Image.DecompressionBombError, Image.DecompressionBombWarning,
)
"""What Pillow raises on data that is not a (whole, sane) image; UnidentifiedImageError is an OSError."""

_KEPT_MODES = frozenset({"RGB", "RGBA", "L", "LA"})
_PADDING: dict[str, int | tuple[int, ...]] = {"RGB": (0, 0, 0), "RGBA": (0, 0, 0, 0), "L": 0, "LA": (0, 0)}
_ROTATED = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Encoded:
    """An encoded result: its bytes, size and format, and the megapixels the work decoded."""

    data: bytes
    width: int
    height: int
    format: str
    megapixels: float

    @property
    def content_type(self) -> str:
        """The media type of ``data``."""
        return FORMATS[self.format][1]

    @property
    def extension(self) -> str:
        """The file extension for ``data``, without the dot."""
        return FORMATS[self.format][2]


@dataclass(frozen=True)
class Info:
    """What ``image.info`` reports (width and height as displayed: EXIF rotation applied)."""

    width: int
    height: int
    format: str
    mode: str


class PixelBudget:
    """A cap on the pixels being decoded and worked on at once in this process.

    One image is bounded by ``max_pixels``, but ten nodes at once (``MAX_CONCURRENT_JOBS``) each
    on a 99-megapixel image would hold 4 GB. A node waits (on its thread) until its image fits
    in what the others leave; an image larger than the whole budget waits to run alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Reserve ``pixels`` for the block (blocking the calling thread until they fit)."""
        pixels = min(pixels, self.capacity)
        with self._changed:
            self._changed.wait_for(lambda: self._used + pixels <= self.capacity)
            self._used += pixels
        try:
            yield
        finally:
            with self._changed:
                self._used -= pixels
                self._changed.notify_all()


BUDGET = PixelBudget(200_000_000)
"""The process's pixel budget: 200 megapixels, 800 MB as RGBA, shared by every ``image.*`` node.
One per process because memory is per process (like the thread pool the nodes run on)."""


def _check_pixels(width: int, height: int, max_pixels: int, what: str = "the image") -> None:
    if width * height > max_pixels:
        raise errors.InvalidInput(
            f"{what} is {width}×{height} ({width * height / 1e6:.1f} megapixels), over the limit of "
            f"{max_pixels / 1e6:.1f} megapixels (a decompression bomb, or simply too large)"
        )


def _open(path: Path, max_pixels: int, what: str) -> Image.Image:
    """Open lazily (header only) and refuse a canvas above ``max_pixels``."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.InvalidInput(
            f"{what}'s header claims more pixels than the limit of {max_pixels / 1e6:.1f} megapixels "
            "(a decompression bomb, or simply too large)") from None
    except _DECODE_ERRORS as exc:
        raise errors.InvalidInput(f"{what} cannot be read as an image: {_reason(exc)}") from None
    try:
        _check_pixels(*image.size, max_pixels, what)
    except errors.InvalidInput:
        image.close()
        raise
    return image


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def load(path: Path, max_pixels: int, what: str = "the image") -> tuple[Image.Image, str | None]:
    """Decode the image at ``path`` whole, upright (EXIF orientation applied), in RGB(A) or L(A).

    Returns:
        The image and its source format in our naming (``jpeg``…; None when not png/jpeg/webp).
    Raises:
        errors.InvalidInput: not an image, truncated or corrupt, or above ``max_pixels``.
    """
    image = _open(path, max_pixels, what)
    try:
        with image:
            source = (image.format or "").lower()
            image.load()
            # exif_transpose copies even an upright image: 36 MB of memcpy for 12 MP, so only when rotated.
            upright = ImageOps.exif_transpose(image) if image.getexif().get(0x0112, 1) != 1 else image
            return _normalised(upright), source if source in FORMATS else None
    except _DECODE_ERRORS as exc:
        raise errors.InvalidInput(f"{what} cannot be decoded: {_reason(exc)}") from None


@contextmanager
def loaded(path: Path, max_pixels: int, what: str = "the image") -> Iterator[tuple[Image.Image, str | None]]:
    """:func:`load` under :data:`BUDGET`, its pixels held until the block ends (the work on them)."""
    header = _open(path, max_pixels, what)
    header.close()
    with BUDGET.hold(header.width * header.height):
        yield load(path, max_pixels, what)


def _normalised(image: Image.Image) -> Image.Image:
    if image.mode in _KEPT_MODES:
        return image
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def info(path: Path, max_pixels: int) -> Info:
    """Width, height (as displayed), format and mode of the image at ``path``, after decoding it whole.

    JPEGs are decoded at reduced scale (``draft``): enough to prove the data is whole, a fraction
    of the time.
    """
    image = _open(path, max_pixels, "the image")
    try:
        with image:
            width, height, mode = *image.size, image.mode
            if image.getexif().get(0x0112) in _ROTATED:
                width, height = height, width
            image.draft(mode, (max(1, width // 8), max(1, height // 8)))
            with BUDGET.hold(width * height):
                image.load()
            return Info(width=width, height=height, format=(image.format or "").lower(), mode=mode)
    except _DECODE_ERRORS as exc:
        raise errors.InvalidInput(f"the image cannot be decoded: {_reason(exc)}") from None


def encode(image: Image.Image, fmt: str, quality: int, megapixels: float) -> Encoded:
    """Encode ``image`` as ``fmt`` (``png``/``jpeg``/``webp``); JPEG flattens transparency onto white."""
    if fmt == "jpeg" and image.mode not in ("RGB", "L"):
        image = _flattened(image)
    buffer = io.BytesIO()
    pillow_format = FORMATS[fmt][0]
    if fmt == "png":
        image.save(buffer, pillow_format)
    else:
        image.save(buffer, pillow_format, quality=quality)
    return Encoded(buffer.getvalue(), image.width, image.height, fmt, megapixels)


def _flattened(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def megapixels(image: Image.Image) -> float:
    """The image's size in megapixels (what ``image.*`` nodes are priced by)."""
    return image.width * image.height / 1e6


def resize(image: Image.Image, width: int | None, height: int | None, fit: str) -> Image.Image:
    """Resize to ``width``×``height`` by ``fit`` (one of them None: keep the aspect ratio).

    ``fill`` stretches to exactly that size; ``cover`` scales to cover it and crops the centre;
    ``contain`` scales to fit inside and pads to exactly that size (transparent, or black when
    the image has no alpha); ``inside`` scales to fit inside, no padding.
    """
    if width is None or height is None:
        scale = width / image.width if width is not None else (height or 0) / image.height
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS)
    size = (width, height)
    if fit == "fill":
        return image.resize(size, Image.Resampling.LANCZOS)
    if fit == "cover":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    if fit == "inside":
        return ImageOps.contain(image, size, Image.Resampling.LANCZOS)
    return ImageOps.pad(image, size, Image.Resampling.LANCZOS, color=_PADDING[image.mode])


def crop(image: Image.Image, left: int, top: int, width: int, height: int) -> Image.Image:
    """The ``width``×``height`` region whose top-left corner is (``left``, ``top``).

    Raises:
        errors.InvalidInput: the region does not lie inside the image.
    """
    if left + width > image.width or top + height > image.height:
        raise errors.InvalidInput(
            f"the crop {left},{top} {width}×{height} reaches outside the {image.width}×{image.height} image"
        )
    return image.crop((left, top, left + width, top + height))


def place(canvas: tuple[int, int], item: tuple[int, int], position: str) -> tuple[int, int]:
    """Top-left corner for ``item`` at ``position`` (``top-left``… ``bottom-right``, ``center``) with a margin."""
    margin = round(0.02 * min(canvas))
    free_x, free_y = canvas[0] - item[0], canvas[1] - item[1]
    vertical, _, horizontal = position.partition("-") if "-" in position else (position, "", position)
    x = {"left": margin, "right": free_x - margin}.get(horizontal, free_x // 2)
    y = {"top": margin, "bottom": free_y - margin}.get(vertical, free_y // 2)
    return max(0, x), max(0, y)


def watermark_text(image: Image.Image, text: str, position: str, opacity: float) -> Image.Image:
    """Draw ``text`` (white with a dark outline, ``opacity`` 0–1) at ``position``."""
    size = max(12, min(image.size) // 20)
    font = ImageFont.load_default(size=size) if features.check("freetype2") else ImageFont.load_default()
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    stroke = max(1, size // 15)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    x, y = place(image.size, (round(right - left), round(bottom - top)), position)
    alpha = round(255 * opacity)
    draw.text((x - left, y - top), text, font=font, fill=(255, 255, 255, alpha),
              stroke_width=stroke, stroke_fill=(0, 0, 0, alpha))
    return _composited(image, layer)


def watermark_overlay(image: Image.Image, overlay: Image.Image, position: str, opacity: float) -> Image.Image:
    """Lay ``overlay`` over ``image`` at ``position`` with ``opacity`` (shrunk to fit when larger)."""
    mark = overlay.convert("RGBA")
    if mark.width > image.width or mark.height > image.height:
        mark = ImageOps.contain(mark, image.size, Image.Resampling.LANCZOS)
    mark.putalpha(mark.getchannel("A").point(lambda a: round(a * opacity)))
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    layer.paste(mark, place(image.size, mark.size, position))
    return _composited(image, layer)


def _composited(image: Image.Image, layer: Image.Image) -> Image.Image:
    result = Image.alpha_composite(image.convert("RGBA"), layer)
    return result if "A" in image.getbands() else result.convert(image.mode if image.mode == "RGB" else "RGB")
