// The jobs view: every job with its schedule read in words, next run in the job's zone and the
// viewer's, last run, an enabled switch and actions; search, sort and counts by status.

import { api, describe, seg, Unauthorized, may } from "./api.js";
import { h, replace, reconcile, badge, focusKey, restoreFocus, every } from "./dom.js";
import { fmtTime, fmtRelative, fmtDuration, viewerZone } from "./format.js";
import { sparkline } from "./charts.js";

/** Search, sort and filter survive leaving the view. */
const prefs = { search: "", sort: "name", dir: 1, filter: "all" };

const SORTS = {
  name: { label: "Name", key: (j) => j.name },
  schedule: { label: "Schedule", key: (j) => j.cron_expr },
  tz: { label: "Time zone", key: (j) => j.effective_tz },
  next: { label: "Next run", key: (j) => (j.next_run_at ? Date.parse(j.next_run_at) : Infinity) },
  last: { label: "Last run", key: (j) => (j.last_run ? -Date.parse(j.last_run.started_at) : Infinity) },
  status: { label: "Last status", key: (j) => (j.last_run ? j.last_run.status : "~never") },
  enabled: { label: "Enabled", key: (j) => (j.enabled ? 0 : 1) },
};

/** Status filters, in the order the counts are shown. */
const FILTERS = [
  ["all", "All", () => true],
  ["enabled", "Enabled", (j) => j.enabled],
  ["disabled", "Disabled", (j) => !j.enabled],
  ...["running", "succeeded", "failed", "timeout", "killed", "error", "lost", "skipped", "missed"].map((s) => [
    s, s[0].toUpperCase() + s.slice(1), (j) => j.last_run?.status === s,
  ]),
  ["never", "Never ran", (j) => !j.last_run],
];

function matches(job, text) {
  if (!text) return true;
  const t = text.toLowerCase();
  return [job.name, job.command, job.description, job.cron_expr, job.schedule_description, job.effective_tz]
    .some((s) => s && String(s).toLowerCase().includes(t));
}

