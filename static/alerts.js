// The alerts view: the configured channels (each with a "Send test alert" button for operators),
// each job's alert state under its effective rules, and the alert history with every delivery
// attempt. Refreshed every 5 s. Every string from the server is rendered as text.

import { api, describe, Unauthorized, may, seg } from "./api.js";
import { h, replace, every } from "./dom.js";
import { fmtTime, fmtRelative } from "./format.js";

/** Kinds that change a job's alert state (late and test alerts do not). */
const STATE_KINDS = new Set(["failed", "timeout", "lost", "missed", "skipped", "error", "killed", "dead_man", "recovered"]);

/** The badge class of an alert kind or delivery state, from a fixed list. */
function kindClass(kind) {
  if (kind === "recovered" || kind === "delivered" || kind === "ok") return "status-succeeded";
  if (kind === "pending" || kind === "test" || kind === "late") return "status-running";
  return "status-failed";
}
const tag = (text) => h("span", { class: `badge ${kindClass(text)}` }, String(text));

function describeRule(rule) {
  const parts = [];
  if (rule.on && rule.on.length) parts.push(`on ${rule.on.join(", ")}`);
  if (rule.after_consecutive > 1) parts.push(`after ${rule.after_consecutive} in a row`);
  if (rule.late_after_secs) parts.push(`late after ${rule.late_after_secs} s`);
  if (rule.expect_success_within_secs) parts.push(`success expected within ${rule.expect_success_within_secs} s`);
  parts.push(`→ ${rule.channels.join(", ")}`);
  return parts.join(" · ");
}

/** Mounts the alerts view; returns the unmount function. */
export function mountAlerts(root, ctx) {
  let alive = true;
  let data = null;
  const channelsBox = h("div", { id: "alert-channels" });
  const jobsBox = h("div", { id: "alert-jobs" });
  const historyBox = h("div", { id: "alert-history" });
  replace(root,
    h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Alerts"), h("span", { class: "muted live" }, "Live: refreshes every 5 s")),
    h("h2", {}, "Channels"), channelsBox,
    h("h2", {}, "Jobs"), jobsBox,
    h("h2", {}, "History"), historyBox);

  const cell = (label, ...children) => h("td", { dataset: { label } }, h("div", { class: "cell" }, children));

  async function sendTest(name, button) {
    button.disabled = true;
    try {
      const rec = await api("POST", `/alert-channels/${seg(name)}/test`);
      const attempt = (rec.deliveries[0] && rec.deliveries[0].attempts[0]) || {};
      if (rec.state === "delivered") ctx.notify(`Test alert delivered to ${name}.`);
      else ctx.error(`test-${name}`, `Test alert to ${name} failed: ${attempt.error || rec.state}`);
      load();
    } catch (e) {
      if (!(e instanceof Unauthorized)) ctx.error(`test-${name}`, `Could not send a test alert to ${name}: ${describe(e)}`);
    } finally {
      button.disabled = false;
    }
  }

  function renderChannels(channels) {
    if (!channels.length) {
      replace(channelsBox, h("div", { class: "empty" }, h("p", {}, "No alert channels are configured. Add [alerts.channels.<name>] to the config file (README \"Alerts\").")));
      return;
    }
    const operator = may("operator");
    replace(channelsBox, h("div", { class: "table-wrap" }, h("table", { class: "grid channels" },
      h("thead", {}, h("tr", {}, ["Channel", "Kind", "Attempts", "Timeout", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, channels.map((c) => h("tr", { dataset: { channel: c.name } },
        cell("Channel", h("code", {}, c.name)),
        cell("Kind", c.kind, c.signed ? h("div", { class: "muted" }, "HMAC-SHA256 signed") : null),
        cell("Attempts", String(c.max_attempts)),
        cell("Timeout", `${c.timeout_ms} ms`),
        cell("", operator ? h("button", { type: "button", class: "test-alert", "aria-label": `Send test alert to ${c.name}`,
          onclick: (ev) => sendTest(c.name, ev.currentTarget) }, "Send test alert") : null)))))));
  }

  function renderJobs(jobs, defaults, alerts) {
    const rows = [];
    for (const job of jobs) {
      const rules = job.alerts ?? defaults;
      if (!rules || !rules.length) continue;
      const mine = alerts.filter((a) => a.alert.job === job.name);
      const newest = mine.find((a) => STATE_KINDS.has(a.alert.kind));
      const state = newest && newest.alert.kind !== "recovered" ? "alerting" : "ok";
      const last = mine[0];
      rows.push(h("tr", { dataset: { job: job.name } },
        cell("Job", h("a", { href: `#/runs?job=${seg(job.name)}` }, job.name)),
        cell("State", h("span", { class: `badge ${state === "ok" ? "status-succeeded" : "status-failed"}`, dataset: { state } }, state)),
        cell("Rules", rules.map((r) => h("div", {}, describeRule(r))), h("div", { class: "muted" }, job.alerts ? "own rules" : "default rules")),
        cell("Last alert", last ? [tag(last.alert.kind), " ", h("time", { datetime: last.alert.raised_at, title: fmtTime(last.alert.raised_at) }, fmtRelative(last.alert.raised_at))] : h("span", { class: "muted" }, "none"))));
    }
    replace(jobsBox, rows.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "grid alert-jobs" },
        h("thead", {}, h("tr", {}, ["Job", "State", "Rules", "Last alert"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows)))
      : h("div", { class: "empty" }, h("p", {}, "No job has alert rules. Give a job \"alerts\" or set default rules in alerts.rules.")));
  }

  function renderHistory(alerts) {
    replace(historyBox, alerts.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "grid alerts" },
        h("thead", {}, h("tr", {}, ["Raised", "Job", "Kind", "Message", "Delivery"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, alerts.map((a) => h("tr", { dataset: { alert: a.alert.id } },
          cell("Raised", h("time", { datetime: a.alert.raised_at, title: fmtTime(a.alert.raised_at) }, fmtRelative(a.alert.raised_at))),
          cell("Job", a.alert.job ? h("code", {}, a.alert.job) : h("span", { class: "muted" }, "test")),
          cell("Kind", tag(a.alert.kind)),
          cell("Message", a.alert.message),
          cell("Delivery", tag(a.state), a.deliveries.map((d) => {
            const last = d.attempts[d.attempts.length - 1];
            return h("div", { class: "muted" }, `${d.channel}: ${d.state}, ${d.attempts.length} attempt${d.attempts.length === 1 ? "" : "s"}`,
              last && last.error ? ` (last: ${last.error})` : "");
          })))))))
      : h("div", { class: "empty" }, h("p", {}, "No alerts yet.")));
  }

  async function load() {
    try {
      const [channels, jobs, alerts] = await Promise.all([api("GET", "/alert-channels"), api("GET", "/jobs"), api("GET", "/alerts?limit=200")]);
      if (!alive) return;
      data = { channels: channels.channels || [], defaults: channels.default_rules || [], jobs: jobs.jobs || [], alerts: alerts.alerts || [] };
      ctx.error("alerts", null);
      renderChannels(data.channels);
      renderJobs(data.jobs, data.defaults, data.alerts);
      renderHistory(data.alerts);
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      ctx.error("alerts", `Could not load the alerts: ${describe(e)}`);
      if (data === null) replace(historyBox, h("p", { class: "muted" }, "The alerts could not be loaded."));
    }
  }

  replace(historyBox, h("p", { class: "loading" }, "Loading alerts…"));
  load();
  const stop = every(5000, load);
  return () => { alive = false; stop(); };
}
