"""The ``image.*`` node types (SPEC §8): info, resize, crop, convert and watermark, on Pillow.

They need the ``media`` extra (``pip install 'graph-runtime[media]'``); without it they are
listed with ``"available": false`` and a flow using one is refused at load. Pillow is imported
only when a node runs (:mod:`nodes.builtin.imaging`). Decoding happens on a thread, bounded by
:data:`MAX_IMAGE_PIXELS`; bad input fails with ``invalid_input``. Each run reports the
megapixels it decoded (``ctx.report_usage("megapixels", …)``), priced by :data:`IMAGE_COST`.
All are deterministic: the same bytes and parameters give the same output bytes.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from nodes import errors
from nodes.contract import CostModel, NodeType, RunContext, RunPolicy
from nodes.files import File, FileStore

if TYPE_CHECKING:
    from nodes.builtin import imaging

MAX_IMAGE_PIXELS = 100_000_000
"""The largest canvas an ``image.*`` node decodes (100 megapixels: 400 MB as RGBA at most).
Bigger headers are refused before any pixel is decoded (decompression bombs)."""

MAX_OVERLAY_PIXELS = 16_000_000
"""The largest ``image.watermark`` overlay (16 megapixels): a logo, not a second photo."""

IMAGE_COST = CostModel(per_unit={"megapixels": 0.0001})
"""Default price of ``image.*``: 0.0001 credits per megapixel decoded (a 12 MP resize: 0.0012)."""

MAX_SIDE = 16384
OutputFormat = Literal["png", "jpeg", "webp"]
Position = Literal["top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"]


def ops() -> Any:
    """:mod:`nodes.builtin.imaging`, imported on first use (it imports Pillow).

    Raises:
        errors.NodeFailed: Pillow is not installed, naming the extra.
    """
    try:
        return importlib.import_module("nodes.builtin.imaging")
    except ImportError as exc:
        raise errors.NodeFailed(f"image nodes need the media extra: pip install 'graph-runtime[media]' ({exc})") from None


def store_of(ctx: RunContext) -> FileStore:
    """The run's file store.

    Raises:
        errors.NodeFailed: no store is configured (only in bare embeddings of the executor).
    """
    if ctx.files is None:
        raise errors.NodeFailed("this node needs a file store, and none is configured")
    return ctx.files


def renamed(name: str, extension: str, suffix: str = "") -> str:
    """``cat.jpg`` → ``cat<suffix>.<extension>``: the download name of a derived file."""
    stem = Path(name).stem or "file"
    return f"{stem}{suffix}.{extension}"


class ImageNode(NodeType):
    """What the ``image.*`` types share: the extra, the price, a run policy and the file plumbing."""

    extra: ClassVar[str | None] = "media"
    requires: ClassVar[tuple[str, ...]] = ("PIL",)
    cost: ClassVar[CostModel] = IMAGE_COST
    policy: ClassVar[RunPolicy] = RunPolicy(timeout_s=120)
    deterministic: ClassVar[bool] = True  # same pixels and settings, same result: cacheable (SPEC §9)

    async def _edited(self, ctx: RunContext, source: File, edit: Any, fmt: str | None, quality: int) -> tuple[
            File, imaging.Encoded]:
        """Decode ``source``, apply ``edit(image)`` and encode on a thread; store the result."""
        async with store_of(ctx).local_path(source) as path:
            encoded = await ctx.to_thread(_transform, path, edit, fmt, quality)
        return await self._store(ctx, source, encoded), encoded

    async def _store(self, ctx: RunContext, source: File, encoded: imaging.Encoded) -> File:
        ctx.report_usage("megapixels", encoded.megapixels)
        return await store_of(ctx).put_bytes(
            encoded.data, name=renamed(source.name, encoded.extension), content_type=encoded.content_type)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Encoding(_Strict):
    format: OutputFormat | None = Field(
        default=None, description="png, jpeg or webp; default: the input's format (png when it is none of those).")
    quality: int = Field(default=85, ge=1, le=100, description="JPEG/WebP quality 1–100.")


class _ImageOut(BaseModel):
    image: File
    width: int
    height: int


def _transform(path: Path, edit: Any, fmt: str | None, quality: int) -> imaging.Encoded:
    """Decode, apply ``edit(image)``, encode: the thread body of resize and crop."""
    im = ops()
    with im.loaded(path, MAX_IMAGE_PIXELS) as (image, source):
        return im.encode(edit(image), fmt or source or "png", quality, im.megapixels(image))


class ImageInfo(ImageNode):
    """Width, height, format and mode of an image."""

    type = "image.info"
    description = (
        "Reads an image and outputs {width, height, format, mode} (width and height as displayed, "
        "EXIF rotation applied)."
    )

    class Params(_Strict):
        image: File = Field(description="The image (a file value or an http(s) URL).")

    class Output(BaseModel):
        width: int
        height: int
        format: str = Field(description="Lower-case, as Pillow names it: jpeg, png, webp, gif…")
        mode: str = Field(description="Pillow's mode: RGB, RGBA, L, P, CMYK…")

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Decode the image (proving it whole) and report its size."""
        async with store_of(ctx).local_path(params.image) as path:
            found = await ctx.to_thread(ops().info, path, MAX_IMAGE_PIXELS)
        ctx.report_usage("megapixels", found.width * found.height / 1e6)
        return self.Output(width=found.width, height=found.height, format=found.format, mode=found.mode)


