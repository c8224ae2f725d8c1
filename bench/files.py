"""Upload and download of one large file over loopback: MB/s each way and how much RSS grows.

The server is the production app (``create_app``) on 127.0.0.1 with a real SQLite file and a
real ``FILES_DIR``; the client streams the upload from a generator (one 1 MiB random block
repeated) and reads the download in 1 MiB chunks, dropping them. Both run in this process, so the
RSS growth (peak ``VmHWM`` after minus before, the peak reset first) is an upper bound on the
server's own. The upload figure includes hashing, the fsync and the rename into place. The floor
is the same bytes hashed and written by one thread with no HTTP at all.

Standalone: ``python -m bench.files [MiB]`` (default 1024) prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings

MIB = 1024 * 1024
TARGET_MB_S = 300.0
TARGET_RSS_MB = 50.0


def _peak_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    # Linux: writing 5 resets VmHWM to the current RSS, so the peak measured is this run's.
    Path("/proc/self/clear_refs").write_text("5")


async def _body(size: int) -> AsyncIterator[bytes]:
    block = os.urandom(MIB)
    for _ in range(size // MIB):
        yield block


async def measure(size_mib: int, workdir: Path) -> dict[str, Any]:
    """Upload then download ``size_mib`` MiB; MB/s (10^6 bytes/s) each way and RSS growth in MiB."""
    size = size_mib * MIB
    settings = Settings(database_url=f"sqlite+aiosqlite:///{workdir / 'files-bench.db'}", flows_dir=None,
                        files_dir=workdir / "files", max_file_bytes=size + MIB, log_level="WARNING")
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        _, token = await auth.issue_key(server.app[SERVICES].repo, "bench", "admin")  # type: ignore[attr-defined]
        headers = {"Authorization": f"Basic {token}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as http:
            _reset_peak()
            before = _peak_mb()
            started = time.perf_counter()
            async with http.post(server.make_url("/api/v1/files?name=big.bin"), data=_body(size)) as response:
                file = (await response.json())["file"]
                assert response.status == 201, file
            upload_s = time.perf_counter() - started
            started, received = time.perf_counter(), 0
            async with http.get(server.make_url(file["url"])) as response:
                async for chunk in response.content.iter_chunked(MIB):
                    received += len(chunk)
            download_s = time.perf_counter() - started
            grown = _peak_mb() - before
    finally:
        await server.close()
    assert received == size
    floor_s = await asyncio.to_thread(_disk_floor, size, workdir / "floor.bin")
    return {"size_mib": size_mib, "upload_mb_s": round(size / upload_s / 1e6, 1),
            "floor_mb_s": round(size / floor_s / 1e6, 1),
            "download_mb_s": round(size / download_s / 1e6, 1), "rss_growth_mib": round(grown, 1),
            "targets": {"mb_s": TARGET_MB_S, "rss_growth_mib": TARGET_RSS_MB}}


def _disk_floor(size: int, path: Path) -> float:
    """Seconds to SHA-256 and write ``size`` bytes from memory, then fsync: the disk's floor, no HTTP."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    started = time.perf_counter()
    with open(path, "wb", buffering=0) as out:
        for _ in range(size // MIB):
            digest.update(block)
            out.write(block)
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


def main(argv: list[str]) -> int:
    size_mib = int(argv[0]) if argv else 1024
    with tempfile.TemporaryDirectory(prefix="gr-files-bench-", dir=os.environ.get("BENCH_TMP")) as workdir:
        print(json.dumps(asyncio.run(measure(size_mib, Path(workdir)))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["measure"]
