"""The ``media.*`` node types (SPEC §8): probe, transcode, extract_audio, frames, trim, on FFmpeg.

They need the ``media`` extra (imageio-ffmpeg's static ffmpeg binary; no system package). Every
run first probes its input (:func:`nodes.builtin.ffmpeg.probe`): what FFmpeg cannot read, and
media longer than :data:`MAX_MEDIA_S` or with frames above :data:`MAX_VIDEO_PIXELS`, fails with
``invalid_input`` before anything is decoded. FFmpeg then runs as a bounded subprocess
(:class:`nodes.builtin.ffmpeg.Bounds`), killed when the node is cancelled or times out. Each run
reports the seconds of media it handled (``media_seconds``), priced by :data:`MEDIA_COST`.
Encoding is deterministic for given bytes and parameters (fixed codecs, presets and threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Literal, get_args

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from nodes import errors
from nodes.builtin import ffmpeg
from nodes.builtin.image import renamed, store_of
from nodes.contract import CostModel, NodeType, RunContext, RunPolicy
from nodes.files import File

MAX_MEDIA_S = 4 * 3600
"""The longest input a ``media.*`` node takes (4 hours)."""
MAX_VIDEO_PIXELS = 7680 * 4320
"""The largest video frame (8K UHD): a header claiming more is refused before decoding."""
MAX_FRAMES = 500
"""The most files ``media.frames`` makes in one run."""

MEDIA_COST = CostModel(per_unit={"media_seconds": 0.0005})
"""Default price of ``media.*``: 0.0005 credits per second of media handled (a 1-minute transcode: 0.03)."""

Container = Literal["mp4", "webm", "mkv", "mov", "mp3", "wav", "flac", "ogg", "m4a"]
VideoCodec = Literal["h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "none"]
AudioCodec = Literal["aac", "mp3", "opus", "vorbis", "flac", "pcm", "none"]

# container → (FFmpeg muxer, content type, default video codec or None when audio-only, default audio, allowed)
CONTAINERS: dict[str, tuple[str, str, str | None, str, frozenset[str]]] = {
    "mp4": ("mp4", "video/mp4", "h264", "aac", frozenset({"h264", "hevc", "vp9", "av1", "mpeg4", "aac", "mp3", "opus", "flac"})),
    "mov": ("mov", "video/quicktime", "h264", "aac", frozenset({"h264", "hevc", "mpeg4", "aac", "mp3", "pcm"})),
    "mkv": ("matroska", "video/x-matroska", "h264", "aac", frozenset(get_args(VideoCodec) + get_args(AudioCodec))),
    "webm": ("webm", "video/webm", "vp9", "opus", frozenset({"vp8", "vp9", "av1", "opus", "vorbis"})),
    "mp3": ("mp3", "audio/mpeg", None, "mp3", frozenset({"mp3"})),
    "wav": ("wav", "audio/wav", None, "pcm", frozenset({"pcm"})),
    "flac": ("flac", "audio/flac", None, "flac", frozenset({"flac"})),
    "ogg": ("ogg", "audio/ogg", None, "vorbis", frozenset({"vorbis", "opus", "flac"})),
    "m4a": ("ipod", "audio/mp4", None, "aac", frozenset({"aac"})),
}
ENCODERS = {
    "h264": ["libx264", "-preset", "veryfast"], "hevc": ["libx265", "-preset", "veryfast"],
    "vp8": ["libvpx", "-deadline", "good", "-cpu-used", "4"],
    "vp9": ["libvpx-vp9", "-deadline", "good", "-cpu-used", "5", "-row-mt", "1"],
    "av1": ["libsvtav1", "-preset", "10"], "mpeg4": ["mpeg4"],
    "aac": ["aac"], "mp3": ["libmp3lame"], "opus": ["libopus"], "vorbis": ["libvorbis"], "flac": ["flac"],
    "pcm": ["pcm_s16le"],
}
Bitrate = pydantic.constr(pattern=r"^[1-9]\d{0,8}[kM]?$")


@contextlib.asynccontextmanager
async def scratch() -> AsyncIterator[Path]:
    """A temporary directory for FFmpeg's output, removed (on a thread: files may be large) after."""
    path = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="graph-runtime-media-"))
    try:
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, path, True)


