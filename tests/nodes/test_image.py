"""image.*: real images made with Pillow, stored in and read from the real file store.

Bad input (not an image, a truncated JPEG, a decompression bomb) must fail with invalid_input
quickly and without decoding the pixels a header claims.
"""

from __future__ import annotations

import io
import resource
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from typing import Any

import pytest
from PIL import Image

from nodes import contract, errors
from nodes.builtin import image as image_nodes
from nodes.builtin.media import MEDIA_TYPES
from nodes.contract import CostModel, NodeType
from nodes.files import File
from nodes.registry import default_registry
from storage.files.store import LocalFileStore
from tests.nodes.helpers import make_ctx


def picture(width: int = 640, height: int = 480, mode: str = "RGB") -> Image.Image:
    """A deterministic test picture: a gradient with a red square in the top-left corner."""
    image = Image.linear_gradient("L").resize((width, height)).convert(mode)
    image.paste((255, 0, 0) if mode == "RGB" else (255, 0, 0, 255), (0, 0, width // 4, height // 4))
    return image


def encoded(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


async def stored(store: LocalFileStore, data: bytes, name: str = "cat.jpg", content_type: str = "image/jpeg") -> File:
    return await store.put_bytes(data, name=name, content_type=content_type)


async def run(node_type: type[NodeType], store: LocalFileStore, **params: Any) -> Any:
    model = contract.validate_params(node_type, params)
    ctx = make_ctx(files=store)
    output = await node_type().run(model, ctx)
    return output, ctx


async def opened(store: LocalFileStore, file: File) -> Image.Image:
    async with store.local_path(file) as path:
        image = Image.open(path)
        image.load()
    return image


async def test_info_reports_size_format_and_mode(file_store: LocalFileStore) -> None:
    file = await stored(file_store, encoded(picture(640, 480)))
    output, ctx = await run(image_nodes.ImageInfo, file_store, image=file)
    assert output.model_dump() == {"width": 640, "height": 480, "format": "jpeg", "mode": "RGB"}
    assert ctx.usage == {"megapixels": pytest.approx(0.3072)}


async def test_info_applies_exif_rotation(file_store: LocalFileStore) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: displayed as 480×640
    file = await stored(file_store, encoded(picture(640, 480), exif=exif))
    output, _ = await run(image_nodes.ImageInfo, file_store, image=file)
    assert (output.width, output.height) == (480, 640)


@pytest.mark.parametrize(("fit", "size"), [
    ("fill", (200, 200)), ("cover", (200, 200)), ("contain", (200, 200)), ("inside", (200, 150)),
])
async def test_resize_fits(file_store: LocalFileStore, fit: str, size: tuple[int, int]) -> None:
    file = await stored(file_store, encoded(picture(640, 480)))
    output, ctx = await run(image_nodes.ImageResize, file_store, image=file, width=200, height=200, fit=fit)
    assert (output.width, output.height) == size
    result = await opened(file_store, output.image)
    assert result.size == size and result.format == "JPEG"
    assert output.image.name == "cat.jpg" and output.image.content_type == "image/jpeg"
    assert output.image.size == len(await _bytes(file_store, output.image))
    assert ctx.usage == {"megapixels": pytest.approx(0.3072)}
    if fit == "contain":  # letterboxed: black bands above and below the 200×150 picture
        assert result.getpixel((100, 5)) == pytest.approx((0, 0, 0), abs=8)


async def test_resize_keeps_the_aspect_ratio_given_one_side(file_store: LocalFileStore) -> None:
    file = await stored(file_store, encoded(picture(640, 480), "PNG"), "a.png", "image/png")
    output, _ = await run(image_nodes.ImageResize, file_store, image=file, width=320, format="webp", quality=70)
    assert (output.width, output.height) == (320, 240)
    assert output.image.name == "a.webp" and output.image.content_type == "image/webp"
    assert (await opened(file_store, output.image)).format == "WEBP"


async def test_resize_is_deterministic(file_store: LocalFileStore) -> None:
    file = await stored(file_store, encoded(picture()))
    first, _ = await run(image_nodes.ImageResize, file_store, image=file, width=100, height=100, fit="cover")
    second, _ = await run(image_nodes.ImageResize, file_store, image=file, width=100, height=100, fit="cover")
    assert first.image.sha256 == second.image.sha256


def test_resize_needs_a_size() -> None:
    with pytest.raises(errors.InvalidParams, match="give width, height or both"):
        contract.validate_params(image_nodes.ImageResize, {"image": {"$file": "x"}})


async def test_crop_cuts_the_region(file_store: LocalFileStore) -> None:
    file = await stored(file_store, encoded(picture(640, 480), "PNG"), "a.png", "image/png")
    output, _ = await run(image_nodes.ImageCrop, file_store, image=file, left=0, top=0, width=160, height=120)
    assert (output.width, output.height) == (160, 120)
    result = await opened(file_store, output.image)
    assert result.format == "PNG" and result.size == (160, 120)
    assert result.getcolors() == [(160 * 120, (255, 0, 0))]  # exactly the red square


async def test_crop_outside_the_image_is_invalid_input(file_store: LocalFileStore) -> None:
    file = await stored(file_store, encoded(picture(64, 48)))
    with pytest.raises(errors.InvalidInput, match="reaches outside the 64×48 image"):
        await run(image_nodes.ImageCrop, file_store, image=file, left=10, top=0, width=60, height=10)


@pytest.mark.parametrize(("fmt", "pillow", "content_type"), [
    ("png", "PNG", "image/png"), ("jpeg", "JPEG", "image/jpeg"), ("webp", "WEBP", "image/webp"),
])
async def test_convert(file_store: LocalFileStore, fmt: str, pillow: str, content_type: str) -> None:
    transparent = picture(64, 48, "RGBA")
    transparent.putpixel((63, 47), (0, 0, 0, 0))
    file = await stored(file_store, encoded(transparent, "PNG"), "logo.png", "image/png")
    output, _ = await run(image_nodes.ImageConvert, file_store, image=file, format=fmt)
    result = await opened(file_store, output.image)
    assert result.format == pillow and result.size == (64, 48) and output.image.content_type == content_type
    if fmt == "jpeg":  # transparency flattened onto white
        assert result.getpixel((63, 47)) == pytest.approx((255, 255, 255), abs=8)


async def test_watermark_text_changes_only_its_corner(file_store: LocalFileStore) -> None:
    base = picture(640, 480)
    file = await stored(file_store, encoded(base, "PNG"), "a.png", "image/png")
    output, _ = await run(image_nodes.ImageWatermark, file_store, image=file, text="© ACME", opacity=1.0)
    result = (await opened(file_store, output.image)).convert("RGB")
    assert result.size == (640, 480)
    changed = {(x, y) for x in range(0, 640, 4) for y in range(0, 480, 4) if result.getpixel((x, y)) != base.getpixel((x, y))}
    assert changed and all(x > 320 and y > 400 for x, y in changed)


async def test_watermark_overlay_at_top_left_with_opacity(file_store: LocalFileStore) -> None:
    file = await stored(file_store, encoded(Image.new("RGB", (200, 100), (0, 0, 0)), "PNG"), "a.png", "image/png")
    logo = await stored(file_store, encoded(Image.new("RGBA", (20, 10), (255, 255, 255, 255)), "PNG"), "l.png", "image/png")
    output, ctx = await run(image_nodes.ImageWatermark, file_store, image=file, overlay=logo, position="top-left", opacity=0.5)
    result = await opened(file_store, output.image)
    margin = 2  # 2 % of the shorter side
    assert result.getpixel((margin + 5, margin + 5)) == pytest.approx((128, 128, 128), abs=2)
    assert result.getpixel((100, 50)) == (0, 0, 0)
    assert ctx.usage == {"megapixels": pytest.approx(0.0202)}


def test_watermark_needs_exactly_one_mark() -> None:
    for params in ({}, {"text": "a", "overlay": {"$file": "y"}}):
        with pytest.raises(errors.InvalidParams, match="exactly one of text and overlay"):
            contract.validate_params(image_nodes.ImageWatermark, {"image": {"$file": "x"}, **params})


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG whose header claims width×height 1-bit pixels: a few hundred bytes at most."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + (width + 7) // 8) * min(height, 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("node_type", image_nodes.IMAGE_TYPES)
@pytest.mark.parametrize(("data", "match"), [
    (b"this is not an image at all", "cannot be read as an image"),
    (encoded(picture(640, 480))[:3000], "cannot be decoded"),
    (bomb_png(100_000, 100_000), "limit of 100.0 megapixels"),
    (bomb_png(12_000, 10_000), "limit of 100.0 megapixels"),
], ids=["not-an-image", "truncated-jpeg", "bomb-10-gigapixels", "bomb-120-megapixels"])
async def test_bad_input_is_invalid_input_fast_with_flat_memory(
    file_store: LocalFileStore, node_type: type[NodeType], data: bytes, match: str,
) -> None:
    file = await stored(file_store, data)
    params: dict[str, Any] = {"image": file}
    params |= {"image.resize": {"width": 10}, "image.crop": {"width": 1, "height": 1},
               "image.convert": {"format": "png"}, "image.watermark": {"text": "x"}}.get(node_type.type, {})
    before, started = max_rss_mb(), time.perf_counter()
    with pytest.raises(errors.InvalidInput, match=match) as caught:
        await run(node_type, file_store, **params)
    assert caught.value.code == "invalid_input"
    assert time.perf_counter() - started < 1.0
    assert max_rss_mb() - before < 30


async def test_a_bad_overlay_is_invalid_input(file_store: LocalFileStore) -> None:
    file = await stored(file_store, encoded(picture(64, 48)))
    logo = await stored(file_store, bomb_png(100_000, 100_000), "logo.png", "image/png")
    with pytest.raises(errors.InvalidInput, match="the overlay"):
        await run(image_nodes.ImageWatermark, file_store, image=file, overlay=logo)


async def _bytes(store: LocalFileStore, file: File) -> bytes:
    return b"".join([chunk async for chunk in store.read(file)])


def test_a_deployment_can_set_its_own_megapixel_price() -> None:
    registry = default_registry(plugins=False)
    registry.set_cost("image.resize", CostModel(per_unit={"megapixels": 0.01}))

    priced = registry.get("image.resize")
    assert issubclass(priced, image_nodes.ImageResize) and type(registry.instance("image.resize")) is priced
    assert priced.cost.price(seconds=1, usage={"megapixels": 12}) == 0.12
    assert image_nodes.ImageResize.cost == image_nodes.IMAGE_COST  # the class and other registries keep the default
    assert default_registry(plugins=False).get("image.resize").cost == image_nodes.IMAGE_COST


async def test_a_bomb_is_refused_where_pillow_only_warns(file_store: LocalFileStore) -> None:
    # In production Pillow's DecompressionBombWarning is just a warning (pytest makes it an
    # error): our own header check must refuse the image all the same.
    file = await stored(file_store, bomb_png(12_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(errors.InvalidInput, match=r"12000×10000 \(120.0 megapixels\), over the limit"):
            await run(image_nodes.ImageResize, file_store, image=file, width=10)


def test_without_the_media_extra_the_types_load_and_say_so() -> None:
    # A fresh interpreter where Pillow and imageio-ffmpeg cannot be imported, as after a plain
    # `pip install graph-runtime`: the registry still builds, and a flow is refused naming the extra.
    script = """
import sys
sys.modules["PIL"] = None
sys.modules["imageio_ffmpeg"] = None
from graph_runtime import errors, flow, validation
from nodes.registry import default_registry
registry = default_registry(plugins=False)
print(sorted(t.type for t in registry if not t.available()))
try:
    validation.validate(flow.parse({"id": "f", "nodes": [{"id": "r", "type": "image.resize"}]}), registry)
except errors.FlowInvalid as exc:
    print(exc.problems)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    unavailable, problems = done.stdout.splitlines()
    assert unavailable == str(sorted(t.type for t in (*image_nodes.IMAGE_TYPES, *MEDIA_TYPES)))
    assert "nodes.0.type: node type image.resize needs the media extra: pip install 'graph-runtime[media]'" in problems


def test_the_pixel_budget_makes_big_images_wait_their_turn() -> None:
    from nodes.builtin.imaging import PixelBudget

    budget, order = PixelBudget(100), []
    first_in, release_first = threading.Event(), threading.Event()

    def big() -> None:
        with budget.hold(80):
            order.append("big in")
            first_in.set()
            release_first.wait(5)
            order.append("big out")  # inside: the waiter can only start after this

    def second(pixels: int) -> None:
        with budget.hold(pixels):
            order.append(f"{pixels} in")

    holder = threading.Thread(target=big)
    holder.start()
    assert first_in.wait(5)
    second(20)  # fits beside the 80: no wait
    waiter = threading.Thread(target=second, args=(500,))  # over the whole budget: waits to run alone
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and order == ["big in", "20 in"]
    release_first.set()
    for thread in (holder, waiter):
        thread.join(5)
    assert order == ["big in", "20 in", "big out", "500 in"]
