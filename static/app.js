// distcron admin page (minimal). Every string from the server is rendered with textContent,
// never as HTML. The API token, when needed, is kept in sessionStorage for this tab only.
"use strict";

const TOKEN_KEY = "distcron.token";
const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch("/api/v1" + path, { headers });
  if (res.status === 401) throw new Unauthorized();
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const msg = body && body.error ? body.error.code + ": " + body.error.message : "HTTP " + res.status;
    throw new Error(msg);
  }
  return body;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function duration(ms) {
  if (ms == null) return "—";
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  return s < 120 ? s.toFixed(1) + " s" : Math.round(s / 60) + " min";
}

function renderJobs(jobs) {
  const body = $("jobs").querySelector("tbody");
  body.replaceChildren();
  for (const job of jobs) {
    const tr = document.createElement("tr");
    cell(tr, job.name);
    let schedule = job.cron_expr + " (" + job.effective_tz + ")";
    if (job.dialect === "seed") schedule += " [seed dialect]";
    cell(tr, schedule);
    cell(tr, job.enabled ? when(job.next_run_at) : "—");
    cell(tr, job.enabled ? "yes" : "no");
    body.appendChild(tr);
  }
  $("jobs-empty").hidden = jobs.length > 0;
}

function renderRuns(runs) {
  const body = $("runs").querySelector("tbody");
  body.replaceChildren();
  for (const run of runs) {
    const tr = document.createElement("tr");
    cell(tr, run.job);
    cell(tr, run.status, "status-" + String(run.status).replace(/[^a-z]/g, ""));
    cell(tr, when(run.started_at || run.dispatched_at));
    cell(tr, duration(run.duration_ms));
    cell(tr, run.worker);
    cell(tr, run.err);
    body.appendChild(tr);
  }
  $("runs-empty").hidden = runs.length > 0;
}

function showLogin(message) {
  $("login").hidden = false;
  $("content").hidden = true;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function load() {
  $("status").textContent = "loading…";
  try {
    const [jobs, runs] = await Promise.all([api("/jobs"), api("/runs?limit=25")]);
    $("login").hidden = true;
    $("content").hidden = false;
    $("error").hidden = true;
    renderJobs(jobs.jobs || []);
    renderRuns(runs.runs || []);
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e instanceof Unauthorized) {
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(had ? "That token was refused." : "");
    } else {
      $("error").textContent = "Could not load: " + e.message;
      $("error").hidden = false;
    }
    $("status").textContent = "";
  }
  $("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    load();
  });
  $("refresh").addEventListener("click", load);
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    load();
  });
  load();
  setInterval(() => { if ($("login").hidden) load(); }, 10000);
});
