// Browser attack tests (README "Security: the perimeter"): a page served on another loopback port,
// opened in headless Debian chromium, tries to drive a distcron node the operator runs. The node
// under attack has authentication turned OFF (insecure_no_auth on loopback), so only the
// perimeter stands between the page and the commands: nothing may be saved, changed or run.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { existsSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { freePort, launchBrowser, openPage, startNode, waitUntil } from "./support.mjs";

const BIN = process.env.DISTCRON_BIN || join(import.meta.dirname, "..", "..", "target", "debug", "distcron");
let browser;
let open; // the node without auth
let evil; // the attacker's page server
let evilBase;
let dir;

/** A node with auth off (loopback only): the perimeter alone must hold. */
async function startOpenNode() {
  dir = mkdtempSync(join(tmpdir(), "distcron-ui-open-"));
  const port = await freePort();
  writeFileSync(join(dir, "config.toml"),
    `listen = "127.0.0.1:${port}"\ndata_dir = "${join(dir, "data")}"\ninsecure_no_auth = true\n[log_batch]\nflush_ms = 50\n`);
  const child = spawn(BIN, ["--config", join(dir, "config.toml")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr = (stderr + d).slice(-20000); });
  const base = `http://127.0.0.1:${port}`;
  await waitUntil(20000, async () => child.exitCode === null && (await fetch(`${base}/api/v1/health/live`)).ok, "distcron to listen");
  const api = async (method, path, body) => {
    const res = await fetch(`${base}${path}`, {
      method, headers: { "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  };
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => { const t = setTimeout(() => { child.kill("SIGKILL"); r(); }, 8000); child.once("exit", () => { clearTimeout(t); r(); }); });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { base, api, stop, log: () => stderr };
}

/** The attacker's page: every simple cross-origin request a page can send without CORS. */
function attackPage(target, marker) {
  const job = JSON.stringify({ name: "x", command: `id > ${marker}`, cron_expr: "@yearly" });
  return `<!doctype html><html><body>
<form id="f" method="POST" action="${target}/job/save" target="sink"><input name="job" value='${job.replace(/'/g, "&#39;")}'></form>
<iframe name="sink"></iframe>
<img src="${target}/job/save?job=${encodeURIComponent(job)}">
<script>
(async () => {
  const opts = { method: "POST", mode: "no-cors" };
  const tries = [
    fetch("${target}/api/v1/jobs/victim/run", opts),
    fetch("${target}/api/v1/jobs/victim/disable", opts),
    fetch("${target}/job/save", { ...opts, body: new URLSearchParams({ job: ${JSON.stringify(job)} }) }),
    fetch("${target}/job/delete", { ...opts, body: new URLSearchParams({ name: "victim" }) }),
    fetch("${target}/api/v1/jobs", { ...opts, headers: { "Content-Type": "text/plain" }, body: ${JSON.stringify(job)} }),
  ];
  await Promise.allSettled(tries);
  document.getElementById("f").submit();
  setTimeout(() => { document.title = "done"; }, 500);
})();
</script></body></html>`;
}

before(async () => {
  browser = await launchBrowser();
  open = await startOpenNode();
  const port = await freePort();
  evilBase = `http://127.0.0.1:${port}`;
  evil = http.createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end(attackPage(open.base, join(dir, "pwned")));
  });
  await new Promise((r) => evil.listen(port, "127.0.0.1", r));
});

after(async () => {
  await browser?.close();
  evil?.close();
  await open?.stop();
});

test("a page on another loopback port cannot save, change or run anything (auth off)", async () => {
  const victimMarker = join(dir, "victim-ran");
  const created = await open.api("POST", "/api/v1/jobs",
    { name: "victim", command: `touch ${victimMarker}`, cron_expr: "@yearly" });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const page = await openPage(browser);
  await page.goto(`${evilBase}/`);
  await waitUntil(10000, async () => (await page.title()) === "done", "the attack page to finish");
  // Every attempt reached the node and was refused at the perimeter (or was a harmless GET).
  await waitUntil(5000, async () => (open.log().match(/refused at the perimeter/g) || []).length >= 6, "the refusals in the log");
  await page.closeAll();
  const jobs = (await open.api("GET", "/api/v1/jobs")).body.jobs;
  assert.deepEqual(jobs.map((j) => j.name), ["victim"], "nothing saved, nothing deleted");
  assert.equal(jobs[0].enabled, true, "not disabled");
  assert.equal(jobs[0].version, created.body.version, "not changed");
  assert.deepEqual((await open.api("GET", "/api/v1/runs?job=victim")).body.runs, [], "not run");
  assert.equal(existsSync(join(dir, "pwned")), false, "no attacker command ran");
  assert.equal(existsSync(victimMarker), false, "the victim job did not run");
  // Control: the same node does run the job for its own origin (same-origin API client).
  assert.equal((await open.api("POST", "/api/v1/jobs/victim/run")).status, 202);
  await waitUntil(15000, async () => existsSync(victimMarker), "the legitimate run");
});

test("the admin page logs in with the generated token and works (same origin)", async () => {
  const node = await startNode();
  try {
    assert.match(node.token, /^[0-9a-f]{64}$/, "a 256-bit token");
    assert.equal(readFileSync(join(node.dir, "data", "api_token"), "utf8").trim(), node.token);
    const page = await openPage(browser);
    await page.goto(`${node.base}/`);
    await page.locator("#login").waitFor({ state: "visible" });
    await page.fill("#token", node.token);
    await page.click("#login-submit");
    await page.locator("#content h1").waitFor({ state: "visible" });
    // A state change from the page itself passes the perimeter (Origin = the node's own).
    const status = await page.evaluate(async ([token]) => {
      const r = await fetch("/api/v1/jobs", {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ name: "from-page", command: "true", cron_expr: "@yearly" }),
      });
      return r.status;
    }, [node.token]);
    assert.equal(status, 201);
    assert.deepEqual(page.errors, []);
    await page.closeAll();
  } finally {
    await node.stop();
  }
});
