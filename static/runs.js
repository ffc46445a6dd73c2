// The runs view (filter by job, status, worker and time range; cursor pagination; output shown
// as text; running runs refresh by themselves and can be killed) and the one-run view, whose
// output follows a running run live (GET /api/v1/runs/{id}/output?follow=1).

import { api, describe, seg, token, ApiError, Unauthorized } from "./api.js";
import { h, replace, reconcile, badge, focusKey, restoreFocus, every } from "./dom.js";
import { fmtTime, fmtShort, fmtDuration, fmtBytes, toLocalInput, fromLocalInput } from "./format.js";

const STATUSES = ["running", "succeeded", "failed", "timeout", "killed", "error", "lost", "skipped", "missed"];
const PAGE_SIZES = ["25", "50", "100", "200"];
/** The executor's marker between the head and the tail of a truncated output. */
const MARKER = /\n… \[\d+ bytes truncated\] …\n/;

/**
 * Follows a run's live output: server-sent events read with fetch() and a stream reader, not
 * EventSource, because EventSource cannot send the Authorization header (and a token in the URL
 * would end up in logs and history). `on.output({offset, bytes, text})`, `on.gap({from, to,
 * bytes})` and `on.end({status, exit_code, output_bytes, ...})` are called as events arrive. A
 * broken connection is resumed from the last offset (`?offset=`) after 2 s. Resolves after `end`
 * or when `signal` aborts; rejects with an ApiError the server answered (e.g. 404, 429).
 */
