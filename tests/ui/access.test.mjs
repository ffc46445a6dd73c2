// Browser tests of identity in the admin console: a viewer sees its name and no buttons its role
// cannot use; a job's history shows who changed what with a field-by-field diff.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startNode, launchBrowser, openPage, shot } from "./support.mjs";

const TOKEN = "ui-access-admin-token-0123456789abcdef";
const VIEWER = "ui-access-viewer-token-0123456789abcdef";
const sha = (t) => createHash("sha256").update(t).digest("hex");
let node, browser;

before(async () => {
  node = await startNode({
    token: TOKEN,
    extraConfig: `[[auth.tokens]]\nname = "vera"\nrole = "viewer"\nsha256 = "${sha(VIEWER)}"\n`,
  });
  browser = await launchBrowser();
  let r = await node.api("POST", "/api/v1/jobs", { name: "nightly", command: "echo one", cron_expr: "0 3 * * *" });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await node.api("PUT", "/api/v1/jobs/nightly", { command: "echo two", cron_expr: "30 3 * * *", version: 1 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  r = await node.api("POST", "/api/v1/jobs/nightly/disable");
  assert.equal(r.status, 200, JSON.stringify(r.body));
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

test("a viewer sees its name and no create, edit, delete, run or enable controls", async () => {
  for (const width of [1280, 390]) {
    const page = await openPage(browser, { token: VIEWER, width });
    await page.goto(`${node.base}/#/jobs`);
    await page.locator("#jobs tbody tr").first().waitFor({ state: "visible" });
    await page.locator("#whoami").waitFor({ state: "visible" });
    assert.equal((await page.locator("#whoami").textContent()).trim(), "vera · viewer");
    assert.equal(await page.locator("#new-job").count(), 0, "no New job");
    for (const label of ["Edit nightly", "Delete nightly", "Run now: nightly"]) {
      assert.equal(await page.getByLabel(label, { exact: true }).count(), 0, `no ${label}`);
    }
    assert.ok(await page.getByLabel("Enabled: nightly").isDisabled(), "the enable switch is disabled");
    assert.equal(await page.getByLabel("History of nightly").count(), 1, "the history is readable");
    assert.deepEqual(page.errors, []);
    await shot(page, "jobs-viewer");
    await page.closeAll();
  }
});

test("an admin sees every control and its name", async () => {
  const page = await openPage(browser, { token: TOKEN });
  await page.goto(`${node.base}/#/jobs`);
  await page.locator("#jobs tbody tr").first().waitFor({ state: "visible" });
  assert.equal((await page.locator("#whoami").textContent()).trim(), "admin · admin");
  assert.equal(await page.locator("#new-job").count(), 1);
  assert.equal(await page.getByLabel("Edit nightly", { exact: true }).count(), 1);
  assert.equal(await page.getByLabel("Delete nightly", { exact: true }).count(), 1);
  await page.closeAll();
});

test("a job's history shows who changed what, with the diff of the definition", async () => {
  for (const width of [1280, 390]) {
    const page = await openPage(browser, { token: VIEWER, width });
    await page.goto(`${node.base}/#/jobs/nightly/history`);
    await page.locator("#history .audit-entry").nth(2).waitFor({ state: "visible" });
    const entries = page.locator("#history .audit-entry");
    assert.equal(await entries.count(), 3);
    const actions = await entries.evaluateAll((els) => els.map((e) => e.dataset.action));
    assert.deepEqual(actions, ["disable", "replace", "create"], "newest first");
    const replace = entries.nth(1);
    assert.match(await replace.locator(".audit-head").textContent(), /admin replaced v1 → v2/);
    const rows = await replace.locator("table.diff tbody tr").evaluateAll((trs) =>
      trs.map((tr) => [...tr.children].map((c) => c.textContent)));
    assert.deepEqual(rows, [["command", "echo one", "echo two"], ["cron_expr", "0 3 * * *", "30 3 * * *"]]);
    const disable = await entries.nth(0).locator("table.diff tbody tr").evaluateAll((trs) =>
      trs.map((tr) => [...tr.children].map((c) => c.textContent)));
    assert.deepEqual(disable, [["enabled", "true", "false"]]);
    assert.deepEqual(page.errors, []);
    await shot(page, "history");
    await page.closeAll();
  }
});
