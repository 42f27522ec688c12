import { ApiError } from "./api.js";

// Building the page's nodes. Text goes in as text nodes only (textContent, append):
// model and user text is never parsed as HTML.

/**
 * @param {string} tag
 * @param {object} props  class, text, dataset, attributes; `on<event>` adds a listener
 * @param {...(Node|string|null)} children  strings become text nodes
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

/** Shows `message` in a form's error line, or hides it (message null). */
export function showError(form, message) {
  const line = form.querySelector(".error");
  line.textContent = message ?? "";
  line.hidden = !message;
}

/** A number field's value, or undefined when it is empty (the server's default). */
export function numberField(form, name) {
  const raw = form.elements[name].value.trim();
  return raw === "" ? undefined : Number(raw);
}

/** An object without its undefined fields (so they are not sent). */
export function defined(fields) {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}

/**
 * The form's "extra fields" (a JSON object merged into the request body). Strict: a
 * field that is not a JSON object throws, for the error line; else it counts as {}
 * (the snippet shows the request without it while it is being typed).
 */
export function extraFields(form, { strict = false } = {}) {
  const raw = form.elements.extra?.value.trim();
  if (!raw) return {};
  let value = null;
  try {
    value = JSON.parse(raw);
  } catch {
    // reported below
  }
  if (value && typeof value === "object" && !Array.isArray(value)) return value;
  if (strict) throw new ApiError(`Extra fields must be a JSON object, like {"seed": 1}; got: ${raw}`);
  return {};
}
