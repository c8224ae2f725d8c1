"""The task page on the event stream (issue 13): a running node's progress bar, its log lines and
its streamed text appear while it runs, without polling; the final task event ends the watch; an
ended task's page shows its logs from the stored history; without a stream the page polls."""

from __future__ import annotations

import asyncio

from tests.conftest import Api
from tests.dashboard.conftest import Browser
from tests.support import FlowBuilder


async def _chatty(api: Api, hold: float) -> None:
    # test.chatty: progress 0 "starting", a log line, tokens "hello" " world", progress 0.5 from a
    # thread, then `hold` seconds of waiting, then progress 1.
    await api.put_flow(FlowBuilder("chatty").node("start", "start", data={})
                       .node("talk", "test.chatty", hold=hold)
                       .node("end", "end").edge("start", "talk", input="data").edge("talk", "end").build())


def _task_reads(browser: Browser, task_id: int) -> list[str]:
    """The page's requests for the task itself (a poll is one of these)."""
    return [url for url in browser.requested if f"/api/v1/task/{task_id}?" in url]


async def test_a_running_nodes_progress_logs_and_tokens_show_live_from_the_stream(api: Api, browser: Browser) -> None:
    await _chatty(api, hold=120)  # it runs until the test cancels it: nothing here races its end
    task = await api.execute("chatty")
    page = browser.page
    await browser.sign_in(api.token)
    await browser.open(f"#/task/{task['id']}")
    row = page.locator("#nodes [role=row][data-node='talk'][data-status='running']")
    await row.wait_for()
    await page.locator("#main > div[data-live='stream']").wait_for()

    # The log pane: level, node and message of the node's one log line.
    line = page.locator("#log li[data-node='talk']")
    await line.wait_for()
    assert await line.get_attribute("data-level") == "info"
    assert " ".join((await line.inner_text()).split()) == "INFO talk no key"  # the level in capitals (CSS)
    # The row's progress bar at the last fraction the node reported (0.5, from its thread).
    bar = row.get_by_label("Progress of talk")
    await bar.wait_for()
    assert await bar.evaluate("p => p.value") == 0.5
    assert await bar.get_attribute("title") == "50 %: from a thread"
    # The node panel: the streamed text, the tokens joined.
    await page.get_by_role("link", name="Show node talk").click()
    await page.locator("#node-tokens").wait_for()
    assert await page.locator("#node-tokens").inner_text() == "hello world"
    assert await page.locator("#node-panel").get_by_label("Node progress").evaluate("p => p.value") == 0.5
    await browser.shot("task-live")

    await asyncio.sleep(1.5)  # three poll periods: a page that polled would have asked again by now
    assert len(_task_reads(browser, task["id"])) == 1, "one read of the task, then only its event stream"
    assert (await api.task(task["id"]))["nodes"]["talk"]["status"] == "running"

    # The final task event ends it: cancelled, and the page shows the task as it ended.
    await page.get_by_role("button", name="Cancel task").click()
    await page.locator("h1[data-status='cancelled']").wait_for()
    await page.locator("#nodes [role=row][data-node='talk'][data-status='cancelled']").wait_for()
    assert await page.get_by_label("Progress of talk").is_hidden(), "a progress bar only while the node runs"


async def test_an_ended_tasks_page_shows_its_logs_and_streamed_text_from_the_history(api: Api, browser: Browser) -> None:
    await _chatty(api, hold=0)
    task = await api.execute("chatty", params={"wait": "20"})
    assert task["status_name"] == "succeeded"
    page = browser.page
    await browser.sign_in(api.token)
    await browser.open(f"#/task/{task['id']}?node=talk")
    await page.locator("h1[data-status='succeeded']").wait_for()
    await page.locator("#log li[data-node='talk']").filter(has_text="no key").wait_for()
    assert await page.locator("#log li").count() == 1
    await page.locator("#node-tokens").wait_for()
    assert await page.locator("#node-tokens").inner_text() == "hello world"
    assert await page.locator("#nodes [role=row][data-node='talk'] progress").is_hidden()


async def test_without_the_stream_the_page_polls_until_the_end(api: Api, browser: Browser) -> None:
    await _chatty(api, hold=2)
    page = browser.page
    await page.route("**/api/v1/task/*/events", lambda route: route.abort())  # the stream cannot be had
    await browser.sign_in(api.token)
    task = await api.execute("chatty")
    await browser.open(f"#/task/{task['id']}")
    await page.locator("#main > div[data-live='poll']").wait_for()
    await page.locator("h1[data-status='succeeded']").wait_for(timeout=30_000)
    assert await page.locator("#nodes [role=row][data-node='talk'][data-status='succeeded']").count() == 1
    assert len(_task_reads(browser, task["id"])) > 1, "polled"
