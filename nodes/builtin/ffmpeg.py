"""A bounded FFmpeg for the ``media.*`` node types: a killable subprocess under kernel limits.

Design decision: the static ``ffmpeg`` binary of imageio-ffmpeg, run as a subprocess, rather than
PyAV's FFmpeg libraries in our process. Media is hostile input, and a decoder bug or a crafted
file that makes FFmpeg allocate without end, spin, or crash must cost one node, never the
worker: a process gets ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` (output size) and
no core dumps from the kernel, and is killed with ``SIGKILL`` when its node is cancelled or
times out — a C call on a PyAV thread can be stopped by none of these. The binary is a full
GPL build (x264, x265, libvpx, opus, vorbis, lame, webp), where PyAV's wheels lack libvorbis.
The costs: ~40 ms to start a process, and stream facts read from ``ffmpeg -i``'s report
(imageio-ffmpeg ships no ``ffprobe``); :func:`parse_probe` is that parser.

Limits are set by a tiny launcher (``python -I -S -c``) that calls ``setrlimit`` and then
``execv``\\s ffmpeg, so nothing runs between ``fork`` and ``exec`` in this threaded process
(``preexec_fn`` would). Inputs are read with ``-protocol_whitelist file`` and a list of plain
container demuxers, so a "video" that is really an HLS or concat playlist cannot make FFmpeg
open other local files or URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nodes import errors

GIB = 1024**3

DEMUXERS = (
    "mov,matroska,avi,flv,mpegts,mpeg,ogg,wav,mp3,flac,aac,asf,gif,aiff,caf,w64,ivf,nut,mxf,amr,wv,ape"
)
"""Containers FFmpeg may read: media files, never playlists or other indirections (hls, concat)."""

_LAUNCHER = """\
import os, resource, sys
for name, value in zip(("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_CORE"), sys.argv[1:5]):
    kind = getattr(resource, name)
    hard = resource.getrlimit(kind)[1]
    value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
    resource.setrlimit(kind, (value, value))
os.execv(sys.argv[5], sys.argv[5:])
"""

STDERR_KEPT = 64 * 1024
PROBE_TIMEOUT_S = 30
"""Reading a file's header takes milliseconds; one that takes this long is hostile (or a dead disk)."""


@dataclass(frozen=True)
class Bounds:
    """What one FFmpeg run may use.

    Attributes:
        memory_bytes: address space (``RLIMIT_AS``); an allocation beyond it fails.
        cpu_s: CPU seconds over all its threads (``RLIMIT_CPU``).
        file_bytes: the largest file it may write (``RLIMIT_FSIZE``).
        threads: codec and filter threads.
    """

    memory_bytes: int = 2 * GIB
    cpu_s: int = 1200
    file_bytes: int = 4 * GIB
    threads: int = 2


@functools.cache
def executable() -> str:
    """The path of the ffmpeg binary imageio-ffmpeg installed.

    Raises:
        errors.NodeFailed: the media extra is not installed (a flow stored before it was removed).
    """
    try:
        import imageio_ffmpeg  # the media extra; imported here so the module loads without it
    except ImportError as exc:
        raise errors.NodeFailed(f"media nodes need the media extra: pip install 'graph-runtime[media]' ({exc})") from None
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def input_args(path: Path) -> list[str]:
    """``-i path`` with the protocol and container allow-lists."""
    return ["-protocol_whitelist", "file", "-format_whitelist", DEMUXERS, "-i", str(path)]


async def run(args: list[str], bounds: Bounds = Bounds()) -> tuple[int, str]:
    """Run ``ffmpeg <args>`` under ``bounds``; killed if the caller is cancelled.

    Returns:
        The exit status (negative: killed by that signal) and the last 64 KiB of its stderr.
    """
    limits = [str(bounds.memory_bytes), str(bounds.cpu_s), str(bounds.file_bytes), "0"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", _LAUNCHER, *limits, executable(), "-hide_banner", "-nostdin", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        tail = await _tail(process.stderr)
        status = await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())
        raise
    return status, tail.decode("utf-8", "replace")


