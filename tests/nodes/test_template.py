"""template: sandboxed Jinja2, strict about undefined variables.

The worker processes and their limits are tested in test_template_sandbox.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from nodes import contract, errors
from nodes.builtin import Template, template_sandbox
from nodes.contract import RunPolicy
from tests.nodes.helpers import make_ctx

# One node instance for the module, as the registry keeps one per process: its worker
# processes serve every test (each on its own event loop).
TEMPLATE = Template()


@pytest.fixture(scope="module", autouse=True)
def stop_the_workers() -> Iterator[None]:
    yield
    asyncio.run(TEMPLATE.close())


async def _render(source: str, **variables: Any) -> str:
    params = contract.validate_params(Template, {"template": source, **variables})
    assert isinstance(params, Template.Params)
    return (await TEMPLATE.run(params, make_ctx())).text


async def test_renders_its_variables() -> None:
    text = await _render(
        "Describe this in a {{ style }} sentence: {{ items|join(', ') }}",
        style="short",
        items=["a", "b"],
    )

    assert text == "Describe this in a short sentence: a, b"


async def test_does_not_autoescape() -> None:
    assert await _render("{{ html }}", html="<b>&</b>") == "<b>&</b>"


async def test_undefined_variable_is_invalid_params() -> None:
    with pytest.raises(errors.InvalidParams, match="'stlye' is undefined") as caught:
        await _render("{{ stlye }}", style="short")

    assert caught.value.field == "template"
    assert not caught.value.retryable


async def test_undefined_attribute_is_invalid_params() -> None:
    with pytest.raises(errors.InvalidParams, match="no attribute 'missing'"):
        await _render("{{ obj.missing }}", obj={"present": 1})


async def test_syntax_error_names_the_line() -> None:
    with pytest.raises(errors.InvalidParams, match="syntax error on line 2"):
        await _render("fine\n{% for %}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
async def test_sandbox_blocks_attribute_escapes(source) -> None:
    with pytest.raises(errors.InvalidParams, match="unsafe"):
        await _render(source)


async def test_runtime_error_is_a_node_failure_not_retried() -> None:
    with pytest.raises(errors.NodeFailed, match="ZeroDivisionError") as caught:
        await _render("{{ 1 / 0 }}")

    assert not caught.value.retryable
    assert not isinstance(caught.value, errors.InvalidParams)


def test_compiled_templates_are_cached() -> None:
    # The cache lives in each worker; the function is the same in this process.
    source = "cached {{ x }}"

    assert template_sandbox._compile(source) is template_sandbox._compile(source)


@pytest.mark.parametrize("source", ["{{ 9 ** (9 ** 7) }}", "{{ 'a' * 10 ** 10 }}", "{{ [1] * 10 ** 9 }}",
                                    "{{ 10 ** 10 * 'ab' }}"])
async def test_operations_that_would_stall_the_server_are_refused(source: str) -> None:
    with pytest.raises(errors.InvalidParams) as info:
        await _render(source)
    assert info.value.field == "template"


async def test_ordinary_arithmetic_still_works() -> None:
    text = await _render("{{ 2 ** 10 }} {{ 'ab' * 3 }} {{ 3 * 4 }} {{ 1.5 ** 2 }} {{ 7 % 3 }} {{ '%03d|%-4s|' % (5, 'ab') }}")

    assert text == "1024 ababab 12 2.25 1 005|ab  |"


async def test_widths_within_the_output_limit_still_work() -> None:
    text = await _render("{{ 'x'|center(5) }}|{{ '{:>6.2f}'.format(3.14159) }}|{{ '%5s'|format('ab') }}|{{ [1, 2]|join('-') }}")

    assert text == "  x  |  3.14|   ab|1-2"


def test_a_template_has_a_default_timeout() -> None:
    # A render holds a worker process; a node without timeout_s must not hold it forever.
    assert Template.policy == RunPolicy(timeout_s=30.0)
