"""Templates render in resource-limited worker processes: attacks fail the node, not the server.

Real processes throughout: each test gets its own pool and closes it.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from graph_runtime.attempts import run_attempts
from nodes import errors
from nodes.builtin import Template
from nodes.builtin.template import TemplateRenderer
from nodes.limits import MIB, Limits
from nodes.registry import Registry
from tests.nodes.helpers import make_ctx
from tests.support import eventually

# Attacks that took the server down when templates rendered on a thread (issue 8).
BIG = "x" * 1_000_000
DOUBLING = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
FOREVER = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
ATTACKS = [
    ("{{ 'x'|center(10**9) }}", "invalid_params"),
    ("{{ 'x'.center(10**9) }}", "invalid_params"),
    ("{{ '%0999999999d' % 1 }}", "invalid_params"),
    ("{{ '%0999999999d'|format(1) }}", "invalid_params"),
    ("{{ '%*d' % (10**9, 1) }}", "invalid_params"),
    ("{{ '%.999999999f' % 1.0 }}", "invalid_params"),
    ("{{ '{:>999999999}'.format(1) }}", "invalid_params"),
    ("{{ '{:>{w}}'.format(1, w=10**9) }}", "invalid_params"),
    ("{{ '{:.999999999f}'.format(1.0) }}", "invalid_params"),
    ("{{ ([s]*1000)|join }}", "invalid_params"),
    ("{{ ''.join([s]*1000) }}", "invalid_params"),
    # No cheap check catches these: the worker's RLIMIT_AS does.
    (DOUBLING, "node_failed"),
    ("{{ (s ~ s ~ s)|replace('x', s) }}", "node_failed"),
]
SMALL = Limits(template_memory_bytes=256 * MIB)  # the same guarantee as the default, reached sooner


@pytest.fixture
async def renderer() -> AsyncIterator[TemplateRenderer]:
    pool = TemplateRenderer(workers=2)
    yield pool
    await pool.aclose()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def exists(pid: int) -> bool:
    """Whether ``pid`` is still a process (a zombie counts: it must also have been reaped)."""
    return Path(f"/proc/{pid}").exists()


async def test_renders_exact_text(renderer: TemplateRenderer) -> None:
    variables = {"name": "Zoë", "items": [1, 2, 3], "nested": {"k": [None, True]}}
    source = "Hi {{ name }} – {{ items|sum }} {{ nested.k }} {{ '%05.1f|{:>4}' % 3.14159 }}{{ '{:>4}'.format('ab') }}"

    text = await renderer.render(source, variables, Limits())

    assert text == "Hi Zoë – 6 [None, True] 003.1|{:>4}  ab"


async def test_text_with_lone_surrogates_survives_the_pipe(renderer: TemplateRenderer) -> None:
    assert await renderer.render("{{ s }}", {"s": "a\ud800b"}, Limits()) == "a\ud800b"


@pytest.mark.parametrize(("source", "code"), ATTACKS)
async def test_an_attack_fails_the_node_quickly_and_the_server_stays_small(
    renderer: TemplateRenderer, source: str, code: str
) -> None:
    await renderer.render("warm", {}, SMALL)  # the worker's start is not the attack's cost
    rss, peak = rss_bytes(), peak_rss_bytes()
    started = time.monotonic()

    with pytest.raises(errors.NodeFailed) as caught:
        await renderer.render(source, {"s": BIG}, SMALL)

    assert caught.value.code == code
    assert time.monotonic() - started < 5
    assert rss_bytes() - rss < 32 * MIB
    assert peak_rss_bytes() - peak < 32 * MIB
    assert await renderer.render("{{ 1 + 1 }}", {}, SMALL) == "2", "the pool still works"


async def test_running_out_of_memory_names_the_limit(renderer: TemplateRenderer) -> None:
    with pytest.raises(errors.NodeFailed, match="more than the 256 MiB of memory") as caught:
        await renderer.render(DOUBLING, {}, SMALL)

    assert not caught.value.retryable


async def test_text_over_the_output_limit_is_output_too_large(renderer: TemplateRenderer) -> None:
    limits = Limits(max_output_bytes=1000)

    assert await renderer.render("{{ 'x' * 1000 }}", {}, limits) == "x" * 1000
    with pytest.raises(errors.OutputTooLarge, match="longer than the 1000 bytes"):
        await renderer.render("{% for i in range(1001) %}x{% endfor %}", {}, limits)
    with pytest.raises(errors.OutputTooLarge):
        await renderer.render("{{ 'é' * 600 }}", {}, limits)  # 600 characters, 1200 bytes


async def test_a_render_past_its_timeout_is_killed_and_the_next_one_works() -> None:
    template = Template()
    try:
        await template.run(Template.Params(template="warm"), make_ctx())
        [pid] = template._renderer.worker_pids()
        started = time.monotonic()

        # The executor's path: timeout_s from the settings, asyncio.timeout, node_timeout.
        with pytest.raises(errors.NodeTimeout):
            await run_attempts(template, {"template": FOREVER, "timeout_s": 1}, lambda _, t: make_ctx(timeout_s=t), _nothing)

        assert time.monotonic() - started < 3
        await eventually(lambda: not exists(pid), timeout=5)
        assert await template.run(Template.Params(template="{{ 6 * 7 }}"), make_ctx()) == Template.Output(text="42")
        assert template._renderer.worker_pids() != [pid]
    finally:
        await template.close()


async def _nothing() -> None:
    return None


async def test_cpu_limit_ends_a_runaway_render(renderer: TemplateRenderer) -> None:
    limits = Limits(template_cpu_s=1)
    await renderer.render("warm", {}, limits)
    [pid] = renderer.worker_pids()

    with pytest.raises(errors.NodeFailed, match="more than the 1 s of CPU") as caught:
        async with asyncio.timeout(45):  # far above the CPU limit (a loaded box): SIGXCPU ends it first
            await renderer.render(FOREVER, {}, limits)

    assert caught.value.code == "node_failed"
    await eventually(lambda: not exists(pid), timeout=5)
    assert await renderer.render("ok", {}, limits) == "ok"


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGKILL, "SIGKILL"), (signal.SIGSEGV, "SIGSEGV")])
async def test_a_worker_that_dies_fails_its_render_and_is_replaced(
    renderer: TemplateRenderer, signum: int, name: str
) -> None:
    await renderer.render("warm", {}, Limits())
    [pid] = renderer.worker_pids()
    render = asyncio.create_task(renderer.render(FOREVER, {}, Limits()))
    await asyncio.sleep(0.2)

    os.kill(pid, signum)

    with pytest.raises(errors.NodeFailed, match=f"killed \\({name}\\)"):
        await asyncio.wait_for(render, 5)
    await eventually(lambda: not exists(pid), timeout=5)
    assert await renderer.render("{{ 'again' }}", {}, Limits()) == "again"


async def test_concurrent_renders_share_the_pool(renderer: TemplateRenderer) -> None:
    texts = await asyncio.gather(*(renderer.render("n={{ n }}", {"n": n}, Limits()) for n in range(20)))

    assert texts == [f"n={n}" for n in range(20)]
    assert len(renderer.worker_pids()) == 2


async def test_a_stuck_render_does_not_hold_up_the_others(renderer: TemplateRenderer) -> None:
    stuck = asyncio.create_task(renderer.render(FOREVER, {}, Limits()))
    await asyncio.sleep(0.1)

    texts = await asyncio.wait_for(asyncio.gather(*(renderer.render("{{ n }}", {"n": n}, Limits()) for n in range(10))), 5)

    assert texts == [str(n) for n in range(10)]
    assert not stuck.done()
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck


async def test_a_waiting_render_that_is_cancelled_passes_on_its_turn() -> None:
    pool = TemplateRenderer(workers=1)
    try:
        await pool.render("warm", {}, Limits())

        async def first_then_cancel() -> str:
            text = await pool.render("first", {}, Limits())
            gone.cancel()  # woken for the worker this render just released, but not yet running
            return text

        first = asyncio.create_task(first_then_cancel())  # holds the only worker
        await asyncio.sleep(0)
        gone = asyncio.create_task(pool.render("gone", {}, Limits()))  # waits, first in line
        await asyncio.sleep(0)
        last = asyncio.create_task(pool.render("last", {}, Limits()))  # waits behind it

        assert await asyncio.wait_for(first, 5) == "first"
        assert await asyncio.wait_for(last, 5) == "last", "the cancelled waiter's turn went to the next"
        assert gone.cancelled()
    finally:
        await pool.aclose()


async def test_a_change_of_limits_starts_a_worker_with_the_new_limits(renderer: TemplateRenderer) -> None:
    await renderer.render("a", {}, Limits())
    [before] = renderer.worker_pids()

    assert await renderer.render("b", {}, SMALL) == "b"

    assert renderer.worker_pids() != [before]
    await eventually(lambda: not exists(before), timeout=5)


async def test_workers_run_under_the_limits(renderer: TemplateRenderer) -> None:
    await renderer.render("warm", {}, SMALL)
    [pid] = renderer.worker_pids()

    limits = {line[:26].strip(): line[26:].split() for line in Path(f"/proc/{pid}/limits").read_text().splitlines()}
    assert limits["Max address space"][:2] == [str(256 * MIB)] * 2
    assert limits["Max core file size"][:2] == ["0", "0"]
    soft_cpu, hard_cpu = (int(value) for value in limits["Max cpu time"][:2])
    assert 10 <= soft_cpu <= 12 and soft_cpu < hard_cpu  # this render's budget, under a lifetime ceiling


async def test_workers_do_not_inherit_the_servers_secrets(renderer: TemplateRenderer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPH_RUNTIME_DATABASE_URL", "postgresql://user:secret@db/x")
    await renderer.render("warm", {}, Limits())
    [pid] = renderer.worker_pids()

    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"secret" not in environ
    assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2", "3", "4", "5"]  # std streams, 2 pipes, /dev/null


async def test_large_variables_and_text_cross_the_pipes(renderer: TemplateRenderer) -> None:
    big = "y" * (3 * MIB)  # far more than a pipe's buffer, both ways

    text = await renderer.render("{{ s }}|{{ s|length }}", {"s": big}, Limits())

    assert text == big + "|" + str(len(big))


async def test_workers_import_jinja2_not_the_server(renderer: TemplateRenderer) -> None:
    await renderer.render("warm", {}, Limits())
    [pid] = renderer.worker_pids()

    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "markupsafe" in maps, "jinja2's C speedups are loaded: the map shows imports"
    for heavy in ("pydantic_core", "aiohttp", "sqlalchemy", "orjson"):
        assert heavy not in maps


async def test_a_warm_render_takes_well_under_5_ms(renderer: TemplateRenderer) -> None:
    source = "Describe this in a {{ style }} sentence: {{ items|join(', ') }}"
    variables = {"style": "short", "items": ["a", "b"]}
    await renderer.render(source, variables, Limits())
    durations = []
    for _ in range(50):
        started = time.perf_counter()
        await renderer.render(source, variables, Limits())
        durations.append(time.perf_counter() - started)

    assert statistics.median(durations) < 0.005


async def test_close_stops_the_workers_and_a_later_render_starts_again(renderer: TemplateRenderer) -> None:
    await asyncio.gather(*(renderer.render("x", {}, Limits()) for _ in range(2)))
    pids = renderer.worker_pids()

    await renderer.aclose()

    assert renderer.worker_pids() == []
    assert not any(exists(pid) for pid in pids)
    assert await renderer.render("again", {}, Limits()) == "again"


async def test_the_registry_closes_the_template_workers() -> None:
    registry = Registry([Template])
    template = registry.instance("template")
    assert isinstance(template, Template)
    await template.run(Template.Params(template="warm"), make_ctx())
    [pid] = template._renderer.worker_pids()

    await registry.aclose()

    assert not exists(pid)


async def test_variables_that_cannot_be_sent_fail_the_node(renderer: TemplateRenderer) -> None:
    with pytest.raises(errors.NodeFailed, match="cannot be sent to the renderer"):
        await renderer.render("{{ f }}", {"f": lambda: 1}, Limits())