class ImageResize(ImageNode):
    """Resize an image to a width and/or height."""

    type = "image.resize"
    description = (
        "Resizes an image. fit: fill (stretch to width×height), cover (fill it, cropping the centre), "
        "contain (fit inside, padded to width×height), inside (fit inside, no padding). Give one of "
        "width/height to keep the aspect ratio."
    )

    class Params(_Encoding):
        image: File = Field(description="The image (a file value or an http(s) URL).")
        width: int | None = Field(default=None, ge=1, le=MAX_SIDE)
        height: int | None = Field(default=None, ge=1, le=MAX_SIDE)
        fit: Literal["contain", "cover", "fill", "inside"] = "inside"

        @pydantic.model_validator(mode="after")
        def _a_size(self) -> ImageResize.Params:
            if self.width is None and self.height is None:
                raise ValueError("give width, height or both")
            return self

    Output = _ImageOut

    async def run(self, params: Params, ctx: RunContext) -> _ImageOut:
        """Decode, resize, encode, store."""
        def edit(image: Any) -> Any:
            return ops().resize(image, params.width, params.height, params.fit)

        stored, encoded = await self._edited(ctx, params.image, edit, params.format, params.quality)
        return _ImageOut(image=stored, width=encoded.width, height=encoded.height)


class ImageCrop(ImageNode):
    """Cut a rectangle out of an image."""

    type = "image.crop"
    description = "Outputs the width×height region of an image whose top-left corner is (left, top)."

    class Params(_Encoding):
        image: File = Field(description="The image (a file value or an http(s) URL).")
        left: int = Field(default=0, ge=0, le=MAX_SIDE * 4)
        top: int = Field(default=0, ge=0, le=MAX_SIDE * 4)
        width: int = Field(ge=1, le=MAX_SIDE)
        height: int = Field(ge=1, le=MAX_SIDE)

    Output = _ImageOut

    async def run(self, params: Params, ctx: RunContext) -> _ImageOut:
        """Decode, crop (inside the image or ``invalid_input``), encode, store."""
        def edit(image: Any) -> Any:
            return ops().crop(image, params.left, params.top, params.width, params.height)

        stored, encoded = await self._edited(ctx, params.image, edit, params.format, params.quality)
        return _ImageOut(image=stored, width=encoded.width, height=encoded.height)


class ImageConvert(ImageNode):
    """Re-encode an image as PNG, JPEG or WebP."""

    type = "image.convert"
    description = "Re-encodes an image as png, jpeg or webp (JPEG flattens transparency onto white)."

    class Params(_Strict):
        image: File = Field(description="The image (a file value or an http(s) URL).")
        format: OutputFormat
        quality: int = Field(default=85, ge=1, le=100, description="JPEG/WebP quality 1–100.")

    class Output(BaseModel):
        image: File

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Decode, encode in the new format, store."""
        stored, _ = await self._edited(ctx, params.image, lambda image: image, params.format, params.quality)
        return self.Output(image=stored)


class ImageWatermark(ImageNode):
    """Lay a text or an overlay image over an image."""

    type = "image.watermark"
    description = (
        "Draws text (white, dark outline, about 1/20 of the image's shorter side) or lays an overlay "
        "image (shrunk to fit when larger) at a position, with an opacity from 0 to 1."
    )

    class Params(_Encoding):
        image: File = Field(description="The image (a file value or an http(s) URL).")
        text: str | None = Field(default=None, min_length=1, max_length=200)
        overlay: File | None = Field(default=None, description="An image to lay over (e.g. a PNG logo with transparency).")
        position: Position = "bottom-right"
        opacity: float = Field(default=0.5, ge=0, le=1)

        @pydantic.model_validator(mode="after")
        def _one_mark(self) -> ImageWatermark.Params:
            if (self.text is None) == (self.overlay is None):
                raise ValueError("give exactly one of text and overlay")
            return self

    class Output(BaseModel):
        image: File

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Decode the image (and overlay), compose, encode, store."""
        store = store_of(ctx)
        async with store.local_path(params.image) as path:
            if params.overlay is None:
                encoded = await ctx.to_thread(_with_text, path, params)
            else:
                async with store.local_path(params.overlay) as overlay_path:
                    encoded = await ctx.to_thread(_with_overlay, path, overlay_path, params)
        return self.Output(image=await self._store(ctx, params.image, encoded))


def _with_text(path: Path, params: ImageWatermark.Params) -> imaging.Encoded:
    im = ops()
    with im.loaded(path, MAX_IMAGE_PIXELS) as (image, source):
        marked = im.watermark_text(image, params.text, params.position, params.opacity)
        return im.encode(marked, params.format or source or "png", params.quality, im.megapixels(image))


def _with_overlay(path: Path, overlay_path: Path, params: ImageWatermark.Params) -> imaging.Encoded:
    im = ops()
    # The overlay (a logo) is capped lower and outside the budget: two holds by one thread could
    # wait on each other across threads.
    overlay, _ = im.load(overlay_path, MAX_OVERLAY_PIXELS, "the overlay")
    with im.loaded(path, MAX_IMAGE_PIXELS) as (image, source):
        marked = im.watermark_overlay(image, overlay, params.position, params.opacity)
        decoded = im.megapixels(image) + im.megapixels(overlay)
        return im.encode(marked, params.format or source or "png", params.quality, decoded)


IMAGE_TYPES: tuple[type[NodeType], ...] = (ImageInfo, ImageResize, ImageCrop, ImageConvert, ImageWatermark)
