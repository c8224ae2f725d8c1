"""llm.* against the OpenAI-compatible stand-in on loopback, through the executor's tries."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.attempts import run_attempts
from http_api.settings import Settings
from nodes import errors
from nodes.builtin import make_http_session
from nodes.builtin.llm import LlmChat, LlmEmbed, LlmImage, LlmTranscribe
from nodes.contract import NodeType
from tests.nodes.conftest import Server
from tests.nodes.helpers import make_ctx
from tests.openai_standin import tiny_png

KEY = "sk-test-123"


@dataclass
class Ran:
    output: dict[str, Any]
    cost: float
    attempts: int


async def run(node_type: type[NodeType], params: dict[str, Any], *, files: Any = None,
              prices: dict[str, Any] | None = None, http: Any = None, allow_private: bool = True) -> Ran:
    """Run one node as the executor does (validation, timeout, retries, cost)."""
    attempts = 0

    def make_context(attempt: int, timeout: float | None):
        return make_ctx(attempt=attempt, timeout_s=timeout, allow_private=allow_private, files=files,
                        prices=prices or {}, http=http)

    async def before() -> None:
        nonlocal attempts
        attempts += 1

    output, cost = await run_attempts(node_type(), params, make_context, before)
    return Ran(output, cost, attempts)


def chat(server: Server, **params: Any) -> dict[str, Any]:
    return {"base_url": server.base_url, "api_key": KEY, "model": "gpt-test", **params}


async def test_chat_sends_the_prompt_and_returns_the_answer_exactly(standin: Server) -> None:
    ran = await run(LlmChat, chat(standin, prompt="Say hi", system="Be brief.", temperature=0.2, max_tokens=50,
                                  prices={"input": 1000, "output": 2000}))

    assert ran.output == {
        "text": "system: Be brief. | user: Say hi",
        "json": None,
        "usage": {"prompt_tokens": 6, "completion_tokens": 7, "total_tokens": 13},
        "model": "gpt-test-2024-01-01",
        "finish_reason": "stop",
    }
    assert ran.cost == pytest.approx(6 * 1000 / 1e6 + 7 * 2000 / 1e6)  # 0.02: usage × prices per 1M
    [sent] = standin.state.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.json == {"model": "gpt-test", "temperature": 0.2, "max_tokens": 50,
                         "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Say hi"}]}


async def test_messages_are_sent_as_given(standin: Server) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}]
    ran = await run(LlmChat, chat(standin, messages=messages))

    assert ran.output["text"] == "user: a | assistant: b | user: c"
    assert standin.state.requests[0].json["messages"] == messages
    assert ran.cost == 0.0  # no prices given and no LLM_PRICES: tokens cost nothing


async def test_cost_comes_from_the_llm_prices_file(standin: Server, tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text("gpt-test: {input: 3000, output: 15000}\nother: {input: 1}\n")
    prices = Settings(llm_prices=table).llm_price_table()

    ran = await run(LlmChat, chat(standin, prompt="one two three"), prices=prices)

    # prompt "user: one two three" = 4 tokens; answer "user: one two three" = 4 tokens
    assert ran.cost == pytest.approx((4 * 3000 + 4 * 15000) / 1e6)


async def test_the_answered_model_name_is_looked_up_too(standin: Server) -> None:
    prices = {"gpt-test-2024-01-01": {"input": 1e6, "output": 0.0}}
    ran = await run(LlmChat, chat(standin, prompt="x"), prices=prices)
    assert ran.cost == pytest.approx(2.0)  # "user: x" = 2 prompt tokens at 1 credit each


def test_a_bad_llm_prices_file_is_refused_naming_it(tmp_path: Path) -> None:
    table = tmp_path / "prices.json"
    table.write_text('{"gpt-test": {"input": -1}}')
    with pytest.raises(ValueError, match=r"prices\.json"):
        Settings(llm_prices=table).llm_price_table()


async def test_images_go_as_data_urls_and_urls_as_they_are(standin: Server, file_store) -> None:
    png = tiny_png(seed=7)
    stored = await file_store.put_bytes(png, name="dot.png", content_type="image/png")

    ran = await run(LlmChat, chat(standin, prompt="What is this?",
                                  images=[{"$file": stored.id}, "https://example.com/cat.jpg"]),
                    files=file_store)

    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert standin.state.requests[0].json["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": data_url}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}]
    digest = hashlib.sha256(png).hexdigest()[:12]
    assert ran.output["text"] == (f"user: What is this? [image image/png;base64 {len(png)} bytes sha256:{digest}] "
                                  "[image url https://example.com/cat.jpg]")


async def test_an_unknown_image_file_is_invalid_params_naming_it(standin: Server, file_store) -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        await run(LlmChat, chat(standin, prompt="x", images=[{"$file": "nope"}]), files=file_store)
    assert caught.value.field == "images.0"
    assert standin.state.requests == []


async def test_json_mode_asks_for_a_json_object_and_parses_the_answer(standin: Server) -> None:
    ran = await run(LlmChat, chat(standin, prompt="give json", response_format="json"))

    assert standin.state.requests[0].json["response_format"] == {"type": "json_object"}
    assert ran.output["json"] == {"echo": ["user: give json"], "format": "json_object"}


async def test_a_json_schema_is_sent_as_json_schema(standin: Server) -> None:
    schema = {"type": "object", "properties": {"caption": {"type": "string"}}}
    ran = await run(LlmChat, chat(standin, prompt="x", response_format=schema))

    assert standin.state.requests[0].json["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert ran.output["json"]["format"] == "json_schema"


async def test_an_answer_that_is_not_json_when_json_was_asked_fails(standin: Server) -> None:
    standin.state.chat_text = "Sure! Here it is: {"
    with pytest.raises(errors.NodeFailed, match="JSON was asked for") as caught:
        await run(LlmChat, chat(standin, prompt="x", response_format="json"))
    assert caught.value.code == "node_failed"


@pytest.mark.parametrize("params, field", [
    ({}, "prompt"),
    ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, None),
    ({"prompt": "a", "images": ["ftp://x/y.png"]}, "images"),
    ({"prompt": "a", "temperature": 3}, "temperature"),
    ({"prompt": "a", "base_url": "file:///etc"}, "base_url"),
])
async def test_bad_parameters_fail_before_any_request(standin: Server, params, field) -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        await run(LlmChat, {"base_url": standin.base_url, "model": "m", **params})
    assert caught.value.field == field
    assert standin.state.requests == []


async def test_429_waits_out_retry_after_then_succeeds(standin: Server) -> None:
    standin.state.fail_next(1, 429, retry_after="1")
    started = time.monotonic()
    ran = await run(LlmChat, chat(standin, prompt="x"))

    first, second = standin.state.requests
    assert 1.0 <= second.at - first.at < 1.5  # the wait the server asked for, not the backoff's
    assert ran.attempts == 1  # waited inside the try: the executor saw one success
    assert time.monotonic() - started < 2.0


async def test_retry_after_ms_is_honoured(standin: Server) -> None:
    standin.state.failures.append((503, {"retry-after-ms": "200"}))
    await run(LlmChat, chat(standin, prompt="x"))
    first, second = standin.state.requests
    assert 0.2 <= second.at - first.at < 0.6


async def test_a_wait_longer_than_the_timeout_fails_retryable_at_once(standin: Server) -> None:
    standin.state.fail_next(1, 429, retry_after="30")
    started = time.monotonic()
    with pytest.raises(errors.HttpStatusError) as caught:
        await run(LlmChat, chat(standin, prompt="x", timeout_s=2, retries=0))
    assert (caught.value.status, caught.value.retryable) == (429, True)
    assert time.monotonic() - started < 1.0
    assert "stand-in says 429" in caught.value.message


async def test_5xx_without_retry_after_is_retried_by_the_executor(standin: Server) -> None:
    standin.state.fail_next(2, 502, retry_after=None)
    ran = await run(LlmChat, chat(standin, prompt="x", retry_backoff_s=0))
    assert ran.attempts == 3
    assert len(standin.state.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_4xx_is_not_retried(standin: Server, status: int) -> None:
    standin.state.fail_next(1, status, retry_after=None)
    with pytest.raises(errors.HttpStatusError) as caught:
        await run(LlmChat, chat(standin, prompt="x", retry_backoff_s=0))
    assert (caught.value.status, caught.value.retryable) == (status, False)
    assert len(standin.state.requests) == 1


async def test_transcribe_uploads_multipart_and_reads_verbose_json(standin: Server, file_store) -> None:
    audio = await file_store.put_bytes(b"RIFF fake wav bytes", name="talk.wav", content_type="audio/wav")

    ran = await run(LlmTranscribe, {"base_url": standin.base_url, "api_key": KEY, "model": "whisper-1",
                                    "audio": {"$file": audio.id}, "language": "en", "prompt": "names: Ada"},
                    files=file_store)

    assert ran.output == {
        "text": "heard 19 bytes of talk.wav in en",
        "segments": [{"id": 0, "start": 0.0, "end": 1.25, "text": "heard"},
                     {"id": 1, "start": 1.25, "end": 2.5, "text": "19 bytes of talk.wav in en"}],
        "duration_s": 2.5,
    }
    [sent] = standin.state.requests
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.form == {"model": "whisper-1", "response_format": "verbose_json", "language": "en",
                         "prompt": "names: Ada", "file": ("talk.wav", "audio/wav", b"RIFF fake wav bytes")}


async def test_embed_returns_vectors_in_input_order_and_prices_tokens(standin: Server) -> None:
    ran = await run(LlmEmbed, {"base_url": standin.base_url, "model": "embed-1", "input": ["a b", "c"],
                               "prices": {"input": 100000}})

    assert ran.output["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert len(ran.output["vectors"]) == 2
    digest_a = hashlib.sha256(b"a b").digest()
    assert ran.output["vectors"][0] == [round(b / 255, 6) for b in digest_a[:4]]
    assert ran.cost == pytest.approx(3 * 100000 / 1e6)
    assert standin.state.requests[0].json == {"model": "embed-1", "input": ["a b", "c"]}


async def test_embed_takes_one_string(standin: Server) -> None:
    ran = await run(LlmEmbed, {"base_url": standin.base_url, "model": "embed-1", "input": "solo"})
    assert len(ran.output["vectors"]) == 1


@pytest.mark.parametrize("answer", ["b64_json", "url"])
async def test_image_stores_the_generated_images(standin: Server, file_store, answer: str) -> None:
    standin.state.image_answer = answer
    ran = await run(LlmImage, {"base_url": standin.base_url, "model": "img-1", "prompt": "a red dot",
                               "size": "256x256", "n": 2, "prices": {"input": 1e6, "output": 1e4}},
                    files=file_store)

    images = ran.output["images"]
    assert [i["sha256"] for i in images] == [hashlib.sha256(tiny_png(seed=s)).hexdigest() for s in (0, 1)]
    assert {i["content_type"] for i in images} == {"image/png"}
    assert [i["name"] for i in images] == ["image-1.png", "image-2.png"] if answer == "b64_json" else ["0.png", "1.png"]
    stored = await file_store.get(images[1]["$file"])
    assert stored.size == len(tiny_png(seed=1))
    assert standin.state.requests[0].json == {"model": "img-1", "prompt": "a red dot", "n": 2, "size": "256x256"}
    assert ran.cost == pytest.approx(3 + 1.0)  # 3 prompt tokens × 1 + 100 output tokens × 0.01


async def test_a_private_model_host_is_refused_unless_listed(standin: Server) -> None:
    params = chat(standin, prompt="x", retries=0)
    async with make_http_session(allow_private=False) as guarded:
        with pytest.raises(errors.SsrfBlocked):
            await run(LlmChat, params, http=guarded, allow_private=False)
    async with make_http_session(allow_private=False, allow_hosts=[f"127.0.0.1:{standin.port + 1}"]) as other_port:
        with pytest.raises(errors.SsrfBlocked):
            await run(LlmChat, params, http=other_port, allow_private=False)
    async with make_http_session(allow_private=False, allow_hosts=[f"127.0.0.1:{standin.port}"]) as listed:
        ran = await run(LlmChat, params, http=listed, allow_private=False)
    assert ran.output["text"] == "user: x"
    assert len(standin.state.requests) == 1  # the refused tries never connected


async def test_a_listed_name_is_reached_through_the_resolver(standin: Server) -> None:
    params = chat(standin, prompt="x", retries=0, base_url=f"http://localhost:{standin.port}/v1")
    async with make_http_session(allow_private=False) as guarded:
        with pytest.raises(errors.SsrfBlocked):
            await run(LlmChat, params, http=guarded, allow_private=False)
    async with make_http_session(allow_private=False, allow_hosts=["localhost"]) as listed:
        ran = await run(LlmChat, params, http=listed, allow_private=False)
    assert ran.output["finish_reason"] == "stop"


async def test_a_secret_reference_validates_at_load_and_must_be_resolved_to_run(standin: Server) -> None:
    from nodes import contract

    assert contract.validate_params(LlmChat, chat(standin, prompt="x", api_key={"$secret": "OPENAI_API_KEY"}))
    with pytest.raises(errors.InvalidParams) as caught:
        await run(LlmChat, chat(standin, prompt="x", api_key={"$secret": "OPENAI_API_KEY"}))
    assert caught.value.field == "api_key"
    assert standin.state.requests == []