function compare(a, b) {
  const key = SORTS[prefs.sort]?.key || SORTS.name.key;
  const ka = key(a);
  const kb = key(b);
  if (ka < kb) return -prefs.dir;
  if (ka > kb) return prefs.dir;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** Mounts the jobs view in `root`; returns the unmount function. */
export function mountJobs(root, ctx) {
  let jobs = null;
  let sparks = {};
  let alive = true;

  const search = h("input", {
    type: "search", id: "job-search", value: prefs.search, placeholder: "name, command, description…",
    autocomplete: "off",
    oninput: () => { prefs.search = search.value; render(); },
  });
  const sortSelect = h("select", {
    id: "job-sort",
    onchange: () => { prefs.sort = sortSelect.value; prefs.dir = 1; render(); },
  }, Object.entries(SORTS).map(([k, s]) => h("option", { value: k }, s.label)));
  const dirButton = h("button", {
    type: "button", class: "icon", id: "job-sort-dir",
    onclick: () => { prefs.dir = -prefs.dir; render(); },
  });
  const counts = h("div", { class: "counts", role: "group", "aria-label": "Filter jobs by status" });
  const caption = h("caption", { class: "sr-only" });
  const thead = h("thead");
  const tbody = h("tbody");
  const table = h("table", { id: "jobs", class: "grid jobs", "aria-busy": "true" }, caption, thead, tbody);
  const notice = h("div", { class: "view-notice", "aria-live": "polite" });
  // Documents in the job store that are not valid jobs (written around the API): not planned.
  const invalidBox = h("div", { id: "invalid-jobs", class: "invalid-jobs", "aria-live": "polite" });
  let invalid = [];

  replace(root,
    h("div", { class: "view-head" },
      h("h1", { tabindex: "-1" }, "Jobs"),
      may("admin") ? h("a", { href: "#/jobs/new", class: "button primary", id: "new-job" }, "New job") : null),
    h("div", { class: "toolbar" },
      h("div", { class: "control" }, h("label", { for: "job-search" }, "Search"), search),
      h("div", { class: "control" }, h("label", { for: "job-sort" }, "Sort by"), h("div", { class: "inline" }, sortSelect, dirButton))),
    counts,
    invalidBox,
    h("div", { class: "table-wrap" }, table),
    notice);

  function render() {
    const keep = focusKey();
    sortSelect.value = prefs.sort;
    dirButton.textContent = prefs.dir > 0 ? "↑" : "↓";
    dirButton.setAttribute("aria-label", prefs.dir > 0 ? "Ascending; switch to descending" : "Descending; switch to ascending");
    if (jobs === null) {
      table.setAttribute("aria-busy", "true");
      replace(notice, h("p", { class: "loading" }, "Loading jobs…"));
      return;
    }
    table.setAttribute("aria-busy", "false");
    renderCounts();
    const filter = FILTERS.find(([k]) => k === prefs.filter)?.[2] || (() => true);
    const shown = jobs.filter((j) => filter(j) && matches(j, prefs.search.trim())).sort(compare);
    caption.textContent = `Jobs, sorted by ${SORTS[prefs.sort].label}`;
    renderHeader();
    reconcile(tbody, shown.map((job) => ({
      key: job.name,
      sig: [JSON.stringify(job), fmtRelative(job.next_run_at), fmtRelative(job.last_run?.started_at), JSON.stringify(sparks[job.name] || [])].join("|"),
      build: () => row(job),
    })));
    table.hidden = shown.length === 0;
    if (jobs.length === 0) {
      replace(notice, h("div", { class: "empty" },
        h("p", {}, "No jobs yet."),
        h("a", { href: "#/jobs/new", class: "button primary" }, "Create the first job")));
    } else if (shown.length === 0) {
      replace(notice, h("div", { class: "empty" },
        h("p", {}, "No job matches these filters."),
        h("button", { type: "button", onclick: () => { prefs.search = ""; prefs.filter = "all"; search.value = ""; render(); } }, "Clear filters")));
    } else {
      replace(notice, jobsNote());
    }
    restoreFocus(root, keep);
  }

  function renderInvalid() {
    if (invalid.length === 0) { replace(invalidBox); return; }
    replace(invalidBox, h("div", { class: "warning" },
      h("p", {}, invalid.length === 1
        ? "1 job in the job store is invalid and is not planned until it is fixed there:"
        : `${invalid.length} jobs in the job store are invalid and are not planned until they are fixed there:`),
      h("ul", {}, invalid.map((j) => h("li", { dataset: { invalidJob: j.name } },
        h("span", { class: "job-name" }, j.name), " ", h("span", { class: "tag invalid" }, "invalid"), " ",
        h("span", { class: "muted" }, j.invalid))))));
  }

  let lastRunError = null;
  function jobsNote() {
    return lastRunError ? h("p", { class: "warning" }, `Last runs are not shown: ${lastRunError}`) : null;
  }

  function renderCounts() {
    replace(counts, FILTERS.map(([key, label, test]) => {
      const n = jobs.filter(test).length;
      if (n === 0 && key !== "all" && key !== prefs.filter) return null;
      return h("button", {
        type: "button", class: `chip chip-${key}`, "aria-pressed": String(prefs.filter === key),
        dataset: { focus: `filter:${key}`, filter: key },
        onclick: () => { prefs.filter = prefs.filter === key ? "all" : key; render(); },
      }, `${label} `, h("span", { class: "count" }, String(n)));
    }));
  }

  let headerSig = null;
  function renderHeader() {
    const sig = `${prefs.sort}|${prefs.dir}`;
    if (sig === headerSig) return;
    headerSig = sig;
    replace(thead, header());
  }

  function header() {
    const cols = [["name", "Name"], ["schedule", "Schedule"], ["tz", "Time zone"], ["next", "Next run"],
      ["last", "Last run"], [null, "Recent runs"], ["enabled", "Enabled"], [null, "Actions"]];
    return h("tr", {}, cols.map(([key, label]) => {
      if (!key) return h("th", { scope: "col" }, label);
      const active = prefs.sort === key;
      return h("th", { scope: "col", "aria-sort": active ? (prefs.dir > 0 ? "ascending" : "descending") : "none" },
        h("button", {
          type: "button", class: "sort", dataset: { focus: `sort:${key}` },
          onclick: () => { prefs.dir = prefs.sort === key ? -prefs.dir : 1; prefs.sort = key; render(); },
        }, label, active ? (prefs.dir > 0 ? " ↑" : " ↓") : ""));
    }));
  }

  function cell(label, ...children) {
    return h("td", { dataset: { label } }, h("div", { class: "cell" }, children));
  }

  function row(job) {
    const name = job.name;
    return h("tr", { dataset: { job: name } },
      cell("Name",
        h("div", { class: "job-name" }, name),
        job.description ? h("div", { class: "muted desc" }, job.description) : null),
      cell("Schedule",
        h("code", { class: "expr" }, job.cron_expr),
        job.dialect === "seed" ? h("span", { class: "tag", title: "6 fields are read as 5 fields + year, as the Go system did" }, "seed dialect") : null,
        job.schedule_description ? h("div", { class: "muted reading" }, job.schedule_description) : null),
      cell("Time zone", job.effective_tz, job.tz ? null : h("span", { class: "muted" }, " (default)")),
      cell("Next run", nextRun(job)),
      cell("Last run", lastRun(job)),
      cell("Recent runs", h("a", { href: `#/jobs/${seg(name)}/charts`, class: "spark-link", "aria-label": `Charts of ${name}`, dataset: { focus: `spark:${name}` } },
        sparkline(name, sparks[name] || []))),
      cell("Enabled", enabledSwitch(job)),
      cell("Actions", h("div", { class: "actions" }, actions(job))));
  }

  function nextRun(job) {
    if (!job.enabled) return h("span", { class: "muted" }, "paused (disabled)");
    if (!job.next_run_at) return h("span", { class: "muted" }, "never again");
    const same = job.effective_tz === viewerZone;
    return [
      h("div", { class: "when" }, h("time", { datetime: job.next_run_at }, fmtTime(job.next_run_at, job.effective_tz))),
      same ? null : h("div", { class: "muted" }, "yours: ", fmtTime(job.next_run_at, viewerZone)),
      h("div", { class: "muted" }, fmtRelative(job.next_run_at)),
    ];
  }

  function lastRun(job) {
    const r = job.last_run;
    if (!r) return h("span", { class: "muted" }, "never ran");
    const extra = [];
    if (r.duration_ms != null) extra.push(fmtDuration(r.duration_ms));
    if (r.exit_code != null && r.exit_code !== 0) extra.push(`exit ${r.exit_code}`);
    return [
      h("a", { href: `#/runs/${seg(r.id)}`, class: "run-link", "aria-label": `Last run of ${job.name}: ${r.status}`, dataset: { focus: `last:${job.name}` } },
        badge(r.status)),
      extra.length ? h("span", { class: "dur" }, " ", extra.join(" · ")) : null,
      h("div", { class: "muted" }, h("time", { datetime: r.started_at, title: fmtTime(r.started_at) }, fmtRelative(r.started_at))),
    ];
  }

  function enabledSwitch(job) {
    const input = h("input", {
      type: "checkbox", role: "switch", checked: job.enabled, class: "switch-input", disabled: !may("operator"),
      title: may("operator") ? null : "Your role (viewer) cannot enable or disable jobs",
      "aria-label": `Enabled: ${job.name}`, dataset: { focus: `enabled:${job.name}` },
      onchange: async () => {
        const want = input.checked;
        input.disabled = true;
        try {
          await api("POST", `/jobs/${seg(job.name)}/${want ? "enable" : "disable"}`);
          ctx.notify(`${job.name} ${want ? "enabled" : "disabled"}.`);
          await load();
        } catch (e) {
          input.checked = !want;
          input.disabled = false;
          if (!(e instanceof Unauthorized)) ctx.error("jobs-action", `Could not ${want ? "enable" : "disable"} ${job.name}: ${describe(e)}`);
        }
      },
    });
    return h("label", { class: "switch" }, input, h("span", { class: "switch-track", "aria-hidden": "true" }),
      h("span", { class: "switch-text", "aria-hidden": "true" }, job.enabled ? "On" : "Off"));
  }

  /**
   * The run-now dialog: optional parameters as name=value rows (extra environment variables for
   * this run). Resolves the env object, or null when cancelled. The server validates the names.
   */
  function askParams(name) {
    return new Promise((resolve) => {
      const rows = h("div", { class: "params-rows" });
      const addRow = (k = "", v = "") => rows.append(h("div", { class: "params-row" },
        h("input", { type: "text", class: "param-name", "aria-label": "Parameter name", placeholder: "NAME", value: k, spellcheck: "false" }),
        h("input", { type: "text", class: "param-value", "aria-label": "Parameter value", placeholder: "value", value: v, spellcheck: "false" }),
        h("button", { type: "button", "aria-label": "Remove this parameter", onclick: (e) => e.currentTarget.parentElement.remove() }, "×")));
      let result = null;
      const dialog = h("dialog", { id: "run-now", "aria-labelledby": "run-now-title" },
        h("form", { method: "dialog" },
          h("h2", { id: "run-now-title" }, `Run ${name} now`),
          h("p", { class: "muted" }, "Optional parameters: environment variables for this run only, on top of the job's env."),
          rows,
          h("button", { type: "button", class: "add-param", onclick: () => addRow() }, "Add parameter"),
          h("div", { class: "actions" },
            h("button", { type: "submit", value: "cancel", formnovalidate: true }, "Cancel"),
            h("button", { type: "submit", value: "run", class: "primary run-confirm",
              onclick: () => {
                const env = {};
                for (const r of rows.querySelectorAll(".params-row")) {
                  const k = r.querySelector(".param-name").value.trim();
                  if (k) env[k] = r.querySelector(".param-value").value;
                }
                result = env;
              } }, "Run"))));
      dialog.addEventListener("close", () => { dialog.remove(); resolve(result); });
      document.body.append(dialog);
      dialog.showModal();
    });
  }

  function actions(job) {
    const name = job.name;
    const running = job.last_run?.status === "running";
    const operator = may("operator");
    const admin = may("admin");
    return [
      operator ? h("button", {
        type: "button", dataset: { focus: `run:${name}` }, "aria-label": `Run now: ${name}`,
        onclick: async (ev) => {
          const btn = ev.currentTarget;
          const env = await askParams(name);
          if (env === null) return;
          btn.disabled = true;
          try {
            await api("POST", `/jobs/${seg(name)}/run`, Object.keys(env).length ? { env } : undefined);
            ctx.notify(`Run of ${name} requested.`);
            setTimeout(load, 700);
          } catch (e) {
            if (!(e instanceof Unauthorized)) ctx.error("jobs-action", `Could not run ${name}: ${describe(e)}`);
          } finally {
            btn.disabled = false;
          }
        },
      }, "Run now") : null,
      running && operator ? h("button", {
        type: "button", class: "danger", dataset: { focus: `kill:${name}` }, "aria-label": `Kill the running runs of ${name}`,
        onclick: async () => {
          const ok = await ctx.confirm({
            title: `Kill ${name}?`,
            message: `Every live run of ${name} gets SIGTERM, then SIGKILL after the grace period.`,
            confirmLabel: "Kill runs", danger: true,
          });
          if (!ok) return;
          try {
            await api("POST", `/jobs/${seg(name)}/kill`);
            ctx.notify(`Kill of ${name} requested.`);
            setTimeout(load, 700);
          } catch (e) {
            if (!(e instanceof Unauthorized)) ctx.error("jobs-action", `Could not kill ${name}: ${describe(e)}`);
          }
        },
      }, "Kill") : null,
      h("a", { href: `#/runs?job=${seg(name)}`, class: "button", dataset: { focus: `runs:${name}` }, "aria-label": `Runs of ${name}` }, "Runs"),
      h("a", { href: `#/jobs/${seg(name)}/charts`, class: "button", dataset: { focus: `charts:${name}` }, "aria-label": `Charts of ${name}` }, "Charts"),
      h("a", { href: `#/jobs/${seg(name)}/history`, class: "button", dataset: { focus: `history:${name}` }, "aria-label": `History of ${name}` }, "History"),
      admin ? h("a", { href: `#/jobs/${seg(name)}/edit`, class: "button", dataset: { focus: `edit:${name}` }, "aria-label": `Edit ${name}` }, "Edit") : null,
      admin ? h("button", {
        type: "button", class: "danger", dataset: { focus: `delete:${name}` }, "aria-label": `Delete ${name}`,
        onclick: () => remove(job),
      }, "Delete") : null,
    ];
  }

  async function remove(job) {
    const ok = await ctx.confirm({
      title: `Delete ${job.name}?`,
      message: `${job.name} stops firing and its definition is removed. Its run history is kept.`,
      confirmLabel: "Delete job", danger: true,
    });
    if (!ok) return;
    try {
      await api("DELETE", `/jobs/${seg(job.name)}?version=${job.version}`);
      ctx.notify(`${job.name} deleted.`);
    } catch (e) {
      if (e instanceof Unauthorized) return;
      if (e.code === "version_conflict") {
        ctx.error("jobs-action", `${job.name} was changed by someone else since this list was loaded; it was not deleted. Look at it again and retry.`);
      } else {
        ctx.error("jobs-action", `Could not delete ${job.name}: ${describe(e)}`);
      }
    }
    await load();
  }

  async function load() {
    try {
      const [body, spark] = await Promise.all([
        api("GET", "/jobs"),
        // One call for every job's sparkline (README "Pictures"); the list works without it.
        api("GET", "/sparklines?count=20").catch((e) => (e instanceof Unauthorized ? Promise.reject(e) : null)),
      ]);
      if (!alive) return;
      sparks = spark?.jobs || {};
      jobs = body.jobs || [];
      lastRunError = body.last_run_error || null;
      invalid = body.invalid_jobs || [];
      renderInvalid();
      ctx.error("jobs", null);
      render();
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      ctx.error("jobs", `Could not load the jobs: ${describe(e)}`);
      if (jobs === null) replace(notice, h("p", { class: "muted" }, "The job list could not be loaded."));
    }
  }

  render();
  load();
  const stop = every(5000, load);
  return () => { alive = false; stop(); };
}
