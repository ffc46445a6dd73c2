// Browser test of live output: the run page of a running run shows its lines as they are
// printed (fetch() + stream reader over GET /api/v1/runs/{id}/output?follow=1), then the stored
// output once the run ended. A real distcron node, Debian chromium driven by playwright-core.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { startNode, launchBrowser, openPage, shot, waitUntil } from "./support.mjs";

let node, browser;

before(async () => {
  node = await startNode({ extraConfig: 'shell = "/bin/sh"\n' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

test("the run page shows a running run's lines as they appear, then its stored output", async () => {
  const release = join(node.dir, "release");
  const command = `for i in $(seq 1 10); do echo line-$i; sleep 0.2; done; while [ ! -e ${release} ]; do sleep 0.1; done; echo done`;
  assert.equal((await node.api("POST", "/api/v1/jobs", { name: "ticker", command, cron_expr: "@yearly" })).status, 201);
  assert.equal((await node.api("POST", "/api/v1/jobs/ticker/run")).status, 202);
  const id = await waitUntil(10000, async () => {
    const runs = (await node.api("GET", "/api/v1/runs?job=ticker")).body.runs;
    return runs.find((r) => r.status === "running")?.id;
  }, "the run to start");

  const page = await openPage(browser, { token: node.token });
  await page.goto(`${node.base}/#/runs/${encodeURIComponent(id)}`);
  await page.locator("#live-output").waitFor({ state: "visible" });
  // Lines appear while the run runs (it cannot end before `release` exists).
  await waitUntil(10000, async () => (await page.textContent("#live-output")).includes("line-3\n"), "live lines");
  const seen = await page.textContent("#live-output");
  assert.ok(seen.startsWith("line-1\nline-2\nline-3\n"), seen);
  assert.equal((await node.api("GET", `/api/v1/runs/${id}`)).body.status, "running");
  await waitUntil(10000, async () => (await page.textContent("#live-output")).includes("line-10\n"), "all lines");
  await shot(page, "run-live-output");

  writeFileSync(release, "");
  // Ended: the stored output replaces the live view, with the final status.
  await waitUntil(15000, async () => (await page.locator("#live-output").count()) === 0, "the stored output");
  const output = await page.textContent("pre.output");
  assert.equal(output, Array.from({ length: 10 }, (_, i) => `line-${i + 1}\n`).join("") + "done\n");
  assert.ok((await page.textContent(".run-view")).includes("succeeded"));
  assert.deepEqual(page.errors, [], "no script errors on the page");
  await page.close();
});
