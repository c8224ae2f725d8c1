"""Every shipped sample flow loads and runs through the API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import SAMPLE_FLOWS, Api

PIPELINES = {"caption-and-watermark", "video-to-summary", "product-photo-sizes", "product-photo-batch"}


@pytest.fixture
async def github_stand_in(aiohttp_server: Callable[..., Awaitable[Any]]) -> Any:
    """A local server answering like GitHub's repository endpoint (the sample's real target)."""
    seen: list[str] = []

    async def repo(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"full_name": f"{request.match_info['owner']}/{request.match_info['name']}",
                                  "stargazers_count": 71234})

    app = web.Application()
    app.router.add_get("/repos/{owner}/{name}", repo)
    server = await aiohttp_server(app)
    server.seen = seen
    return server


def test_every_sample_flow_is_covered_here() -> None:
    shipped = {p.stem for p in SAMPLE_FLOWS.iterdir()}
    assert shipped == {"caption-image", "fan-out-fan-in", "two-starts-two-ends", "http-fetch", "guarded-summary",
                       "branch-greeting", *PIPELINES}  # the pipelines run in test_sample_pipelines.py


async def test_all_sample_flows_are_loaded(api: Api) -> None:
    flows = (await api.json("GET", "/api/v1/flows", 200))["flows"]
    assert {f["id"] for f in flows} == {"caption-image", "fan-out-fan-in", "two-starts-two-ends", "http-fetch", "1607",
                                        "branch-greeting", *PIPELINES}


async def test_fan_out_fan_in_runs_its_branches_together(api: Api) -> None:
    task = await api.execute("fan-out-fan-in", params={"wait": "10"})
    assert task["status"] == 3
    assert task["result"] == {"media": {"resized": "clip-001.mp4", "transcript": "clip-001.mp4",
                                        "thumbnail": "clip-001.mp4"}}
    branches = [task["nodes"][n] for n in ("resize", "transcribe", "thumbnail")]
    assert max(b["started"] for b in branches) < min(b["finished"] for b in branches)


@pytest.mark.parametrize(("body", "ran", "result"), [
    ({"start_node_id": "lang-start", "end_node_id": "lang-end"}, {"lang-start", "language", "lang-end"},
     {"language": "en"}),
    ({"start_node_id": "text-start", "end_node_id": "card-end"},
     {"text-start", "lang-start", "greet", "language", "card", "card-end"}, {"card": "[en] Hello, Ada!"}),
    ({"start_node_id": "greet", "end_node_id": "card-end", "node_settings": {"greet": {"name": "Grace"},
                                                                             "lang-start": {"data": {"language": "fr"}}}},
     {"greet", "lang-start", "language", "card", "card-end"}, {"card": "[fr] Hello, Grace!"}),
    ({"start_node_id": "text-start", "end_node_id": "card-end", "result_node_id": "greet"},
     {"text-start", "lang-start", "greet", "language", "card", "card-end"}, {"text": "Hello, Ada!"}),
])
async def test_two_starts_two_ends_selects_subgraphs(api: Api, body: dict[str, Any], ran: set[str],
                                                     result: dict[str, Any]) -> None:
    task = await api.execute("two-starts-two-ends", body, params={"wait": "10"})
    assert task["status"] == 3, task["error"]
    assert set(task["nodes"]) == ran
    assert task["result"] == result


async def test_guarded_summary_with_its_numeric_id(api: Api) -> None:
    ok = await api.execute("1607", params={"wait": "10"})
    assert ok["result"] == {"summary": "Summary (≤50 words, ≥1): graph-runtime runs DAGs."}
    stopped = await api.execute("1607", {"node_settings": {"check": {"condition": False}}}, params={"wait": "10"})
    assert stopped["status"] == 4 and stopped["error"] == {"node_id": "check", "code": "guard_failed",
                                                           "message": "text is empty"}
    assert stopped["nodes"]["summary"]["status"] == "skipped"


async def test_http_fetch_calls_the_api_and_picks_a_field(api: Api, github_stand_in: Any) -> None:
    url = str(github_stand_in.make_url("/repos/python/cpython"))
    body = {"node_settings": {"start": {"data": {"url": url, "field": "stargazers_count"}}}}
    task = await api.execute("http-fetch", body, params={"wait": "10"})
    assert task["status"] == 3, task["error"]
    assert task["result"] == {"value": 71234, "status": 200}
    assert github_stand_in.seen == ["/repos/python/cpython"]
    assert task["execution_cost"] > 0, "http_request is priced per run"
