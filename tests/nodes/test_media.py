"""media.*: real media synthesised with the FFmpeg the media extra installs, in the real file store.

The test clip is 2 s of FFmpeg's testsrc pattern (320×240, 25 fps, H.264) with a 440 Hz sine
(44.1 kHz mono, AAC) in MP4. Garbage and hostile inputs must fail invalid_input fast.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nodes import contract, errors
from nodes.builtin import ffmpeg
from nodes.builtin import media as media_nodes
from nodes.contract import NodeType
from nodes.files import File
from storage.files.store import LocalFileStore
from tests.nodes.helpers import make_ctx

CLIP_CODECS = ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")


def synthesise(path: Path, *sources: str, codecs: tuple[str, ...] = CLIP_CODECS) -> bytes:
    """Run FFmpeg directly (lavfi sources are not allowed through the nodes) and return the file's bytes."""
    inputs = [arg for source in sources for arg in ("-f", "lavfi", "-i", source)]
    subprocess.run([ffmpeg.executable(), "-hide_banner", "-v", "error", *inputs, *codecs, "-shortest", "-y", str(path)],
                   check=True, timeout=30)
    return path.read_bytes()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return synthesise(tmp_path_factory.mktemp("media") / "clip.mp4",
                      "testsrc=size=320x240:rate=25:duration=2", "sine=frequency=440:sample_rate=44100:duration=2")


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return synthesise(tmp_path_factory.mktemp("media") / "song.wav", "sine=frequency=440:sample_rate=48000:duration=3",
                      codecs=("-ac", "2", "-c:a", "pcm_s16le"))


async def stored(store: LocalFileStore, data: bytes, name: str = "clip.mp4", content_type: str = "video/mp4") -> File:
    return await store.put_bytes(data, name=name, content_type=content_type)


async def run(node_type: type[NodeType], store: LocalFileStore, **params: Any) -> Any:
    model = contract.validate_params(node_type, params)
    ctx = make_ctx(files=store)
    return await node_type().run(model, ctx), ctx


async def probed(store: LocalFileStore, file: File) -> ffmpeg.Probe:
    async with store.local_path(file) as path:
        return await ffmpeg.probe(path)


async def test_probe_reports_container_duration_and_streams(file_store: LocalFileStore, clip: bytes) -> None:
    output, ctx = await run(media_nodes.MediaProbe, file_store, media=await stored(file_store, clip))
    assert output.model_dump() == {
        "duration_s": 2.0,
        "format": "mov,mp4,m4a,3gp,3g2,mj2",
        "streams": [
            {"type": "video", "codec": "h264", "width": 320, "height": 240, "sample_rate": None, "channels": None},
            {"type": "audio", "codec": "aac", "width": None, "height": None, "sample_rate": 44100, "channels": 1},
        ],
    }
    assert ctx.usage == {"media_seconds": 2.0}


async def test_probe_reads_a_stereo_wav(file_store: LocalFileStore, song: bytes) -> None:
    output, _ = await run(media_nodes.MediaProbe, file_store, media=await stored(file_store, song, "a.wav", "audio/wav"))
    assert output.format == "wav" and output.duration_s == pytest.approx(3.0, abs=0.01)
    assert [s.model_dump() for s in output.streams] == [
        {"type": "audio", "codec": "pcm_s16le", "width": None, "height": None, "sample_rate": 48000, "channels": 2}]


async def test_transcode_to_webm_scaled(file_store: LocalFileStore, clip: bytes) -> None:
    output, ctx = await run(media_nodes.MediaTranscode, file_store, media=await stored(file_store, clip),
                            format="webm", width=160, audio_bitrate="64k")
    assert output.media.name == "clip.webm" and output.media.content_type == "video/webm"
    assert output.duration_s == pytest.approx(2.0, abs=0.1)
    found = await probed(file_store, output.media)
    assert found.format == "matroska,webm"
    assert [(s.type, s.codec, s.width, s.height) for s in found.streams] == [
        ("video", "vp9", 160, 120), ("audio", "opus", None, None)]
    assert ctx.usage == {"media_seconds": 2.0}


async def test_transcode_to_audio_only(file_store: LocalFileStore, clip: bytes) -> None:
    output, _ = await run(media_nodes.MediaTranscode, file_store, media=await stored(file_store, clip), format="mp3")
    found = await probed(file_store, output.media)
    assert found.format == "mp3" and [s.type for s in found.streams] == ["audio"]
    assert output.duration_s == pytest.approx(2.0, abs=0.1)


def test_transcode_refuses_a_codec_the_container_cannot_hold() -> None:
    with pytest.raises(errors.InvalidParams, match="video_codec 'h264' cannot go in webm"):
        contract.validate_params(media_nodes.MediaTranscode, {"media": {"$file": "x"}, "format": "webm", "video_codec": "h264"})
    with pytest.raises(errors.InvalidParams, match="width"):
        contract.validate_params(media_nodes.MediaTranscode, {"media": {"$file": "x"}, "width": 161})


@pytest.mark.parametrize(("fmt", "codec", "muxer"), [
    ("wav", "pcm_s16le", "wav"), ("mp3", "mp3", "mp3"), ("flac", "flac", "flac"), ("ogg", "vorbis", "ogg"),
])
async def test_extract_audio(file_store: LocalFileStore, clip: bytes, fmt: str, codec: str, muxer: str) -> None:
    output, _ = await run(media_nodes.MediaExtractAudio, file_store, media=await stored(file_store, clip),
                          format=fmt, sample_rate=16000, channels=2)
    assert output.audio.name == f"clip.{fmt}"
    assert output.duration_s == pytest.approx(2.0, abs=0.1)
    found = await probed(file_store, output.audio)
    assert found.format == muxer
    assert [(s.type, s.codec, s.sample_rate, s.channels) for s in found.streams] == [("audio", codec, 16000, 2)]


