"""A flow's override_policy decides what node_settings a request may change."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api


def flow(policy: str) -> dict[str, Any]:
    return {
        "id": f"policy-{policy}",
        "override_policy": policy,
        "nodes": [
            {"id": "s", "type": "start", "settings": {"data": {"text": "hi"}}, "overridable": ["data"]},
            {"id": "t", "type": "template", "settings": {"template": "{{ text }}!"}},
            {"id": "e", "type": "end"},
        ],
        "edges": [{"from": "s", "output": "text", "to": "t", "input": "text"},
                  {"from": "t", "output": "text", "to": "e", "input": "text"}],
    }


@pytest.mark.parametrize(("policy", "overrides", "status", "field"), [
    ("permissive", {"t": {"template": "{{ text }}?"}}, 201, None),
    ("declared", {"s": {"data": {"text": "yo"}}}, 201, None),
    ("declared", {"t": {"template": "{{ text }}?"}}, 422, "node_settings.t.template"),
    ("declared", {"s": {"retries": 3}}, 422, "node_settings.s.retries"),
    ("off", {"s": {"data": {"text": "yo"}}}, 422, "node_settings.s"),
    ("off", {}, 201, None),
])
async def test_override_policy(api: Api, policy: str, overrides: dict[str, Any], status: int, field: str | None) -> None:
    await api.put_flow(flow(policy))
    body = await api.execute(f"policy-{policy}", {"node_settings": overrides}, status=status)
    if field is not None:
        assert body["error"]["field"] == field and "overrid" in body["error"]["message"]
        assert await api.services.repo.count_tasks() == 0


async def test_declared_overrides_take_effect(api: Api) -> None:
    await api.put_flow(flow("declared"))
    task = await api.execute("policy-declared", {"node_settings": {"s": {"data": {"text": "yo"}}}},
                             params={"wait": "10"})
    assert task["result"] == {"text": "yo!"}
