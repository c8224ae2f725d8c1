"""Loading flows: every problem listed at once, ids as strings, revisions by digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_runtime import errors, validation
from graph_runtime.flow import parse, read_file
from tests.support import FlowBuilder, registry_with_test_types

REGISTRY = registry_with_test_types()
SAMPLES = sorted((Path(__file__).resolve().parents[2] / "sample_flows").iterdir())


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_flow_validates(path: Path) -> None:
    validation.validate(read_file(path), REGISTRY)


def test_yaml_numeric_ids_are_strings(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("id: 1607\nnodes:\n  - {id: 1, type: start}\n  - {id: 2, type: end}\nedges:\n  - {from: 1, to: 2}\n")
    flow = read_file(path)
    assert flow.id == "1607" and [n.id for n in flow.nodes] == ["1", "2"]
    assert flow.edges[0].input_name == "1"


def test_all_problems_are_listed_at_once() -> None:
    data = (FlowBuilder("bad")
            .node("a", "start").node("a", "end").node("b", "no.such.type").node("c", "delay", seconds=-5)
            .node("d", "end").node("e", "end")
            .edge("a", "ghost").edge("d", "e", input="x").edge("e", "d", input="x").edge("a", "d", input="x")
            .edge("a", "c", input="nonsense")
            .build())
    with pytest.raises(errors.FlowInvalid) as info:
        validation.validate(parse(data), REGISTRY)
    text = "\n".join(info.value.problems)
    for expected in ("used more than once", "unknown node type 'no.such.type'", "nodes.3.settings.seconds",
                     "no node has id 'ghost'", "already fed", "cycle", "has no parameter 'nonsense'"):
        assert expected in text, (expected, text)


def test_shape_problems_are_listed_with_paths() -> None:
    with pytest.raises(errors.FlowInvalid) as info:
        parse({"id": "bad id!", "nodes": [{"id": "x"}], "edges": [{"from": "x"}], "extra": 1})
    text = "\n".join(info.value.problems)
    for expected in ("id:", "nodes.0.type", "edges.0.to", "extra"):
        assert expected in text, (expected, text)


def test_linked_parameters_may_be_missing_but_settings_are_checked() -> None:
    flow = parse(FlowBuilder().node("s", "start").node("d", "delay").edge("s", "d", output="x", input="seconds").build())
    validation.validate(flow, REGISTRY)
    unlinked = parse(FlowBuilder().node("s", "start").node("d", "delay").build())
    with pytest.raises(errors.FlowInvalid) as info:
        validation.validate(unlinked, REGISTRY)
    assert "seconds" in info.value.problems[0]


def test_digest_changes_with_the_definition_only() -> None:
    one = parse(FlowBuilder().node("s", "start", data={"a": 1, "b": 2}).build())
    same = parse({"edges": [], "nodes": [{"settings": {"data": {"b": 2, "a": 1}}, "type": "start", "id": "s"}], "id": "f"})
    other = parse(FlowBuilder().node("s", "start", data={"a": 2}).build())
    assert one.digest() == same.digest() != other.digest()


def test_put_path_id_must_match() -> None:
    with pytest.raises(errors.FlowInvalid) as info:
        parse({"id": "a", "nodes": [{"id": "s", "type": "start"}]}, flow_id="b")
    assert info.value.field == "id"
    assert parse({"nodes": [{"id": "s", "type": "start"}]}, flow_id="b").id == "b"


def test_edges_cannot_feed_run_settings() -> None:
    data = FlowBuilder().node("s", "start").node("e", "end").edge("s", "e", input="retries").build()
    with pytest.raises(errors.FlowInvalid) as info:
        validation.validate(parse(data), REGISTRY)
    assert "run setting" in info.value.problems[0]


def test_yaml_ids_that_look_like_numbers_keep_their_text(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text("id: 0123\nnodes:\n  - {id: 010, type: start, settings: {data: {on: no, n: 5, x: 0.5, t: 12:30}}}\n"
                    "  - {id: 1_000, type: end}\nedges:\n  - {from: 010, to: 1_000}\n")
    flow = read_file(path)
    assert flow.id == "0123"
    assert [n.id for n in flow.nodes] == ["010", "1_000"]
    assert flow.nodes[0].settings["data"] == {"on": "no", "n": 5, "x": 0.5, "t": "12:30"}


@pytest.mark.parametrize("bad", [".", ".."])
def test_dot_ids_are_refused(bad: str) -> None:
    with pytest.raises(errors.FlowInvalid):
        parse({"id": bad, "nodes": [{"id": "s", "type": "start"}]})


def _problems(data: dict) -> list[str]:
    try:
        validation.validate(parse(data), REGISTRY)
    except errors.FlowInvalid as exc:
        return exc.problems
    return []


def test_an_edge_naming_an_output_the_type_never_produces_is_reported() -> None:
    data = (FlowBuilder("out").node("s", "start").node("c", "constant", value=1).node("e", "end")
            .edge("s", "e", output="anything", input="a").edge("c", "e", output="valu", input="b")
            .edge("c", "e", output="value", input="c").build())
    assert _problems(data) == ["edges.1.output: node 'c' (constant) has no output 'valu' (it produces: value)"]


@pytest.mark.parametrize(("template", "settings", "overridable", "missing"), [
    ("{{ a }} {{ b }}", {}, [], "'b'"),                        # a comes by edge, b from nowhere
    ("{{ a }} {{ b }}", {"b": 1}, [], None),                   # own setting
    ("{{ a }} {{ b }}", {}, ["b"], None),                      # declared as given at execute
    ("{% for x in a %}{{ x }}{{ loop.index }}{% endfor %}{% set y = 1 %}{{ y }}{{ range(2) }}", {}, [], None),
    ("{{ a }} {% if %}", {}, [], None),                        # a syntax error is the node's to report
    ("{{ zeta }}{{ alpha }}", {}, [], "'alpha', 'zeta'"),
])
def test_template_variables_nothing_supplies_are_reported(
        template: str, settings: dict, overridable: list[str], missing: str | None) -> None:
    data = (FlowBuilder("tpl").node("s", "start", data={"a": [1]}).node("t", "template", template=template, **settings)
            .edge("s", "t", output="a", input="a").build())
    data["nodes"][1]["overridable"] = overridable
    problems = _problems(data)
    if missing is None:
        assert problems == []
    else:
        assert problems == [f"nodes.1.settings.template: no setting or edge supplies {missing} (node 't'; "
                            "list a variable given only at execute in its overridable)"]


def test_a_template_fed_by_an_edge_is_not_parsed() -> None:
    data = (FlowBuilder("fed").node("s", "start", data={"src": "{{ nope }}"}).node("t", "template", template="{{ x }}")
            .edge("s", "t", output="src", input="template").build())
    assert _problems(data) == []