async def test_extract_audio_from_a_silent_video_is_invalid_input(file_store: LocalFileStore, tmp_path: Path) -> None:
    silent = synthesise(tmp_path / "v.mp4", "testsrc=size=64x48:rate=5:duration=1", codecs=("-c:v", "libx264"))
    with pytest.raises(errors.InvalidInput, match="no audio track"):
        await run(media_nodes.MediaExtractAudio, file_store, media=await stored(file_store, silent))


async def test_frames_every_half_second(file_store: LocalFileStore, clip: bytes) -> None:
    output, ctx = await run(media_nodes.MediaFrames, file_store, media=await stored(file_store, clip), every_s=0.5, format="png")
    assert [f.name for f in output.frames] == [f"clip-{i:04d}.png" for i in range(1, 5)]
    async with file_store.local_path(output.frames[0]) as path:
        with Image.open(path) as first:
            assert first.format == "PNG" and first.size == (320, 240)
    assert len({f.sha256 for f in output.frames}) == 4  # testsrc moves: four different pictures
    assert ctx.usage == {"media_seconds": 2.0}


async def test_frames_by_count(file_store: LocalFileStore, clip: bytes) -> None:
    output, _ = await run(media_nodes.MediaFrames, file_store, media=await stored(file_store, clip), count=3)
    assert len(output.frames) == 3 and all(f.content_type == "image/jpeg" for f in output.frames)


async def test_frames_refuse_too_many(file_store: LocalFileStore, clip: bytes) -> None:
    with pytest.raises(errors.InvalidParams, match="more than 500 frames") as caught:
        await run(media_nodes.MediaFrames, file_store, media=await stored(file_store, clip), every_s=0.002)
    assert caught.value.field == "every_s"


async def test_trim_keeps_the_container(file_store: LocalFileStore, clip: bytes) -> None:
    output, ctx = await run(media_nodes.MediaTrim, file_store, media=await stored(file_store, clip), start_s=0.5, end_s=1.5)
    assert output.media.name == "clip.mp4" and output.media.content_type == "video/mp4"
    assert output.duration_s == pytest.approx(1.0, abs=0.1)
    assert ctx.usage["media_seconds"] == output.duration_s


async def test_trim_a_wav_to_its_end(file_store: LocalFileStore, song: bytes) -> None:
    wav = await stored(file_store, song, "a.wav", "audio/wav")
    output, _ = await run(media_nodes.MediaTrim, file_store, media=wav, start_s=1)
    assert output.media.name == "a.wav" and output.duration_s == pytest.approx(2.0, abs=0.01)


async def test_trim_past_the_end_is_refused(file_store: LocalFileStore, clip: bytes) -> None:
    with pytest.raises(errors.InvalidParams, match="past the end"):
        await run(media_nodes.MediaTrim, file_store, media=await stored(file_store, clip), start_s=5)


async def test_transcode_is_deterministic(file_store: LocalFileStore, clip: bytes) -> None:
    media = await stored(file_store, clip)
    first, _ = await run(media_nodes.MediaTranscode, file_store, media=media, width=160)
    second, _ = await run(media_nodes.MediaTranscode, file_store, media=media, width=160)
    assert first.media.sha256 == second.media.sha256


def children_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("node_type", media_nodes.MEDIA_TYPES)
@pytest.mark.parametrize("data", [
    b"\x00garbage" * 10_000,
    b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n",  # a playlist: must not make FFmpeg read other files
    b"ftypisom" + bytes(range(256)) * 40,
], ids=["garbage", "playlist", "fake-mp4"])
async def test_bad_media_is_invalid_input_fast(file_store: LocalFileStore, node_type: type[NodeType], data: bytes) -> None:
    params: dict[str, Any] = {"media": await stored(file_store, data)}
    params |= {"media.frames": {"count": 2}}.get(node_type.type, {})
    before, started = children_rss_mb(), time.perf_counter()
    with pytest.raises(errors.InvalidInput, match="cannot be read as audio or video") as caught:
        await run(node_type, file_store, **params)
    assert caught.value.code == "invalid_input"
    assert time.perf_counter() - started < 2.0
    assert children_rss_mb() - before < 20  # FFmpeg's memory is its own process's


async def test_a_cancelled_node_kills_ffmpeg(file_store: LocalFileStore, tmp_path: Path) -> None:
    long = synthesise(tmp_path / "long.mp4", "testsrc=size=320x240:rate=25:duration=60", codecs=("-c:v", "mpeg4", "-q:v", "31"))
    task = asyncio.create_task(run(media_nodes.MediaTranscode, file_store, media=await stored(file_store, long), format="webm"))
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 1.0
    found = subprocess.run(["pgrep", "-f", str(ffmpeg.executable()) + ".*libvpx"], capture_output=True, text=True, check=False)
    assert found.stdout == ""


async def test_ffmpeg_runs_under_its_memory_limit(tmp_path: Path, clip: bytes) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(clip)
    args = [*ffmpeg.input_args(source), "-f", "null", "-"]
    assert (await ffmpeg.run(args))[0] == 0
    status, _ = await ffmpeg.run(args, ffmpeg.Bounds(memory_bytes=16 * 1024 * 1024))
    assert status != 0  # the same work cannot even start in 16 MiB of address space
