// A flow's DAG as SVG, laid out by dagre (vendored: static/vendor/dagre.esm.js, MIT).
import dagre from "../vendor/dagre.esm.js";
import { h } from "./dom.js";

const CHAR_W = 7.2;

/** Draw `definition` (nodes, edges) into an SVG; returns {svg, highlight(runSet|null)}. */
export function drawFlow(definition) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 46, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of definition.nodes) {
    const width = Math.max(node.id.length, node.type.length * 0.85) * CHAR_W + 24;
    g.setNode(node.id, { width, height: 40, node });
  }
  definition.edges.forEach((edge, i) => g.setEdge(edge.from, edge.to, {}, `e${i}`));
  dagre.layout(g);
  const { width, height } = g.graph();
  const svg = h("svg:svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": `Graph of ${definition.nodes.length} nodes and ${definition.edges.length} edges` });
  svg.append(h("svg:defs", {}, h("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, h("svg:path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
  const edges = [];
  for (const e of g.edges()) {
    const points = g.edge(e).points.map((p) => `${p.x},${p.y}`).join(" ");
    const line = h("svg:polyline", { points, class: "edge", "marker-end": "url(#arrow)" });
    edges.push([e.v, e.w, line]);
    svg.append(line);
  }
  const boxes = new Map();
  for (const id of g.nodes()) {
    const { x, y, width: w, height: ht, node } = g.node(id);
    const box = h("svg:g", { class: "node", "data-node": id, transform: `translate(${x - w / 2},${y - ht / 2})` },
      h("svg:title", {}, `${id} (${node.type})`),
      h("svg:rect", { width: w, height: ht }),
      h("svg:text", { x: 10, y: 17 }, id),
      h("svg:text", { x: 10, y: 31, class: "type" }, node.type));
    boxes.set(id, box);
    svg.append(box);
  }
  function highlight(runSet) {
    const set = runSet ? new Set(runSet) : null;
    for (const [id, box] of boxes) {
      box.classList.toggle("in-run", Boolean(set && set.has(id)));
      box.classList.toggle("out-run", Boolean(set && !set.has(id)));
    }
    for (const [from, to, line] of edges) line.classList.toggle("in-run", Boolean(set && set.has(from) && set.has(to)));
  }
  return { svg, highlight };
}
