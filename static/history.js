// A job's history from the audit log: who changed what, when, from where, with a field-by-field
// diff of the definition before and after. Newest first, a page at a time ("Older" follows the
// cursor). Every value is rendered as text.

import { api, describe, seg, Unauthorized } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtTime, fmtRelative } from "./format.js";

/** What each action reads as. */
const ACTIONS = {
  create: "created", replace: "replaced", delete: "deleted", enable: "enabled", disable: "disabled",
  run: "ran now", kill: "killed runs", seed_save: "saved (seed route)", seed_delete: "deleted (seed route)",
  seed_kill: "killed runs (seed route)",
};

/** Fields that change on every write and say nothing about what was changed. */
const NOISE = new Set(["version", "created_at", "updated_at"]);

/** A value as one line of text. */
function show(v) {
  if (v === undefined) return "—";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

/** The fields that differ between `before` and `after`, as [field, before, after]. */
export function diff(before, after) {
  const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])].filter((k) => !NOISE.has(k)).sort();
  return keys
    .map((k) => [k, before ? before[k] : undefined, after ? after[k] : undefined])
    .filter(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b));
}

function versions(e) {
  const v = (x) => (x == null ? "—" : `v${x}`);
  return e.version_before === e.version_after ? v(e.version_after) : `${v(e.version_before)} → ${v(e.version_after)}`;
}

function entryView(e) {
  const changes = diff(e.before, e.after);
  const table = changes.length
    ? h("table", { class: "grid diff" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col" }, "After"))),
      h("tbody", {}, changes.map(([k, a, b]) => h("tr", {},
        h("th", { scope: "row" }, k),
        h("td", { class: "mono del" }, show(a)),
        h("td", { class: "mono ins" }, show(b))))))
    : h("p", { class: "muted" }, e.before || e.after ? "No change to the definition." : "");
  return h("li", { class: "audit-entry", dataset: { action: e.action } },
    h("div", { class: "audit-head" },
      h("strong", { class: "actor" }, e.actor), " ",
      h("span", { class: "action" }, ACTIONS[e.action] || e.action), " ",
      h("span", { class: "versions" }, versions(e)), " · ",
      h("time", { datetime: e.at, title: fmtTime(e.at) }, fmtRelative(e.at)),
      e.client ? h("span", { class: "muted" }, ` · from ${e.client}`) : null,
      e.detail ? h("span", { class: "muted" }, ` · ${e.detail}`) : null),
    table);
}

/** Mounts the history of job `name` in `root`; returns the unmount function. */
export function mountHistory(root, ctx, name) {
  let alive = true;
  const list = h("ol", { class: "audit", id: "history", "aria-busy": "true" });
  const more = h("button", { type: "button", id: "history-more", hidden: true }, "Older changes");
  replace(root,
    h("div", { class: "view-head" },
      h("h1", { tabindex: "-1" }, `History of ${name}`),
      h("a", { href: `#/runs?job=${seg(name)}`, class: "button" }, "Runs")),
    list, more);
  let cursor = null;
  async function load() {
    const path = `/audit?job=${seg(name)}&limit=50${cursor ? `&cursor=${seg(cursor)}` : ""}`;
    try {
      const page = await api("GET", path);
      if (!alive) return;
      list.append(...(page.entries || []).map(entryView));
      if (!list.children.length) list.append(h("li", { class: "empty" }, "No recorded changes."));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      list.setAttribute("aria-busy", "false");
    } catch (e) {
      if (!(e instanceof Unauthorized)) ctx.error("history", `Could not load the history of ${name}: ${describe(e)}`);
    }
  }
  more.addEventListener("click", load);
  load();
  return () => { alive = false; };
}
