// Accessibility check of the admin page (issue 12, item 7): axe-core (npm, pinned in
// package.json) runs on every view — jobs (with an invalid stored job), the run-now and delete
// dialogs, the editor (new, existing, with a field error, the unsaved-changes dialog), a job's
// history, runs (succeeded, failed, running, killed, timed out; output open), run pages (with
// truncated output, running), workers, alerts (a channel and an alerting job), a job's charts,
// the fleet view, not found, a
// banner error and the login screen — at 1280 and 390 px wide, in the light and the dark colour
// scheme. A violation of impact serious or critical fails the test; every one is printed with its
// rule id, help text and target nodes. A real distcron node, Debian chromium via playwright-core.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { startNode, launchBrowser, openPage, waitUntil, freePort } from "./support.mjs";

const AXE_PATH = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const AXE_SOURCE = readFileSync(AXE_PATH, "utf8");
const BLOCKING = new Set(["serious", "critical"]);

let node, browser, receiver;
const ids = {};

before(async () => {
  const port = await freePort();
  receiver = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => { res.writeHead(200, { "Content-Type": "text/plain" }); res.end("ok"); });
  });
  await new Promise((r) => receiver.listen(port, "127.0.0.1", r));
  node = await startNode({
    extraConfig: `[alerts]\npoll_ms = 300\n[alerts.channels.hook]\nkind = "webhook"\nurl = "http://127.0.0.1:${port}/hook"\nmax_attempts = 1\n`,
  });
  browser = await launchBrowser();
  await seed();
});

after(async () => {
  await browser?.close();
  await node?.stop();
  await new Promise((r) => (receiver ? receiver.close(r) : r()));
});

const NEVER = "0 0 1 1 *";

async function api(method, path, body, want) {
  const r = await node.api(method, `/api/v1${path}`, body);
  assert.equal(r.status, want, `${method} ${path}: ${JSON.stringify(r.body)}`);
  return r.body;
}

async function lastRun(job, status) {
  return waitUntil(30000, async () => {
    const runs = (await api("GET", `/runs?job=${job}`, undefined, 200)).runs;
    return runs.find((r) => r.status === status);
  }, `a ${status} run of ${job}`);
}

/** Jobs, runs of several statuses, an alert, an edit in the history and an invalid stored job. */
async function seed() {
  await api("POST", "/jobs", { name: "ok-job", command: "echo hello from ok-job; seq 1 20", cron_expr: NEVER, description: "prints a few lines" }, 201);
  await api("POST", "/jobs", { name: "chatty", command: "head -c 20000 /dev/zero | tr '\\0' x", cron_expr: NEVER }, 201);
  await api("POST", "/jobs", {
    name: "failing", command: "echo broken >&2; exit 3", cron_expr: NEVER,
    alerts: [{ on: ["failed", "recovered"], channels: ["hook"] }],
  }, 201);
  await api("POST", "/jobs", { name: "sleeper", command: "sleep 600", cron_expr: NEVER }, 201);
  await api("POST", "/jobs", { name: "stopped", command: "sleep 600", cron_expr: NEVER }, 201);
  await api("POST", "/jobs", { name: "slow", command: "sleep 30", cron_expr: NEVER, timeout_secs: 1 }, 201);
  await api("POST", "/jobs", { name: "idle", command: "true", cron_expr: "*/5 * * * *", tz: "Asia/Tokyo", enabled: false }, 201);
  for (const job of ["ok-job", "chatty", "failing", "sleeper", "stopped", "slow"]) await api("POST", `/jobs/${job}/run`, undefined, 202);
  await lastRun("stopped", "running");
  await api("POST", "/jobs/stopped/kill", undefined, 202);
  ids.ok = (await lastRun("ok-job", "succeeded")).id;
  ids.chatty = (await lastRun("chatty", "succeeded")).id;
  ids.running = (await lastRun("sleeper", "running")).id;
  await lastRun("failing", "failed");
  await lastRun("stopped", "killed");
  await lastRun("slow", "timeout");
  const job = await api("GET", "/jobs/ok-job", undefined, 200);
  await api("PUT", "/jobs/ok-job", { ...job, description: "prints a few lines, edited", version: job.version }, 200);
  await waitUntil(20000, async () => (await api("GET", "/alerts?limit=10", undefined, 200)).alerts?.length > 0, "the failed alert");
  const doc = JSON.stringify({ name: "broken", command: "echo x", cron_expr: "not a cron" });
  execFileSync("sqlite3", [join(node.dir, "data", "jobs.sqlite3"),
    `PRAGMA busy_timeout=5000; INSERT INTO jobs (name, json, mod_revision) VALUES ('broken', '${doc}', 1);`]);
}

/**
 * axe-core in the page. The page's CSP (script-src 'self') refuses the inline <script> that
 * page.addScriptTag({ path }) inserts, so the source is evaluated through the DevTools protocol
 * (page.evaluate), which the page's CSP does not govern; the page itself keeps its strict CSP.
 */
async function injectAxe(page) {
  if (await page.evaluate(() => typeof window.axe === "object")) return;
  await page.evaluate(AXE_SOURCE);
  assert.equal(await page.evaluate(() => typeof window.axe), "object", "axe-core loaded into the page");
}

/** The serious and critical violations on the page, as printable lines. */
async function violations(page) {
  await injectAxe(page);
  return page.evaluate(async (blocking) => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.filter((v) => blocking.includes(v.impact)).map((v) =>
      `[${v.impact}] ${v.id}: ${v.help}\n${v.nodes.map((n) => `      ${n.target.join(" ")}\n        ${(n.failureSummary || "").replaceAll("\n", "\n        ")}`).join("\n")}`);
  }, [...BLOCKING]);
}

