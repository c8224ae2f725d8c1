"""The registry: core types, duplicates and entry-point plugins."""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path

import pytest

from nodes import errors
from nodes.builtin import CORE_TYPES
from nodes.registry import ENTRY_POINT_GROUP, Registry, default_registry
from tests.nodes.helpers import make_ctx
from tests.nodes.plugin_sample import Shout
from tests.processes import run_cli

CORE_NAMES = {
    "start",
    "end",
    "constant",
    "template",
    "delay",
    "guard",
    "pick",
    "merge",
    "switch",
    "map",
    "subflow",
    "http_request",
    "file.fetch",
    "llm.chat", "llm.transcribe", "llm.embed", "llm.image",
    "image.info", "image.resize", "image.crop", "image.convert", "image.watermark",
    "media.probe", "media.transcode", "media.extract_audio", "media.frames", "media.trim",
}


def _entry_point(value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name="x", value=value, group=ENTRY_POINT_GROUP)


def test_default_registry_has_every_core_type() -> None:
    registry = default_registry(plugins=False)

    assert {t.type for t in registry} == CORE_NAMES
    assert len(registry) == len(CORE_TYPES) == len(CORE_NAMES)


@pytest.mark.parametrize("node_type", CORE_TYPES, ids=lambda t: t.type)
def test_core_types_describe_themselves(node_type) -> None:
    # GET /node-types shows these: a schema for both models and a description.
    assert node_type.description.strip()
    assert node_type.Params.model_json_schema()["type"] == "object"
    assert node_type.Output.model_json_schema()["type"] == "object"


def test_only_the_fetching_types_charge_per_run() -> None:
    # The others are free or priced by the usage they report (tokens, megapixels, media seconds).
    costs = {t.type: t.cost.price(seconds=10, usage={}) for t in CORE_TYPES}

    assert costs.pop("http_request") > 0 and costs.pop("file.fetch") > 0
    assert set(costs.values()) == {0.0}


def test_registering_a_name_twice_fails() -> None:
    registry = default_registry(plugins=False)
    start = registry.get("start")

    with pytest.raises(errors.DuplicateNodeType, match="start"):
        registry.register(start)


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(errors.UnknownNodeType, match="nope"):
        default_registry(plugins=False).get("nope")


async def test_entry_point_naming_a_class_registers_it() -> None:
    registry = Registry()

    registry.load_entry_points([_entry_point("tests.nodes.plugin_sample:Shout")])

    assert registry.get("acme.shout") is Shout
    node = registry.instance("acme.shout")
    output = await node.run(Shout.Params(text="hi"), make_ctx())
    assert output.text == "HI"


def test_entry_point_naming_a_callable_lets_it_register() -> None:
    registry = default_registry(plugins=False)

    registry.load_entry_points([_entry_point("tests.nodes.plugin_sample:register")])

    assert "acme.whisper" in registry
    assert len(registry) == len(CORE_TYPES) + 1


def test_plugin_cannot_take_a_registered_name_and_is_skipped() -> None:
    registry = default_registry(plugins=False)
    registry.register(Shout)

    registry.load_entry_points([_entry_point("tests.nodes.plugin_sample:Shout")])

    assert registry.get("acme.shout") is Shout and len(registry) == len(CORE_TYPES) + 1
    [failure] = registry.failed_plugins
    assert failure.error == "DuplicateNodeType: node type 'acme.shout' is already registered"


# --- broken plugins: a real distribution on sys.path, as pip would install one -------------------

METADATA = "Metadata-Version: 2.1\nName: acme-nodes\nVersion: 1.0\n"
ENTRY_POINTS = f"""[{ENTRY_POINT_GROUP}]
echo = acme_ok:Echo
broken = acme_broken:register
"""
OK_MODULE = """from pydantic import BaseModel

from nodes.contract import NodeType


class Echo(NodeType):
    type = "acme.echo"
    description = "Returns its text."

    class Params(BaseModel):
        text: str

    class Output(BaseModel):
        text: str

    async def run(self, params, ctx):
        return self.Output(text=params.text)
"""
BROKEN_MODULE = "import x  # a dependency the package forgot to declare\n"
HALFWAY_MODULE = """from tests.nodes.plugin_sample import Whisper

def register(registry):
    registry.register(Whisper)
    raise RuntimeError("second type failed")
"""
PLUGIN_FLOW = """id: uses-the-plugin
nodes:
  - {id: s, type: start, settings: {data: {x: hi}}}
  - {id: echo, type: acme.echo}
  - {id: e, type: end}
edges:
  - {from: s, to: echo, output: x, input: text}
  - {from: echo, to: e}
"""


def install_acme(site: Path) -> Path:
    """A distribution ``acme-nodes 1.0`` with a working (acme.echo) and a broken entry point, under ``site``."""
    dist_info = site / "acme_nodes-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(METADATA, encoding="utf-8")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    (site / "acme_broken.py").write_text(BROKEN_MODULE, encoding="utf-8")
    (site / "acme_ok.py").write_text(OK_MODULE, encoding="utf-8")
    return site


def plugin_failed_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == "plugin_failed"]


def test_a_plugin_that_fails_to_import_is_skipped_and_reported_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.syspath_prepend(str(install_acme(tmp_path)))

    with caplog.at_level(logging.INFO, logger="nodes.registry"):
        registry = default_registry()

    assert "acme.echo" in registry and "start" in registry  # the working entry point and the core
    [record] = plugin_failed_records(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None
    message = record.getMessage()
    assert "acme-nodes 1.0" in message and "'broken'" in message and "acme_broken:register" in message
    assert message.endswith("ModuleNotFoundError: No module named 'x'")
    assert [(f.entry_point, f.distribution, f.error) for f in registry.failed_plugins] == [
        ("broken", "acme-nodes 1.0", "ModuleNotFoundError: No module named 'x'")]


def test_a_callable_that_fails_halfway_registers_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme_halfway.py").write_text(HALFWAY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = default_registry(plugins=False)

    registry.load_entry_points([_entry_point("acme_halfway:register")])

    assert "acme.whisper" not in registry and len(registry) == len(CORE_TYPES)
    assert registry.failed_plugins[0].error == "RuntimeError: second type failed"
    assert registry.failed_plugins[0].distribution is None  # not from an installed package: the module names it


def test_every_command_works_with_a_broken_plugin_installed(tmp_path: Path) -> None:
    site = install_acme(tmp_path / "site")
    flow = tmp_path / "uses-the-plugin.yaml"
    flow.write_text(PLUGIN_FLOW, encoding="utf-8")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))

    result = run_cli("flows", "validate", str(flow), cwd=tmp_path, env={"PYTHONPATH": path})

    assert result.returncode == 0, result.stderr
    assert f"{flow}: ok" in result.stdout
    assert "Traceback" not in result.stderr and " ERROR " not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if " WARNING " in line]  # one line, no traceback
    assert "WARNING" in line and "acme-nodes 1.0" in line and "action=plugin_failed" in line
    assert "ModuleNotFoundError: No module named 'x'" in line
