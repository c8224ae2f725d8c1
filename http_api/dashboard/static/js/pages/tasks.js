// Task history (GET /api/v1/tasks): filters by flow, status and mode, paged by next_before.
import { api } from "../api.js";
import { badge, credits, field, focusHeading, h, seconds, table, when } from "../dom.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const PAGE = 25;

export async function tasksPage(view, query) {
  const { flows } = await api("GET", "/flows");
  const chosen = (name) => query.get(name) || "";
  const select = (name, values) => h("select", { name },
    h("option", { value: "" }, "(any)"), values.map((v) => h("option", { value: v, selected: v === chosen(name) }, v)));
  const flowSelect = select("flow_id", flows.map((f) => f.id));
  const statusSelect = select("status", STATUSES);
  const modeSelect = select("mode", ["prod", "dev"]);
  const filters = h("form", { class: "filters card", role: "search", onsubmit: apply },
    field("filter-flow", "Flow", flowSelect), field("filter-status", "Status", statusSelect),
    field("filter-mode", "Mode", modeSelect), h("div", {}, h("button", { type: "submit" }, "Filter")));
  const params = new URLSearchParams({ limit: chosen("limit") || String(PAGE) });
  for (const name of ["flow_id", "status", "mode", "before"]) if (chosen(name)) params.set(name, chosen(name));
  const page = await api("GET", `/tasks?${params}`);
  const rows = page.tasks.map((t) => h("tr", { "data-task": t.id },
    h("td", {}, h("a", { href: `#/task/${t.id}` }, `#${t.id}`)),
    h("td", {}, t.flow_id), h("td", {}, badge(t.status_name)), h("td", { class: "small" }, when(t.created)),
    h("td", { class: "num" }, seconds(t.execution_time)), h("td", { class: "num" }, credits(t.execution_cost)),
    h("td", { class: "small muted" }, Object.entries(t.node_counts).map(([s, n]) => `${n} ${s}`).join(", "))));
  const link = (before) => {
    const q = new URLSearchParams(query);
    if (before) q.set("before", before); else q.delete("before");
    return `#/tasks?${q}`;
  };
  view.append(h("h1", {}, "Tasks"), filters,
    rows.length ? table(["task", "flow", "status", "created", "time", "cost", "nodes"], rows) : h("p", { class: "muted" }, "No tasks match."),
    h("nav", { class: "row", "aria-label": "Pages", style: null },
      chosen("before") ? h("a", { href: link(null) }, "Newest") : null,
      page.next_before ? h("a", { href: link(page.next_before), id: "older" }, "Older →") : null));
  focusHeading(view);

  function apply(event) {
    event.preventDefault();
    const q = new URLSearchParams(chosen("limit") ? { limit: chosen("limit") } : {});
    for (const [name, control] of [["flow_id", flowSelect], ["status", statusSelect], ["mode", modeSelect]]) {
      if (control.value) q.set(name, control.value);
    }
    location.hash = `#/tasks?${q}`;
  }
}
