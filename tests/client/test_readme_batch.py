"""README's batch of 20 product photos, run as printed against a real server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.client.conftest import server_url
from tests.conftest import Api

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def batch_block() -> str:
    section = re.search(r"^## Python client\n(.*?)(?=^## )", README, re.MULTILINE | re.DOTALL)
    assert section, "README has no 'Python client' section"
    [block] = re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    return block


def test_the_batch_is_eight_lines() -> None:
    assert len(batch_block().splitlines()) == 9  # eight and the blank line after the imports


@pytest.mark.timeout(180)
async def test_the_batch_of_20_resizes_every_photo(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "out").mkdir()
    for number in range(20):
        Image.new("RGB", (320 + number, 240), (number * 12, 80, 160)).save(tmp_path / "photos" / f"p{number:02}.jpg")
    block = batch_block().replace('"http://127.0.0.1:8080"', repr(server_url(api)))
    monkeypatch.chdir(tmp_path)  # the block's paths are relative; the server's are absolute
    await asyncio.to_thread(exec, compile(block, "README.md", "exec"), {"KEY": api.token})
    made = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert len(made) == 60 and made[:3] == ["p00-large.jpg", "p00-medium.webp", "p00-thumbnail.jpg"], made
    with Image.open(tmp_path / "out" / "p19-thumbnail.jpg") as thumbnail:
        assert thumbnail.size == (150, 150)
    with Image.open(tmp_path / "out" / "p19-medium.webp") as medium:
        assert medium.size == (600, 425)  # 339×240 scaled to 600 wide
