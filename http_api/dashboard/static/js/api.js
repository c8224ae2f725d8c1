// The dashboard is a client of the public API: every call goes to /api/v1 with the key as Basic auth.
const KEY = "graph-runtime.key";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

/** A key may be pasted as the token, as "id:secret" (curl -u) or with its "Basic " prefix. */
export function normaliseKey(text) {
  const value = text.trim().replace(/^(basic|bearer)\s+/i, "");
  return value.includes(":") ? btoa(value) : value;
}

export async function api(method, path, body, { token = key.get(), raw = false, headers = {} } = {}) {
  // credentials "omit": the key travels in the header we set, and a 401's `WWW-Authenticate: Basic`
  // then comes back to this code instead of opening the browser's own password prompt.
  const init = { method, credentials: "omit", headers: { Authorization: `Basic ${token}`, ...headers } };
  if (body !== undefined) {
    if (raw) init.body = body;
    else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  }
  const response = await fetch(`/api/v1${path}`, init);
  if (!response.ok) throw await failure(response, token);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** The ApiError of an answer that is not 2xx; a 401 for the signed-in key (revoked) signs out. */
export async function failure(response, token = key.get()) {
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* a proxy's HTML page: the status says it */ }
  if (response.status === 401 && token === key.get()) {
    key.clear();
    location.hash = "#/signin";
  }
  return new ApiError(response.status, data);
}

/** Upload a File object as the raw body (POST /api/v1/files?name=); returns the file value. */
export async function upload(file) {
  const answer = await api("POST", `/files?name=${encodeURIComponent(file.name)}`, file,
    { raw: true, headers: { "Content-Type": file.type || "application/octet-stream" } });
  return answer.file;
}
