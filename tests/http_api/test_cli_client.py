"""The CLI as a client (``--url``/``--key``: tasks list|show|cancel|watch, run --remote), the same
commands on a local database, and reading never writing (publishing is ``flows push``)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.client.conftest import server_url
from tests.conftest import Api
from tests.processes import SAMPLE_FLOWS, last_json_line, run_cli, run_cli_concurrently, sqlite_url

# Every test starts several `graph-runtime` processes (~1 s of imports each, more on a busy machine);
# independent ones run at once.
pytestmark = pytest.mark.timeout(120)
BUSY_TIMEOUT = 90.0
NODES = ("start", "resize", "transcribe", "thumbnail", "join", "end")


async def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command in a child process, while this loop goes on serving the test's server."""
    return await asyncio.to_thread(run_cli, *args, cwd=cwd)


def revisions(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT flow_id, revision FROM flow_revision"))


def assert_node_rows(stderr: str) -> None:
    for node_id in NODES:
        assert re.search(rf"^\W*{node_id}\W+succeeded\b", stderr, re.MULTILINE), stderr


async def test_run_remote_and_the_tasks_commands_against_a_server(api: Api, tmp_path: Path) -> None:
    server = ["--url", server_url(api), "--key", api.token]
    ran = await cli(*server, "run", "fan-out-fan-in", "--remote", "--set", "resize.seconds=0.3", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    task = last_json_line(ran.stdout)
    assert task["status"] == 3 and set(task["nodes"]) == set(NODES)
    assert_node_rows(ran.stderr)  # the live table, fed by the server

    listed = await cli("tasks", "list", *server, cwd=tmp_path)  # --url/--key after the command work too
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^\s*{task['id']}\s+succeeded\s+fan-out-fan-in rev 1\b", listed.stdout, re.MULTILINE)
    shown = await cli(*server, "tasks", "show", str(task["id"]), cwd=tmp_path)
    assert shown.returncode == 0 and last_json_line(shown.stdout) == (await api.task(task["id"]))

    slow = await api.execute("fan-out-fan-in", {"node_settings": {"resize": {"seconds": 30}}})
    cancelled = await cli(*server, "tasks", "cancel", str(slow["id"]), cwd=tmp_path)
    assert cancelled.returncode == 0 and f"task {slow['id']}: cancelled" in cancelled.stdout, cancelled.stderr
    assert (await api.task(slow["id"]))["status_name"] == "cancelled"
    again = await cli(*server, "tasks", "cancel", str(slow["id"]), cwd=tmp_path)
    assert again.returncode == 1 and "(task_ended)" in again.stderr and "Traceback" not in again.stderr


async def test_tasks_watch_follows_a_running_task_to_its_end(api: Api, tmp_path: Path) -> None:
    running = await api.execute("fan-out-fan-in", {"node_settings": {"resize": {"seconds": 1.5}}})
    watched = await cli("--url", server_url(api), "--key", api.token, "tasks", "watch", str(running["id"]),
                        cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert last_json_line(watched.stdout)["status_name"] == "succeeded"
    assert_node_rows(watched.stderr)


async def test_server_errors_are_one_error_line_and_remote_run_uploads_files(api: Api, tmp_path: Path) -> None:
    server = ["--url", server_url(api), "--key", api.token]
    photo = tmp_path / "shoe.jpg"
    Image.new("RGB", (1600, 1200), "white").save(photo)
    commands = [[*server, "run", "fan-out-fan-in", "--remote", "--set", "resize.seconds=-1"],
                ["--url", server_url(api), "--key", "bm9wZTpub3Bl", "tasks", "list"],
                [*server, "tasks", "show", "424242"],
                ["run", "caption-image", "--remote", "--db", sqlite_url(tmp_path / "x.db")],
                [*server, "run", "product-photo-sizes", "--remote", "--file", f"start.data.photo={photo}"]]
    invalid, wrong_key, missing, no_url, with_file = await asyncio.to_thread(
        run_cli_concurrently, [(args, tmp_path) for args in commands], BUSY_TIMEOUT)
    assert invalid.returncode == 1 and invalid.stdout == ""
    [line] = [line for line in invalid.stderr.splitlines() if line.startswith("error:")]
    assert "field node_settings.resize.seconds" in line and "invalid_settings" in line
    assert wrong_key.returncode == 1 and "(unauthorized)" in wrong_key.stderr
    assert missing.returncode == 1 and "(task_not_found)" in missing.stderr
    assert no_url.returncode == 1 and "--url" in no_url.stderr
    assert all("Traceback" not in result.stderr for result in (invalid, wrong_key, missing, no_url))
    assert with_file.returncode == 0, with_file.stderr  # and one that works: --file uploads through the client
    result = last_json_line(with_file.stdout)["result"]
    assert result["thumbnail"]["width"] == 150 and result["large"]["image"]["name"] == "shoe.jpg"


def test_the_tasks_commands_work_on_a_local_database(tmp_path: Path) -> None:
    db = ["--db", sqlite_url(tmp_path / "x.db"), "--flows", str(SAMPLE_FLOWS)]
    ran = run_cli("run", "caption-image", *db, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    task = last_json_line(ran.stdout)
    listed, watched, ended, local_file = run_cli_concurrently([
        (["tasks", "list", *db], tmp_path), (["tasks", "watch", str(task["id"]), *db], tmp_path),
        (["tasks", "cancel", str(task["id"]), *db], tmp_path),
        (["run", "product-photo-sizes", "--file", "start.data.photo=shoe.jpg", *db], tmp_path)], BUSY_TIMEOUT)
    assert local_file.returncode == 1 and "--file needs --remote" in local_file.stderr
    assert re.search(rf"^\s*{task['id']}\s+succeeded\s+caption-image rev 1\b", listed.stdout, re.MULTILINE), listed
    assert watched.returncode == 0 and last_json_line(watched.stdout) == task
    assert ended.returncode == 1 and "already ended" in ended.stderr


def test_reading_never_writes_and_flows_push_publishes(tmp_path: Path) -> None:
    db_file = tmp_path / "x.db"
    flows = tmp_path / "flows"
    shutil.copytree(SAMPLE_FLOWS, flows)
    db = ["--db", sqlite_url(db_file), "--flows", str(flows)]
    pushed = run_cli("flows", "push", *db, cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert "caption-image: revision 1 (new)" in pushed.stdout
    before = revisions(db_file)
    assert ("caption-image", 1) in before

    edited = flows / "caption-image.yaml"
    edited.write_text(edited.read_text(encoding="utf-8").replace("Caption an image", "Caption, edited"),
                      encoding="utf-8")
    listed, shown, ran = run_cli_concurrently([
        (["flows", "list", *db], tmp_path), (["flows", "show", "caption-image", *db], tmp_path),
        (["run", "caption-image", *db], tmp_path)], BUSY_TIMEOUT)
    [line] = [line for line in listed.stdout.splitlines() if line.startswith("caption-image ")]
    assert "rev 1" in line and "differs from rev 1" in line
    assert shown.returncode == 0 and "caption-image rev 1: Caption an image" in shown.stdout
    assert ran.returncode == 0 and last_json_line(ran.stdout)["revision"] == 1
    assert "differs from stored revision 1" in ran.stderr
    assert revisions(db_file) == before  # three reads (and a run) later: no revision added

    again = run_cli("flows", "push", str(edited), *db, cwd=tmp_path)
    assert again.returncode == 0 and "caption-image: revision 2 (new)" in again.stdout
    assert revisions(db_file) == sorted([*before, ("caption-image", 2)])


def test_run_push_publishes_the_edited_file_first(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(SAMPLE_FLOWS, flows)
    db = ["--db", sqlite_url(tmp_path / "x.db"), "--flows", str(flows)]
    first = run_cli("run", "caption-image", *db, cwd=tmp_path)  # a flow the database lacks is added, and said so
    assert first.returncode == 0 and "stored flow caption-image revision 1" in first.stderr
    edited = flows / "caption-image.yaml"
    edited.write_text(edited.read_text(encoding="utf-8").replace("style: short}", "style: long}"), encoding="utf-8")
    pushed = run_cli("run", "caption-image", "--push", *db, cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    task = last_json_line(pushed.stdout)
    assert task["revision"] == 2 and "long sentence" in json.dumps(task["result"])
