"""delay: waits its seconds, then passes its value on."""

from __future__ import annotations

import asyncio

import pytest

from nodes import contract, errors
from nodes.builtin import Delay
from tests.nodes.helpers import make_ctx


async def test_waits_then_outputs_its_value() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    output = await Delay().run(Delay.Params(seconds=0.05, value={"a": 1}), make_ctx())

    assert loop.time() - started >= 0.05
    assert output.model_dump() == {"value": {"a": 1}}


async def test_value_defaults_to_null() -> None:
    assert (await Delay().run(Delay.Params(seconds=0), make_ctx())).value is None


@pytest.mark.parametrize("seconds", [-1, 3600.5, "soon"])
def test_seconds_must_be_between_0_and_3600(seconds) -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Delay, {"seconds": seconds})

    assert caught.value.field == "seconds"


def test_min_timeout_exceeds_the_wait() -> None:
    assert Delay().min_timeout(Delay.Params(seconds=3600)) == 3601
    assert Delay().min_timeout(Delay.Params(seconds=0)) == 1
