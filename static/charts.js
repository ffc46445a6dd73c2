// The pictures (README "Pictures"): a job's tick timeline and duration chart (#/jobs/{name}/charts),
// the jobs list's sparklines and the fleet view (#/fleet: the next 24 h of ticks per minute and
// per-worker load). All drawn here as SVG from the server's aggregates; every chart has a text
// alternative (an aria-label and a summary or table), every status a glyph besides its colour.
import { api, describe, seg, Unauthorized } from "./api.js";
import { h, replace, every } from "./dom.js";
import { fmtTime, fmtDuration } from "./format.js";

const NS = "http://www.w3.org/2000/svg";

/** An SVG element (attributes as given; `text` as textContent). */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) if (c) el.append(c);
  return el;
}

/** The glyph drawn on a status (so no status is told by colour alone). */
const GLYPH = {
  succeeded: "✓", failed: "✗", timeout: "T", killed: "K", error: "!", lost: "?", running: "▶",
  skipped: "S", missed: "M", superseded: "↷", none: "·",
};
const KNOWN = new Set(Object.keys(GLYPH));
const cls = (status) => `st-${KNOWN.has(status) ? status : "none"}`;
const glyph = (status) => GLYPH[status] || "·";

/** The legend of the statuses in `present`. */
function legend(present) {
  return h("ul", { class: "chart-legend", "aria-label": "Legend" },
    [...present].filter((s) => KNOWN.has(s)).map((s) => h("li", {},
      h("span", { class: `swatch ${cls(s)}`, "aria-hidden": "true" }, glyph(s)), " ", s === "none" ? "no record" : s)));
}

/** Mounts the charts of job `name` in `root` (#/jobs/{name}/charts); returns the unmount function. */
export function mountCharts(root, ctx, name) {
  let alive = true;
  let windowName = "24h";
  const timelineBox = h("div", { id: "timeline", class: "chart-box", "aria-live": "polite" });
  const durationBox = h("div", { id: "durations", class: "chart-box" });
  const toggles = h("div", { class: "counts", role: "group", "aria-label": "Window" },
    ["24h", "7d"].map((w) => h("button", {
      type: "button", class: "chip", dataset: { window: w }, "aria-pressed": String(w === windowName),
      onclick: () => { windowName = w; for (const b of toggles.children) b.setAttribute("aria-pressed", String(b.dataset.window === w)); load(); },
    }, w === "24h" ? "Last 24 hours" : "Last 7 days")));
  replace(root,
    h("div", { class: "view-head" },
      h("h1", { tabindex: "-1" }, `Charts of ${name}`),
      h("a", { href: `#/runs?job=${seg(name)}`, class: "button" }, "Runs"),
      h("a", { href: "#/jobs", class: "button" }, "Back to the jobs")),
    toggles,
    h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Tick timeline"), timelineBox),
    h("section", { "aria-labelledby": "durations-title" }, h("h2", { id: "durations-title" }, "Duration"), durationBox));

  async function load() {
    try {
      const [tl, du] = await Promise.all([
        api("GET", `/jobs/${seg(name)}/timeline?window=${windowName}`),
        api("GET", `/jobs/${seg(name)}/durations?window=${windowName}`),
      ]);
      if (!alive) return;
      ctx.error("charts", null);
      replace(timelineBox, drawTimeline(tl, timelineBox.clientWidth || 800));
      replace(durationBox, drawDurations(du, durationBox.clientWidth || 800));
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      ctx.error("charts", `Could not load the charts of ${name}: ${describe(e)}`);
    }
  }
  load();
  const stop = every(15000, load);
  return () => { alive = false; stop(); };
}

