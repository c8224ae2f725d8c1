// A tiny element builder: text always goes in as text (textContent), never as HTML.
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.setAttribute("class", value);
    else if (name in el && !svg && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function field(id, labelText, control, hint) {
  control.id = id;
  const parts = [h("label", { for: id }, labelText), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("span", { class: "hint", id: hintId }, hint));
  }
  return h("div", { class: "field" }, parts);
}

export function badge(status) {
  return h("span", { class: `badge s-${status}` }, status);
}

export function alertBox(error) {
  const where = error && error.field ? ` (${error.field})` : "";
  return h("div", { class: "alert", role: "alert" }, `${error.message || error}${where}`);
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function seconds(value) {
  if (value === null || value === undefined) return "—";
  return value < 1 ? `${(value * 1000).toFixed(value < 0.01 ? 2 : 0)} ms` : `${value.toFixed(2)} s`;
}

export function credits(value) {
  return value === null || value === undefined ? "—" : String(Math.round(value * 1e6) / 1e6);
}

export function table(headers, rows) {
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows)));
}

/** Move focus to the page's heading after navigation, so keyboard and screen-reader users start there. */
export function focusHeading(view) {
  const heading = view.querySelector("h1");
  if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
}
