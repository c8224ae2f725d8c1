"""Flows and revisions: what a PUT, a flows-dir reload, a delete and the executor see."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from graph_runtime import errors
from storage.repository import Repository
from tests.storage.conftest import make_flow


async def test_same_definition_keeps_the_revision_and_a_change_makes_the_next(repo: Repository) -> None:
    assert await repo.save_flow(make_flow()) == (1, True)
    assert await repo.save_flow(make_flow()) == (1, False)
    assert await repo.save_flow(make_flow(name="renamed")) == (2, True)
    assert await repo.save_flow(make_flow(name="renamed")) == (2, False)


async def test_get_flow_returns_the_latest_or_the_asked_revision(repo: Repository) -> None:
    before = datetime.now(UTC)
    await repo.save_flow(make_flow())
    await repo.save_flow(make_flow(name="v2"))

    flow, revision, created = await repo.get_flow("demo")
    assert (flow.name, revision) == ("v2", 2)
    assert created.tzinfo is not None and created.utcoffset() == timedelta(0)
    assert before <= created <= datetime.now(UTC)

    old, revision, _ = await repo.get_flow("demo", 1)
    assert (old.name, revision) == (None, 1)
    assert old == make_flow()


async def test_unknown_flow_and_revision_are_not_found(repo: Repository) -> None:
    await repo.save_flow(make_flow())
    with pytest.raises(errors.FlowNotFound):
        await repo.get_flow("nope")
    with pytest.raises(errors.RevisionNotFound):
        await repo.get_flow("demo", 2)
    with pytest.raises(errors.FlowNotFound):
        await repo.load_flow("nope", 1)
    with pytest.raises(errors.RevisionNotFound):
        await repo.load_flow("demo", 2)


async def test_list_flows_gives_the_latest_revision_of_each_by_id(repo: Repository) -> None:
    await repo.save_flow(make_flow("b"))
    await repo.save_flow(make_flow("a"))
    await repo.save_flow(make_flow("a", name="second"))
    listed = [(flow.id, flow.name, revision) for flow, revision, _ in await repo.list_flows()]
    assert listed == [("a", "second", 2), ("b", None, 1)]


async def test_a_deleted_flow_is_gone_for_users_but_its_revisions_stay(repo: Repository) -> None:
    await repo.save_flow(make_flow())
    await repo.save_flow(make_flow(name="v2"))
    await repo.delete_flow("demo")

    with pytest.raises(errors.FlowNotFound):
        await repo.get_flow("demo")
    with pytest.raises(errors.FlowNotFound):
        await repo.get_flow("demo", 1)
    with pytest.raises(errors.FlowNotFound):
        await repo.delete_flow("demo")
    assert await repo.list_flows() == []
    # Tasks of a deleted flow still show and resume.
    assert (await repo.load_flow("demo", 1)) == make_flow()
    assert (await repo.load_flow("demo", 2)).name == "v2"


async def test_saving_a_deleted_flow_again_continues_the_numbering(repo: Repository) -> None:
    await repo.save_flow(make_flow())
    await repo.delete_flow("demo")
    assert await repo.save_flow(make_flow()) == (2, True)
    flow, revision, _ = await repo.get_flow("demo")
    assert (flow, revision) == (make_flow(), 2)


async def test_delete_unknown_flow_is_not_found(repo: Repository) -> None:
    with pytest.raises(errors.FlowNotFound):
        await repo.delete_flow("nope")


async def test_load_flow_parses_a_revision_once(repo: Repository) -> None:
    await repo.save_flow(make_flow())
    first = await repo.load_flow("demo", 1)
    assert await repo.load_flow("demo", 1) is first
    assert (await repo.get_flow("demo"))[0] is first


async def test_concurrent_saves_of_a_new_flow_store_one_revision(repo: Repository) -> None:
    results = await asyncio.gather(*(repo.save_flow(make_flow()) for _ in range(8)))
    assert sorted(results) == [(1, False)] * 7 + [(1, True)]


async def test_ids_are_strings_even_when_numeric(repo: Repository) -> None:
    await repo.save_flow(make_flow("1607"))
    flow, _, _ = await repo.get_flow("1607")
    assert flow.id == "1607"
