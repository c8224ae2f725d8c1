// A flow: its DAG drawn, the run set of the chosen start/end highlighted (POST .../plan), and a
// run form generated from its typed inputs and the node types' parameter schemas.
import { api, upload } from "../api.js";
import { alertBox, credits, field, focusHeading, h } from "../dom.js";
import { objectControls, readControls, resolve } from "../form.js";
import { drawFlow } from "../graph.js";

export async function flowPage(view, flowId, query) {
  const [flow, { node_types: nodeTypes }] = await Promise.all([
    api("GET", `/flows/${encodeURIComponent(flowId)}`), api("GET", "/node-types")]);
  const types = new Map(nodeTypes.map((t) => [t.type, t]));
  const def = flow.definition;
  const byId = new Map(def.nodes.map((n) => [n.id, n]));
  const graph = drawFlow(def);
  const pick = (name, label, chosen, blank) => {
    const select = h("select", { name }, blank ? h("option", { value: "" }, blank) : null,
      def.nodes.map((n) => h("option", { value: n.id, selected: n.id === chosen }, `${n.id} (${n.type})`)));
    return { select, element: field(`run-${name}`, label, select) };
  };
  const start = pick("start", "Start node", query.get("start") || flow.defaults.start_node_id, flow.defaults.start_node_id ? null : "(choose)");
  const end = pick("end", "End node", query.get("end") || flow.defaults.end_node_id, flow.defaults.end_node_id ? null : "(choose)");
  const result = pick("result", "Result node", query.get("result") || "", "(the end node)");
  const mode = h("select", { name: "mode" }, ["prod", "dev"].map((m) => h("option", { value: m, selected: query.get("mode") === m }, m)));
  const fromTask = h("input", { type: "number", min: 1, step: 1, name: "from_task_id", value: query.get("from_task_id") || "" });
  const planBox = h("div", { "aria-live": "polite", class: "small" });
  const inputsBox = h("fieldset", { class: "fields" });
  const settingsBox = h("div");
  const status = h("div", { "aria-live": "assertive" });
  const runButton = h("button", { type: "submit" }, "Run");
  let inputControls = {};
  let planned = 0;  // which plan request is the latest
  const settingControls = new Map();

  view.append(
    h("h1", {}, flow.name || flow.id),
    h("p", { class: "muted" }, flow.description || "", ` · ${flow.id}, revision ${flow.revision} · `,
      h("a", { href: `#/tasks?flow_id=${encodeURIComponent(flow.id)}` }, "its tasks")),
    h("div", { class: "graph", id: "flow-graph" }, graph.svg),
    h("form", { class: "card fields", id: "run-form", onsubmit: run },
      h("h2", {}, "Run"),
      h("div", { class: "filters" }, start.element, end.element, result.element, field("run-mode", "Mode", mode)),
      planBox, inputsBox,
      h("details", {}, h("summary", {}, "Node settings (override the flow's, per node)"), settingsBox),
      field("run-from-task", "Take upstream outputs from task (rerun)", fromTask,
        "A task id of this flow: inputs from nodes outside the run set come from its outputs."),
      h("div", { class: "row" }, runButton), status));

  for (const c of [start.select, end.select, result.select, fromTask]) c.addEventListener("change", plan);
  start.select.addEventListener("change", buildInputs);
  buildInputs();
  await plan();
  focusHeading(view);

  function selection() {
    const body = {};
    if (start.select.value) body.start_node_id = start.select.value;
    if (end.select.value) body.end_node_id = end.select.value;
    if (result.select.value) body.result_node_id = result.select.value;
    if (fromTask.value) body.from_task_id = Number(fromTask.value);
    return body;
  }

  async function plan() {
    const mine = ++planned;  // answers may arrive out of order: only the latest choice's counts
    try {
      const answer = await api("POST", `/flow/${encodeURIComponent(flow.id)}/plan`, selection());
      if (mine !== planned) return;
      graph.highlight(answer.run_set);
      const cost = answer.estimated_cost;
      planBox.replaceChildren(h("p", { id: "plan-summary" },
        `Runs ${answer.run_set.length} of ${def.nodes.length} nodes in ${answer.levels.length} levels; `
        + `estimated cost ${credits(cost.min)}–${credits(cost.max)} credits`
        + (answer.cached.length ? `; ${answer.cached.length} cached` : "") + "."));
      buildSettings(answer.run_set);
    } catch (error) {
      if (mine !== planned) return;
      graph.highlight(null);
      planBox.replaceChildren(alertBox(error));
      buildSettings(def.nodes.map((n) => n.id));
    }
  }

  function buildInputs() {
    const node = byId.get(start.select.value);
    inputsBox.replaceChildren(h("legend", {}, "Inputs"));
    inputControls = {};
    if (!node || node.type !== "start") {
      inputsBox.append(h("p", { class: "muted small" }, "The start node is not a `start` node: give its inputs under Node settings."));
      return;
    }
    const values = (node.settings && node.settings.data) || {};
    const declared = flow.inputs && flow.inputs[node.id];
    const schema = declared || inputsFromEdges(node, values);
    inputControls = objectControls(`input-${node.id}`, schema, schema, { values });
    const list = Object.values(inputControls);
    inputsBox.append(...(list.length ? list.map((c) => c.element) : [h("p", { class: "muted small" }, "This flow takes no inputs.")]));
  }

  /** No typed inputs: what the start node's edges feed tells each input's schema (a file for image.resize's image). */
  function inputsFromEdges(node, values) {
    const properties = {};
    for (const edge of def.edges) {
      if (edge.from !== node.id || !edge.output || properties[edge.output]) continue;
      const target = types.get(byId.get(edge.to).type);
      const params = target && target.params_schema;
      const prop = params && params.properties && params.properties[edge.input];
      properties[edge.output] = prop ? resolve(prop, params) : {};
    }
    for (const [name, value] of Object.entries(values)) {
      if (!properties[name]) properties[name] = typeof value === "string" ? { type: "string" } : typeof value === "number" ? { type: "number" } : {};
    }
    return { type: "object", properties };
  }

  function buildSettings(runSet) {
    settingsBox.replaceChildren();
    settingControls.clear();
    for (const id of runSet) {
      const node = byId.get(id);
      const type = types.get(node.type);
      if (!type || node.type === "start" || node.type === "end") continue;
      const body = h("div", { class: "fields" });
      const details = h("details", {}, h("summary", {}, `${id} (${node.type})`), body);
      // Built when opened: a 1,000-node flow would otherwise make thousands of controls nobody looks at.
      details.addEventListener("toggle", () => {
        if (!details.open || settingControls.has(id)) return;
        const controls = objectControls(`set-${id}`, type.params_schema, type.params_schema, { placeholders: node.settings || {} });
        settingControls.set(id, controls);
        body.append(...Object.values(controls).map((c) => c.element));
      });
      settingsBox.append(details);
    }
  }

  async function withFiles(values) {
    for (const [name, value] of Object.entries(values)) {
      if (value && value.file instanceof File) values[name] = { $file: (await upload(value.file)).$file };
    }
    return values;
  }

  async function run(event) {
    event.preventDefault();
    runButton.disabled = true;
    status.replaceChildren(h("p", { class: "muted" }, "Starting…"));
    try {
      const body = { ...selection(), mode: mode.value, node_settings: {} };
      const data = await withFiles(readControls(inputControls));
      if (Object.keys(data).length) body.node_settings[start.select.value] = { data };
      for (const [id, controls] of settingControls) {
        const values = await withFiles(readControls(controls));
        if (Object.keys(values).length) body.node_settings[id] = { ...body.node_settings[id], ...values };
      }
      const task = await api("POST", `/flow/${encodeURIComponent(flow.id)}/execute`, body);
      location.hash = `#/task/${task.id}`;
    } catch (error) {
      status.replaceChildren(alertBox(error));
      if (error.control) error.control.focus();
      runButton.disabled = false;
    }
  }
}