def checked(found: ffmpeg.Probe) -> ffmpeg.Probe:
    """Refuse media too long or with frames too large to work on.

    Raises:
        errors.InvalidInput: naming the limit.
    """
    if found.duration_s is not None and found.duration_s > MAX_MEDIA_S:
        raise errors.InvalidInput(f"the media lasts {found.duration_s:.0f} s, over the limit of {MAX_MEDIA_S} s")
    for stream in found.streams:
        if stream.width and stream.height and stream.width * stream.height > MAX_VIDEO_PIXELS:
            raise errors.InvalidInput(
                f"the video is {stream.width}×{stream.height}, over the limit of {MAX_VIDEO_PIXELS / 1e6:.1f} megapixels")
    return found


async def encode(args: list[str], what: str) -> None:
    """Run FFmpeg on an input it could already probe.

    Raises:
        errors.InvalidInput: FFmpeg failed (corrupt data past the header, or a limit reached).
    """
    status, report = await ffmpeg.run(["-v", "error", "-threads", str(ffmpeg.Bounds().threads), *args])
    if status != 0:
        why = "it reached a memory, CPU or file-size limit" if status < 0 else ffmpeg.last_line(report)
        raise errors.InvalidInput(f"FFmpeg could not {what}: {why}")


class MediaNode(NodeType):
    """What the ``media.*`` types share: the extra, the price and a run policy."""

    extra: ClassVar[str | None] = "media"
    requires: ClassVar[tuple[str, ...]] = ("imageio_ffmpeg",)
    cost: ClassVar[CostModel] = MEDIA_COST
    policy: ClassVar[RunPolicy] = RunPolicy(timeout_s=600)
    deterministic: ClassVar[bool] = True  # same media and settings, same result: cacheable (SPEC §9)

    async def _made(self, ctx: RunContext, path: Path, name: str, content_type: str) -> tuple[File, float]:
        """Store an output FFmpeg wrote and measure its duration."""
        found = await ffmpeg.probe(path, "FFmpeg's output")
        stored = await store_of(ctx).put_path(path, name=name, content_type=content_type)
        return stored, found.duration_s or 0.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Timed(BaseModel):
    duration_s: float = Field(description="Seconds of media in the output.")


class StreamOut(BaseModel):
    """One stream: width/height for video, sample_rate/channels for audio, else null."""

    type: str
    codec: str
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None


class MediaProbe(MediaNode):
    """Container, duration and streams of a media file."""

    type = "media.probe"
    description = "Reads a media file's container format, duration and streams (codec, size, sample rate, channels)."

    class Params(_Strict):
        media: File = Field(description="An audio or video file (a file value or an http(s) URL).")

    class Output(BaseModel):
        duration_s: float | None = Field(description="Null when the container does not say.")
        format: str = Field(description="FFmpeg's demuxer name, e.g. 'mov,mp4,m4a,3gp,3g2,mj2', 'wav'.")
        streams: list[StreamOut]

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Probe the file."""
        async with store_of(ctx).local_path(params.media) as path:
            found = checked(await ffmpeg.probe(path))
        ctx.report_usage("media_seconds", found.duration_s or 0.0)
        streams = [StreamOut(**vars(s)) for s in found.streams]
        return self.Output(duration_s=found.duration_s, format=found.format, streams=streams)


class MediaTranscode(MediaNode):
    """Re-encode a media file into another container and codecs."""

    type = "media.transcode"
    description = (
        "Re-encodes audio/video. format: mp4, webm, mkv, mov (video) or mp3, wav, flac, ogg, m4a (audio only). "
        "Codecs default per format (mp4: h264+aac, webm: vp9+opus); 'none' drops that track. "
        "width/height scale the video (one given: aspect kept). Bitrates like '800k', '2M'."
    )

    class Params(_Strict):
        media: File = Field(description="An audio or video file (a file value or an http(s) URL).")
        format: Container = "mp4"
        video_codec: VideoCodec | None = None
        audio_codec: AudioCodec | None = None
        video_bitrate: Bitrate | None = None  # type: ignore[valid-type]
        audio_bitrate: Bitrate | None = None  # type: ignore[valid-type]
        width: int | None = Field(default=None, ge=2, le=7680, multiple_of=2, description="Even, as most codecs need.")
        height: int | None = Field(default=None, ge=2, le=4320, multiple_of=2, description="Even, as most codecs need.")

        @pydantic.model_validator(mode="after")
        def _fits_the_container(self) -> MediaTranscode.Params:
            allowed = CONTAINERS[self.format][4]
            for name in ("video_codec", "audio_codec"):
                codec = getattr(self, name)
                if codec not in (None, "none") and codec not in allowed:
                    raise ValueError(f"{name} {codec!r} cannot go in {self.format} (allowed: {', '.join(sorted(allowed))})")
            return self

    class Output(_Timed):
        media: File

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Probe, re-encode, store."""
        async with store_of(ctx).local_path(params.media) as path, scratch() as work:
            found = checked(await ffmpeg.probe(path))
            out = work / f"out.{params.format}"
            await encode([*ffmpeg.input_args(path), *transcode_args(params, found), "-y", str(out)], "transcode the media")
            muxer_type = CONTAINERS[params.format][1]
            media, duration = await self._made(ctx, out, renamed(params.media.name, params.format), muxer_type)
        ctx.report_usage("media_seconds", found.duration_s or duration)
        return self.Output(media=media, duration_s=duration)


