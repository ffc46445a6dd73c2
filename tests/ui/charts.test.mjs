// The pictures (README "Pictures"), in chromium against a real node: a job with a scripted
// history (successes, a failure, ticks missed while the node was down, a run lost to a SIGKILL
// of the node) shows exactly those cells in order on its tick timeline; the fleet histogram
// matches /api/v1/cron/preview for every job; screenshots of each chart at both widths.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { join } from "node:path";
import { ROOT, freePort, waitUntil, launchBrowser, openPage, shot } from "./support.mjs";

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** Serious or critical axe-core violations on the page, light and dark (as a11y.test.mjs runs it). */
async function axeFindings(page, view) {
  if (!(await page.evaluate(() => typeof window.axe === "object"))) await page.evaluate(AXE_SOURCE);
  const found = [];
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    const v = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ["violations"] })).violations
      .filter((x) => x.impact === "serious" || x.impact === "critical").map((x) => `${x.id}: ${x.nodes.map((n) => n.target.join(" ")).join(", ")}`));
    found.push(...v.map((x) => `${view} ${scheme}: ${x}`));
  }
  await page.emulateMedia({ colorScheme: "light" });
  return found;
}

const BIN = process.env.DISTCRON_BIN || join(ROOT, "target", "debug", "distcron");
const TOKEN = "charts-test-token-0123456789abcdef";

