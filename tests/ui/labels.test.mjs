// Browser test of worker labels (README "Worker labels"): the workers view shows each worker's
// labels, and the job editor's selector input shows, live as you type, which live workers match
// (a warning when none does); a save keeps the selector and a bad one is named next to the field.
// A real distcron node labelled zone=b, gpu=true, and Debian chromium through playwright-core.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startNode, launchBrowser, openPage, waitUntil } from "./support.mjs";

let node, browser;

before(async () => {
  node = await startNode({ extraConfig: "[labels]\nzone = \"b\"\ngpu = \"true\"\n" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

test("the editor matches the selector against the live workers as you type, and a save keeps it", async () => {
  const workers = (await node.api("GET", "/api/v1/workers")).body.workers;
  assert.equal(workers.length, 1);
  assert.deepEqual(workers[0].labels, { gpu: "true", zone: "b" });
  const me = workers[0].id;
  const page = await openPage(browser, { token: node.token });

  // The workers view lists the labels.
  await page.goto(`${node.base}/#/workers`);
  await page.locator(`#workers tr[data-worker="${me}"] ul.labels`).waitFor({ state: "visible" });
  const chips = await page.$$eval(`#workers tr[data-worker="${me}"] ul.labels li`, (lis) => lis.map((li) => li.textContent));
  assert.deepEqual(chips, ["gpu=true", "zone=b"]);

  await page.goto(`${node.base}/#/jobs/new`);
  await page.locator("#f-selector").waitFor({ state: "visible" });
  await page.locator("#selector-count", { hasText: "Any of the 1 live worker" }).waitFor();
  await page.fill("#f-name", "zoned");
  await page.fill("#f-command", "true");
  await page.fill("#f-cron_expr", "0 0 1 1 *");

  // Live: a matching selector lists the worker, a non-matching one warns, a malformed one says why.
  await page.fill("#f-selector", "zone=b");
  await page.locator("#selector-count", { hasText: "Matches 1 of 1 live worker" }).waitFor();
  assert.deepEqual(await page.$$eval("#selector-workers li", (lis) => lis.map((li) => li.dataset.worker)), [me]);
  await page.fill("#f-selector", "zone=a");
  await page.locator("#selector-none", { hasText: "No live worker matches" }).waitFor();
  assert.equal(await page.locator("#selector-workers").count(), 0);
  await page.fill("#f-selector", "zone=b, ssd=true");
  await page.locator("#selector-none").waitFor();
  await page.fill("#f-selector", "zone");
  await page.locator("#selector-invalid", { hasText: "not name=value" }).waitFor();

  // A bad selector is named next to the field and nothing is saved.
  await page.fill("#f-selector", "zone=a b");
  await page.click("#save");
  await waitUntil(5000, async () => (await page.textContent("#err-selector")).includes("a b"), "the selector error next to the field");
  assert.equal((await node.api("GET", "/api/v1/jobs/zoned")).status, 404);

  await page.fill("#f-selector", "zone=b, gpu=true");
  await page.locator("#selector-count", { hasText: "Matches 1 of 1" }).waitFor();
  await page.click("#save");
  const saved = await waitUntil(5000, async () => {
    const r = await node.api("GET", "/api/v1/jobs/zoned");
    return r.status === 200 ? r.body : null;
  }, "the saved job");
  assert.deepEqual(saved.selector, { gpu: "true", zone: "b" });

  // The editor shows it back, and a save of another field keeps it.
  await page.goto(`${node.base}/#/jobs/zoned/edit`);
  await waitUntil(5000, async () => (await page.inputValue("#f-selector")) !== "", "the selector in the editor");
  assert.equal(await page.inputValue("#f-selector"), "gpu=true, zone=b");
  await page.locator("#selector-count", { hasText: "Matches 1 of 1" }).waitFor();
  await page.fill("#f-description", "edited");
  await page.click("#save");
  const edited = await waitUntil(5000, async () => {
    const job = (await node.api("GET", "/api/v1/jobs/zoned")).body;
    return job.description === "edited" ? job : null;
  }, "the edited job");
  assert.deepEqual(edited.selector, { gpu: "true", zone: "b" });

  // The API checks the selector too (here: more than 32 entries), naming the field.
  const many = Array.from({ length: 33 }, (_, i) => `l${i}=v`).join(", ");
  const put = await node.api("PUT", "/api/v1/jobs/zoned", { ...edited, selector: Object.fromEntries(many.split(", ").map((e) => e.split("="))) });
  assert.equal(put.status, 400);
  assert.equal(put.body.error.field, "selector");
  assert.deepEqual(page.errors, [], "no script errors on the page");
  await page.closeAll();
});