def transcode_args(params: MediaTranscode.Params, found: ffmpeg.Probe) -> list[str]:
    """Output options for ``params``: first video and audio tracks, codecs, bitrates, scale, muxer."""
    muxer, _, default_video, default_audio, _ = CONTAINERS[params.format]
    video = (params.video_codec or default_video or "none") if found.first("video") else "none"
    audio = (params.audio_codec or default_audio) if found.first("audio") else "none"
    if video == "none" and audio == "none":
        raise errors.InvalidInput(f"the media has no track that {params.format} can hold")
    args: list[str] = ["-map_metadata", "-1", "-fflags", "+bitexact", "-threads", str(ffmpeg.Bounds().threads)]
    if video != "none":
        args += ["-map", "0:v:0", "-c:v", *ENCODERS[video], "-pix_fmt", "yuv420p"]
        args += ["-b:v", params.video_bitrate] if params.video_bitrate else []
        if params.width or params.height:
            args += ["-vf", f"scale={params.width or -2}:{params.height or -2}"]
    if audio != "none":
        args += ["-map", "0:a:0", "-c:a", *ENCODERS[audio]]
        args += ["-b:a", params.audio_bitrate] if params.audio_bitrate else []
    return [*args, "-f", muxer]


class MediaExtractAudio(MediaNode):
    """Take the audio track out of a media file."""

    type = "media.extract_audio"
    description = "Outputs the first audio track as wav (16-bit PCM), mp3, flac or ogg (vorbis), optionally resampled."

    class Params(_Strict):
        media: File = Field(description="An audio or video file (a file value or an http(s) URL).")
        format: Literal["wav", "mp3", "flac", "ogg"] = "wav"
        sample_rate: int | None = Field(default=None, ge=8000, le=192000, description="Hz; default: the source's.")
        channels: int | None = Field(default=None, ge=1, le=8, description="Default: the source's.")

    class Output(_Timed):
        audio: File

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Probe, extract, store."""
        _, content_type, _, codec, _ = CONTAINERS[params.format]
        async with store_of(ctx).local_path(params.media) as path, scratch() as work:
            found = checked(await ffmpeg.probe(path))
            if found.first("audio") is None:
                raise errors.InvalidInput("the media has no audio track")
            out = work / f"out.{params.format}"
            args = [*ffmpeg.input_args(path), "-map", "0:a:0", "-vn", "-map_metadata", "-1", "-c:a", *ENCODERS[codec]]
            args += ["-ar", str(params.sample_rate)] if params.sample_rate else []
            args += ["-ac", str(params.channels)] if params.channels else []
            await encode([*args, "-fflags", "+bitexact", "-f", CONTAINERS[params.format][0], "-y", str(out)], "extract the audio")
            audio, duration = await self._made(ctx, out, renamed(params.media.name, params.format), content_type)
        ctx.report_usage("media_seconds", found.duration_s or duration)
        return self.Output(audio=audio, duration_s=duration)


FRAME_FORMATS = {"jpeg": ("jpg", "image/jpeg", ["-c:v", "mjpeg", "-q:v", "2"]),
                 "png": ("png", "image/png", ["-c:v", "png"]),
                 "webp": ("webp", "image/webp", ["-c:v", "libwebp", "-quality", "85"])}


class MediaFrames(MediaNode):
    """Still images out of a video."""

    type = "media.frames"
    description = (
        f"Outputs still frames of a video as image files: one every every_s seconds from the start, or count "
        f"frames evenly spread (at most {MAX_FRAMES})."
    )

    class Params(_Strict):
        media: File = Field(description="A video file (a file value or an http(s) URL).")
        every_s: float | None = Field(default=None, ge=0.001, le=MAX_MEDIA_S)
        count: int | None = Field(default=None, ge=1, le=MAX_FRAMES)
        format: Literal["jpeg", "png", "webp"] = "jpeg"

        @pydantic.model_validator(mode="after")
        def _one_spacing(self) -> MediaFrames.Params:
            if (self.every_s is None) == (self.count is None):
                raise ValueError("give exactly one of every_s and count")
            return self

    class Output(BaseModel):
        frames: list[File]

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Probe, sample frames with FFmpeg's fps filter, store each."""
        extension, content_type, codec = FRAME_FORMATS[params.format]
        async with store_of(ctx).local_path(params.media) as path, scratch() as work:
            found = checked(await ffmpeg.probe(path))
            rate, most = _frame_rate(params, found)
            args = [*ffmpeg.input_args(path), "-map", "0:v:0", "-vf", f"fps={rate}", "-frames:v", str(most), *codec]
            await encode([*args, "-f", "image2", str(work / f"%05d.{extension}")], "take frames from the video")
            frames = []
            for i, made in enumerate(sorted(work.iterdir()), 1):
                name = renamed(params.media.name, extension, f"-{i:04d}")
                frames.append(await store_of(ctx).put_path(made, name=name, content_type=content_type))
        ctx.report_usage("media_seconds", found.duration_s or 0.0)
        return self.Output(frames=frames)


