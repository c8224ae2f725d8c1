"""The dashboard in a real browser: sign in, flows, a flow's graph, run, watch, outputs, cancel."""

from __future__ import annotations

import io

from PIL import Image

from tests.conftest import Api
from tests.dashboard.conftest import Browser
from tests.support import eventually


def photo_bytes() -> bytes:
    """A real 800×600 JPEG with a gradient (a flat image would compress to nothing interesting)."""
    image = Image.new("RGB", (800, 600))
    image.putdata([(x % 256, y % 256, (x + y) % 256) for y in range(600) for x in range(800)])
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


async def test_sign_in_refuses_a_wrong_key_then_lists_the_flows(api: Api, browser: Browser) -> None:
    page = browser.page
    await browser.open()
    await page.get_by_label("Server key").fill("not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="unknown or revoked").wait_for()
    await browser.shot("sign-in")

    await page.get_by_label("Server key").fill(api.token)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("link", name="product-photo-sizes", exact=True).wait_for()
    assert await page.get_by_role("link", name="two-starts-two-ends", exact=True).is_visible()
    await browser.shot("flows")
    # The key lives in this tab's sessionStorage, not in a cookie the server would see.
    assert await page.evaluate("sessionStorage.length") == 1
    assert await page.context.cookies() == []


async def test_a_flow_runs_from_its_graph_and_its_output_image_opens(api: Api, browser: Browser) -> None:
    page = browser.page
    await browser.sign_in(api.token)
    # The graph highlights the run set of the chosen start and end (the plan endpoint's run_set).
    await browser.open("#/flow/two-starts-two-ends")
    await page.get_by_label("Start node").select_option("lang-start")
    await page.get_by_label("End node").select_option("lang-end")
    await page.get_by_text("Runs 3 of 7 nodes").wait_for()
    in_run = await page.locator("#flow-graph g.node.in-run").evaluate_all("gs => gs.map(g => g.dataset.node)")
    assert sorted(in_run) == ["lang-end", "lang-start", "language"]
    # A selection execute would refuse gets the API's own message, in an alert.
    await page.get_by_label("Start node").select_option("card")
    await page.get_by_role("alert").filter(has_text="card").wait_for()
    assert await page.locator("#flow-graph g.node.in-run").count() == 0

    await browser.open("#/flows")
    await page.get_by_role("link", name="product-photo-sizes", exact=True).click()
    graph = page.locator("#flow-graph svg")
    await graph.wait_for()
    # dagre drew the five nodes and six edges; the default start/end's run set is all of them.
    assert await graph.locator("g.node").count() == 5
    assert await graph.locator("polyline.edge").count() == 6
    await page.get_by_text("Runs 5 of 5 nodes in 3 levels").wait_for()
    assert await graph.locator("g.node.in-run").count() == 5
    await browser.shot("flow")

    # The photo input is a file field because image.resize's `image` parameter is a File.
    await page.get_by_label("photo").set_input_files(
        files=[{"name": "shoe.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes()}])
    await page.get_by_role("button", name="Run", exact=True).click()
    heading = page.get_by_role("heading", level=1)
    await page.wait_for_url("**/ui/#/task/*")
    url_before = page.url
    await page.locator("h1[data-status='succeeded']").wait_for(timeout=20_000)  # no reload: the page follows the event stream
    assert page.url == url_before
    assert "succeeded" in await heading.inner_text()
    nodes = page.locator("#nodes [role=row][data-node]")
    assert await nodes.count() == 5
    assert await page.locator("#nodes [role=row][data-status='succeeded']").count() == 5
    assert await page.locator("#nodes .bar.s-succeeded").count() == 5
    task_id = int(url_before.rsplit("/", 1)[1])
    task = await api.task(task_id)
    assert task["status_name"] == "succeeded"
    assert task["data"]["node_settings"]["start"]["data"]["photo"]["$file"]

    await page.get_by_role("link", name="Show node thumbnail").click()
    image = page.locator("#node-panel img")
    await image.wait_for()
    # Polled from here: the page's CSP (script-src 'self') refuses the string eval wait_for_function uses.
    await eventually(lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"), timeout=10)
    # The browser decoded the real JPEG the server made: 150×150, fetched by its signed link.
    assert await image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [150, 150]
    assert "/api/v1/files/" in (await image.get_attribute("src") or "")
    await browser.shot("task")

    # Re-run from the node with another setting: the run form comes prefilled (start, from_task_id),
    # the node's settings are fields from image.resize's schema, and the photo comes from the task.
    await page.get_by_role("link", name="Re-run from thumbnail…").click()
    await page.get_by_text("Runs 4 of 5 nodes").wait_for()
    assert await page.get_by_label("Take upstream outputs from task (rerun)").input_value() == str(task_id)
    await page.locator("summary", has_text="Node settings").click()
    await page.locator("summary", has_text="thumbnail (image.resize)").click()
    await page.get_by_label("width", exact=True).fill("80")
    await page.get_by_role("button", name="Run", exact=True).click()
    await page.wait_for_url(f"**/ui/#/task/{task_id + 1}")
    await page.locator("h1[data-status='succeeded']").wait_for(timeout=20_000)
    rerun = await api.task(task_id + 1)
    assert rerun["data"]["from_task_id"] == task_id
    assert rerun["data"]["node_settings"] == {"thumbnail": {"width": 80}}
    assert rerun["result"]["thumbnail"]["width"] == 80
    assert set(rerun["nodes"]) == {"thumbnail", "medium", "large", "end"}  # the rule: start and what is not upstream of it


async def test_a_running_task_is_cancelled_from_its_page(api: Api, browser: Browser) -> None:
    await api.put_flow({"id": "slow", "nodes": [
        {"id": "start", "type": "start", "settings": {"data": {}}},
        {"id": "wait", "type": "delay", "settings": {"seconds": 30}},
        {"id": "end", "type": "end"}],
        "edges": [{"from": "start", "to": "wait", "input": "value"}, {"from": "wait", "to": "end", "input": "waited"}]})
    task = await api.execute("slow")
    page = browser.page
    await browser.sign_in(api.token)
    await browser.open(f"#/task/{task['id']}")
    await page.locator("#nodes [role=row][data-node='wait'][data-status='running']").wait_for()
    await browser.shot("task-running")
    await page.get_by_role("button", name="Cancel task").click()
    await page.locator("h1[data-status='cancelled']").wait_for()
    assert await page.locator("#nodes [role=row][data-node='wait'][data-status='cancelled']").count() == 1
    assert (await api.task(task["id"]))["status_name"] == "cancelled"
    assert await page.get_by_role("button", name="Cancel task").count() == 0

    # A failed task names the node and the error, on the task and in the node's panel.
    await api.put_flow({"id": "guarded", "nodes": [
        {"id": "start", "type": "start", "settings": {"data": {"big_enough": False}}},
        {"id": "check", "type": "guard", "settings": {"message": "the photo is too small"}},
        {"id": "end", "type": "end"}],
        "edges": [{"from": "start", "output": "big_enough", "to": "check", "input": "condition"},
                  {"from": "check", "to": "end", "input": "ok"}]})
    failed = await api.execute("guarded", params={"wait": "10"})
    await browser.open(f"#/task/{failed['id']}")
    await page.locator("h1[data-status='failed']").wait_for()
    await page.get_by_role("alert").filter(has_text="check: guard_failed: the photo is too small").wait_for()
    await page.get_by_role("link", name="Show node check").click()
    await page.locator("#node-panel").get_by_role("alert").filter(has_text="guard_failed").wait_for()
    assert await page.locator("#nodes [role=row][data-node='end'][data-status='skipped']").count() == 1


async def test_history_pages_admin_pages_by_keyboard_and_a_phone_screen(api: Api, browser: Browser) -> None:
    for _ in range(3):
        await api.execute("fan-out-fan-in", {}, params={"wait": "10"})
    lone = await api.execute("two-starts-two-ends", {"start_node_id": "lang-start", "end_node_id": "lang-end"},
                             params={"wait": "10"})
    page = browser.page
    await browser.sign_in(api.token)
    await browser.open("#/tasks?limit=2")
    rows = page.locator("tr[data-task]")
    await rows.first.wait_for()
    newest = await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.task))")
    assert newest == [lone["id"], lone["id"] - 1]
    await page.get_by_role("link", name="Older →").click()
    await page.locator(f"tr[data-task='{lone['id'] - 2}']").wait_for()
    assert await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.task))") == [lone["id"] - 2, lone["id"] - 3]
    assert await page.get_by_role("link", name="Older →").count() == 0
    await page.get_by_label("Flow").select_option("two-starts-two-ends")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**flow_id=two-starts-two-ends**")
    await page.locator(f"tr[data-task='{lone['id']}']").wait_for()
    assert await rows.count() == 1
    await browser.shot("tasks")

    # Keys: created with the keyboard alone (Tab order reaches the fields and the button), token shown once.
    await browser.open("#/keys")
    await page.get_by_label("Name").focus()
    await page.keyboard.type("ci-job")
    await page.keyboard.press("Tab")  # the scope select
    await page.keyboard.press("Tab")  # the button
    await page.keyboard.press("Enter")
    token = await page.locator("#new-token").inner_text()
    assert (await api.json("GET", "/api/v1/flows", 200, token=token))["flows"]
    await browser.open("#/secrets")
    await page.get_by_label("Name").fill("OPENAI_API_KEY")
    await page.get_by_label("Value").fill("sk-never-shown")
    await page.get_by_role("button", name="Set secret").click()
    await page.get_by_role("cell", name="OPENAI_API_KEY", exact=True).wait_for()
    assert "sk-never-shown" not in await page.content()
    await browser.shot("secrets")

    # An execute key sees the API's 403 on the admin pages, not a broken page.
    await page.evaluate(f"sessionStorage.setItem('graph-runtime.key', {token!r})")
    await browser.open("#/keys")
    await page.get_by_role("alert").filter(has_text="needs an admin key").wait_for()

    # On a phone's screen (signed in with the execute key), the pages fit.
    await page.set_viewport_size({"width": 390, "height": 844})
    for fragment in ("#/flows", "#/flow/product-photo-sizes", "#/tasks"):
        await browser.open(fragment)
        await page.get_by_role("heading", level=1).wait_for()
        # Nothing but the scrolling boxes (tables, the graph) is wider than the screen.
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (fragment, overflow)
    await browser.open("#/flow/product-photo-sizes")
    await page.locator("#flow-graph svg").wait_for()
    await browser.shot("flow-phone")

    # A flow's typed inputs are the form's fields, prefilled with its defaults and described by its schema.
    await browser.open("#/flow/caption-image")
    image_url = page.get_by_label("image_url")
    assert await image_url.input_value() == "https://example.com/cat.jpg"
    assert "http(s) or data: URL" in await page.locator("#input-SYnn-start-image_url-hint").inner_text()
    await image_url.fill("https://example.com/dog.jpg")
    await page.get_by_label("style").fill("long")
    await page.get_by_role("button", name="Run", exact=True).click()
    await page.locator("h1[data-status='succeeded']").wait_for(timeout=20_000)
    task = await api.task(int(page.url.rsplit("/", 1)[1]))
    assert task["data"]["node_settings"] == {"SYnn-start": {"data": {"image_url": "https://example.com/dog.jpg",
                                                                      "style": "long"}}}
    assert "https://example.com/dog.jpg in a long sentence" in task["result"]["caption"]
