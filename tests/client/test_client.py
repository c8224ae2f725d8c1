"""The Python client against a real server (the production app on a port, a real SQLite file)."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from graph_runtime_client import (
    AsyncClient,
    Client,
    Conflict,
    File,
    NodeRun,
    NotFound,
    Task,
    TaskStatus,
    Unauthorized,
    ValidationError,
    WaitTimedOut,
)
from tests.client.conftest import server_url
from tests.conftest import Api

CAPTION_LONG = "Describe the image at https://example.com/cat.jpg in a long sentence."
SLOW = {"resize": {"seconds": 30}}  # fan-out-fan-in's resize is a delay node


def photo(path: Path, size: tuple[int, int] = (1600, 1200)) -> Path:
    """A real JPEG: a gradient, so the encoder has something to do."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.save(path, format="JPEG", quality=90)
    return path


async def test_run_waits_for_the_task_and_answers_typed_values(gr: AsyncClient) -> None:
    task = await gr.run("caption-image", settings={"SYnn-start": {"data": {"style": "long"}}})
    assert isinstance(task, Task) and task.succeeded and task.status is TaskStatus.SUCCEEDED
    assert task.result["caption"] == CAPTION_LONG
    assert task.flow_id == "caption-image" and task.revision == 1 and task.error is None
    assert set(task.nodes) == {"SYnn-start", "prompt", "y5iI-end"}
    assert all(isinstance(run, NodeRun) and run.status == "succeeded" and run.attempts == 1
               for run in task.nodes.values())
    assert task.finished is not None and task.created is not None and task.finished >= task.created
    assert task.raw["status"] == 3  # the server's JSON is kept as sent


async def test_submit_answers_at_once_and_wait_long_polls_until_the_end(gr: AsyncClient) -> None:
    queued = await gr.submit("fan-out-fan-in", settings={"resize": {"seconds": 1.0}})
    assert not queued.ended
    started = time.monotonic()
    done = await gr.wait(queued)
    assert done.succeeded and 0.5 < time.monotonic() - started < 10
    assert done.id == queued.id and done.result == (await gr.task(queued)).result


async def test_wait_with_a_timeout_raises_with_the_task_as_last_seen(gr: AsyncClient) -> None:
    task = await gr.submit("fan-out-fan-in", settings=SLOW)
    started = time.monotonic()
    with pytest.raises(WaitTimedOut) as raised:
        await gr.wait(task, timeout=1.0)
    assert 0.9 < time.monotonic() - started < 5
    assert raised.value.task.id == task.id and raised.value.task.status is TaskStatus.RUNNING
    await gr.cancel(task)


async def test_the_task_route_long_polls_with_wait(api: Api) -> None:
    task = await api.execute("fan-out-fan-in", {"node_settings": {"resize": {"seconds": 0.8}}})
    started = time.monotonic()
    ended = await api.json("GET", f"/api/v1/task/{task['id']}?wait=20", 200)
    assert ended["status_name"] == "succeeded" and time.monotonic() - started < 10
    refused = await api.json("GET", f"/api/v1/task/{task['id']}?wait=61", 422)
    assert refused["error"]["field"] == "wait"


async def test_cancel_stops_a_running_task_and_an_ended_one_is_a_conflict(gr: AsyncClient) -> None:
    task = await gr.submit("fan-out-fan-in", settings=SLOW)
    cancelled = await gr.cancel(task)
    assert cancelled.status is TaskStatus.CANCELLED, cancelled
    assert (await gr.task(task.id)).status is TaskStatus.CANCELLED
    with pytest.raises(Conflict) as raised:
        await gr.cancel(task.id)
    assert raised.value.status == 409 and raised.value.code == "task_ended"


