// Browser test of the Alerts view: a real distcron node whose webhook channel points at a local
// receiver (a node:http server on 127.0.0.1), a failing job with an alert rule, Debian chromium
// through playwright-core. The view shows the job alerting with its history, and the "Send
// test alert" button delivers a test alert to the receiver.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHmac } from "node:crypto";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNode, launchBrowser, openPage, shot, waitUntil, freePort } from "./support.mjs";

const SECRET = "ui-test-secret";
let node, browser, receiver, secretDir;
const received = [];

before(async () => {
  const port = await freePort();
  receiver = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      received.push({ signature: req.headers["x-distcron-signature-256"], body, json: JSON.parse(body) });
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.end("ok");
    });
  });
  await new Promise((r) => receiver.listen(port, "127.0.0.1", r));
  secretDir = mkdtempSync(join(tmpdir(), "distcron-ui-secret-"));
  writeFileSync(join(secretDir, "secret"), `${SECRET}\n`);
  node = await startNode({
    extraConfig: `[alerts]\npoll_ms = 300\n[alerts.channels.hook]\nkind = "webhook"\nurl = "http://127.0.0.1:${port}/hook"\n`
      + `secret_file = "${join(secretDir, "secret")}"\nmax_attempts = 3\n`,
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
  await new Promise((r) => (receiver ? receiver.close(r) : r()));
  if (secretDir) rmSync(secretDir, { recursive: true, force: true });
});

test("the alerts view shows a job's alert state and history, and sends a test alert", async () => {
  const created = await node.api("POST", "/api/v1/jobs", {
    name: "broken", command: "exit 3", cron_expr: "*/2 * * * * *",
    alerts: [{ on: ["failed", "recovered"], channels: ["hook"] }],
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  await waitUntil(20000, () => received.some((r) => r.json.kind === "failed"), "the failed alert at the receiver");

  for (const width of [1280, 390]) {
    const page = await openPage(browser, { width, token: node.token });
    await page.goto(`${node.base}/#/alerts`);
    await page.locator("#alert-channels [data-channel=hook]").waitFor({ state: "visible" });
    // The job is alerting, under its own rule; the history shows the delivered alert.
    const state = page.locator("#alert-jobs [data-job=broken] [data-state]");
    await state.waitFor({ state: "visible" });
    assert.equal(await state.textContent(), "alerting");
    assert.match(await page.textContent("#alert-jobs [data-job=broken]"), /on failed, recovered/);
    await page.locator("#alert-history tr[data-alert^='f0-']").first().waitFor({ state: "visible" });
    const row = await page.textContent("#alert-history tr[data-alert^='f0-']");
    assert.match(row, /broken/);
    assert.match(row, /hook: delivered, 1 attempt/);
    await shot(page, "alerts");
    if (width === 1280) {
      // The test button delivers to the receiver, and the history shows it.
      const before = received.length;
      await page.click("#alert-channels [data-channel=hook] button.test-alert");
      await waitUntil(10000, () => received.length > before, "the test alert at the receiver");
      const sent = received[received.length - 1];
      assert.equal(sent.json.kind, "test");
      assert.equal(sent.signature, `sha256=${createHmac("sha256", SECRET).update(sent.body).digest("hex")}`);
      await page.locator("#toast.shown").waitFor({ state: "visible" });
      assert.match(await page.textContent("#toast"), /Test alert delivered to hook/);
      await page.locator("#alert-history tr[data-alert^='t-hook-']").first().waitFor({ state: "visible" });
    }
    assert.deepEqual(page.errors, [], "no script errors on the page");
    await page.closeAll();
  }
  // The job editor shows the job's rules and keeps them on save.
  const page = await openPage(browser, { token: node.token });
  await page.goto(`${node.base}/#/jobs/broken/edit`);
  await page.locator("#f-alerts").waitFor({ state: "visible" });
  await waitUntil(5000, async () => (await page.inputValue("#f-alerts")) !== "", "the job's rules in the editor");
  assert.deepEqual(JSON.parse(await page.inputValue("#f-alerts")), [{ on: ["failed", "recovered"], after_consecutive: 1, channels: ["hook"] }]);
  await page.fill("#f-alerts", "[{\"on\": [\"failed\"], \"channels\": [\"pager\"]}]");
  await page.click("#save");
  await waitUntil(5000, async () => (await page.textContent("#err-alerts")).includes("pager"), "the unknown channel named next to the field");
  await page.fill("#f-alerts", "[{\"on\": [\"failed\", \"recovered\"], \"after_consecutive\": 3, \"channels\": [\"hook\"]}]");
  await page.click("#save");
  await waitUntil(5000, async () => (await node.api("GET", "/api/v1/jobs/broken")).body.alerts?.[0]?.after_consecutive === 3, "the saved rules");
  assert.deepEqual(page.errors, [], "no script errors on the page");
  await page.closeAll();
  // Exactly one failed alert for the whole streak.
  assert.equal(received.filter((r) => r.json.kind === "failed").length, 1);
});