async def _tail(stream: asyncio.StreamReader) -> bytes:
    """Everything ``stream`` says until it closes, keeping only the last :data:`STDERR_KEPT` bytes."""
    kept = b""
    while chunk := await stream.read(16384):
        kept = (kept + chunk)[-STDERR_KEPT:]
    return kept


def last_line(report: str) -> str:
    """The last non-empty line of FFmpeg's stderr: usually the reason it stopped."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


@dataclass(frozen=True)
class Stream:
    """One stream of a media file, as ``media.probe`` reports it."""

    type: str
    codec: str
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class Probe:
    """What FFmpeg found in a media file."""

    format: str
    duration_s: float | None
    streams: list[Stream] = field(default_factory=list)

    def first(self, kind: str) -> Stream | None:
        """The first stream of ``kind`` (``video``, ``audio``…), if any."""
        return next((s for s in self.streams if s.type == kind), None)


_INPUT = re.compile(r"^Input #0, ([^ ]+), from ", re.M)
_DURATION = re.compile(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", re.M)
_STREAM = re.compile(r"^\s*Stream #0:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$", re.M)
_SIZE = re.compile(r"(?<![\w.])([1-9]\d{0,5})x([1-9]\d{0,5})(?![\w.])")
_RATE = re.compile(r"\b(\d+) Hz\b")
_LAYOUTS = {"mono": 1, "stereo": 2, "quad": 4, "hexagonal": 6, "octagonal": 8, "downmix": 2}
_DOTTED = re.compile(r"^(\d+)\.(\d+)")
_COUNTED = re.compile(r"^(\d+) channels")


def parse_probe(report: str) -> Probe | None:
    """Read ``ffmpeg -i``'s report (stderr); None when FFmpeg could not open the input."""
    found = _INPUT.search(report)
    if found is None:
        return None
    duration = _DURATION.search(report)
    seconds = None
    if duration is not None:
        hours, minutes, secs = duration.groups()
        seconds = round(int(hours) * 3600 + int(minutes) * 60 + float(secs), 6)
    streams = [_stream(kind.lower(), details) for kind, details in _STREAM.findall(report)]
    return Probe(format=found.group(1), duration_s=seconds, streams=streams)


def _stream(kind: str, details: str) -> Stream:
    codec = details.split(",")[0].split(" ")[0]
    if kind == "video":
        size = _SIZE.search(details)
        width, height = (int(size.group(1)), int(size.group(2))) if size else (None, None)
        return Stream(kind, codec, width=width, height=height)
    if kind == "audio":
        rate = _RATE.search(details)
        return Stream(kind, codec, sample_rate=int(rate.group(1)) if rate else None, channels=_channels(details))
    return Stream(kind, codec)


def _channels(details: str) -> int | None:
    parts = [part.strip() for part in details.split(",")]
    for part in parts[2:4]:  # codec, rate, then the layout
        if part in _LAYOUTS:
            return _LAYOUTS[part]
        if dotted := _DOTTED.match(part):
            return int(dotted.group(1)) + int(dotted.group(2))
        if counted := _COUNTED.match(part):
            return int(counted.group(1))
    return None


async def probe(path: Path, what: str = "the media") -> Probe:
    """Open ``path`` with FFmpeg and report its container, duration and streams.

    Raises:
        errors.InvalidInput: FFmpeg cannot read it as media (garbage, truncated header, a playlist),
            or not within :data:`PROBE_TIMEOUT_S`.
    """
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            _, report = await run([*input_args(path)], Bounds(cpu_s=PROBE_TIMEOUT_S))
    except TimeoutError:
        raise errors.InvalidInput(f"{what} could not be read within {PROBE_TIMEOUT_S} s") from None
    found = parse_probe(report)
    if found is None or not found.streams:
        raise errors.InvalidInput(f"{what} cannot be read as audio or video: {last_line(report)}")
    return found
