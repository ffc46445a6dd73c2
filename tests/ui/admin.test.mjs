// Browser tests of the admin page: a real distcron node, Debian chromium driven by
// playwright-core. Screenshots of each view at 1280 and 390 px go to artifacts/ui/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import net from "node:net";
import { chromium } from "playwright-core";

const ROOT = resolve(import.meta.dirname, "..", "..");
const BIN = process.env.DISTCRON_BIN || join(ROOT, "target", "debug", "distcron");
const ARTIFACTS = join(ROOT, "artifacts", "ui");
const TOKEN = "ui-test-token";
const CHROMIUM = "/usr/bin/chromium";

let node, dir, port, browser;

function freePort() {
  return new Promise((res, rej) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
    srv.on("error", rej);
  });
}

async function waitUntil(ms, probe) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function api(method, path, body) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

before(async () => {
  assert.ok(existsSync(BIN), `distcron binary missing at ${BIN}: run cargo build first`);
  assert.ok(existsSync(CHROMIUM), "chromium missing: apt-get install chromium (scripts/setup.sh --test does)");
  dir = mkdtempSync(join(tmpdir(), "distcron-ui-"));
  port = await freePort();
  writeFileSync(join(dir, "config.toml"),
    `listen = "127.0.0.1:${port}"\ndata_dir = "${join(dir, "data")}"\napi_token = "${TOKEN}"\n`);
  node = spawn(BIN, ["--config", join(dir, "config.toml")], { stdio: ["ignore", "ignore", "pipe"] });
  await waitUntil(20000, async () => (await fetch(`http://127.0.0.1:${port}/api/v1/health/live`)).ok);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  if (node && node.exitCode === null) {
    node.kill("SIGTERM");
    await new Promise((r) => { node.once("exit", r); setTimeout(r, 5000); });
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function login(page) {
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#token", TOKEN);
  await page.press("#token", "Enter");
  await page.locator("#content").waitFor({ state: "visible" });
}

test("a wrong token is refused with a clear message and the right one opens the console", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.locator("#login").waitFor({ state: "visible" });
  await page.screenshot({ path: join(ARTIFACTS, "login-1280.png") });
  await page.fill("#token", "not-the-token");
  await page.press("#token", "Enter");
  await waitUntil(5000, async () => (await page.textContent("#login-error")).includes("refused"));
  await page.fill("#token", TOKEN);
  await page.press("#token", "Enter");
  await page.locator("#content").waitFor({ state: "visible" });
  assert.equal(await page.isVisible("#login"), false);
  await page.click("#logout");
  await page.locator("#login").waitFor({ state: "visible" });
  await page.close();
});

test("jobs and runs are listed, and hostile strings are shown as text, never run", async () => {
  const hostile = "/nope/<img src=x onerror=window.__xss=1><script>window.__xss=2</script>";
  let r = await api("POST", "/api/v1/jobs", { name: "nightly-report", command: "echo report", cron_expr: "30 2 * * *", tz: "Europe/Berlin" });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await api("POST", "/api/v1/jobs", { name: "xss", command: "true", cron_expr: "0 0 1 1 *", working_dir: hostile, enabled: false });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal((await api("POST", "/api/v1/jobs/xss/run")).status, 202);
  await waitUntil(10000, async () => {
    const runs = (await api("GET", "/api/v1/runs?job=xss")).body.runs;
    return runs.length > 0 && runs[0].status === "error";
  });
  for (const width of [1280, 390]) {
    const page = await browser.newPage({ viewport: { width, height: 900 } });
    await login(page);
    await waitUntil(5000, async () => (await page.textContent("#jobs")).includes("nightly-report"));
    await waitUntil(5000, async () => (await page.textContent("#runs")).includes("<img src=x"));
    assert.equal(await page.evaluate(() => window.__xss), undefined, "no injected script ran");
    assert.equal(await page.locator("#runs img, #runs script").count(), 0, "no element was injected");
    await page.screenshot({ path: join(ARTIFACTS, `console-${width}.png`), fullPage: true });
    await page.close();
  }
});