export async function followOutput(id, on, signal) {
  let offset = 0;
  for (;;) {
    const headers = { Accept: "text/event-stream" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    let res;
    try {
      res = await fetch(`/api/v1/runs/${seg(id)}/output?follow=1&offset=${offset}`, { headers, signal, cache: "no-store" });
    } catch (e) {
      if (signal.aborted) return;
      await new Promise((r) => setTimeout(r, 2000));
      continue;
    }
    if (!res.ok) {
      let data = null;
      try { data = await res.json(); } catch (_) { data = null; }
      const e = data && data.error;
      throw new ApiError(res.status, e?.code || "http", e?.message || `The server answered HTTP ${res.status}.`);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          const d = JSON.parse(data);
          if (event === "output") { offset = d.offset + d.bytes; on.output(d); }
          else if (event === "truncated") { offset = d.to; on.gap(d); }
          else if (event === "end") { on.end(d); return; }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    if (signal.aborted) return;
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/** Kill one run after asking; resolves true when the kill was accepted. */
async function killRun(ctx, run) {
  const ok = await ctx.confirm({
    title: `Kill this run of ${run.job}?`,
    message: `Run ${run.id} gets SIGTERM, then SIGKILL after the grace period. Its record ends as killed.`,
    confirmLabel: "Kill run", danger: true,
  });
  if (!ok) return false;
  try {
    await api("POST", `/runs/${seg(run.id)}/kill`);
    ctx.notify(`Kill of ${run.job} requested.`);
    return true;
  } catch (e) {
    if (e instanceof Unauthorized) return false;
    if (e.code === "run_not_running") ctx.notify(`That run of ${run.job} has already ended.`);
    else ctx.error("runs-action", `Could not kill the run: ${describe(e)}`);
    return false;
  }
}

/** The output of a run as text: head, the truncation marker highlighted, tail. */
function outputBlock(run) {
  const total = run.output_bytes ?? (run.output || "").length;
  let summary;
  if (run.status === "running") {
    summary = ["The output is stored when the run ends; ",
      h("a", { href: `#/runs/${seg(run.id)}` }, "follow it live"), "."];
  }
  else if (!run.output) summary = total ? `${fmtBytes(total)} printed; nothing kept.` : "No output.";
  else if (run.output_truncated) summary = `${fmtBytes(total)} printed in total — truncated: showing the head and the tail.`;
  else summary = `${fmtBytes(total)}.`;
  const pre = h("pre", { class: "output", tabindex: "0", "aria-label": `Output of ${run.job}` });
  if (run.output) {
    const m = MARKER.exec(run.output);
    if (m) {
      pre.append(run.output.slice(0, m.index) + "\n",
        h("span", { class: "trunc-marker" }, m[0].trim()),
        "\n" + run.output.slice(m.index + m[0].length));
    } else {
      pre.textContent = run.output;
    }
  }
  return h("div", { class: "output-block" },
    h("p", { class: "muted output-summary" }, "Output: ", summary),
    run.output ? pre : null);
}

const TRIGGERS = {
  manual: "run now (manual)", retry: "retry of a failed attempt", schedule: "schedule",
  catchup: "catch-up of a missed tick", backfill: "backfill of a past range",
};

/** The facts of one run as a description list. */
function facts(run, { withJob = true } = {}) {
  const item = (label, ...value) => h("div", { class: "fact" }, h("dt", {}, label), h("dd", {}, value));
  const wide = (label, ...value) => h("div", { class: "fact wide" }, h("dt", {}, label), h("dd", {}, value));
  return h("dl", { class: "facts" },
    withJob ? item("Job", h("a", { href: `#/runs?job=${seg(run.job)}` }, run.job)) : null,
    item("Status", badge(run.status), run.err ? h("span", { class: "err" }, " ", run.err) : null),
    item("Trigger", TRIGGERS[run.trigger] || "schedule"),
    item("Worker", run.worker),
    item("Scheduled", fmtTime(run.scheduled_at)),
    item("Dispatched", fmtTime(run.dispatched_at)),
    item("Started", fmtTime(run.started_at)),
    item("Ended", fmtTime(run.ended_at)),
    item("Duration", fmtDuration(run.duration_ms)),
    item("Exit code", run.exit_code ?? "—", run.signal != null ? ` (signal ${run.signal})` : ""),
    item("Attempt", String(run.attempt ?? 1)),
    run.params ? wide("Parameters", h("code", { class: "mono" },
      Object.entries(run.params).map(([k, v]) => `${k}=${v}`).join("\n"))) : null,
    item("Job version", run.job_version != null ? `v${run.job_version}` : "—"),
    wide("Command", h("code", { class: "mono cmd" }, run.command)),
    wide("Run id", h("code", {}, run.id)));
}

/** Mounts the runs list in `root` with the filters of `params`; returns the unmount function. */
export function mountRuns(root, ctx, params) {
  let alive = true;
  const filters = {
    job: params.get("job") || "", status: params.get("status") || "", worker: params.get("worker") || "",
    from: params.get("from") || "", to: params.get("to") || "",
    limit: /^\d{1,4}$/.test(params.get("limit") || "") ? params.get("limit") : "50",
  };
  const sizes = PAGE_SIZES.includes(filters.limit) ? PAGE_SIZES : [...PAGE_SIZES, filters.limit].sort((a, b) => a - b);
  const cursors = [null]; // cursor of each page seen; the last is the current page's
  let page = null; // { runs, next_cursor }
  const expanded = new Map(); // run id -> full record (or null while loading)

  // ---- filter form ----------------------------------------------------------------------------
  const jobInput = h("input", { id: "rf-job", type: "text", list: "job-names", value: filters.job, autocomplete: "off", spellcheck: "false", placeholder: "any" });
  const statusSelect = h("select", { id: "rf-status", value: filters.status },
    h("option", { value: "" }, "any"), STATUSES.map((s) => h("option", { value: s }, s)));
  const workerInput = h("input", { id: "rf-worker", type: "text", value: filters.worker, autocomplete: "off", spellcheck: "false", placeholder: "any" });
  const fromInput = h("input", { id: "rf-from", type: "datetime-local", value: toLocalInput(filters.from) });
  const toInput = h("input", { id: "rf-to", type: "datetime-local", value: toLocalInput(filters.to) });
  const limitSelect = h("select", { id: "rf-limit", value: filters.limit }, sizes.map((n) => h("option", { value: n }, n)));
  const jobNames = h("datalist", { id: "job-names" });

  const apply = (next) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(next)) if (v && !(k === "limit" && v === "50")) q.set(k, v);
    const s = q.toString();
    ctx.navigate(s ? `#/runs?${s}` : "#/runs");
  };
  const readForm = () => ({
    job: jobInput.value.trim(), status: statusSelect.value, worker: workerInput.value.trim(),
    from: fromLocalInput(fromInput.value), to: fromLocalInput(toInput.value), limit: limitSelect.value,
  });
  const preset = (label, ms) => h("button", {
    type: "button", class: "chip",
    onclick: () => apply({ ...readForm(), from: new Date(Date.now() - ms).toISOString(), to: "" }),
  }, label);

  const filterForm = h("form", { class: "filters", id: "run-filters", onsubmit: (ev) => { ev.preventDefault(); apply(readForm()); } },
    h("div", { class: "control" }, h("label", { for: "rf-job" }, "Job"), jobInput),
    h("div", { class: "control" }, h("label", { for: "rf-status" }, "Status"), statusSelect),
    h("div", { class: "control" }, h("label", { for: "rf-worker" }, "Worker"), workerInput),
    h("div", { class: "control" }, h("label", { for: "rf-from" }, "Started from"), fromInput),
    h("div", { class: "control" }, h("label", { for: "rf-to" }, "Started before"), toInput),
    h("div", { class: "control" }, h("label", { for: "rf-limit" }, "Per page"), limitSelect),
    h("div", { class: "control buttons" },
      h("button", { type: "submit", class: "primary" }, "Apply"),
      h("button", { type: "button", onclick: () => apply({ limit: filters.limit }) }, "Clear")),
    h("div", { class: "presets", role: "group", "aria-label": "Quick time ranges" },
      h("span", { class: "muted" }, "Started in the last: "),
      preset("hour", 3600e3), preset("24 h", 86400e3), preset("7 days", 7 * 86400e3)),
    jobNames);
  statusSelect.addEventListener("change", () => apply(readForm()));
  limitSelect.addEventListener("change", () => apply(readForm()));

  const tbody = h("tbody");
  const table = h("table", { id: "runs", class: "grid runs", "aria-busy": "true" });
  const notice = h("div", { class: "view-notice", "aria-live": "polite" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of runs" });
  const live = h("span", { class: "muted live", id: "runs-live" });
  // A job's figures over the last 24 h (GET /api/v1/jobs/{name}/stats), shown when filtering by job.
  const stats = h("p", { class: "muted job-stats", id: "job-stats", "aria-live": "polite" });

  replace(root,
    h("div", { class: "view-head" },
      h("h1", { tabindex: "-1" }, filters.job ? `Runs of ${filters.job}` : "Runs"),
      live),
    filterForm,
    filters.job ? stats : null,
    h("div", { class: "table-wrap" }, table),
    notice,
    pager);

  async function loadStats() {
    if (!filters.job) return;
    try {
      const st = await api("GET", `/jobs/${seg(filters.job)}/stats?window=24h`);
      const parts = [`Last 24 h: ${st.runs} finished run${st.runs === 1 ? "" : "s"}`];
      if (st.success_rate != null) parts.push(`${Math.round(st.success_rate * 100)} % succeeded`);
      if (st.p50_ms != null) parts.push(`p50 ${fmtDuration(st.p50_ms)}`);
      if (st.p95_ms != null) parts.push(`p95 ${fmtDuration(st.p95_ms)}`);
      if (st.last_success) parts.push(`last success ${fmtShort(st.last_success)}`);
      if (st.last_failure) parts.push(`last failure ${fmtShort(st.last_failure)}`);
      stats.textContent = parts.join(" · ");
    } catch (e) {
      if (e instanceof Unauthorized) return;
      stats.textContent = `Figures unavailable: ${describe(e)}`;
    }
  }

  // ---- table ----------------------------------------------------------------------------------
  const COLS = ["Status", "Job", "Worker", "Scheduled", "Started", "Ended", "Duration", "Exit", "Actions"];

  function render() {
    const keep = focusKey();
    if (!page) {
      replace(notice, h("p", { class: "loading" }, "Loading runs…"));
      return;
    }
    table.setAttribute("aria-busy", "false");
    const runs = page.runs || [];
    const rows = [];
    const second = Math.floor(Date.now() / 1000);
    // The attempts of one tick (job retries) share its scheduled time: grouped, first attempt last.
    const tickKey = (run) => `${run.job}|${run.scheduled_at}`;
    const perTick = new Map();
    for (const run of runs) perTick.set(tickKey(run), (perTick.get(tickKey(run)) || 0) + 1);
    groupOf = (run) => ((run.attempt ?? 1) > 1 || perTick.get(tickKey(run)) > 1 ? tickKey(run) : null);
    for (const run of runs) {
      const open = expanded.has(run.id);
      rows.push({
        key: run.id,
        // a running run's row shows its time so far, so it is rebuilt every refresh
        sig: `${JSON.stringify(run)}|${open}|${run.status === "running" ? second : ""}`,
        build: () => row(run),
      });
      if (open) rows.push({ key: `detail:${run.id}`, sig: JSON.stringify(expanded.get(run.id)), build: () => detailRow(run) });
    }
    if (!table.firstChild) {
      table.append(h("caption", { class: "sr-only" }, "Runs, newest first"),
        h("thead", {}, h("tr", {}, COLS.map((c) => h("th", { scope: "col" }, c)))),
        tbody);
    }
    reconcile(tbody, rows);
    table.hidden = runs.length === 0;
    const filtered = filters.job || filters.status || filters.worker || filters.from || filters.to;
    replace(notice, runs.length ? null : h("div", { class: "empty" },
      h("p", {}, cursors.length > 1 ? "No more runs." : filtered ? "No runs match these filters." : "No runs yet. Runs appear here when jobs fire or are run by hand.")));
    renderPager();
    const running = runs.filter((r) => r.status === "running").length;
    live.textContent = cursors.length === 1 ? `Live: refreshes every 3 s${running ? ` · ${running} running` : ""}` : (running ? `${running} running, refreshing` : "");
    restoreFocus(root, keep);
  }

  function cell(label, ...children) {
    return h("td", { dataset: { label } }, h("div", { class: "cell" }, children));
  }

  /** The tick group of a run (set by render), or null for a run that is its tick's only attempt. */
  let groupOf = () => null;

  function row(run) {
    const open = expanded.has(run.id);
    const group = groupOf(run);
    const attempt = run.attempt ?? 1;
    return h("tr", { class: group ? (attempt > 1 ? "attempt-group attempt-later" : "attempt-group") : null,
      dataset: { run: run.id, status: run.status, attempt: String(attempt), ...(group ? { tick: group } : {}) } },
      cell("Status", badge(run.status), run.trigger === "manual" ? h("span", { class: "tag" }, "manual") : null,
        group ? h("span", { class: "tag attempt", title: `Attempt ${attempt} of the tick scheduled at ${fmtTime(run.scheduled_at)}` },
          `attempt ${attempt}`) : null,
        run.params ? h("span", { class: "tag", title: Object.keys(run.params).join(", ") }, "params") : null,
        run.err ? h("div", { class: "muted err" }, run.err) : null),
      cell("Job", h("a", { href: `#/runs?job=${seg(run.job)}` }, run.job)),
      cell("Worker", run.worker),
      cell("Scheduled", h("time", { datetime: run.scheduled_at, title: fmtTime(run.scheduled_at) }, fmtShort(run.scheduled_at))),
      cell("Started", run.started_at ? h("time", { datetime: run.started_at, title: fmtTime(run.started_at) }, fmtShort(run.started_at)) : "—"),
      cell("Ended", run.ended_at ? h("time", { datetime: run.ended_at, title: fmtTime(run.ended_at) }, fmtShort(run.ended_at)) : "—"),
      cell("Duration", run.status === "running" && run.started_at
        ? h("span", { class: "muted" }, fmtDuration(Date.now() - Date.parse(run.started_at)), " so far")
        : fmtDuration(run.duration_ms)),
      cell("Exit", run.exit_code ?? (run.signal != null ? `signal ${run.signal}` : "—")),
      cell("Actions", h("div", { class: "actions" },
        h("button", {
          type: "button", "aria-expanded": String(open), "aria-controls": `detail-${run.id}`,
          dataset: { focus: `output:${run.id}` }, "aria-label": `${open ? "Hide" : "Show"} output of ${run.job} run ${run.id}`,
          onclick: () => toggle(run),
        }, open ? "Hide output" : "Output"),
        h("a", { href: `#/runs/${seg(run.id)}`, class: "button", "aria-label": `Open run ${run.id}` }, "Open"),
        run.status === "running" ? h("button", {
          type: "button", class: "danger kill", dataset: { focus: `kill:${run.id}` }, "aria-label": `Kill run ${run.id} of ${run.job}`,
          onclick: async () => { if (await killRun(ctx, run)) setTimeout(refresh, 500); },
        }, "Kill") : null)));
  }

  function detailRow(run) {
    const full = expanded.get(run.id);
    return h("tr", { class: "detail", id: `detail-${run.id}` },
      h("td", { colspan: String(COLS.length), class: "detail-cell" },
        full ? [facts(full), outputBlock(full)] : h("p", { class: "loading" }, "Loading output…")));
  }

  async function toggle(run) {
    if (expanded.has(run.id)) {
      expanded.delete(run.id);
      render();
      return;
    }
    expanded.set(run.id, null);
    render();
    await fetchFull(run.id);
  }

  async function fetchFull(id) {
    try {
      const full = await api("GET", `/runs/${seg(id)}`);
      if (!alive || !expanded.has(id)) return;
      expanded.set(id, full);
      if (page) page.runs = page.runs.map((r) => (r.id === id ? { ...r, ...full, output: undefined } : r));
      render();
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      ctx.error("runs", `Could not load run ${id}: ${describe(e)}`);
      expanded.delete(id);
      render();
    }
  }

  function renderPager() {
    const n = cursors.length;
    replace(pager,
      h("button", { type: "button", disabled: n <= 1, onclick: () => { cursors.pop(); load(); }, "aria-label": "Newer runs" }, "← Newer"),
      h("span", { class: "muted" }, `Page ${n}`),
      h("button", {
        type: "button", disabled: !page?.next_cursor, "aria-label": "Older runs",
        onclick: () => { cursors.push(page.next_cursor); load(); },
      }, "Older →"));
  }

  function query() {
    const q = new URLSearchParams();
    for (const k of ["job", "status", "worker", "from", "to", "limit"]) if (filters[k]) q.set(k, filters[k]);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    return q.toString();
  }

  async function load() {
    try {
      const body = await api("GET", `/runs?${query()}`);
      if (!alive) return;
      page = body;
      ctx.error("runs", null);
      if (cursors.length === 1) loadStats();
      for (const run of page.runs) {
        const cached = expanded.get(run.id);
        if (cached && cached.status !== run.status) fetchFull(run.id);
      }
      render();
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      if (e.field && ["job", "status", "worker", "from", "to", "cursor"].includes(e.field)) {
        ctx.error("runs", `Bad filter: ${describe(e)}`);
      } else {
        ctx.error("runs", `Could not load the runs: ${describe(e)}`);
      }
      if (!page) replace(notice, h("p", { class: "muted" }, "The runs could not be loaded."));
    }
  }

  /** First page: reload it (new runs appear). Later pages: re-read the running runs only. */
  async function refresh() {
    if (cursors.length === 1) return load();
    const running = (page?.runs || []).filter((r) => r.status === "running");
    if (!running.length) return;
    for (const run of running) {
      try {
        const full = await api("GET", `/runs/${seg(run.id)}`);
        if (!alive) return;
        page.runs = page.runs.map((r) => (r.id === run.id ? { ...full, output: undefined } : r));
        if (expanded.has(run.id)) expanded.set(run.id, full);
      } catch (e) {
        if (e instanceof Unauthorized) return;
      }
    }
    render();
  }

  async function loadJobNames() {
    try {
      const body = await api("GET", "/jobs");
      if (!alive) return;
      replace(jobNames, (body.jobs || []).map((j) => h("option", { value: j.name })));
    } catch (_) {
      // names are only a convenience for the filter
    }
  }

  render();
  load();
  loadJobNames();
  const stop = every(3000, refresh);
  return () => { alive = false; stop(); };
}

/** Mounts the view of one run; returns the unmount function. */
export function mountRun(root, ctx, id) {
  let alive = true;
  let run = null;
  /** The live follower of a running run: its block and its AbortController. */
  let live = null;
  const body = h("div", { class: "run-view", "aria-live": "polite" }, h("p", { class: "loading" }, "Loading run…"));
  const head = h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Run"));
  replace(root, head, body);

  function render() {
    replace(head,
      h("h1", { tabindex: "-1" }, `Run of ${run.job}`),
      h("div", { class: "actions" },
        h("a", { href: `#/runs?job=${seg(run.job)}`, class: "button" }, `All runs of ${run.job}`),
        run.status === "running" ? h("button", {
          type: "button", class: "danger kill", id: "run-kill", "aria-label": `Kill run ${run.id} of ${run.job}`,
          onclick: async () => { if (await killRun(ctx, run)) setTimeout(load, 500); },
        }, "Kill") : null));
    if (run.status !== "running" && live) {
      live.controller.abort();
      live = null;
    }
    replace(body, facts(run), run.status === "running" ? liveBlock() : outputBlock(run),
      run.status === "running" ? h("p", { class: "muted live" }, "Running: the output follows live; the facts refresh every 2 s.") : null);
  }

  /** The live output of the running run (one follower per page, kept across re-renders). */
  function liveBlock() {
    if (live) return live.block;
    const pre = h("pre", { class: "output live-output", id: "live-output", tabindex: "0", role: "log", "aria-live": "off", "aria-label": `Live output of ${run.job}` });
    const summary = h("p", { class: "muted output-summary", "aria-live": "off" }, "Output: following live…");
    const state = { block: h("div", { class: "output-block" }, summary, pre), controller: new AbortController() };
    live = state;
    followOutput(id, {
      output: (d) => {
        pre.append(d.text);
        summary.textContent = `Output: ${fmtBytes(d.offset + d.bytes)} so far, following live…`;
      },
      gap: (d) => {
        pre.append("\n", h("span", { class: "trunc-marker" }, `… [${d.bytes} bytes truncated] …`), "\n");
      },
      end: (d) => {
        summary.textContent = `Output: the run ended (${d.status}).`;
        if (alive) setTimeout(load, 300);
      },
    }, state.controller.signal).catch((e) => {
      if (!alive || e instanceof Unauthorized) return;
      summary.textContent = `Output: cannot follow it live (${describe(e)}); it is stored when the run ends.`;
    });
    return state.block;
  }

  async function load() {
    try {
      const r = await api("GET", `/runs/${seg(id)}`);
      if (!alive) return;
      const first = run === null;
      run = r;
      ctx.error("run", null);
      render();
      if (first) root.querySelector("h1")?.focus({ preventScroll: true });
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      if (e.code === "run_not_found") {
        replace(body, h("div", { class: "empty" }, h("p", {}, `There is no run ${id}.`), h("a", { href: "#/runs", class: "button" }, "All runs")));
        stop();
      } else {
        ctx.error("run", `Could not load the run: ${describe(e)}`);
      }
    }
  }

  load();
  const stop = every(2000, async () => { if (!run || run.status === "running") await load(); });
  return () => { alive = false; stop(); live?.controller.abort(); };
}
