// A live task: statuses, a node timeline (Gantt), outputs with file previews, errors, cost, cancel
// and rerun from a node; while nodes run, their progress bars, log lines and streamed text (a
// model's tokens). Everything after the first answer comes from the task's event stream
// (watchTask; it falls back to polling), drawn at most once a frame.
import { api } from "../api.js";
import { alertBox, badge, credits, focusHeading, h, seconds, when } from "../dom.js";
import { watchTask } from "../watch.js";

const ENDED = new Set([3, 4, 5]);
const ENDED_NODE = new Set(["succeeded", "failed", "skipped", "cancelled"]);

export async function taskPage(view, taskId, query) {
  let flow = null;  // node id → type, from the flow's definition
  let current = null;
  let shownNode = null;
  let live = false;  // the task was running when the page opened: its task and node events count
  let drawing = 0;  // a frame is asked for
  let taskChanged = false;  // a task event came: the frame redraws the whole page, not only the nodes
  const rows = new Map();
  const progress = new Map();  // node id → {fraction, message}: its last progress event
  const tokens = new Map();  // node id → the text it streamed (token events), joined
  const heading = h("h1", {}, `Task ${taskId} `);
  const facts = h("dl", { class: "facts" });
  const actions = h("div", { class: "row" });
  const problems = h("div", { "aria-live": "polite" });
  const resultBox = h("div");
  const tbody = h("div", { role: "rowgroup", class: "body" });
  const panel = h("section", { class: "card", id: "node-panel", "aria-live": "polite", hidden: true });
  const request = h("pre");
  const logList = h("ol", { id: "log", class: "log", "aria-live": "polite", "aria-label": "Log lines" });
  const noLogs = h("p", { class: "muted small" }, "No log lines.");
  view.append(heading, h("div", { class: "card" }, facts), actions, problems, panel,
    // One table is the node list and the Gantt chart (its last column). It is made of grid rows with
    // ARIA table roles, not <table>: in a long one a row off screen then costs no style, layout or
    // paint (content-visibility), which is most of a 1,000-node page's drawing time.
    h("h2", {}, "Nodes and timeline"),
    h("div", { class: "scroll" }, h("div", { id: "nodes", class: "nodes", role: "table", "aria-label": "Nodes and timeline" },
      h("div", { role: "rowgroup" }, h("div", { role: "row", class: "tr head" },
        ["node", "type", "status", "tries", "time", "cost", "timeline"].map((t) => h("div", { role: "columnheader" }, t)))),
      tbody)),
    h("h2", {}, "Logs"), h("div", { class: "card logs" }, noLogs, logList),
    h("h2", {}, "Result"), resultBox,
    h("details", {}, h("summary", {}, "Request (data)"), request));

  const first = await api("GET", `/task/${taskId}?include=outputs`);
  update(first);
  focusHeading(view);
  if (query.get("node") && first.nodes[query.get("node")]) showNode(query.get("node"), false);
  // The node types come from the flow's definition, fetched after the first draw: a 1,000-node
  // definition takes a while to send, and the statuses matter more.
  api("GET", `/flows/${encodeURIComponent(first.flow_id)}?revision=${first.revision}`).then((answer) => {
    flow = new Map(answer.definition.nodes.map((n) => [n.id, n.type]));
    for (const [id, row] of rows) row.type.textContent = flow.get(id) || "";
    if (!ENDED.has(current.status)) {  // a live task's rows follow the flow's (topological) order
      const order = [...flow.keys()].filter((id) => rows.has(id));
      tbody.append(...order.map((id) => rows.get(id).tr));
    }
  }, () => {});
  // An ended task's stream is its history: read for the log lines and streamed text it holds.
  live = !ENDED.has(first.status);
  return watchTask(taskId, {
    onEvent,
    onTask: update,
    onMode: (mode) => { view.dataset.live = mode; },
    onError: (error) => problems.replaceChildren(alertBox(error)),
  });

  function onEvent(kind, data) {
    if (kind === "log") { addLog(data); return; }
    if (kind === "token") tokens.set(data.node_id, (tokens.get(data.node_id) || "") + data.text);
    else if (kind === "progress") progress.set(data.node_id, data);
    else if (!live) return;  // the page drew this ended task from its answer: statuses are final
    else if (kind === "node") {
      const { node_id: id, ...node } = data;
      const had = current.nodes[id];
      current.nodes[id] = had && "output" in had && !("output" in node) ? { ...node, output: had.output } : node;
      if (id === shownNode && ENDED_NODE.has(node.status)) loadOutputs();
    } else if (kind === "task") {
      if (ENDED.has(data.status)) { live = false; finish(data); return; }
      current = withOutputs(data);
      taskChanged = true;
    }
    redraw();
  }

  /** The ended task, with every node's output (events carry none): one request, then drawn. */
  async function finish(task) {
    try {
      update(await api("GET", `/task/${taskId}?include=outputs`));
    } catch {
      update(withOutputs(task));
    }
  }

  /** `task` (an event's, without outputs) keeping the outputs the page already has. */
  function withOutputs(task) {
    for (const [id, node] of Object.entries(task.nodes)) {
      const had = current.nodes[id];
      if (had && "output" in had && !("output" in node)) node.output = had.output;
    }
    return task;
  }

  /** A node shown in the panel ended while the task runs: fetch the outputs for its panel. */
  async function loadOutputs() {
    try {
      const task = await api("GET", `/task/${taskId}?include=outputs`);
      for (const [id, node] of Object.entries(task.nodes)) {
        if (current.nodes[id] && "output" in node) current.nodes[id].output = node.output;
      }
      redraw();
    } catch { /* the panel says "No output." until the task's end brings them */ }
  }

  function redraw() {
    if (drawing) return;
    drawing = requestAnimationFrame(() => {
      drawing = 0;
      if (taskChanged) { taskChanged = false; update(current); return; }
      // Nodes and the panel only: the heading, facts and Cancel button stay (a click is not lost).
      drawNodes(current);
      if (shownNode) showNode(shownNode, false);
    });
  }

  function addLog(line) {
    noLogs.hidden = true;
    logList.append(h("li", { "data-level": line.level, "data-node": line.node_id },
      h("span", { class: `level l-${line.level}` }, line.level), " ",
      nodeLink(line.node_id, { class: "node" }), " ",
      h("span", { class: "message" }, line.message)));
  }

  function nodeLink(id, attrs) {
    return h("a", { href: `#/task/${taskId}?node=${encodeURIComponent(id)}`, "aria-controls": "node-panel", ...attrs,
      onclick: (event) => {
        event.preventDefault();
        history.replaceState(null, "", event.currentTarget.href);  // no hashchange: the page stays
        showNode(id, true);
      } }, id);
  }

  function typeOf(id) {
    return (flow && flow.get(id)) || "";
  }

  function update(task) {
    current = task;
    heading.replaceChildren(`Task ${task.id} `, badge(task.status_name));
    heading.setAttribute("data-status", task.status_name);
    facts.replaceChildren(...[
      ["flow", h("a", { href: `#/flow/${encodeURIComponent(task.flow_id)}` }, task.flow_id)],
      ["revision", task.revision], ["mode", task.mode], ["created", when(task.created)],
      ["finished", when(task.finished)], ["time", seconds(task.execution_time)],
      ["cost", credits(task.execution_cost)], ["saved cost", credits(task.saved_cost)],
    ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    actions.replaceChildren(ENDED.has(task.status)
      ? h("a", { class: "button", href: rerunLink(task, task.data.start_node_id) }, "Run again…")
      : h("button", { type: "button", class: "danger", id: "cancel", onclick: cancel }, "Cancel task"));
    problems.replaceChildren(...(task.error ? [alertBox({ message: `${task.error.node_id || "task"}: ${task.error.code}: ${task.error.message}` })] : []));
    resultBox.replaceChildren(...(task.result === null ? [h("p", { class: "muted" }, ENDED.has(task.status) ? "No result." : "Not yet.")]
      : [h("div", { class: "previews" }, previews(task.result)), h("pre", {}, JSON.stringify(stripUrls(task.result), null, 2))]));
    request.textContent = JSON.stringify(task.data, null, 2);
    drawNodes(task);
    if (shownNode) showNode(shownNode, false);
  }

  function drawNodes(task) {
    // New rows in the order the nodes started (not yet started: by id); the flow's order once it is known.
    const key = ([id, n]) => `${n.started || "~"} ${id}`;  // ISO times sort as text; "~" after digits
    const entries = Object.entries(task.nodes).map((e) => [key(e), e]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
    const times = entries.flatMap(([, n]) => [n.started, n.finished]).filter(Boolean).map(Date.parse);
    const t0 = task.started ? Date.parse(task.started) : Math.min(...times, Date.now());
    const t1 = Math.max(task.finished ? Date.parse(task.finished) : Date.now(), ...times, t0 + 1);
    // Rows skipped off screen only in a long table: a short one stays whole (printing, screenshots).
    tbody.classList.toggle("long", entries.length > 60);
    for (const [id, node] of entries) {
      let row = rows.get(id);
      if (!row) {
        row = makeRow(id);
        rows.set(id, row);
      }
      if (row.status !== node.status) {
        row.status = node.status;
        row.badge.replaceChildren(badge(node.status));
        row.bar.className = `bar s-${node.status}`;
        row.tr.dataset.status = node.status;
      }
      const told = node.status === "running" ? progress.get(id) : undefined;
      row.progress.hidden = !told;
      if (told) {
        row.progress.value = told.fraction;
        row.progress.title = `${Math.round(told.fraction * 100)} %${told.message ? `: ${told.message}` : ""}`;
      }
      row.tries.textContent = node.attempts;
      // A node pending because no worker of its pool has taken the task yet says so (SPEC §10).
      row.time.textContent = node.cached ? "cached"
        : node.waiting_for_pool ? `waits for pool ${node.waiting_for_pool}` : seconds(node.execution_time);
      row.cost.textContent = node.cached ? `saved ${credits(node.saved_cost)}` : credits(node.cost);
      const start = node.started ? Date.parse(node.started) : null;
      const end = node.finished ? Date.parse(node.finished) : start !== null ? Date.now() : null;
      row.bar.hidden = start === null;
      if (start !== null) {
        row.bar.style.left = `${((start - t0) / (t1 - t0)) * 100}%`;
        row.bar.style.width = `${(Math.max(end - start, 0) / (t1 - t0)) * 100}%`;
        row.bar.title = `${id}: ${node.status}, ${seconds(node.execution_time)}`;
      }
    }
  }

  function makeRow(id) {
    const cell = (cls) => h("div", { role: "cell", class: cls });
    const row = { badge: h("span"), tries: cell("num"), time: cell("num"), cost: cell("num"), bar: h("div", { class: "bar" }) };
    row.type = cell("small muted");
    row.progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": `Progress of ${id}` });
    row.type.textContent = typeOf(id);
    row.tr = h("div", { role: "row", class: "tr", "data-node": id },
      // A link, not a button: 1,000 buttons cost a 1,000-node page a third of its layout time; and
      // the link is the node's address (#/task/N?node=ID opens its panel).
      h("div", { role: "rowheader" }, nodeLink(id, { "aria-label": `Show node ${id}` })),
      row.type, h("div", { role: "cell" }, row.badge, row.progress), row.tries, row.time, row.cost, h("div", { role: "cell", class: "track" }, row.bar));
    tbody.append(row.tr);
    return row;
  }

  function showNode(id, focus) {
    shownNode = id;
    const node = current.nodes[id];
    const told = progress.get(id);
    const text = tokens.get(id);
    panel.hidden = false;
    panel.replaceChildren(...[
      h("h2", { tabindex: -1 }, `Node ${id} `, badge(node.status)),
      h("p", { class: "small muted" }, `${typeOf(id)} · tries ${node.attempts} · ${seconds(node.execution_time)} · `
        + `cost ${credits(node.cost)}${node.cached ? ` · from the cache, saved ${credits(node.saved_cost)}` : ""}`
        + (node.waiting_for_pool ? ` · waiting for a worker of pool ${node.waiting_for_pool}` : "")),
      node.error ? alertBox({ message: `${node.error.code}: ${node.error.message}` }) : null,
      told ? h("p", { class: "small" }, h("progress", { max: 1, value: told.fraction, "aria-label": "Node progress" }),
        ` ${Math.round(told.fraction * 100)} %${told.message ? ` · ${told.message}` : ""}`) : null,
      text ? h("div", {}, h("h3", {}, "Streamed text"), h("pre", { class: "tokens", id: "node-tokens" }, text)) : null,
      h("div", { class: "previews" }, previews(node.output)),
      node.output !== undefined && node.output !== null ? h("pre", {}, JSON.stringify(stripUrls(node.output), null, 2)) : h("p", { class: "muted" }, "No output."),
      ENDED.has(current.status) ? h("a", { href: rerunLink(current, id) }, `Re-run from ${id}…`) : null,
    ].filter(Boolean));
    if (focus) panel.querySelector("h2").focus();
  }

  async function cancel(event) {
    event.target.disabled = true;
    try {
      update(await api("POST", `/task/${taskId}/cancel`));
    } catch (error) {
      problems.replaceChildren(alertBox(error));
      event.target.disabled = false;
    }
  }
}

/** The flow page's run form, prefilled to rerun from `nodeId` with this task's outputs upstream. */
function rerunLink(task, nodeId) {
  const q = new URLSearchParams({ start: nodeId || "", end: task.data.end_node_id || "", mode: task.mode || "prod" });
  if (task.data.result_node_id) q.set("result", task.data.result_node_id);
  if (nodeId && nodeId !== task.data.start_node_id) q.set("from_task_id", task.id);
  return `#/flow/${encodeURIComponent(task.flow_id)}?${q}`;
}

function fileValues(value, out = []) {
  if (Array.isArray(value)) value.forEach((v) => fileValues(v, out));
  else if (value && typeof value === "object") {
    if (typeof value.$file === "string") out.push(value);
    else Object.values(value).forEach((v) => fileValues(v, out));
  }
  return out;
}

/** img/audio/video players for the file values inside `value`, by their signed `url`. */
function previews(value) {
  return fileValues(value).filter((f) => f.url).map((f) => {
    const type = f.content_type || "";
    const label = `${f.name} · ${type} · ${f.size} bytes`;
    const media = type.startsWith("image/") ? h("img", { src: f.url, alt: f.name, loading: "lazy" })
      : type.startsWith("audio/") ? h("audio", { src: f.url, controls: true, preload: "metadata" })
        : type.startsWith("video/") ? h("video", { src: f.url, controls: true, preload: "metadata" }) : null;
    return h("figure", {}, media, h("figcaption", {}, h("a", { href: f.url, download: f.name }, label)));
  });
}

function stripUrls(value) {
  return JSON.parse(JSON.stringify(value, (k, v) => (k === "url" ? undefined : v)));
}