/** The tick timeline: one cell per tick (attempts stacked inside it) or per bucket. */
export function drawTimeline(tl, width) {
  const cells = tl.cells || [];
  const size = 18;
  const gap = 2;
  const cols = Math.max(6, Math.floor((Math.min(width, 1200) + gap) / (size + gap)));
  const rows = Math.max(1, Math.ceil(cells.length / cols));
  const counts = {};
  for (const c of cells) counts[c.status] = (counts[c.status] || 0) + 1;
  const summary = Object.entries(counts).map(([s, n]) => `${n} ${s === "none" ? "without a record" : s}`).join(", ");
  const what = tl.mode === "buckets" ? `${cells.length} buckets of ${tl.bucket_secs / 60} minutes` : `${cells.length} ticks`;
  const label = `Tick timeline of ${tl.job}, ${tl.window}: ${what}, ${summary || "none yet"}.`;
  const chart = svg("svg", {
    class: "timeline", role: "group", "aria-label": label, width: cols * (size + gap), height: rows * (size + gap),
    viewBox: `0 0 ${cols * (size + gap)} ${rows * (size + gap)}`,
  });
  cells.forEach((c, i) => {
    const x = (i % cols) * (size + gap);
    const y = Math.floor(i / cols) * (size + gap);
    const when = fmtTime(c.at);
    const attempts = c.attempts || [];
    const g = svg("g", { class: `cell ${cls(c.status)}`, dataset: { status: c.status, at: c.at, attempts: String(attempts.length) } });
    if (attempts.length > 1) {
      // Attempts stacked bottom-up, oldest at the bottom.
      const slice = size / attempts.length;
      attempts.forEach((a, k) => g.append(svg("rect", { class: cls(a.status), x, y: y + size - (k + 1) * slice, width: size, height: slice })));
    } else {
      g.append(svg("rect", { class: cls(c.status), x, y, width: size, height: size, rx: 2 }));
    }
    g.append(svg("text", { x: x + size / 2, y: y + size / 2 + 4, "text-anchor": "middle", "aria-hidden": "true" }, glyph(c.status)));
    const detail = tl.mode === "buckets"
      ? `${when}: ${Object.entries(c.counts || {}).map(([s, n]) => `${n} ${s}`).join(", ") || "no runs"}${c.ticks != null ? ` of ${c.ticks} ticks` : ""}`
      : `${when}: ${c.status === "none" ? "no record" : c.status}${attempts.length > 1 ? `, ${attempts.length} attempts (${attempts.map((a) => a.status).join(", ")})` : ""}`;
    g.append(svg("title", { text: detail }));
    const last = attempts[attempts.length - 1];
    chart.append(last
      ? svg("a", {
        href: `#/runs/${seg(last.id)}`, "aria-label": `Tick ${detail}. Open the run.`, class: "cell-link",
        // Enter follows the link like an HTML one (not every engine does so for SVG links).
        onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); location.hash = `#/runs/${seg(last.id)}`; } },
      }, g)
      : svg("g", { role: "img", "aria-label": `Tick ${detail}` }, g));
  });
  const other = tl.other_runs ? h("p", { class: "muted" }, `${tl.other_runs} run(s) in the window belong to no tick of the current schedule (run now, or an earlier schedule).`) : null;
  return [
    h("p", { class: "chart-summary", id: "timeline-summary" }, label,
      tl.mode === "buckets" ? " More than 1,440 ticks in the window: each cell is a time bucket." : ""),
    h("div", { class: "chart-scroll" }, chart),
    legend(new Set(cells.map((c) => c.status))),
    other,
  ];
}

