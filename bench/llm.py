"""``llm.chat`` against the OpenAI-compatible stand-in: our overhead per call.

Overhead = the node's run as the executor drives it (parameter check, request built, sent
through the shared guarded session, answer parsed, tokens priced) minus the time the stand-in
spent in its handler for that request. What remains also holds the stand-in's HTTP parsing
outside its handler and the loopback round trip, so it is an upper bound; the ``floor`` figure is
the same subtraction for a bare ``session.post`` of the same body, what any aiohttp client pays.

Standalone: ``python -m bench.llm [CALLS]`` prints the medians as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp.test_utils import TestServer

from bench.figures import Figure
from graph_runtime.attempts import run_attempts
from nodes.builtin import make_http_session
from nodes.builtin.llm import LlmChat
from nodes.contract import RunContext
from tests.openai_standin import STANDIN, make_app

PARAMS = {"model": "gpt-test", "api_key": "sk-bench", "system": "Be brief.", "prompt": "Caption a cat photo.",
          "prices": {"input": 2.5, "output": 10.0}}


async def measure(calls: int) -> dict[str, Figure]:
    """Run ``calls`` chats (after a warm-up) and return the overhead figures in ms per call."""
    server = TestServer(make_app(), host="127.0.0.1")
    await server.start_server()
    state = server.app[STANDIN]
    base_url = str(server.make_url("/v1"))
    params = {**PARAMS, "base_url": base_url}
    ours, floor = Figure(unit="ms/call"), Figure(unit="ms/call")
    try:
        async with make_http_session(allow_private=True) as http:
            node = LlmChat()

            def context(attempt: int, timeout: float | None) -> RunContext:
                return RunContext(task_id=1, node_id="chat", flow_id="bench", attempt=attempt, timeout_s=timeout,
                                  http=http, allow_private=True)

            async def nothing() -> None:
                return None

            async def one_node() -> None:
                await run_attempts(node, params, context, nothing)

            body = json.dumps({"model": "gpt-test", "messages": [{"role": "system", "content": "Be brief."},
                                                                 {"role": "user", "content": "Caption a cat photo."}]})

            async def one_post() -> None:
                async with http.post(base_url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"}) as resp:
                    json.loads(await resp.read())

            for run, figure in ((one_node, ours), (one_post, floor)):
                for _ in range(min(50, calls)):
                    await run()  # warm-up: connections opened, code paths warm
                for _ in range(calls):
                    state.handler_s.clear()
                    started = time.perf_counter()
                    await run()
                    figure.add((time.perf_counter() - started - sum(state.handler_s)) * 1000)
    finally:
        await server.close()
    return {"ours": ours, "floor": floor}


def main(argv: list[str]) -> int:
    calls = int(argv[0]) if argv else 1000
    figures = asyncio.run(measure(calls))
    print(json.dumps({name: {"median_ms": round(f.median or 0, 4), "calls": len(f.samples)}
                      for name, f in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["measure"]
