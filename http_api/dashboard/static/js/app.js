// The router: the part of the URL after "#" names the page, so every page has a link and the
// browser's back button works, with one HTML file served by the server.
import { key } from "./api.js";
import { h } from "./dom.js";
// Pages load on first use: the flows or task page never parses the graph layout library.
const ROUTES = [
  [/^\/signin$/, () => import("./pages/signin.js").then((m) => m.signInPage)],
  [/^\/flows$/, () => import("./pages/flows.js").then((m) => m.flowsPage)],
  [/^\/flow\/([^/]+)$/, () => import("./pages/flow.js").then((m) => m.flowPage)],
  [/^\/tasks$/, () => import("./pages/tasks.js").then((m) => m.tasksPage)],
  [/^\/task\/(\d+)$/, () => import("./pages/task.js").then((m) => m.taskPage)],
  [/^\/keys$/, () => import("./pages/admin.js").then((m) => m.keysPage)],
  [/^\/secrets$/, () => import("./pages/admin.js").then((m) => m.secretsPage)],
];

let leave = null;  // the current page's clean-up (a task page stops watching)
let shown = 0;  // which navigation is current: a page that finishes loading after the next began is stopped at once

function parse() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/flows", query: new URLSearchParams(query) };
}

async function render() {
  if (leave) { leave(); leave = null; }
  const mine = ++shown;
  const { path, query } = parse();
  const signedIn = Boolean(key.get());
  document.getElementById("nav").hidden = !signedIn;
  if (!signedIn && path !== "/signin") { location.hash = "#/signin"; return; }
  for (const link of document.querySelectorAll("nav a")) {
    const active = path.startsWith(link.getAttribute("href").slice(1).replace(/s$/, ""));
    if (active) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  for (const [pattern, load] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    const view = h("div");
    main.replaceChildren(view);
    try {
      const page = await load();
      const stop = (await page(view, ...match.slice(1).map(decodeURIComponent), query)) || null;
      if (mine !== shown) { if (stop) stop(); return; }
      leave = stop;
      // After the next paint: what bench/dashboard.py reads as the page's render time.
      requestAnimationFrame(() => setTimeout(() => performance.mark("page-rendered")));
    } catch (error) {
      view.replaceChildren(h("div", { class: "alert", role: "alert" }, error.message));
    }
    return;
  }
  main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/flows" }, "Back to the flows")));
}

document.getElementById("sign-out").addEventListener("click", () => { key.clear(); location.hash = "#/signin"; });
window.addEventListener("hashchange", render);
render();
