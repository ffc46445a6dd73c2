// Browser tests of retries and run with parameters: the run-now dialog sends name=value rows as
// the run's env, and the runs view groups the attempts of one tick. A real distcron node and
// Debian chromium through playwright-core.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startNode, launchBrowser, openPage, waitUntil } from "./support.mjs";

let node, browser;

before(async () => {
  node = await startNode();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

async function runs(job) {
  return (await node.api("GET", `/api/v1/runs?job=${job}`)).body.runs;
}

test("run now with parameters from the dialog, and the attempts of one run grouped in the runs view", async () => {
  const created = await node.api("POST", "/api/v1/jobs", {
    name: "flaky-params",
    cron_expr: "0 0 1 1 *",
    enabled: false,
    command: 'echo "target=$TARGET"; [ "$DISTCRON_ATTEMPT" -ge 2 ]',
    retry: { max_attempts: 2, initial_delay_secs: 1, jitter: false },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const page = await openPage(browser, { token: node.token });
  await page.goto(`${node.base}/#/jobs`);
  await page.locator('button[aria-label="Run now: flaky-params"]').waitFor({ state: "visible" });

  // Cancelling the dialog runs nothing.
  await page.click('button[aria-label="Run now: flaky-params"]');
  await page.locator("#run-now").waitFor({ state: "visible" });
  await page.click('#run-now button[value="cancel"]');
  await page.locator("#run-now").waitFor({ state: "detached" });

  await page.click('button[aria-label="Run now: flaky-params"]');
  await page.click("#run-now button.add-param");
  await page.fill("#run-now .param-name", "TARGET");
  await page.fill("#run-now .param-value", "eu <b>west</b>");
  await page.click("#run-now button.run-confirm");
  await page.locator("#toast", { hasText: "Run of flaky-params requested" }).waitFor();

  const done = await waitUntil(20000, async () => {
    const all = await runs("flaky-params");
    return all.find((r) => r.attempt === 2 && r.status === "succeeded") ? all : null;
  }, "attempt 2 succeeded");
  assert.equal(done.length, 2, "one manual run and its retry, nothing from the cancelled dialog");
  for (const r of done) assert.deepEqual(r.params, { TARGET: "eu <b>west</b>" });
  const full = (await node.api("GET", `/api/v1/runs/${done.find((r) => r.attempt === 2).id}`)).body;
  assert.equal(full.output, "target=eu <b>west</b>\n");

  await page.goto(`${node.base}/#/runs?job=flaky-params`);
  await page.locator('#runs tr[data-attempt="2"]').waitFor({ state: "visible" });
  const rows = await page.$$eval("#runs tbody tr[data-run]", (trs) => trs.map((tr) => ({
    tick: tr.dataset.tick, attempt: tr.dataset.attempt, tag: tr.querySelector(".tag.attempt")?.textContent,
  })));
  assert.equal(rows.length, 2);
  assert.ok(rows[0].tick && rows[0].tick === rows[1].tick, `attempts grouped by tick: ${JSON.stringify(rows)}`);
  assert.deepEqual(rows.map((r) => r.tag), ["attempt 2", "attempt 1"]);
  // The run page shows the parameters as text.
  await page.goto(`${node.base}/#/runs/${full.id}`);
  await page.locator(".fact", { hasText: "Parameters" }).waitFor();
  assert.match(await page.locator(".fact", { hasText: "Parameters" }).textContent(), /TARGET=eu <b>west<\/b>/);
  assert.equal(await page.locator(".fact b").count(), 0, "parameters are text, not markup");

  // The editor shows the retry policy and a save keeps it, with the fields it has no control
  // for (retention_days, managed_by); a malformed policy is named next to its field.
  const { name, cron_expr, enabled, command, retry } = created.body;
  const managed = await node.api("PUT", "/api/v1/jobs/flaky-params", {
    name, cron_expr, enabled, command, retry, retention_days: 7, managed_by: "team-a",
  });
  assert.equal(managed.status, 200, JSON.stringify(managed.body));
  await page.goto(`${node.base}/#/jobs/flaky-params/edit`);
  await waitUntil(5000, async () => (await page.inputValue("#f-retry")) !== "", "the retry policy in the editor");
  assert.equal(JSON.parse(await page.inputValue("#f-retry")).max_attempts, 2);
  await page.fill("#f-retry", "{\"max_attempts\": 0}");
  await page.click("#save");
  await waitUntil(5000, async () => (await page.textContent("#err-retry")).includes("max_attempts"), "the range error next to the field");
  await page.fill("#f-retry", "{\"max_attempts\": 3, \"initial_delay_secs\": 1}");
  await page.fill("#f-description", "edited in the page");
  await page.click("#save");
  const saved = await waitUntil(5000, async () => {
    const job = (await node.api("GET", "/api/v1/jobs/flaky-params")).body;
    return job.description === "edited in the page" ? job : null;
  }, "the saved job");
  assert.equal(saved.retry.max_attempts, 3);
  assert.equal(saved.retention_days, 7);
  assert.equal(saved.managed_by, "team-a");
  assert.deepEqual(page.errors, [], "no script errors on the page");
  await page.closeAll();
});
