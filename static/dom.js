// DOM helpers. Every string is added as a text node or through textContent; nothing in the page
// parses HTML, so data from the server (job names, commands, output) can never become markup.

/** Appends children: strings and numbers as text nodes, nodes as they are; arrays are flattened. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/**
 * Creates an element. `attrs`: `class`, `text` (textContent), `on<event>` (listeners),
 * `dataset`, `value`/`checked` (properties, set after the children so a select finds its
 * option), booleans (present when true), anything else as an attribute.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  const late = [];
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value" || key === "checked") late.push([key, value]);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  for (const [key, value] of late) el[key] = value;
  return el;
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** The element with this id. */
export const byId = (id) => document.getElementById(id);

/** Visually hidden text for screen readers. */
export const sr = (text) => h("span", { class: "sr-only" }, text);

/** A status badge; the class is derived from a fixed list, never from data. */
const STATUSES = new Set(["running", "succeeded", "failed", "timeout", "killed", "error", "lost", "skipped", "missed"]);
export function badge(status) {
  const known = STATUSES.has(status) ? status : "unknown";
  return h("span", { class: `badge status-${known}` }, String(status));
}

/**
 * Remembers which element with a `data-focus` key has the focus, so a re-render can give it
 * back (keyboard users keep their place when a table refreshes).
 */
export function focusKey() {
  const el = document.activeElement;
  return el && el.dataset ? el.dataset.focus || null : null;
}

export function restoreFocus(root, key) {
  if (!key) return;
  for (const el of root.querySelectorAll("[data-focus]")) {
    if (el.dataset.focus === key) {
      el.focus({ preventScroll: true });
      return;
    }
  }
}

/** Debounces `fn` by `ms`. */
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/**
 * Calls `fn` every `ms` while the tab is visible, never overlapping itself; returns a stop
 * function. `fn` runs once more as soon as the tab becomes visible again.
 */
export function every(ms, fn) {
  let timer = null;
  let busy = false;
  let stopped = false;
  const tick = async () => {
    if (stopped || busy || document.hidden) return;
    busy = true;
    try {
      await fn();
    } finally {
      busy = false;
    }
  };
  const onVisible = () => { if (!document.hidden) tick(); };
  timer = setInterval(tick, ms);
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    stopped = true;
    clearInterval(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

/**
 * Makes `parent`'s children the nodes of `items` (`{ key, sig, build }`), in order, reusing the
 * node of every key whose `sig` did not change: a refresh leaves unchanged rows alone, so a
 * selection, a focus or a pointer press on them survives it.
 */
export function reconcile(parent, items) {
  const previous = keyed.get(parent) || new Map();
  const current = new Map();
  const nodes = items.map((item) => {
    const prev = previous.get(item.key);
    const node = prev && prev.sig === item.sig ? prev.node : item.build();
    current.set(item.key, { sig: item.sig, node });
    return node;
  });
  let cursor = parent.firstChild;
  for (const node of nodes) {
    if (node === cursor) cursor = cursor.nextSibling;
    else parent.insertBefore(node, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
  keyed.set(parent, current);
}
const keyed = new WeakMap();
