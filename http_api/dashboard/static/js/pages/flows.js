import { api } from "../api.js";
import { focusHeading, h, table } from "../dom.js";

export async function flowsPage(view) {
  const { flows } = await api("GET", "/flows");
  const rows = flows.map((flow) => h("tr", {},
    h("td", {}, h("a", { href: `#/flow/${encodeURIComponent(flow.id)}` }, flow.id)),
    h("td", {}, flow.name || ""),
    h("td", { class: "muted small" }, flow.description || ""),
    h("td", { class: "num" }, flow.revision),
    h("td", {}, h("a", { href: `#/tasks?flow_id=${encodeURIComponent(flow.id)}`, "aria-label": `Tasks of ${flow.id}` }, "tasks"))));
  view.append(h("h1", {}, "Flows"),
    flows.length ? table(["id", "name", "description", "revision", "history"], rows)
      : h("p", { class: "muted" }, "No flows yet: put a file in the flows directory or PUT /api/v1/flows/{id}."));
  focusHeading(view);
}