/** The duration chart: the p50 line inside the p50–p95 band, max as dots; a table beside it. */
export function drawDurations(du, width) {
  const buckets = du.buckets || [];
  const timed = buckets.filter((b) => b.p50_ms != null);
  const w = Math.max(280, Math.min(width, 1200));
  const hgt = 180;
  const pad = { l: 56, r: 10, t: 10, b: 24 };
  const from = Date.parse(du.from);
  const to = Date.parse(du.to);
  const max = Math.max(1, ...timed.map((b) => b.max_ms ?? b.p95_ms ?? 0));
  const x = (t) => pad.l + ((Date.parse(t) + du.bucket_secs * 500 - from) / Math.max(1, to - from)) * (w - pad.l - pad.r);
  const y = (ms) => pad.t + (1 - ms / max) * (hgt - pad.t - pad.b);
  const label = timed.length
    ? `Duration of ${du.job} over ${du.window}, ${timed.length} buckets of ${du.bucket_secs / 60} minutes: median from ${fmtDuration(Math.min(...timed.map((b) => b.p50_ms)))} to ${fmtDuration(Math.max(...timed.map((b) => b.p50_ms)))}, longest ${fmtDuration(max)}.`
    : `Duration of ${du.job} over ${du.window}: no finished run with a duration.`;
  const chart = svg("svg", { class: "durations", role: "img", "aria-label": label, width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}` });
  chart.append(svg("title", { text: label }));
  for (const frac of [0, 0.5, 1]) {
    const yy = y(max * frac);
    chart.append(svg("line", { class: "grid-line", x1: pad.l, x2: w - pad.r, y1: yy, y2: yy }),
      svg("text", { class: "axis", x: pad.l - 4, y: yy + 4, "text-anchor": "end" }, fmtDuration(Math.round(max * frac))));
  }
  chart.append(svg("text", { class: "axis", x: pad.l, y: hgt - 6 }, fmtTime(du.from)),
    svg("text", { class: "axis", x: w - pad.r, y: hgt - 6, "text-anchor": "end" }, "now"));
  if (timed.length) {
    const band = timed.map((b) => `${x(b.start)},${y(b.p95_ms)}`).concat([...timed].reverse().map((b) => `${x(b.start)},${y(b.p50_ms)}`));
    chart.append(svg("polygon", { class: "band-p95", points: band.join(" ") }),
      svg("polyline", { class: "line-p50", points: timed.map((b) => `${x(b.start)},${y(b.p50_ms)}`).join(" ") }),
      svg("polyline", { class: "line-p95", points: timed.map((b) => `${x(b.start)},${y(b.p95_ms)}`).join(" ") }));
    for (const b of timed) {
      chart.append(svg("circle", { class: "dot-max", cx: x(b.start), cy: y(b.max_ms), r: 2.5 }),
        svg("rect", { class: "mark-p50", x: x(b.start) - 2.5, y: y(b.p50_ms) - 2.5, width: 5, height: 5 }));
    }
  }
  const table = h("table", { class: "grid chart-table" },
    h("caption", {}, "Per bucket"),
    h("thead", {}, h("tr", {}, ["From", "Runs", "p50", "p95", "Max"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, buckets.map((b) => h("tr", {},
      h("td", {}, fmtTime(b.start)),
      h("td", {}, String(Object.values(b.counts || {}).reduce((a, n) => a + n, 0))),
      h("td", {}, b.p50_ms == null ? "–" : fmtDuration(b.p50_ms)),
      h("td", {}, b.p95_ms == null ? "–" : fmtDuration(b.p95_ms)),
      h("td", {}, b.max_ms == null ? "–" : fmtDuration(b.max_ms))))));
  return [
    h("p", { class: "chart-summary", id: "durations-summary" }, label),
    h("div", { class: "chart-scroll" }, chart),
    h("ul", { class: "chart-legend", "aria-label": "Legend" },
      h("li", {}, h("span", { class: "key key-p50", "aria-hidden": "true" }, "■"), " median (p50), squares"),
      h("li", {}, h("span", { class: "key key-p95", "aria-hidden": "true" }, "▬"), " p50–p95 band, thin line at p95"),
      h("li", {}, h("span", { class: "key key-max", "aria-hidden": "true" }, "●"), " longest run, dots")),
    h("details", {}, h("summary", {}, "Duration table"), h("div", { class: "table-wrap" }, table)),
  ];
}

/** A sparkline of `runs` (oldest first): bar height = duration, colour and glyph-like shape = status. */
export function sparkline(job, runs) {
  const n = 20;
  const bw = 5;
  const gap = 1;
  const hgt = 22;
  const max = Math.max(1, ...runs.map((r) => r.duration_ms || 0));
  const bad = runs.filter((r) => !["succeeded", "running"].includes(r.status)).length;
  const label = runs.length
    ? `Last ${runs.length} runs of ${job}: ${runs.length - bad} succeeded or running, ${bad} not; newest ${runs[runs.length - 1].status}.`
    : `No runs of ${job} yet.`;
  const chart = svg("svg", { class: "sparkline", role: "img", "aria-label": label, width: n * (bw + gap), height: hgt, viewBox: `0 0 ${n * (bw + gap)} ${hgt}` });
  chart.append(svg("title", { text: label }));
  runs.forEach((r, i) => {
    const x = (n - runs.length + i) * (bw + gap);
    const ok = r.status === "succeeded" || r.status === "running";
    // Failures hang below the midline as full-height marks; successes grow with their duration.
    const hh = ok ? Math.max(3, Math.round(((r.duration_ms || 0) / max) * (hgt - 4))) : hgt;
    chart.append(svg("rect", { class: cls(r.status), x, y: hgt - hh, width: bw, height: hh, dataset: { status: r.status } }));
    if (!ok) chart.append(svg("rect", { class: "spark-cross", x, y: 0, width: bw, height: 3 }));
  });
  return chart;
}

/** Mounts the fleet view (#/fleet); returns the unmount function. */
export function mountFleet(root, ctx) {
  let alive = true;
  const histBox = h("div", { id: "forecast", class: "chart-box" });
  const loadBox = h("div", { id: "load", class: "chart-box" });
  replace(root,
    h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Fleet"), h("span", { class: "muted live" }, "Refreshes every 30 s")),
    h("section", { "aria-labelledby": "forecast-title" }, h("h2", { id: "forecast-title" }, "Ticks per minute, next 24 hours"), histBox),
    h("section", { "aria-labelledby": "load-title" }, h("h2", { id: "load-title" }, "Load per worker"), loadBox));

  async function load() {
    try {
      const [fc, ld] = await Promise.all([api("GET", "/fleet/forecast?hours=24"), api("GET", "/fleet/load")]);
      if (!alive) return;
      ctx.error("fleet", null);
      replace(histBox, drawForecast(fc, histBox.clientWidth || 800));
      replace(loadBox, drawLoad(ld));
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      ctx.error("fleet", `Could not load the fleet view: ${describe(e)}`);
    }
  }
  load();
  const stop = every(30000, load);
  return () => { alive = false; stop(); };
}

/** The forecast histogram: one bar per minute; the busiest minutes listed as text. */
export function drawForecast(fc, width) {
  const mins = fc.minutes || [];
  const w = Math.max(280, Math.min(width, 1440 + 60));
  const hgt = 160;
  const pad = { l: 36, r: 6, t: 8, b: 22 };
  const max = Math.max(1, ...mins);
  const step = (w - pad.l - pad.r) / Math.max(1, mins.length);
  const y = (n) => pad.t + (1 - n / max) * (hgt - pad.t - pad.b);
  const from = Date.parse(fc.from);
  const label = fc.peak
    ? `Fire times per minute of ${fc.jobs} enabled jobs over the next ${mins.length / 60} hours: ${fc.ticks} in all, busiest minute ${fmtTime(fc.peak.at)} with ${fc.peak.ticks}.`
    : `No enabled job fires in the next ${mins.length / 60} hours.`;
  const chart = svg("svg", { class: "forecast", role: "img", "aria-label": label, width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}` });
  chart.append(svg("title", { text: label }));
  chart.append(svg("text", { class: "axis", x: pad.l - 4, y: pad.t + 8, "text-anchor": "end" }, String(max)),
    svg("text", { class: "axis", x: pad.l - 4, y: hgt - pad.b, "text-anchor": "end" }, "0"));
  // One path for every bar: 1,440 rects would be heavy on a phone.
  let d = "";
  mins.forEach((n, i) => {
    if (!n) return;
    const x = pad.l + i * step;
    d += `M${x.toFixed(2)},${(hgt - pad.b).toFixed(2)}V${y(n).toFixed(2)}h${Math.max(step, 0.8).toFixed(2)}V${(hgt - pad.b).toFixed(2)}z`;
  });
  chart.append(svg("path", { class: "bars", d }));
  for (let hIdx = 0; hIdx <= mins.length / 60; hIdx += 6) {
    const x = pad.l + hIdx * 60 * step;
    chart.append(svg("line", { class: "grid-line", x1: x, x2: x, y1: pad.t, y2: hgt - pad.b }),
      svg("text", { class: "axis", x, y: hgt - 6, "text-anchor": hIdx === 0 ? "start" : hIdx * 60 >= mins.length ? "end" : "middle" },
        fmtTime(new Date(from + hIdx * 3600000).toISOString(), undefined, false).slice(-5)));
  }
  const top = mins.map((n, i) => [n, i]).filter(([n]) => n > 0).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 5);
  return [
    h("p", { class: "chart-summary", id: "forecast-summary" }, label),
    h("div", { class: "chart-scroll" }, chart),
    top.length ? h("details", {}, h("summary", {}, "Busiest minutes"),
      h("ol", { id: "forecast-top" }, top.map(([n, i]) => h("li", {}, `${fmtTime(new Date(from + i * 60000).toISOString())}: ${n} fire time(s)`)))) : null,
    fc.capped?.length ? h("p", { class: "warning" }, `Ticks cut at 200,000 per schedule for: ${fc.capped.join(", ")}`) : null,
  ];
}

