// The job editor warns before discarding unsaved changes (issue 12, item 7): leaving it in the app
// (Cancel, a view link, back, a typed address) with edits asks in the page's own dialog — "Keep
// editing" keeps the edits, "Discard changes" leaves — and closing or reloading the tab gets the
// browser's beforeunload warning. An unchanged form, or one just saved, leaves without a word.
// A real distcron node, Debian chromium via playwright-core.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startNode, launchBrowser, openPage, waitUntil } from "./support.mjs";

let node, browser;

before(async () => {
  node = await startNode();
  browser = await launchBrowser();
  const r = await node.api("POST", "/api/v1/jobs", { name: "tidy", command: "true", cron_expr: "0 0 1 1 *", description: "as stored" });
  assert.equal(r.status, 201, JSON.stringify(r.body));
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

async function editor(page, hash) {
  await page.goto(`${node.base}/${hash}`);
  await page.locator("#job-form:not([aria-busy])").waitFor();
  await page.locator("#preview p").first().waitFor();
}

/** Whether a beforeunload now would be cancelled (the browser would ask). */
const wouldWarn = (page) => page.evaluate(() => {
  const ev = new Event("beforeunload", { cancelable: true });
  window.dispatchEvent(ev);
  return ev.defaultPrevented;
});

const askingNow = (page) => page.locator("#confirm[open]").isVisible();

async function expectQuestion(page) {
  await page.locator("#confirm[open]").waitFor();
  assert.equal(await page.textContent("#confirm-title"), "Discard unsaved changes?");
  assert.equal(await page.textContent("#confirm-cancel"), "Keep editing");
  assert.equal(await page.textContent("#confirm-ok"), "Discard changes");
}

async function keepEditing(page) {
  await page.click("#confirm-cancel");
  await page.locator("#confirm").waitFor({ state: "hidden" });
}

test("an unchanged editor leaves without a warning", async () => {
  const page = await openPage(browser, { token: node.token });
  await editor(page, "#/jobs/tidy/edit");
  assert.equal(await wouldWarn(page), false, "no tab warning");
  await page.click("#cancel");
  await page.locator("#jobs").waitFor();
  assert.equal(await askingNow(page), false);

  await editor(page, "#/jobs/new");
  assert.equal(await wouldWarn(page), false);
  // an added empty variable row is no change
  await page.click("#env-add");
  await page.click('#nav a[data-view="runs"]');
  await page.locator(".view-runs h1").waitFor();
  assert.equal(await askingNow(page), false);
  assert.deepEqual(page.errors, []);
  await page.closeAll();
});

test("edits are kept on 'Keep editing' and discarded on 'Discard changes', whichever way the editor is left", async () => {
  const page = await openPage(browser, { token: node.token });
  // the job list first, so "back" goes to a view of this page
  await page.goto(`${node.base}/#/jobs`);
  await page.locator("#jobs").waitFor();
  await editor(page, "#/jobs/tidy/edit");
  await page.fill("#f-description", "edited, not saved");
  assert.equal(await wouldWarn(page), true, "the tab warns");

  // Cancel
  await page.click("#cancel");
  await expectQuestion(page);
  await keepEditing(page);
  assert.match(page.url(), /#\/jobs\/tidy\/edit$/);
  assert.equal(await page.inputValue("#f-description"), "edited, not saved");

  // a view link in the top bar
  await page.click('#nav a[data-view="workers"]');
  await expectQuestion(page);
  await keepEditing(page);
  assert.match(page.url(), /#\/jobs\/tidy\/edit$/);
  assert.equal(await page.inputValue("#f-description"), "edited, not saved");

  // the browser's back button (the address goes back to the editor while it asks)
  await page.evaluate(() => history.back());
  await expectQuestion(page);
  await keepEditing(page);
  assert.match(page.url(), /#\/jobs\/tidy\/edit$/);
  assert.equal(await page.inputValue("#f-description"), "edited, not saved");

  // a typed address (a hash change the page did not start): the address goes back while it asks
  await page.evaluate(() => { location.hash = "#/alerts"; });
  await expectQuestion(page);
  assert.match(page.url(), /#\/jobs\/tidy\/edit$/, "the address shows the editor while asking");
  await keepEditing(page);
  assert.equal(await page.inputValue("#f-description"), "edited, not saved");
  assert.equal(await page.locator("#job-form").count(), 1);

  // Discard changes leaves; nothing was saved
  await page.click('#nav a[data-view="runs"]');
  await expectQuestion(page);
  await page.click("#confirm-ok");
  await waitUntil(5000, async () => /#\/runs$/.test(page.url()), "the runs view");
  await page.locator(".view-runs h1").waitFor();
  assert.equal((await node.api("GET", "/api/v1/jobs/tidy")).body.description, "as stored");
  assert.equal(await wouldWarn(page), false, "no tab warning outside the editor");

  // a new job with a name typed in asks too
  await editor(page, "#/jobs/new");
  await page.fill("#f-name", "half-done");
  await page.click("#cancel");
  await expectQuestion(page);
  await page.click("#confirm-ok");
  await page.locator("#jobs").waitFor();
  assert.equal((await node.api("GET", "/api/v1/jobs/half-done")).status, 404);
  assert.deepEqual(page.errors, []);
  await page.closeAll();
});

test("a saved editor leaves without a warning, and closing the tab with edits gets the browser's warning", async () => {
  const page = await openPage(browser, { token: node.token });
  await editor(page, "#/jobs/tidy/edit");
  await page.fill("#f-description", "saved from the editor");
  await page.click("#save");
  await page.locator("#jobs").waitFor();
  assert.equal(await askingNow(page), false, "no question after a save");
  assert.equal((await node.api("GET", "/api/v1/jobs/tidy")).body.description, "saved from the editor");

  // The real tab warning: chromium shows a beforeunload dialog when the tab closes.
  await editor(page, "#/jobs/tidy/edit");
  await page.click("#f-description");
  await page.fill("#f-description", "edited, then the tab closes");
  page.removeAllListeners("dialog");
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.type()); d.accept(); });
  const closed = new Promise((r) => page.once("close", r));
  await page.close({ runBeforeUnload: true });
  await closed;
  assert.deepEqual(dialogs, ["beforeunload"]);
  assert.deepEqual(page.errors, []);
  await page.closeAll();
});
