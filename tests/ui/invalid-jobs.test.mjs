// Issue 9, item 8, in the browser: a job document in the store that is not a valid job (written
// around the API, here straight into the embedded SQLite file) is shown on the job list as
// invalid, with its reason, as text.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { startNode, launchBrowser, openPage, shot, waitUntil } from "./support.mjs";

const TOKEN = "ui-invalid-jobs-token";
let node, browser;

before(async () => {
  node = await startNode({ token: TOKEN });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

test("an invalid stored job is listed as invalid with its reason, its markup shown as text", async () => {
  const r = await node.api("POST", "/api/v1/jobs", { name: "fine", command: "true", cron_expr: "@yearly" });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const doc = JSON.stringify({ name: "broken", command: "echo x", cron_expr: "<img src=x onerror=alert(1)>" });
  execFileSync("sqlite3", [join(node.dir, "data", "jobs.sqlite3"),
    `PRAGMA busy_timeout=5000; INSERT INTO jobs (name, json, mod_revision) VALUES ('broken', '${doc.replaceAll("'", "''")}', 1);`]);

  const listed = await node.api("GET", "/api/v1/jobs");
  assert.equal(listed.status, 200);
  const entry = listed.body.invalid_jobs.find((j) => j.name === "broken");
  assert.ok(entry && entry.invalid.startsWith("cron_expr"), JSON.stringify(listed.body.invalid_jobs));
  assert.ok(!listed.body.jobs.some((j) => j.name === "broken"), "not among the valid jobs");

  const page = await openPage(browser, { token: TOKEN });
  await page.goto(`${node.base}/#/jobs`);
  const row = page.locator('#invalid-jobs li[data-invalid-job="broken"]');
  await row.waitFor({ state: "visible" });
  const text = await row.textContent();
  assert.ok(text.includes("invalid") && text.includes("cron_expr"), text);
  assert.equal(await page.locator("#invalid-jobs img").count(), 0, "the reason is text, never markup");
  await waitUntil(5000, async () => (await page.locator('tr[data-job="fine"]').count()) === 1, "the valid job's row");
  await shot(page, "jobs-invalid");
  assert.deepEqual(page.errors, [], "no script errors on the page");
  await page.closeAll();
});