/** The load table: runs in the last hour and day and the planned share, with bars. */
export function drawLoad(ld) {
  const workers = ld.workers || [];
  if (!workers.length) return h("p", { class: "muted" }, "No live worker and no run in the last 24 hours.");
  const maxDay = Math.max(1, ...workers.map((w) => w.runs_24h));
  const bar = (value, max, label) => {
    const width = 120;
    return svg("svg", { class: "load-bar", role: "img", "aria-label": label, width, height: 12, viewBox: `0 0 ${width} 12` },
      svg("rect", { class: "load-track", x: 0, y: 0, width, height: 12 }),
      svg("rect", { class: "load-fill", x: 0, y: 0, width: Math.round((value / max) * width), height: 12 }));
  };
  return h("div", { class: "table-wrap" }, h("table", { class: "grid load", id: "load-table" },
    h("caption", { class: "sr-only" }, "Runs per worker and planned ownership"),
    h("thead", {}, h("tr", {}, ["Worker", "State", "Runs, last hour", "Runs, last 24 h", "Planned jobs"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, workers.map((w) => h("tr", { dataset: { worker: w.id } },
      h("td", { dataset: { label: "Worker" } }, h("code", {}, w.id)),
      h("td", { dataset: { label: "State" } }, w.live ? "live" : "gone"),
      h("td", { dataset: { label: "Runs, last hour" } }, String(w.runs_1h)),
      h("td", { dataset: { label: "Runs, last 24 h" } }, bar(w.runs_24h, maxDay, `${w.runs_24h} runs in 24 hours`), " ", String(w.runs_24h)),
      h("td", { dataset: { label: "Planned jobs" } }, bar(w.planned_share, 1, `${Math.round(w.planned_share * 100)} percent of the jobs`),
        ` ${w.planned_jobs} (${Math.round(w.planned_share * 100)} %)`))))));
}
