"""``image.*`` on Pillow: our overhead on one big resize, and a pipeline of image tasks on both cores.

- **resize**: ``image.resize`` of a 12-megapixel JPEG (4000×3000 → 1200×900, JPEG q85) as the
  executor drives it (parameter check, the file read through the real store, decode, resize,
  encode on a thread, the result hashed and stored), against the same Pillow calls made directly
  on the same file in the same process (open, decode, LANCZOS resize, encode to memory). Runs
  alternate so drift hits both alike.
- **pipeline**: 20 tasks of image.resize → image.watermark on 12 MP JPEGs, queued at once and run
  by the real scheduler at ``MAX_CONCURRENT_JOBS`` 10; the figure is wall time, and the process's
  CPU seconds ÷ wall seconds says how many cores it kept busy (Pillow releases the GIL while it
  decodes, resizes and encodes, and ``ctx.to_thread`` runs those on the default thread pool).

Standalone: ``python -m bench.media [RUNS] [TASKS]`` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as concurrent_futures
import io
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.figures import Figure
from graph_runtime import flow as flows
from graph_runtime.attempts import run_attempts
from graph_runtime.models import TaskStatus
from http_api.app import close_services, open_services
from http_api.schemas import ExecuteBody
from http_api.services import Services, submit
from http_api.settings import Settings
from nodes.builtin.image import ImageResize
from nodes.contract import RunContext

SIZE = (4000, 3000)
TARGET: dict[str, Any] = {"width": 1200, "height": 900, "fit": "inside", "quality": 85}
PIPELINE = {
    "id": "bench-media", "nodes": [
        {"id": "in", "type": "start"},
        {"id": "resize", "type": "image.resize", "settings": {"width": 1200, "height": 900, "fit": "inside"}},
        {"id": "mark", "type": "image.watermark", "settings": {"text": "bench", "opacity": 0.6}},
        {"id": "out", "type": "end"}],
    "edges": [{"from": "in", "output": "photo", "to": "resize", "input": "image"},
              {"from": "resize", "output": "image", "to": "mark", "input": "image"},
              {"from": "mark", "to": "out", "input": "mark"}],
}


def photo(seed: int, size: tuple[int, int] = SIZE) -> bytes:
    """A JPEG (12 MP by default) with texture (noise over a gradient), so the codec has real work."""
    rng = random.Random(seed)
    noise = Image.frombytes("L", (size[0] // 4, size[1] // 4), rng.randbytes(size[0] * size[1] // 16))
    base = Image.merge("RGB", (Image.linear_gradient("L").resize(size), noise.resize(size), Image.new("L", size, 96)))
    buffer = io.BytesIO()
    base.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def pillow_direct(path: Path) -> bytes:
    """The reference: the same Pillow work as the node, called directly."""
    with Image.open(path) as image:
        image.load()
        small = image.resize((TARGET["width"], TARGET["height"]), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=TARGET["quality"])
    return buffer.getvalue()


async def _open(workdir: Path, concurrent: int = 10) -> Services:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{workdir / 'bench.db'}", flows_dir=None,
                        files_dir=workdir / "files", max_concurrent_jobs=concurrent, log_level="WARNING")
    return await open_services(settings)


async def measure_resize(runs: int, workdir: Path, size: tuple[int, int] = SIZE) -> dict[str, Figure]:
    """``runs`` node resizes and as many direct Pillow ones (after one warm-up each), in ms."""
    services = await _open(workdir)
    ours, floor = Figure(unit="ms"), Figure(unit="ms")
    try:
        data = photo(1, size)
        source = workdir / "photo.jpg"
        source.write_bytes(data)
        stored = await services.files.put_bytes(data, name="photo.jpg", content_type="image/jpeg")
        params = {"image": stored.as_value(), **TARGET}
        node = ImageResize()

        def context(attempt: int, timeout: float | None) -> RunContext:
            return RunContext(task_id=1, node_id="resize", flow_id="bench", attempt=attempt, timeout_s=timeout,
                              files=services.files)

        async def nothing() -> None:
            return None

        for i in range(runs + 1):
            started = time.perf_counter()
            await run_attempts(node, params, context, nothing)
            node_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            await asyncio.to_thread(pillow_direct, source)
            direct_ms = (time.perf_counter() - started) * 1000
            if i:  # the first of each is a warm-up
                ours.add(node_ms)
                floor.add(direct_ms)
    finally:
        await close_services(services)
    return {"ours": ours, "floor": floor}


async def measure_pipeline(tasks: int, workdir: Path, concurrent: int = 10, size: tuple[int, int] = SIZE) -> dict[str, Any]:
    """Run ``tasks`` resize → watermark tasks at ``concurrent`` jobs; wall seconds and cores used.

    ``direct`` is the same Pillow work on ``concurrent`` plain threads, measured just before.
    """
    services = await _open(workdir, concurrent)
    try:
        await services.repo.save_flow(flows.parse(PIPELINE))
        sources = []
        for i in range(min(tasks, 4)):  # 4 distinct photos: the store keeps equal bytes once
            sources.append(workdir / f"p{i}.jpg")
            sources[-1].write_bytes(photo(i, size))
        direct = await asyncio.to_thread(pipeline_direct, sources, tasks, concurrent)
        photos = [await services.files.put_path(path, name=path.name, content_type="image/jpeg") for path in sources]
        cpu_before, started = _cpu_s(), time.perf_counter()
        ids = []
        for i in range(tasks):
            body = ExecuteBody(node_settings={"in": {"data": {"photo": photos[i % len(photos)].as_value()}}})
            task, _ = await submit(services, "bench-media", body, raw_body={})
            ids.append(task.id)
        await services.scheduler.start()
        await _all_succeeded(services, ids)
        wall = time.perf_counter() - started
        cpu = _cpu_s() - cpu_before
    finally:
        await close_services(services)
    return {"wall_s": wall, "cpu_s": cpu, "cores": cpu / wall, "tasks": tasks, "concurrent": concurrent, "direct": direct}


def pipeline_direct(sources: list[Path], tasks: int, concurrent: int = 10) -> dict[str, Any]:
    """The reference: the same Pillow work (decode, resize, watermark, encode) on ``concurrent`` threads."""
    from nodes.builtin import imaging

    def one(path: Path) -> None:
        resized = io.BytesIO(pillow_direct(path))
        with Image.open(resized) as small:
            small.load()
            marked = imaging.watermark_text(small, "bench", "bottom-right", 0.6)
        marked.save(io.BytesIO(), "JPEG", quality=TARGET["quality"])

    cpu_before, started = _cpu_s(), time.perf_counter()
    with concurrent_futures.ThreadPoolExecutor(max_workers=concurrent) as pool:
        list(pool.map(one, [sources[i % len(sources)] for i in range(tasks)]))
    wall = time.perf_counter() - started
    cpu = _cpu_s() - cpu_before
    return {"wall_s": wall, "cpu_s": cpu, "cores": cpu / wall}


async def _all_succeeded(services: Services, ids: list[int], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        tasks = [await services.repo.get_task(task_id) for task_id in ids]
        ended = [t for t in tasks if t is not None and t.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)]
        failed = [t for t in ended if t.status is not TaskStatus.SUCCEEDED]
        if failed:
            raise AssertionError(f"task {failed[0].id} failed: {failed[0].error}")
        if len(ended) == len(ids):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(ids) - len(ended)} tasks still running after {timeout}s")
        await asyncio.sleep(0.05)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(runs: int, tasks: int, size: tuple[int, int] = SIZE) -> dict[str, Any]:
    """Both measurements, each on its own fresh database and store."""
    with tempfile.TemporaryDirectory(prefix="graph-runtime-bench-media-") as workdir:
        (Path(workdir) / "a").mkdir()
        (Path(workdir) / "b").mkdir()
        resize = await measure_resize(runs, Path(workdir) / "a", size)
        pipeline = await measure_pipeline(tasks, Path(workdir) / "b", size=size)
    return {**resize, "pipeline": pipeline}


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 10
    tasks = int(argv[1]) if len(argv) > 1 else 20
    found = asyncio.run(measure(runs, tasks))
    ours, floor = found["ours"], found["floor"]
    print(json.dumps({"resize_node_ms": round(ours.median or 0, 1), "resize_pillow_ms": round(floor.median or 0, 1),
                      "ratio": round((ours.median or 0) / (floor.median or 1), 3), "runs": runs,
                      "pipeline": _rounded(found["pipeline"])}))
    return 0


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["measure"]