def _frame_rate(params: MediaFrames.Params, found: ffmpeg.Probe) -> tuple[str, int]:
    """The fps filter's rate and the frame cap for ``params`` on this media."""
    if found.first("video") is None:
        raise errors.InvalidInput("the media has no video track")
    duration = found.duration_s
    if params.count is not None:
        if not duration:
            raise errors.InvalidInput("the media does not say how long it is: give every_s instead of count")
        return f"{params.count}/{duration}", params.count
    assert params.every_s is not None
    if duration and math.ceil(duration / params.every_s) > MAX_FRAMES:
        raise errors.InvalidParams(
            f"every_s: {params.every_s} s over {duration:.1f} s would make more than {MAX_FRAMES} frames", field="every_s")
    return f"1/{params.every_s}", MAX_FRAMES


TRIM_CONTAINERS = {"mov": "mp4", "matroska": "mkv", "mp3": "mp3", "wav": "wav", "flac": "flac", "ogg": "ogg"}


class MediaTrim(MediaNode):
    """Cut a time range out of a media file."""

    type = "media.trim"
    description = (
        "Outputs the part of a media file from start_s to end_s (default: its end), re-encoded so the cut is "
        "frame-exact, in the input's container (mp4 for other video, m4a for other audio)."
    )

    class Params(_Strict):
        media: File = Field(description="An audio or video file (a file value or an http(s) URL).")
        start_s: float = Field(default=0.0, ge=0, le=MAX_MEDIA_S)
        end_s: float | None = Field(default=None, gt=0, le=MAX_MEDIA_S)

        @pydantic.model_validator(mode="after")
        def _ordered(self) -> MediaTrim.Params:
            if self.end_s is not None and self.end_s <= self.start_s:
                raise ValueError("end_s must be after start_s")
            return self

    class Output(_Timed):
        media: File

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Probe, cut with input seeking, re-encode in the input's container, store."""
        async with store_of(ctx).local_path(params.media) as path, scratch() as work:
            found = checked(await ffmpeg.probe(path))
            if found.duration_s is not None and params.start_s >= found.duration_s:
                raise errors.InvalidParams(
                    f"start_s: {params.start_s} s is past the end of the {found.duration_s} s media", field="start_s")
            container = _trim_container(found)
            target = MediaTranscode.Params(media=params.media, format=container)  # type: ignore[arg-type]
            span = ["-t", str(params.end_s - params.start_s)] if params.end_s is not None else []
            args = ["-ss", str(params.start_s), *ffmpeg.input_args(path), *span, *transcode_args(target, found)]
            out = work / f"out.{container}"
            await encode([*args, "-y", str(out)], "trim the media")
            media, duration = await self._made(ctx, out, renamed(params.media.name, container), CONTAINERS[container][1])
        ctx.report_usage("media_seconds", duration)
        return self.Output(media=media, duration_s=duration)


def _trim_container(found: ffmpeg.Probe) -> str:
    first = found.format.split(",")[0]
    if first in TRIM_CONTAINERS and not (first in ("mp3", "wav", "flac", "ogg") and found.first("video")):
        return TRIM_CONTAINERS[first]
    return "mp4" if found.first("video") else "m4a"


MEDIA_TYPES: tuple[type[NodeType], ...] = (MediaProbe, MediaTranscode, MediaExtractAudio, MediaFrames, MediaTrim)
