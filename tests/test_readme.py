"""README.md is true: its set-up commands are the ones CI runs, and its curl walk-through works pasted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.processes import ROOT, SAMPLE_FLOWS, process_env, serving

README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOG_CAPTION = "Describe the image at https://example.com/dog.jpg in a long sentence."
CAT_CAPTION = "Describe the image at https://example.com/cat.jpg in a short sentence."


def section(title: str) -> str:
    """The text under ``## title`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.MULTILINE | re.DOTALL)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def walk_through() -> str:
    [block] = [body for body in code_blocks(README, "bash") if "KEY=paste-the-token-here" in body]
    return block


def with_values(block: str, gr: str, key: str) -> str:
    """The block with only the ``GR=`` and ``KEY=`` lines' values replaced."""
    for name, value in (("GR", gr), ("KEY", key)):
        block, count = re.subn(rf"^{name}=.*$", lambda _, n=name, v=value: f"{n}={v}", block, flags=re.MULTILINE)
        assert count == 1, f"README's walk-through should set {name}= once, not {count} times"
    return block


def json_documents(text: str) -> list[Any]:
    """The JSON values printed one after another (curl -s adds no newline between them)."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return documents
        document, index = decoder.raw_decode(text, index)
        documents.append(document)


def assert_matches_abridged(actual: Any, shown: Any, path: str = "") -> None:
    """``actual`` has what README shows, where ``"…"`` stands for anything."""
    if shown == "…":
        return
    if isinstance(shown, dict):
        assert isinstance(actual, dict), path
        for key, value in shown.items():
            if key != "…":
                assert key in actual, f"{path}.{key} missing"
                assert_matches_abridged(actual[key], value, f"{path}.{key}")
    elif path.endswith(".execution_time"):  # differs per run: only its type is the README's
        assert isinstance(actual, float), path
    else:
        assert actual == shown, f"{path}: {actual!r} != README's {shown!r}"


def test_set_up_has_exactly_the_two_commands_and_ci_runs_the_test_one() -> None:
    blocks = code_blocks(section("Set up"), "bash")
    assert len(blocks) == 2, blocks
    commands = [[line for line in block.splitlines() if line.strip()] for block in blocks]
    assert all(len(lines) == 1 for lines in commands), commands
    serve, test = commands[0][0], commands[1][0]
    assert serve.startswith("python3 -m venv .venv && ") and serve.endswith(" && graph-runtime serve"), serve
    assert "pip install -e '.[media]'" in serve, "serving the sample pipelines needs the media extra"
    # A fresh machine has no Chromium, and the dashboard's tests drive it: the command installs it first.
    chromium = "command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium); "
    assert test.startswith(chromium), test
    test_itself = test.removeprefix(chromium)
    assert test_itself.startswith("python3 -m venv .venv && ") and test_itself.endswith(" && pytest"), test
    assert "pip install -q -e '.[test]'" in test

    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines(), ci
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run is not executable"


@pytest.fixture
def served_like_the_readme(tmp_path: Path) -> Any:
    """``graph-runtime serve`` with no flags in a directory holding ``sample_flows/`` (port by env)."""
    shutil.copytree(SAMPLE_FLOWS, tmp_path / "sample_flows")
    with serving(cwd=tmp_path, port_by_env=True) as server:
        yield server


def test_serve_on_the_defaults_uses_graph_runtime_db_and_sample_flows(served_like_the_readme: Any,
                                                                     tmp_path: Path) -> None:
    server = served_like_the_readme
    assert (tmp_path / "graph_runtime.db").is_file()
    [token] = server.keys_printed
    status, body = server.request("GET", "/api/v1/flows", token=token)
    shipped = sorted(str(yaml.safe_load(path.read_text())["id"]) for path in SAMPLE_FLOWS.iterdir()
                     if path.suffix in (".yaml", ".yml", ".json"))
    assert status == 200 and sorted(flow["id"] for flow in body["flows"]) == shipped, body


def test_the_curl_walk_through_works_as_pasted(served_like_the_readme: Any, tmp_path: Path) -> None:
    server = served_like_the_readme
    [token] = server.keys_printed
    script = tmp_path / "walk-through.sh"
    script.write_text(with_values(walk_through(), server.url, token), encoding="utf-8")

    result = subprocess.run(["bash", "-euo", "pipefail", str(script)], cwd=tmp_path, env=process_env(),
                            capture_output=True, text=True, timeout=45, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    polled, waited, created, listed = json_documents(result.stdout)
    assert polled["status"] == 3, polled
    assert polled["result"]["caption"] == DOG_CAPTION
    assert waited["status"] == 3 and waited["result"]["caption"] == CAT_CAPTION, waited
    assert created["name"] == "ci" and created["scope"] == "execute" and created["key"], created
    keys = {key["name"]: key for key in listed["keys"]}
    assert keys["ci"]["id"] == created["id"] and keys["ci"]["revoked"] is False
    assert all("key" not in key for key in listed["keys"]), listed

    [shown] = [json.loads(body) for body in code_blocks(section("A first run with curl"), "json")]
    assert_matches_abridged(polled, shown)
