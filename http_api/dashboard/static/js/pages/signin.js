import { api, key, normaliseKey } from "../api.js";
import { alertBox, field, h } from "../dom.js";

export async function signInPage(view) {
  const input = h("input", { type: "password", autocomplete: "current-password", required: true, spellcheck: "false" });
  const status = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "fields card", onsubmit: submit },
    field("key", "Server key", input, "The token `graph-runtime serve` printed (GRAPH_RUNTIME_KEY), or id:secret. "
      + "It stays in this browser tab only (sessionStorage)."),
    h("div", {}, h("button", { type: "submit" }, "Sign in")), status);
  view.append(h("h1", {}, "Sign in"), form);
  input.focus();

  async function submit(event) {
    event.preventDefault();
    const token = normaliseKey(input.value);
    try {
      await api("GET", "/flows", undefined, { token });
    } catch (error) {
      status.replaceChildren(alertBox(error.status === 401 ? { message: "That key is unknown or revoked." } : error));
      input.focus();
      return;
    }
    key.set(token);
    location.hash = "#/flows";
  }
}