/** A node whose process can be stopped, SIGKILLed and started again on the same data dir. */
async function restartableNode() {
  assert.ok(existsSync(BIN), `distcron binary missing at ${BIN}: run cargo build first`);
  const dir = mkdtempSync(join(tmpdir(), "distcron-charts-"));
  const port = await freePort();
  const config = join(dir, "config.toml");
  writeFileSync(config, `listen = "127.0.0.1:${port}"\ndata_dir = "${join(dir, "data")}"\napi_token = "${TOKEN}"\n`
    + `[log_batch]\nflush_ms = 50\n[executor]\nkill_grace_ms = 500\nmax_output_bytes = 4096\n`);
  const base = `http://127.0.0.1:${port}`;
  let child = null;
  let stderr = "";
  const start = async () => {
    child = spawn(BIN, ["--config", config], { stdio: ["ignore", "ignore", "pipe"] });
    child.stderr.on("data", (d) => { stderr = (stderr + d).slice(-6000); });
    const me = child;
    await waitUntil(20000, async () => me.exitCode === null && (await fetch(`${base}/api/v1/health/live`)).ok, "distcron to listen");
  };
  const exit = (sig) => new Promise((res) => {
    if (!child || child.exitCode !== null) return res();
    const t = setTimeout(() => { child.kill("SIGKILL"); }, 8000);
    child.once("exit", () => { clearTimeout(t); res(); });
    child.kill(sig);
  });
  const api = async (method, path, body) => {
    const res = await fetch(`${base}${path}`, {
      method, headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  };
  await start();
  return {
    base, dir, api, start, stderr: () => stderr,
    stop: () => exit("SIGTERM"),
    crash: () => exit("SIGKILL"),
    remove: async () => { await exit("SIGTERM"); rmSync(dir, { recursive: true, force: true }); },
  };
}

const runsOf = async (node, job) => (await node.api("GET", `/api/v1/runs?job=${job}&limit=1000`)).body.runs;

/** The status of every tick of `job` from its run records alone (missed summaries spread over their range). */
function expectedFromRuns(runs, periodMs) {
  const byTick = new Map();
  for (const r of runs) {
    const t = Date.parse(r.scheduled_at);
    const m = r.status === "missed" && /from (\S+) to (\S+):/.exec(r.err || "");
    if (m) {
      for (let x = Date.parse(m[1]); x <= Date.parse(m[2]); x += periodMs) if (!byTick.has(x)) byTick.set(x, { status: "missed", attempt: 0 });
      continue;
    }
    const prev = byTick.get(t);
    if (!prev || prev.attempt <= r.attempt) byTick.set(t, { status: r.status, attempt: r.attempt });
  }
  return [...byTick.entries()].sort((a, b) => a[0] - b[0]).map(([t, v]) => [new Date(t).toISOString(), v.status]);
}

const iso = (t) => new Date(t).toISOString();
const collapse = (xs) => xs.filter((x, i) => i === 0 || x !== xs[i - 1]);

test("the timeline shows the scripted ticks in order and the fleet histogram matches the preview", { timeout: 240000 }, async () => {
  const node = await restartableNode();
  const browser = await launchBrowser();
  try {
    const counter = join(node.dir, "count");
    // Run 1 succeeds, 2 fails, 3 succeeds; run 4 hangs (the node is SIGKILLed under it); the rest succeed.
    const command = `n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; `
      + `case $n in 2) exit 1;; 4) sleep 300;; esac; echo ok`;
    const created = await node.api("POST", "/api/v1/jobs", { name: "pictured", command, cron_expr: "*/4 * * * * *", timeout_secs: 600 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    // Fleet jobs: an hourly burst at :00 and a jittered quarter-hourly job.
    for (const [name, cron_expr, jitter_secs] of [["hourly-a", "0 * * * *", 0], ["hourly-b", "@hourly", 0], ["quarter", "*/15 * * * *", 300]]) {
      const r = await node.api("POST", "/api/v1/jobs", { name, command: "true", cron_expr, jitter_secs, enabled: true });
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }

    await waitUntil(30000, async () => (await runsOf(node, "pictured")).filter((r) => r.status !== "running").length >= 3, "three finished runs");
    // Down over at least two ticks: recorded `missed` at the restart (catch-up `skip`).
    await node.stop();
    await new Promise((r) => setTimeout(r, 9000));
    await node.start();
    await waitUntil(30000, async () => readFileSync(counter, "utf8").trim() === "4"
      && (await runsOf(node, "pictured")).some((r) => r.status === "running"), "run 4 to be running");
    await node.crash();
    await node.start();
    await waitUntil(30000, async () => (await runsOf(node, "pictured")).some((r) => r.status === "lost"), "the lost run");
    await waitUntil(30000, async () => (await runsOf(node, "pictured")).filter((r) => r.status === "succeeded").length >= 3, "a run after the restart");
    assert.equal((await node.api("POST", "/api/v1/jobs/pictured/disable")).status, 200);
    await new Promise((r) => setTimeout(r, 1500));

    const runs = await runsOf(node, "pictured");
    const expected = expectedFromRuns(runs, 4000);
    const tl = (await node.api("GET", "/api/v1/jobs/pictured/timeline?window=24h")).body;
    assert.equal(tl.mode, "ticks");
    const served = tl.cells.map((c) => [iso(c.at), c.status]).filter(([, s]) => s !== "none");
    assert.deepEqual(served, expected, "the server's cells are the run log's ticks");
    const seq = collapse(expected.map(([, s]) => s));
    assert.deepEqual(seq.slice(0, 5), ["succeeded", "failed", "succeeded", "missed", "lost"], `scripted order: ${seq}`);

    for (const width of [1280, 390]) {
      const page = await openPage(browser, { width, token: TOKEN });
      await page.goto(`${node.base}/#/jobs/pictured/charts`);
      await page.waitForSelector("#timeline svg.timeline g.cell");
      const cells = (await page.$$eval("#timeline g.cell", (gs) => gs.map((g) => [g.dataset.at, g.dataset.status])))
        .map(([at, st]) => [iso(at), st]);
      assert.deepEqual(cells.filter(([, s]) => s !== "none"), expected, `cells in order at ${width}`);
      assert.deepEqual(cells, tl.cells.map((c) => [iso(c.at), c.status]));
      // Every cell with a run is a keyboard-focusable link to it.
      const links = await page.$$eval("#timeline a.cell-link", (as) => as.map((a) => a.getAttribute("href")));
      assert.equal(links.length, tl.cells.filter((c) => c.attempts).length);
      const failed = tl.cells.find((c) => c.status === "failed");
      await page.focus(`#timeline a.cell-link[href="#/runs/${failed.attempts.at(-1).id}"]`);
      await page.keyboard.press("Enter");
      await page.waitForFunction((id) => location.hash === `#/runs/${id}`, failed.attempts.at(-1).id);
      await page.goBack();
      await page.waitForSelector("#durations svg.durations");
      assert.match(await page.textContent("#durations-summary"), /Duration of pictured/);
      await shot(page, "charts-timeline-durations");
      assert.deepEqual(await axeFindings(page, `charts at ${width}`), []);

      await page.goto(`${node.base}/#/jobs`);
      await page.waitForSelector('tr[data-job="pictured"] svg.sparkline rect');
      const bars = await page.$$eval('tr[data-job="pictured"] svg.sparkline rect[data-status]', (rs) => rs.map((r) => r.dataset.status));
      const newest = runs.slice(0, 20).reverse().map((r) => r.status);
      assert.deepEqual(bars, newest, "the sparkline shows the last 20 runs, oldest first");
      await shot(page, "charts-sparklines");
      assert.deepEqual(await axeFindings(page, `jobs with sparklines at ${width}`), []);

      await page.goto(`${node.base}/#/fleet`);
      await page.waitForSelector("#forecast svg.forecast path.bars");
      await page.waitForSelector("#load-table");
      await shot(page, "charts-fleet");
      assert.deepEqual(await axeFindings(page, `fleet at ${width}`), []);
      assert.deepEqual(page.errors, [], "no script errors");
      await page.closeAll();
    }

    // The fleet histogram equals the preview of every enabled job.
    const fc = (await node.api("GET", "/api/v1/fleet/forecast?hours=24")).body;
    assert.equal(fc.minutes.length, 1440);
    const want = new Array(1440).fill(0);
    const from = Date.parse(fc.from);
    const jobs = (await node.api("GET", "/api/v1/jobs")).body.jobs.filter((j) => j.enabled);
    assert.equal(fc.jobs, jobs.length);
    for (const j of jobs) {
      const q = new URLSearchParams({ expr: j.cron_expr, tz: j.effective_tz, after: new Date(from - 1000).toISOString(), count: "100", name: j.name, jitter_secs: String(j.jitter_secs || 0) });
      const p = (await node.api("GET", `/api/v1/cron/preview?${q}`)).body;
      for (const t of p.fire_at) {
        const m = Math.floor((Date.parse(t) - from) / 60000);
        if (m >= 0 && m < 1440) want[m] += 1;
      }
    }
    assert.deepEqual(fc.minutes, want, "histogram = preview of every job");
    assert.ok(fc.minutes.some((n) => n >= 2), "the top-of-the-hour burst is visible");
  } catch (e) {
    e.message += `\n--- node stderr ---\n${node.stderr()}`;
    throw e;
  } finally {
    await browser.close();
    await node.remove();
  }
});
