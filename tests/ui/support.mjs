// Support for the browser tests: a real distcron node on a free loopback port in a temp dir
// (binary from DISTCRON_BIN or target/debug/distcron), Debian chromium through playwright-core,
// polling waits and an API client.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import net from "node:net";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export const ROOT = resolve(import.meta.dirname, "..", "..");
export const ARTIFACTS = join(ROOT, "artifacts", "ui");
const BIN = process.env.DISTCRON_BIN || join(ROOT, "target", "debug", "distcron");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

/** A free 127.0.0.1 port. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
    srv.on("error", rej);
  });
}

/** Polls `probe` every 100 ms until it returns something truthy; fails after `ms`. */
export async function waitUntil(ms, probe, what = "condition") {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A distcron node (role all, embedded stores) with `token`; `stop()` kills it and removes its dir. */
export async function startNode({ token }) {
  assert.ok(existsSync(BIN), `distcron binary missing at ${BIN}: run cargo build first (or set DISTCRON_BIN)`);
  const dir = mkdtempSync(join(tmpdir(), "distcron-ui-"));
  const port = await freePort();
  writeFileSync(join(dir, "config.toml"),
    `listen = "127.0.0.1:${port}"\ndata_dir = "${join(dir, "data")}"\napi_token = "${token}"\n`
    + `[log_batch]\nflush_ms = 50\n[executor]\nkill_grace_ms = 1000\nmax_output_bytes = 4096\n`);
  const child = spawn(BIN, ["--config", join(dir, "config.toml")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr = (stderr + d).slice(-4000); });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitUntil(20000, async () => child.exitCode === null && (await fetch(`${base}/api/v1/health/live`)).ok, "distcron to listen");
  } catch (e) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${e.message}\n${stderr}`);
  }
  const api = async (method, path, body) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  };
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => {
        const t = setTimeout(() => { child.kill("SIGKILL"); r(); }, 8000);
        child.once("exit", () => { clearTimeout(t); r(); });
      });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { base, api, stop, stderr: () => stderr, dir };
}

/** Debian chromium, headless. */
export async function launchBrowser() {
  assert.ok(existsSync(CHROMIUM), `chromium missing at ${CHROMIUM}: apt-get install chromium (scripts/setup.sh --test does)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
}

/**
 * A page in a fresh context (viewer in Europe/Berlin, en-US) that records uncaught script errors
 * in `page.errors`. With `token`, the tab starts signed in.
 */
export async function openPage(browser, { width = 1280, height = 900, token = null } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, locale: "en-US", timezoneId: "Europe/Berlin" });
  if (token) await context.addInitScript((t) => sessionStorage.setItem("distcron.token", t), token);
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e.message));
  page.on("dialog", (d) => { page.errors.push(`unexpected native dialog: ${d.message()}`); d.dismiss(); });
  page.closeAll = () => context.close();
  return page;
}

/** Fails when a form control or button of the page has no accessible name. */
export async function assertLabelled(page, view) {
  const unnamed = await page.evaluate(() => {
    const bad = [];
    for (const el of document.querySelectorAll("input, select, textarea, button, a[href]")) {
      if (el.closest("[hidden], dialog:not([open])") || el.type === "hidden") continue;
      const labelled = (el.labels && [...el.labels].some((l) => l.textContent.trim()))
        || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")
        || ((el.tagName === "BUTTON" || el.tagName === "A") && el.textContent.trim());
      if (!labelled) bad.push(el.outerHTML.slice(0, 120));
    }
    return bad;
  });
  assert.deepEqual(unnamed, [], `controls without a name in ${view}`);
}

/**
 * A screenshot of the page to artifacts/ui/<name>-<width>.png (from the top); fails when the
 * page scrolls sideways (the layout must fit the width).
 */
export async function shot(page, name) {
  await page.evaluate(() => window.scrollTo(0, 0));
  const { width } = page.viewportSize();
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(scrollWidth <= width, `${name} at ${width} px scrolls sideways (content is ${scrollWidth} px wide)`);
  await assertLabelled(page, name);
  await page.screenshot({ path: join(ARTIFACTS, `${name}-${width}.png`), fullPage: true });
}