const failures = [];
const audited = [];

/** Runs axe on the page as it is, in the light and the dark scheme, and records what it finds. */
async function audit(page, view) {
  const { width } = page.viewportSize();
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    for (const v of await violations(page)) failures.push(`${view} at ${width} px, ${scheme}: ${v}`);
    audited.push(`${view}@${width}/${scheme}`);
  }
  await page.emulateMedia({ colorScheme: "light" });
}

async function go(page, hash, ready) {
  await page.goto(`${node.base}/${hash}`);
  await page.locator(ready).first().waitFor({ state: "visible" });
}

test("axe-core finds no serious or critical violation on any view at 1280 and 390 px, light and dark", async () => {
  for (const width of [1280, 390]) {
    const height = width > 800 ? 900 : 844;

    // The login screen (no token in this tab).
    const anon = await openPage(browser, { width, height });
    await anon.goto(`${node.base}/`);
    await anon.locator("#login").waitFor({ state: "visible" });
    await audit(anon, "login");
    await anon.fill("#token", "not-the-token");
    await anon.press("#token", "Enter");
    await waitUntil(5000, async () => (await anon.textContent("#login-error")).includes("refused"), "the refusal");
    await audit(anon, "login refused");
    await anon.closeAll();

    const page = await openPage(browser, { width, height, token: node.token });
    await go(page, "#/jobs", '#jobs tr[data-job="sleeper"] .run-link');
    await page.locator('#invalid-jobs li[data-invalid-job="broken"]').waitFor();
    await page.locator("#health.health-ok").waitFor();
    await audit(page, "jobs");

    await page.click('button[aria-label="Run now: ok-job"]');
    await page.locator("#run-now").waitFor({ state: "visible" });
    await page.click("#run-now button.add-param");
    await audit(page, "run-now dialog");
    await page.click('#run-now button[value="cancel"]');
    await page.locator("#run-now").waitFor({ state: "detached" });

    await page.click('button[aria-label="Delete idle"]');
    await page.locator("#confirm[open]").waitFor();
    await audit(page, "delete dialog");
    await page.click("#confirm-cancel");

    await go(page, "#/jobs/new", "#preview p");
    await audit(page, "editor (new job)");
    await page.fill("#f-cron_expr", "61 * * * *");
    await waitUntil(5000, async () => (await page.textContent("#err-cron_expr")).length > 0, "the field error");
    await audit(page, "editor (field error)");
    await page.click("#cancel");
    await page.locator("#confirm[open]").waitFor();
    await audit(page, "unsaved-changes dialog");
    await page.click("#confirm-ok");
    await page.locator("#jobs").waitFor();

    await go(page, "#/jobs/ok-job/edit", "#fire-times li");
    await audit(page, "editor (existing job)");

    await go(page, "#/jobs/ok-job/history", ".audit-entry .diff");
    await audit(page, "history");

    await go(page, "#/runs", '#runs tr[data-status="timeout"]');
    for (const status of ["succeeded", "failed", "running", "killed"]) await page.locator(`#runs tr[data-status="${status}"]`).first().waitFor();
    await page.locator(`#runs tr[data-run="${ids.ok}"] button`, { hasText: "Output" }).click();
    await page.locator("pre.output").first().waitFor();
    await audit(page, "runs (output open)");

    await go(page, `#/runs/${ids.chatty}`, ".trunc-marker");
    await audit(page, "run (truncated output)");
    await go(page, `#/runs/${ids.ok}`, "pre.output");
    await audit(page, "run (succeeded)");
    await go(page, `#/runs/${ids.running}`, "#run-kill");
    await audit(page, "run (running)");

    await go(page, "#/workers", "#workers tbody tr");
    await audit(page, "workers");

    await go(page, "#/alerts", '#alert-jobs [data-job="failing"] [data-state]');
    await page.locator("#alert-channels [data-channel=hook]").waitFor();
    await audit(page, "alerts");

    // Pictures (README "Pictures"): a job's timeline and duration chart, the fleet view.
    await go(page, "#/jobs/failing/charts", "#timeline svg.timeline");
    await page.locator("#durations svg.durations").waitFor();
    await audit(page, "charts");
    await go(page, "#/fleet", "#forecast svg.forecast");
    await page.locator("#load-table").waitFor();
    await audit(page, "fleet");

    await go(page, "#/no-such-view", ".empty");
    await audit(page, "not found");
    await go(page, "#/runs?status=bogus", "#banner .banner-item");
    await audit(page, "banner error");

    // Every status badge and health state, whether or not the data above reached it: the
    // palette itself must meet the contrast minimum in both schemes.
    await page.evaluate(() => {
      const box = document.createElement("div");
      box.className = "view";
      for (const s of ["running", "succeeded", "failed", "timeout", "killed", "error", "lost", "skipped", "missed", "unknown"]) {
        const b = document.createElement("span");
        b.className = `badge status-${s}`;
        b.textContent = s;
        box.append(b, " ");
      }
      for (const s of ["ok", "warn", "bad"]) {
        const b = document.createElement("span");
        b.className = `health health-${s}`;
        b.textContent = `health ${s}`;
        box.append(b, " ");
      }
      document.getElementById("content").append(box);
    });
    await audit(page, "status badges and health states");

    assert.deepEqual(page.errors, [], "no script errors on the page");
    await page.closeAll();
  }
  assert.ok(audited.length === 2 * 2 * 21, `every view audited: ${audited.join(", ")}`);
  assert.equal(failures.length, 0, `axe-core found ${failures.length} serious or critical violation(s):\n${failures.join("\n")}`);
});