async def test_api_errors_are_typed_with_code_field_and_status(gr: AsyncClient, api: Api) -> None:
    with pytest.raises(ValidationError) as invalid:
        await gr.submit("fan-out-fan-in", settings={"resize": {"seconds": -1}})
    assert (invalid.value.status, invalid.value.field) == (422, "node_settings.resize.seconds")
    assert invalid.value.code == "invalid_settings" and "resize" in invalid.value.message
    with pytest.raises(NotFound) as missing:
        await gr.run("no-such-flow")
    assert (missing.value.status, missing.value.code) == (404, "flow_not_found")
    with pytest.raises(NotFound):
        await gr.task(999_999)
    async with AsyncClient(server_url(api), "bm90LWEta2V5Om5vcGU=") as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.tasks()
    assert refused.value.code == "unauthorized"
    with pytest.raises(ValueError, match=r"start\.data\.photo"):  # a setting given twice: nothing is sent
        await gr.submit("product-photo-sizes", settings={"start": {"data": {"photo": "x"}}},
                        files={"start.data.photo": b"jpeg"})
    assert (await gr.tasks()).tasks == []  # no request above queued a task


async def test_files_are_uploaded_into_settings_and_results_downloaded(gr: AsyncClient, tmp_path: Path) -> None:
    source = photo(tmp_path / "shoe.jpg")
    task = await gr.run("product-photo-sizes", files={"start.data.photo": source})
    assert task.succeeded, task.error
    sizes = {"thumbnail": (150, 150), "medium": (600, 450), "large": (1200, 900)}
    out = tmp_path / "out"
    out.mkdir()
    for name, size in sizes.items():
        image = task.result[name]["image"]
        assert isinstance(image, File) and image.url and image.size
        saved = await gr.download(image, out / f"shoe-{name}")
        assert isinstance(saved, Path) and saved.stat().st_size == image.size
        with Image.open(saved) as opened:
            assert opened.size == size, name
    assert not list(out.glob("*.part"))
    given = task.data["node_settings"]["start"]["data"]["photo"]  # the upload, as the task recorded it
    assert isinstance(given, File) and await gr.download(given) == source.read_bytes()
    into_dir = await gr.download(task.result["thumbnail"]["image"], out)
    assert isinstance(into_dir, Path) and into_dir.parent == out


async def test_upload_of_bytes_and_download_of_an_unknown_file(gr: AsyncClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, format="PNG")
    file = await gr.upload(buffer.getvalue(), name="red.png")
    assert (file.name, file.content_type, file.size) == ("red.png", "image/png", len(buffer.getvalue()))
    assert await gr.download(file.id) == buffer.getvalue()
    with pytest.raises(NotFound):
        await gr.download("no-such-file")
    with pytest.raises(FileNotFoundError):
        await gr.upload(Path("/no/such/photo.jpg"))


async def test_history_pages_follow_next_before(gr: AsyncClient) -> None:
    ids = [(await gr.run("caption-image")).id for _ in range(3)]
    page = await gr.tasks(flow_id="caption-image", limit=2)
    assert [t.id for t in page.tasks] == ids[::-1][:2] and page.next_before is not None
    assert all(t.node_counts["succeeded"] == 3 and t.nodes == {} for t in page.tasks), page
    assert [t.id async for t in gr.iter_tasks(flow_id="caption-image", limit=2)] == ids[::-1]
    with_results = await gr.tasks(limit=1, include=["result"])
    assert with_results.tasks[0].result["caption"]


async def test_plan_is_the_dry_run(gr: AsyncClient) -> None:
    plan = await gr.plan("fan-out-fan-in")
    assert plan.levels[0] == ["start"] and set(plan.levels[1]) == {"resize", "transcribe", "thumbnail"}
    assert plan.cost_min <= plan.cost_max
    assert (await gr.tasks()).tasks == []  # it writes nothing


async def test_the_blocking_client_runs_uploads_and_raises_the_same(api: Api, tmp_path: Path) -> None:
    source = photo(tmp_path / "bag.jpg", (800, 800))

    def script() -> tuple[Task, bytes, str]:
        with Client(server_url(api), api.token) as client:
            task = client.run("product-photo-sizes", files={"start.data.photo": source})
            thumb = client.download(task.result["thumbnail"]["image"])
            try:
                client.cancel(task)
            except Conflict as exc:
                return task, bytes(thumb), exc.code  # type: ignore[arg-type]
        raise AssertionError("cancelling an ended task did not raise")

    task, thumb, code = await asyncio.to_thread(script)
    assert task.succeeded and code == "task_ended"
    with Image.open(io.BytesIO(thumb)) as opened:
        assert opened.size == (150, 150)
