// Keys and secrets, for admin keys (an execute key gets the API's 403, shown as it is).
import { api } from "../api.js";
import { alertBox, field, focusHeading, h, table, when } from "../dom.js";

export async function keysPage(view) {
  view.append(h("h1", {}, "Keys"));
  focusHeading(view);
  const { keys } = await api("GET", "/keys");
  const name = h("input", { type: "text", required: true, maxlength: 200 });
  const scope = h("select", {}, h("option", { value: "execute" }, "execute"), h("option", { value: "admin" }, "admin"));
  const status = h("div", { "aria-live": "polite" });
  view.append(
    h("form", { class: "card filters", onsubmit: create }, field("key-name", "Name", name), field("key-scope", "Scope", scope),
      h("div", {}, h("button", { type: "submit" }, "Create key"))), status,
    table(["id", "name", "scope", "created", "last used", ""], keys.map((k) => h("tr", {},
      h("td", { class: "small" }, k.id), h("td", {}, k.name), h("td", {}, k.scope), h("td", { class: "small" }, when(k.created)),
      h("td", { class: "small" }, when(k.last_used)),
      h("td", {}, k.revoked ? "revoked" : h("button", { type: "button", class: "secondary", "aria-label": `Revoke key ${k.name}`,
        onclick: () => act(() => api("DELETE", `/keys/${encodeURIComponent(k.id)}`)) }, "Revoke"))))));

  async function create(event) {
    event.preventDefault();
    try {
      const made = await api("POST", "/keys", { name: name.value, scope: scope.value });
      status.replaceChildren(h("p", { class: "notice", role: "status" }, "The token is shown once, copy it now: ",
        h("code", { id: "new-token" }, made.key)));
    } catch (error) {
      status.replaceChildren(alertBox(error));
    }
  }

  async function act(call) {
    try { await call(); await redraw(view, keysPage); } catch (error) { status.replaceChildren(alertBox(error)); }
  }
}

export async function secretsPage(view) {
  view.append(h("h1", {}, "Secrets"), h("p", { class: "muted small" }, "Values are write-only: the server never shows one."));
  focusHeading(view);
  const { secrets } = await api("GET", "/secrets");
  const name = h("input", { type: "text", required: true, pattern: "[A-Za-z_][A-Za-z0-9_]*", autocomplete: "off" });
  const mode = h("select", {}, h("option", { value: "prod" }, "prod"), h("option", { value: "dev" }, "dev"));
  const value = h("input", { type: "password", required: true, autocomplete: "new-password" });
  const status = h("div", { "aria-live": "polite" });
  view.append(
    h("form", { class: "card filters", onsubmit: save }, field("secret-name", "Name", name), field("secret-mode", "Mode", mode),
      field("secret-value", "Value", value), h("div", {}, h("button", { type: "submit" }, "Set secret"))), status,
    table(["name", "modes", "updated", ""], secrets.map((s) => h("tr", {},
      h("td", {}, s.name), h("td", {}, s.modes.join(", ")), h("td", { class: "small" }, when(s.updated)),
      h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `Delete secret ${s.name}`,
        onclick: () => act(() => api("DELETE", `/secrets/${encodeURIComponent(s.name)}`)) }, "Delete"))))));

  async function save(event) {
    event.preventDefault();
    await act(() => api("PUT", `/secrets/${encodeURIComponent(name.value)}?mode=${mode.value}`, { value: value.value }));
  }

  async function act(call) {
    try { await call(); await redraw(view, secretsPage); } catch (error) { status.replaceChildren(alertBox(error)); }
  }
}

async function redraw(view, page) {
  view.replaceChildren();
  await page(view);
}
