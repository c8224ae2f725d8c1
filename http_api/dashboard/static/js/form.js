// Form controls generated from JSON Schemas: a flow's typed `inputs` and the node types'
// `params_schema` (GET /api/v1/node-types). Each control reads back a typed value, or undefined
// when left empty (the flow's own setting then applies).
import { field, h } from "./dom.js";

const LONG_TEXT = new Set(["prompt", "template", "system", "body", "text", "message"]);

/** The schema behind $ref (inside `root`) and a nullable anyOf, and whether null was allowed. */
export function resolve(schema, root) {
  let s = schema || {};
  for (let i = 0; i < 8 && s.$ref; i++) s = s.$ref.split("/").slice(1).reduce((o, k) => (o || {})[k], root) || {};
  const options = s.anyOf || s.oneOf;
  if (options) {
    const real = options.filter((o) => o.type !== "null");
    if (real.length === 1) return { ...resolve(real[0], root), description: s.description || real[0].description, default: s.default };
  }
  return s;
}

export function isFile(schema) {
  return Boolean(schema && schema.properties && schema.properties.$file);
}

function shown(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** One labelled control for `schema`; `value` prefills it, `placeholder` only shows the current setting. */
export function schemaControl(id, name, schema, root, { value, placeholder } = {}) {
  const s = resolve(schema, root);
  const hint = [s.description, s.default !== undefined && s.default !== null ? `default ${shown(s.default)}` : ""]
    .filter(Boolean).join(" · ");
  let control;
  let read;
  if (isFile(s)) {
    control = h("input", { type: "file", name });
    read = () => (control.files[0] ? { file: control.files[0] } : value);
  } else if (Array.isArray(s.enum) || s.type === "boolean") {
    const options = s.type === "boolean" ? [true, false] : s.enum;
    control = h("select", { name }, h("option", { value: "" }, placeholder !== undefined ? `(flow: ${shown(placeholder)})` : "(default)"),
      options.map((o) => h("option", { value: JSON.stringify(o), selected: value === o }, shown(o))));
    read = () => (control.value === "" ? undefined : JSON.parse(control.value));
  } else if (s.type === "integer" || s.type === "number") {
    control = h("input", { type: "number", name, step: s.type === "integer" ? "1" : "any", value: shown(value),
      min: s.minimum, max: s.maximum, placeholder: shown(placeholder) });
    read = () => (control.value === "" ? undefined : Number(control.value));
  } else if (s.type === "string") {
    const long = LONG_TEXT.has(name) || (s.maxLength || 0) > 300;
    control = long ? h("textarea", { name, placeholder: shown(placeholder) }, shown(value))
      : h("input", { type: "text", name, value: shown(value), placeholder: shown(placeholder) });
    read = () => (control.value === "" ? undefined : control.value);
  } else {
    control = h("textarea", { name, placeholder: shown(placeholder) }, shown(value));
    read = () => {
      if (control.value.trim() === "") return undefined;
      try { return JSON.parse(control.value); } catch { throw Object.assign(new Error(`${name}: not valid JSON`), { control }); }
    };
  }
  return { element: field(id, s.title && s.title.toLowerCase() !== name.toLowerCase() ? `${name} (${s.title})` : name, control, hint), read, control };
}

/** Controls for each property of an object schema; `values` prefill, `placeholders` show current settings. */
export function objectControls(prefix, schema, root, { values = {}, placeholders = {}, skip = [] } = {}) {
  const s = resolve(schema, root);
  const controls = {};
  for (const [name, prop] of Object.entries(s.properties || {})) {
    if (skip.includes(name)) continue;
    controls[name] = schemaControl(`${prefix}-${name}`.replace(/[^\w-]/g, "_"), name, prop, root,
      { value: values[name], placeholder: placeholders[name] });
  }
  return controls;
}

/** Read controls into an object, leaving out the empty ones; files stay {file: File} for the caller to upload. */
export function readControls(controls) {
  const out = {};
  for (const [name, c] of Object.entries(controls)) {
    const value = c.read();
    if (value !== undefined) out[name] = value;
  }
  return out;
}
