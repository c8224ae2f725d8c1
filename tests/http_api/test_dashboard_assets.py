"""What the server does for the dashboard: its files at /ui/ (no key, a strict CSP, nothing outside
the static folder) and each node's output on request (``GET /task/{id}?include=outputs``)."""

from __future__ import annotations

from tests.conftest import Api


async def test_the_page_and_its_assets_need_no_key_and_allow_only_this_host(api: Api) -> None:
    page = await api.client.get("/ui/")
    assert page.status == 200
    assert page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert 'src="static/js/app.js"' in await page.text()
    script = await api.client.get("/ui/static/js/app.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    layout = await api.client.get("/ui/static/vendor/dagre.esm.js")
    assert layout.status == 200 and "export" in await layout.text()
    redirect = await api.client.get("/ui", allow_redirects=False)
    assert (redirect.status, redirect.headers["Location"]) == (302, "/ui/")


async def test_nothing_outside_the_static_folder_is_served(api: Api) -> None:
    for path in ("/ui/static/../routes.py", "/ui/static/%2e%2e/routes.py", "/ui/static/..%2f__init__.py",
                 "/ui/static/js", "/ui/static/vendor/dagre.LICENSE.exe"):
        response = await api.client.get(path)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"


async def test_include_outputs_adds_each_nodes_output_to_the_task(api: Api) -> None:
    task = await api.execute("fan-out-fan-in", {}, params={"wait": "10"})
    plain = await api.task(task["id"])
    assert "output" not in plain["nodes"]["join"]  # polls stay small by default
    full = await api.json("GET", f"/api/v1/task/{task['id']}?include=outputs", 200)
    assert full["nodes"]["start"]["output"] == {"video": "clip-001.mp4"}
    assert full["nodes"]["join"]["output"]["resized"] == "clip-001.mp4"
    wrong = await api.json("GET", f"/api/v1/task/{task['id']}?include=result", 422)
    assert wrong["error"]["field"] == "include"
