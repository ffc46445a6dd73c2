// The workers view: every live worker as membership reports it, refreshed every 5 s.

import { api, describe, Unauthorized } from "./api.js";
import { h, replace, reconcile, every } from "./dom.js";
import { fmtTime, fmtRelative } from "./format.js";

/** A heartbeat older than this is shown as late. */
const LATE_MS = 30000;

/** A worker's labels (README "Worker labels") as `name=value` chips, or a dash when none. */
export function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "labels" }, entries.map(([k, v]) => h("li", {}, h("code", {}, `${k}=${v}`))));
}

/** Mounts the workers view; returns the unmount function. */
export function mountWorkers(root, ctx) {
  let alive = true;
  let workers = null;
  const tbody = h("tbody");
  const table = h("table", { id: "workers", class: "grid workers", "aria-busy": "true" });
  const notice = h("div", { class: "view-notice", "aria-live": "polite" });
  replace(root,
    h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Workers"), h("span", { class: "muted live" }, "Live: refreshes every 5 s")),
    h("div", { class: "table-wrap" }, table),
    notice);

  const cell = (label, ...children) => h("td", { dataset: { label } }, h("div", { class: "cell" }, children));

  function render() {
    if (workers === null) {
      replace(notice, h("p", { class: "loading" }, "Loading workers…"));
      return;
    }
    table.setAttribute("aria-busy", "false");
    const now = Date.now();
    if (!table.firstChild) {
      table.append(h("caption", { class: "sr-only" }, "Live workers"),
        h("thead", {}, h("tr", {}, ["Worker", "Host", "Labels", "Version", "Started", "Running", "Last heartbeat", "State"].map((c) => h("th", { scope: "col" }, c)))),
        tbody);
    }
    reconcile(tbody, workers.map((w) => {
      const age = now - Date.parse(w.last_heartbeat);
      const late = age > LATE_MS;
      return {
        key: w.id,
        sig: [JSON.stringify(w), late, fmtRelative(w.started_at, now), fmtRelative(w.last_heartbeat, now)].join("|"),
        build: () => h("tr", { dataset: { worker: w.id } },
          cell("Worker", h("code", {}, w.id)),
          cell("Host", w.hostname, w.address && w.address !== w.hostname ? h("div", { class: "muted" }, w.address) : null),
          cell("Labels", labelChips(w.labels)),
          cell("Version", w.version),
          cell("Started", h("time", { datetime: w.started_at, title: fmtTime(w.started_at) }, fmtRelative(w.started_at, now)),
            h("div", { class: "muted" }, fmtTime(w.started_at))),
          cell("Running", `${w.running} of ${w.capacity}`,
            h("meter", { min: "0", max: String(w.capacity || 1), value: String(w.running), "aria-label": `Executors busy on ${w.id}` })),
          cell("Last heartbeat", h("time", { datetime: w.last_heartbeat, title: fmtTime(w.last_heartbeat) }, fmtRelative(w.last_heartbeat, now))),
          cell("State", h("span", { class: `badge ${late ? "status-missed" : "status-succeeded"}` }, late ? `${w.state}, heartbeat late` : w.state))),
      };
    }));
    table.hidden = workers.length === 0;
    replace(notice, workers.length ? null : h("div", { class: "empty" },
      h("p", {}, "No live workers. A node with role all or worker appears here once it has sent a heartbeat; until then no job runs.")));
  }

  async function load() {
    try {
      const body = await api("GET", "/workers");
      if (!alive) return;
      workers = body.workers || [];
      ctx.error("workers", null);
      render();
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      ctx.error("workers", `Could not load the workers: ${describe(e)}`);
      if (workers === null) replace(notice, h("p", { class: "muted" }, "The workers could not be loaded."));
    }
  }

  render();
  load();
  const stop = every(5000, load);
  return () => { alive = false; stop(); };
}
