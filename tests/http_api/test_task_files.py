"""Files inside tasks (SPEC §7): file ids, URLs and multipart parts in, signed urls and file_result_link out.

A real server from the production factory, a real file store, a real origin server on loopback,
and real curl for the multipart execute.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from tests.conftest import Api
from tests.support import FlowBuilder, registry_with_test_types

PHOTO = bytes(range(256)) * 300  # 76,800 bytes
PHOTO_SHA = hashlib.sha256(PHOTO).hexdigest()
FILES_FLOW = (FlowBuilder("files").node("make", "test.file_make", text="ab", times=3).node("size", "test.file_size")
              .edge("make", "size", output="file", input="file").build())
ONE = {"start_node_id": "size", "end_node_id": "size", "result_node_id": "size"}


@pytest_asyncio.fixture
async def files_api(api: Api) -> Api:
    """The server with a flow ``files``: make → size (size reads the file make stored) and a lone size."""
    await api.put_flow(FILES_FLOW)
    return api


async def upload(api: Api, data: bytes = PHOTO, name: str = "cat.jpg") -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="image/jpeg")
    return (await api.json("POST", "/api/v1/files", 201, data=form))["file"]


async def download(api: Api, url: str) -> bytes:
    """A signed url needs no key."""
    response = await api.client.get(url)
    assert response.status == 200, await response.text()
    return await response.read()


def settings_of(size_settings: dict[str, Any]) -> dict[str, Any]:
    return {**ONE, "node_settings": {"size": size_settings}}


async def test_an_uploaded_file_id_runs_and_every_file_value_carries_a_url(files_api: Api) -> None:
    uploaded = await upload(files_api)
    task = await files_api.execute("files", settings_of({"file": {"$file": uploaded["$file"]}}), params={"wait": 10})
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"] == {"size": len(PHOTO), "sha256": PHOTO_SHA, "name": "cat.jpg",
                              "content_type": "image/jpeg", "more_sizes": []}
    echoed = task["data"]["node_settings"]["size"]["file"]
    assert echoed["$file"] == uploaded["$file"] and await download(files_api, echoed["url"]) == PHOTO
    assert task["file_result_link"] is None, "no file in the result"
    polled = await files_api.task(task["id"])
    assert polled["data"]["node_settings"]["size"]["file"]["url"].startswith(f"/api/v1/files/{uploaded['$file']}?")
    stored = await files_api.services.repo.get_task(task["id"])
    assert "url" not in stored.request.node_settings["size"]["file"], "links are made per answer, never stored"


async def test_a_result_file_fills_file_result_link_which_downloads_the_bytes(files_api: Api) -> None:
    body = {"start_node_id": "make", "end_node_id": "size", "result_node_id": "make"}
    task = await files_api.execute("files", body, params={"wait": 10})
    assert task["status_name"] == "succeeded", task["error"]
    made = task["result"]["file"]
    assert made["url"] == task["file_result_link"]
    assert await download(files_api, task["file_result_link"]) == b"ababab"
    polled = await files_api.task(task["id"])
    assert polled["file_result_link"] and await download(files_api, polled["file_result_link"]) == b"ababab"
    history = await files_api.json("GET", "/api/v1/tasks", 200, params={"include": "data,result"})
    listed = next(t for t in history["tasks"] if t["id"] == task["id"])
    assert listed["result"]["file"]["url"] and listed["file_result_link"] == listed["result"]["file"]["url"]
    bare = await files_api.json("GET", "/api/v1/tasks", 200)
    assert next(t for t in bare["tasks"] if t["id"] == task["id"])["file_result_link"] is None


async def test_a_task_without_files_has_a_null_link(files_api: Api) -> None:
    task = await files_api.execute("caption-image", {}, params={"wait": 10})
    assert task["status_name"] == "succeeded" and task["file_result_link"] is None


async def test_an_unknown_file_id_is_a_422_naming_the_field_and_nothing_is_queued(files_api: Api) -> None:
    before = await files_api.json("GET", "/api/v1/tasks", 200)
    error = (await files_api.execute("files", settings_of({"file": {"$file": "no-such-file"}}), status=422))["error"]
    assert error["code"] == "file_not_found" and error["field"] == "node_settings.size.file"
    error = (await files_api.execute("files", settings_of({"file": "not a url"}), status=422))["error"]
    assert error["field"] == "node_settings.size.file"
    assert (await files_api.json("GET", "/api/v1/tasks", 200))["tasks"] == before["tasks"]


@pytest_asyncio.fixture
async def origin(aiohttp_server: Any) -> Any:
    async def photo(_: web.Request) -> web.Response:
        return web.Response(body=PHOTO, content_type="image/png")

    app = web.Application()
    app.router.add_get("/pics/dog.png", photo)
    return await aiohttp_server(app)


async def test_a_url_is_fetched_before_the_node_runs(files_api: Api, origin: Any) -> None:
    url = str(origin.make_url("/pics/dog.png"))
    task = await files_api.execute("files", settings_of({"file": url, "more": [url]}), params={"wait": 10})
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"] == {"size": len(PHOTO), "sha256": PHOTO_SHA, "name": "dog.png", "content_type": "image/png",
                              "more_sizes": [len(PHOTO)]}
    assert task["data"]["node_settings"]["size"]["file"] == url, "data echoes the request as sent"


async def test_a_private_url_fails_the_node_ssrf_blocked_when_the_guard_is_on(
        aiohttp_client: Any, settings: Settings, origin: Any) -> None:
    guarded = settings.model_copy(update={"http_allow_private": False})
    client = await aiohttp_client(create_app(guarded, registry=registry_with_test_types()))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "admin", "admin")
    api = Api(client, token)
    await api.put_flow(FILES_FLOW)
    task = await api.execute("files", settings_of({"file": str(origin.make_url("/pics/dog.png"))}),
                             params={"wait": 10})
    assert task["status_name"] == "failed"
    assert task["error"]["code"] == "ssrf_blocked" and task["error"]["node_id"] == "size"


def form(body: dict[str, Any], **files: bytes) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("body", json.dumps(body), content_type="application/json")
    for path, content in files.items():
        data.add_field(path.replace("__", "."), content, filename=f"{path.rsplit('__', 1)[-1]}.bin",
                       content_type="application/octet-stream")
    return data


async def test_a_multipart_execute_sets_each_file_at_its_path(files_api: Api) -> None:
    body = settings_of({"more": [{"$file": (await upload(files_api, b"xy"))["$file"]}]})
    data = form(body, node_settings__size__file=PHOTO, node_settings__size__more__1=b"abc")
    task = await files_api.json("POST", "/api/v1/flow/files/execute", 201, data=data, params={"wait": "10"})
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"]["sha256"] == PHOTO_SHA and task["result"]["more_sizes"] == [2, 3]
    assert task["result"]["name"] == "file.bin"
    assert task["data"]["node_settings"]["size"]["file"]["url"]


@pytest.mark.parametrize(("name", "field"), [
    ("image", "image"),  # not a settings path
    ("node_settings.size", "node_settings.size"),  # the node's settings themselves
    ("node_settings.size.file.deeper", "node_settings.size.file.deeper"),  # through the body's file value
    ("node_settings.size.file", "node_settings.size.file"),  # the body gives it already
])
async def test_a_bad_part_name_is_a_422_naming_it_and_nothing_is_queued(files_api: Api, name: str,
                                                                         field: str) -> None:
    data = form(settings_of({"file": {"$file": (await upload(files_api))["$file"]}}))
    data.add_field(name, b"abc", filename="a.bin")
    error = (await files_api.json("POST", "/api/v1/flow/files/execute", 422, data=data))["error"]
    assert error["field"] == field, error
    assert (await files_api.json("GET", "/api/v1/tasks", 200))["tasks"] == []


async def test_the_same_multipart_execute_twice_is_one_task(files_api: Api) -> None:
    first = await files_api.json("POST", "/api/v1/flow/files/execute", 201, headers={"Idempotency-Key": "k1"},
                                 data=form(ONE, node_settings__size__file=PHOTO))
    again = await files_api.json("POST", "/api/v1/flow/files/execute", 200, headers={"Idempotency-Key": "k1"},
                                 data=form(ONE, node_settings__size__file=PHOTO))
    assert again["id"] == first["id"]
    other = await files_api.json("POST", "/api/v1/flow/files/execute", 409, headers={"Idempotency-Key": "k1"},
                                 data=form(ONE, node_settings__size__file=b"other bytes"))
    assert other["error"]["code"] == "idempotency_conflict"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_dash_F_executes_with_a_file_in_one_request(files_api: Api, tmp_path: Path) -> None:
    photo = tmp_path / "cat photo.jpg"
    photo.write_bytes(PHOTO)
    url = str(files_api.client.make_url("/api/v1/scade/flow/files/execute?wait=10"))
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-H", f"Authorization: Basic {files_api.token}", "-F", f"body={json.dumps(ONE)}",
        "-F", f"node_settings.size.file=@{photo};type=image/jpeg", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err
    task = json.loads(out)
    assert "status_name" in task, task
    assert task["status_name"] == "succeeded", task
    assert task["result"]["sha256"] == PHOTO_SHA and task["result"]["name"] == "cat photo.jpg"
    assert task["result"]["content_type"] == "image/jpeg"
    assert await download(files_api, task["data"]["node_settings"]["size"]["file"]["url"]) == PHOTO


async def test_a_file_part_over_max_file_bytes_is_a_413_and_nothing_is_kept(
        aiohttp_client: Any, settings: Settings) -> None:
    small = settings.model_copy(update={"max_file_bytes": 1024})
    client = await aiohttp_client(create_app(small, registry=registry_with_test_types()))
    services = client.server.app[SERVICES]
    _, token = await auth.issue_key(services.repo, "admin", "admin")
    api = Api(client, token)
    await api.put_flow(FILES_FLOW)
    error = (await api.json("POST", "/api/v1/flow/files/execute", 413,
                            data=form(ONE, node_settings__size__file=PHOTO)))["error"]
    assert error["code"] == "file_too_large" and error["field"] == "node_settings.size.file"
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"] == []
    blobs = [path for path in Path(small.files_dir).rglob("*") if path.is_file()]
    assert blobs == [], "no blob kept"
