"""llm.chat streams its answer (SPEC §11, issue 12 item 1): each text delta a ``token`` event of the
task, in order; the output and cost the same as without streaming; a server that does not stream
still works. Against the OpenAI-compatible stand-in, which streams as OpenAI does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from graph_runtime.attempts import run_attempts
from nodes import errors
from nodes.builtin.llm import LlmChat
from tests.conftest import Api
from tests.http_api.test_events import _stream
from tests.nodes.conftest import Server
from tests.nodes.helpers import make_ctx
from tests.nodes.test_llm import chat
from tests.openai_standin import pieces
from tests.support import FlowBuilder

PRICES = {"input": 1000, "output": 2000}
ANSWER = "system: Be brief. | user: Say hi"  # what the stand-in answers this prompt
USAGE = {"prompt_tokens": 6, "completion_tokens": 7, "total_tokens": 13}


async def _run(params: dict[str, Any], said: list[tuple[str, dict[str, Any]]] | None = None) -> tuple[Any, float]:
    """One llm.chat run as the executor makes it; ``said`` collects what it tells the task (None: no task)."""
    say = None if said is None else (lambda kind, data: said.append((kind, data)))
    return await run_attempts(LlmChat(), params,
                              lambda attempt, timeout: make_ctx(attempt=attempt, timeout_s=timeout,
                                                                allow_private=True, say=say), _nothing)


async def _nothing() -> None:
    return None


async def test_the_answer_streams_as_tokens_and_the_output_and_cost_are_unchanged(standin: Server) -> None:
    said: list[tuple[str, dict[str, Any]]] = []
    params = chat(standin, prompt="Say hi", system="Be brief.", prices=PRICES)
    output, cost = await _run(params, said)
    plain_output, plain_cost = await _run(params)  # outside a task: no stream asked for

    tokens = [data["text"] for kind, data in said if kind == "token"]
    assert tokens == pieces(ANSWER) and len(tokens) == 7, "one token event per delta, in order"
    assert all(data["node_id"] == "n" for _, data in said)
    assert output == plain_output == {"text": "".join(tokens), "json": None, "usage": USAGE,
                                      "model": "gpt-test-2024-01-01", "finish_reason": "stop"}
    assert cost == plain_cost == pytest.approx(6 * 1000 / 1e6 + 7 * 2000 / 1e6)
    streamed, plain = standin.state.requests
    assert streamed.json["stream"] is True and streamed.json["stream_options"] == {"include_usage": True}
    assert "stream" not in plain.json


async def test_a_server_that_ignores_stream_answers_json_and_that_works(standin: Server) -> None:
    standin.state.streams = False
    said: list[tuple[str, dict[str, Any]]] = []
    output, cost = await _run(chat(standin, prompt="Say hi", system="Be brief.", prices=PRICES), said)
    assert standin.state.requests[0].json["stream"] is True
    assert output["text"] == ANSWER and output["usage"] == USAGE and said == []
    assert cost == pytest.approx(0.02)


async def test_stream_false_never_asks(standin: Server) -> None:
    said: list[tuple[str, dict[str, Any]]] = []
    output, _ = await _run(chat(standin, prompt="Say hi", stream=False), said)
    assert "stream" not in standin.state.requests[0].json and said == []
    assert output["text"] == "user: Say hi"


async def test_json_answers_stream_too(standin: Server) -> None:
    said: list[tuple[str, dict[str, Any]]] = []
    output, _ = await _run(chat(standin, prompt="x", response_format="json"), said)
    assert output["json"] == {"echo": ["user: x"], "format": "json_object"}
    assert "".join(data["text"] for kind, data in said if kind == "token") == output["text"]


async def test_a_retry_after_429_then_streams(standin: Server) -> None:
    standin.state.fail_next(1, retry_after="0")
    said: list[tuple[str, dict[str, Any]]] = []
    output, _ = await _run(chat(standin, prompt="Say hi"), said)
    assert len(standin.state.requests) == 2 and output["text"] == "user: Say hi"
    assert [data["text"] for kind, data in said if kind == "token"] == ["user:", " Say", " hi"]


async def test_an_error_chunk_mid_stream_fails_the_node(standin: Server, aiohttp_server: Any) -> None:
    from aiohttp import web

    async def broken(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n')
        await response.write(b'data: {"error": {"message": "the model crashed"}}\n\n')
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", broken)
    server = await aiohttp_server(app)
    said: list[tuple[str, dict[str, Any]]] = []
    with pytest.raises(errors.NodeFailed, match="the model crashed"):
        await _run(chat(standin, prompt="x", base_url=str(server.make_url("/v1")), retries=0), said)
    assert [data["text"] for kind, data in said if kind == "token"] == ["par"]


# -- through a real server: the task's event stream -------------------------------------------------

async def test_a_flows_llm_chat_tokens_are_the_tasks_token_events_in_order(api: Api, standin: Server) -> None:
    await api.put_flow(FlowBuilder("ask").node("start", "start", data={"question": "Say hi"})
                       .node("ask", "llm.chat", base_url=standin.base_url, model="gpt-test", system="Be brief.",
                             prices=PRICES)
                       .node("end", "end")
                       .edge("start", "ask", output="question", input="prompt")
                       .edge("ask", "end", output="text", input="text").build())
    gate = standin.state.stream_gate = asyncio.Event()
    task = await api.execute("ask")
    reading = asyncio.ensure_future(_stream(api, task["id"]))  # subscribed while the model is mid-answer
    await asyncio.sleep(0.3)
    assert not reading.done()
    gate.set()
    events = await asyncio.wait_for(reading, 30)

    assert events[-1]["event"] == "task" and events[-1]["data"]["status_name"] == "succeeded"
    tokens = [e["data"] for e in events if e["event"] == "token"]
    assert [t["text"] for t in tokens] == pieces(ANSWER) and {t["node_id"] for t in tokens} == {"ask"}
    ask = [e["event"] for e in events if e["event"] != "task" and e["data"]["node_id"] == "ask"]
    assert ask[0] == "node" and ask[-1] == "node" and set(ask[1:-1]) == {"token"}, "tokens while it runs"
    ended = await api.task(task["id"])
    assert ended["result"] == {"text": "".join(t["text"] for t in tokens)}
    assert ended["nodes"]["ask"]["cost"] == pytest.approx(0.02)
    assert ended["execution_cost"] == pytest.approx(0.02)
