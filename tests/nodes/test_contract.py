"""The contract helpers the runtime uses on node settings: validate_params and split_policy."""

from __future__ import annotations

import pytest

from nodes import contract, errors
from nodes.builtin import Delay, End, Guard, HttpRequest, Merge, Pick, Template
from nodes.contract import RunPolicy


def test_valid_params_give_the_model() -> None:
    params = contract.validate_params(Delay, {"seconds": 1.5})

    assert isinstance(params, Delay.Params)
    assert params.seconds == 1.5


def test_linked_params_may_be_missing() -> None:
    # "value" comes from an edge: at load time only the settings exist.
    assert contract.validate_params(Pick, {"path": "a.b"}, linked=frozenset({"value"})) is None


def test_missing_unlinked_param_is_named() -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Pick, {"value": {}}, linked=frozenset({"other"}))

    assert caught.value.field == "path"


def test_bad_setting_is_reported_even_with_a_linked_param_missing() -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Delay, {"seconds": -1}, linked=frozenset({"value"}))

    assert caught.value.field == "seconds"
    assert not caught.value.retryable


def test_nested_field_path_is_dotted() -> None:
    settings = {"url": "https://example.com/", "headers": {"X-Ok": "yes", "X-Bad": 1}}

    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(HttpRequest, settings)

    assert caught.value.field == "headers.X-Bad"


def test_unknown_param_is_refused_unless_the_type_takes_variables() -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Guard, {"condition": True, "mesage": "typo"})
    assert caught.value.field == "mesage"

    params = contract.validate_params(Template, {"template": "{{ x }}", "x": 1})
    assert params.model_extra == {"x": 1}


def test_accepts_input() -> None:
    assert Template.accepts_input("anything")
    assert End.accepts_input("caption")
    assert Merge.accepts_input("left")
    assert not Guard.accepts_input("conditoin")
    assert HttpRequest.accepts_input("json")
    assert not HttpRequest.accepts_input("timeout_s")


def test_split_policy_takes_policy_keys_out() -> None:
    policy, rest = contract.split_policy(
        {"url": "https://example.com/", "timeout_s": 5}, HttpRequest.policy
    )

    assert rest == {"url": "https://example.com/"}
    # Keys not given keep the type's defaults.
    assert policy == RunPolicy(timeout_s=5, retries=2, retry_backoff_s=1)


def test_split_policy_without_policy_keys_keeps_the_default() -> None:
    policy, rest = contract.split_policy({"seconds": 1}, Delay.policy)

    assert policy is Delay.policy
    assert rest == {"seconds": 1}


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"retries": 1.5}, "retries"),
        ({"retry_backoff_s": -1}, "retry_backoff_s"),
    ],
)
def test_split_policy_names_a_bad_policy_key(settings, field) -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.split_policy(settings, RunPolicy())

    assert caught.value.field == field


def test_http_request_has_no_timeout_param() -> None:
    # timeout_s must have been taken out by split_policy; reaching Params it is a typo.
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(HttpRequest, {"url": "https://example.com/", "timeout_s": 3})

    assert caught.value.field == "timeout_s"


def test_delay_never_times_out_before_its_seconds() -> None:
    assert Delay().min_timeout(Delay.Params(seconds=30)) >= 30
