// Browser tests of the admin console: a real distcron node (with its generated API token, read
// from data_dir/api_token as an operator would), Debian chromium
// driven by playwright-core. Screenshots of each view at 1280 and 390 px go to artifacts/ui/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startNode, launchBrowser, openPage, shot, waitUntil } from "./support.mjs";

let TOKEN;
let node, browser;

before(async () => {
  node = await startNode();
  TOKEN = node.token;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

/** A signed-in page at `hash`, ready when `ready` is visible. */
async function console_(hash, ready, opts = {}) {
  const page = await openPage(browser, { token: TOKEN, ...opts });
  await page.goto(`${node.base}/${hash}`);
  await page.locator(ready).first().waitFor({ state: "visible" });
  return page;
}

async function createJob(spec) {
  const r = await node.api("POST", "/api/v1/jobs", spec);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

async function runs(job) {
  return (await node.api("GET", `/api/v1/runs?job=${job}`)).body.runs;
}

function noErrors(page) {
  assert.deepEqual(page.errors, [], "no script errors on the page");
}

test("a wrong token gets a clear refusal, the right one opens the console, log out forgets it", async () => {
  for (const width of [1280, 390]) {
    const page = await openPage(browser, { width });
    await page.goto(`${node.base}/`);
    await page.locator("#login").waitFor({ state: "visible" });
    assert.equal(await page.isVisible("#content"), false, "no console without a token");
    await shot(page, "login");
    await page.fill("#token", "not-the-token");
    await page.press("#token", "Enter");
    await waitUntil(5000, async () => (await page.textContent("#login-error")).includes("refused"), "the refusal");
    assert.equal(await page.isVisible("#content"), false, "nothing shown with a wrong token");
    assert.equal(await page.isVisible("#nav"), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("distcron.token")), null, "a refused token is not kept");
    if (width === 1280) await shot(page, "login-refused");
    await page.fill("#token", TOKEN);
    await page.click("#login-submit");
    await page.locator("#content h1").waitFor({ state: "visible" });
    assert.equal(await page.isVisible("#login"), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("distcron.token")), TOKEN);
    // the token survives a reload of the tab
    await page.reload();
    await page.locator("#content h1").waitFor({ state: "visible" });
    await page.click("#logout");
    await page.locator("#login").waitFor({ state: "visible" });
    assert.match(await page.textContent("#login-error"), /logged out/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("distcron.token")), null);
    noErrors(page);
    await page.closeAll();
  }
});

test("a job created through the form runs and its runs and output appear", async () => {
  const page = await console_("#/jobs", "#new-job");
  await page.click("#new-job");
  await page.locator("#job-form").waitFor();
  await page.fill("#f-name", "from-the-form");
  await page.fill("#f-command", "echo made-in-the-browser $GREETING");
  await page.fill("#f-cron_expr", "* * * * * *");
  await page.fill("#f-tz", "Asia/Tokyo");
  await page.fill("#f-description", "created by the UI test");
  await page.locator(".env-key").first().fill("GREETING");
  await page.locator(".env-value").first().fill("hello");
  await waitUntil(5000, async () => (await page.locator("#fire-times li").count()) === 5, "the 5 fire times");
  assert.match(await page.textContent("#preview-reading"), /every second/);
  await page.click("#save");
  await page.locator('#jobs tr[data-job="from-the-form"]').waitFor();
  const stored = (await node.api("GET", "/api/v1/jobs/from-the-form")).body;
  assert.equal(stored.tz, "Asia/Tokyo");
  assert.deepEqual(stored.env, { GREETING: "hello" });
  assert.equal(stored.description, "created by the UI test");

  // its runs appear on the runs page by themselves
  await page.click('a[aria-label="Runs of from-the-form"]');
  const row = page.locator('#runs tr[data-status="succeeded"]').first();
  await row.waitFor({ timeout: 10000 });
  await row.locator("button", { hasText: "Output" }).click();
  await waitUntil(5000, async () => (await page.locator("pre.output").first().textContent()).includes("made-in-the-browser hello"), "the output");
  // the job's figures over 24 h (the stats endpoint) head its runs
  await waitUntil(10000, async () => /Last 24 h: [1-9]\d* finished runs? · 100 % succeeded · p50 /.test(await page.textContent("#job-stats")), "the job's figures");
  // and the job list shows the last run
  await page.click('#nav a[data-view="jobs"]');
  await page.locator('#jobs tr[data-job="from-the-form"] .run-link').waitFor();

  // the switch disables it (keyboard: space on the focused switch) once it ran a few times
  await waitUntil(10000, async () => (await runs("from-the-form")).length >= 3, "three runs");
  await page.focus('input[aria-label="Enabled: from-the-form"]');
  await page.keyboard.press("Space");
  await waitUntil(5000, async () => (await node.api("GET", "/api/v1/jobs/from-the-form")).body.enabled === false, "the job disabled");
  noErrors(page);
  await page.closeAll();
});

test("an invalid cron expression is shown next to its field and nothing is saved", async () => {
  const page = await console_("#/jobs/new", "#job-form");
  await page.fill("#f-name", "bad-cron");
  await page.fill("#f-command", "echo never");
  await page.fill("#f-cron_expr", "61 * * * *");
  await waitUntil(5000, async () => (await page.textContent("#err-cron_expr")).length > 0, "the live error");
  assert.equal(await page.getAttribute("#f-cron_expr", "aria-invalid"), "true");
  await page.click("#save");
  await waitUntil(5000, async () => (await page.textContent(".form-error")).includes("cron expression"), "the save error");
  const inline = await page.textContent("#err-cron_expr");
  assert.match(inline, /minute|61/i, inline);
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-cron_expr", "the field gets the focus");
  assert.equal((await node.api("GET", "/api/v1/jobs/bad-cron")).status, 404, "nothing saved");
  // a bad time zone is named too
  await page.fill("#f-cron_expr", "*/5 * * * *");
  await page.fill("#f-tz", "Mars/Olympus");
  await waitUntil(5000, async () => (await page.textContent("#err-tz")).includes("Mars/Olympus"), "the zone error");
  assert.equal(await page.textContent("#err-cron_expr"), "");
  await shot(page, "editor-error");
  noErrors(page);
  await page.closeAll();
});

test("the preview warns about fire times on DST days", async () => {
  const page = await console_("#/jobs/new", "#job-form");
  // every Sunday in March at 02:30 in New York: the next five always include the second Sunday
  await page.fill("#f-cron_expr", "30 2 * 3 0");
  await page.fill("#f-tz", "America/New_York");
  await page.locator("#dst-warning").waitFor({ timeout: 5000 });
  const item = await page.textContent("#fire-times li.dst-day");
  assert.match(item, /clocks go forward 1 h at 02:00/);
  noErrors(page);
  await page.closeAll();
});

test("a running run is killed from the page", async () => {
  await createJob({ name: "sleeper", command: "sleep 60", cron_expr: "0 0 1 1 *", enabled: false });
  assert.equal((await node.api("POST", "/api/v1/jobs/sleeper/run")).status, 202);
  await waitUntil(10000, async () => (await runs("sleeper"))[0]?.status === "running", "a running run");
  const page = await console_("#/runs?job=sleeper", '#runs tr[data-status="running"]');
  await page.locator('#runs tr[data-status="running"] button.kill').click();
  await page.locator("#confirm[open]").waitFor();
  // Escape cancels, nothing is killed
  await page.keyboard.press("Escape");
  await page.locator("#confirm").waitFor({ state: "hidden" });
  assert.equal((await runs("sleeper"))[0].status, "running");
  await page.locator('#runs tr[data-status="running"] button.kill').click();
  await page.click("#confirm-ok");
  await waitUntil(10000, async () => (await runs("sleeper"))[0].status === "killed", "the run killed");
  // the page refreshes by itself
  await page.locator('#runs tr[data-status="killed"]').waitFor({ timeout: 6000 });
  noErrors(page);
  await page.closeAll();
});

test("the runs page shows new runs by itself and leaves an opened output alone", async () => {
  await createJob({ name: "ticker", command: "echo tick", cron_expr: "* * * * * *" });
  await waitUntil(10000, async () => (await runs("ticker")).some((r) => r.status === "succeeded"), "a tick");
  const page = await console_("#/runs?job=ticker", '#runs tr[data-status="succeeded"]');
  const row = page.locator('#runs tr[data-status="succeeded"]').first();
  const id = await row.getAttribute("data-run");
  await row.locator("button", { hasText: "Output" }).click();
  await page.locator("pre.output").waitFor();
  // select the output, as an operator copying it would
  await page.evaluate(() => {
    const pre = document.querySelector("pre.output");
    pre.dataset.original = "yes";
    getSelection().selectAllChildren(pre);
  });
  await waitUntil(10000, async () => (await page.$eval("#runs tbody tr[data-run]", (tr) => tr.dataset.run)) !== id, "a newer run on top");
  assert.equal(await page.$eval("pre.output", (pre) => pre.dataset.original), "yes", "the opened output was not rebuilt");
  assert.equal(await page.evaluate(() => getSelection().toString().trim()), "tick", "the selection survived the refresh");
  assert.equal((await node.api("POST", "/api/v1/jobs/ticker/disable")).status, 200);
  noErrors(page);
  await page.closeAll();
});

test("hostile strings in commands, descriptions and output are shown as text and never run", async () => {
  const payload = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>";
  await createJob({
    name: "xss-job",
    command: `echo '${payload}'`,
    description: "<img src=x onerror=window.__xss=3><b>not bold</b>",
    cron_expr: "0 0 1 1 *",
    enabled: false,
  });
  assert.equal((await node.api("POST", "/api/v1/jobs/xss-job/run")).status, 202);
  await waitUntil(10000, async () => (await runs("xss-job"))[0]?.status === "succeeded", "the run");
  const id = (await runs("xss-job"))[0].id;
  for (const width of [1280, 390]) {
    const page = await console_("#/jobs", '#jobs tr[data-job="xss-job"]', { width });
    const desc = await page.textContent('#jobs tr[data-job="xss-job"] .desc');
    assert.equal(desc, "<img src=x onerror=window.__xss=3><b>not bold</b>");
    await page.goto(`${node.base}/#/runs/${id}`);
    await waitUntil(5000, async () => ((await page.textContent("pre.output").catch(() => "")) || "").includes("<script>"), "the output");
    assert.equal((await page.textContent("pre.output")).trim(), payload);
    assert.match(await page.textContent(".facts .cmd"), /<img src=x/);
    await page.goto(`${node.base}/#/jobs/xss-job/edit`);
    await waitUntil(5000, async () => (await page.inputValue("#f-command")).includes("<script>"), "the editor");
    assert.equal(await page.evaluate(() => window.__xss), undefined, "no injected script ran");
    assert.equal(await page.locator("main img, main script, main b").count(), 0, "no element was injected");
    noErrors(page);
    await page.closeAll();
  }
});

test("a long output is shown as head and tail around the truncation marker, with its total size", async () => {
  await createJob({ name: "chatty", command: "seq 1 3000", cron_expr: "0 0 1 1 *", enabled: false });
  assert.equal((await node.api("POST", "/api/v1/jobs/chatty/run")).status, 202);
  await waitUntil(10000, async () => (await runs("chatty"))[0]?.status === "succeeded", "the run");
  const run = (await node.api("GET", `/api/v1/runs/${(await runs("chatty"))[0].id}`)).body;
  assert.equal(run.output_truncated, true);
  const page = await console_(`#/runs/${run.id}`, "pre.output");
  assert.match(await page.textContent(".output-summary"), /13\.\d KiB printed in total — truncated/);
  assert.match(await page.textContent(".trunc-marker"), /^… \[\d+ bytes truncated\] …$/);
  const text = await page.textContent("pre.output");
  assert.ok(text.startsWith("1\n2\n3\n") && text.trimEnd().endsWith("2999\n3000"), "head and tail");
  noErrors(page);
  await page.closeAll();
});

test("two tabs editing the same job: the later save is told, and can reload or overwrite", async () => {
  await createJob({ name: "shared", command: "echo original", cron_expr: "0 7 * * *", description: "v1" });
  const a = await console_("#/jobs/shared/edit", "#f-command");
  const b = await console_("#/jobs/shared/edit", "#f-command");
  await waitUntil(5000, async () => (await a.inputValue("#f-command")) === "echo original" && (await b.inputValue("#f-command")) === "echo original", "both forms filled");

  await b.fill("#f-command", "echo from-tab-b");
  await b.click("#save");
  await b.locator("#jobs").waitFor();
  await a.fill("#f-description", "edited in tab A");
  await a.click("#save");
  await a.locator("#conflict").waitFor({ state: "visible" });
  const text = await a.textContent("#conflict");
  assert.match(text, /changed by someone else/i);
  assert.match(text, /version 1.*version 2/);
  assert.match(text, /Their changes: command/);
  await shot(a, "editor-conflict");
  assert.equal((await node.api("GET", "/api/v1/jobs/shared")).body.description, "v1", "nothing overwritten yet");

  // overwrite: tab A's version wins
  await a.click("#conflict-overwrite");
  await a.locator("#jobs").waitFor();
  let job = (await node.api("GET", "/api/v1/jobs/shared")).body;
  assert.equal(job.version, 3);
  assert.equal(job.description, "edited in tab A");
  assert.equal(job.command, "echo original", "A's form had the original command");

  // reload: tab B's stale form picks up the stored job
  await b.goto(`${node.base}/#/jobs/shared/edit`);
  await waitUntil(5000, async () => (await b.inputValue("#f-description")) === "edited in tab A", "B's form filled");
  await node.api("PUT", "/api/v1/jobs/shared", { ...job, command: "echo third" });
  await b.fill("#f-description", "B again");
  await b.click("#save");
  await b.locator("#conflict").waitFor({ state: "visible" });
  await b.click("#conflict-reload");
  await waitUntil(5000, async () => (await b.inputValue("#f-command")) === "echo third", "the reloaded command");
  assert.equal(await b.inputValue("#f-description"), "edited in tab A");
  assert.equal(await b.isVisible("#conflict"), false);
  job = (await node.api("GET", "/api/v1/jobs/shared")).body;
  assert.equal(job.version, 4);
  noErrors(a);
  noErrors(b);
  await a.closeAll();
  await b.closeAll();
});

test("deleting a job asks first", async () => {
  await createJob({ name: "doomed", command: "true", cron_expr: "0 0 1 1 *" });
  const page = await console_("#/jobs", '#jobs tr[data-job="doomed"]');
  await page.click('button[aria-label="Delete doomed"]');
  await page.locator("#confirm[open]").waitFor();
  assert.match(await page.textContent("#confirm-title"), /Delete doomed\?/);
  await page.click("#confirm-cancel");
  assert.equal((await node.api("GET", "/api/v1/jobs/doomed")).status, 200, "cancel keeps it");
  await page.click('button[aria-label="Delete doomed"]');
  await page.click("#confirm-ok");
  await page.locator('#jobs tr[data-job="doomed"]').waitFor({ state: "detached" });
  assert.equal((await node.api("GET", "/api/v1/jobs/doomed")).status, 404);
  noErrors(page);
  await page.closeAll();
});

test("the job list searches, sorts, counts by status and runs a job now", async () => {
  const page = await console_("#/jobs", '#jobs tr[data-job="sleeper"]');
  const names = async () => page.$$eval("#jobs tbody tr", (rows) => rows.map((r) => r.dataset.job));
  const before = await names();
  assert.deepEqual(before, [...before].sort(), "by name at first");
  await page.click('th button.sort:has-text("Name")');
  assert.deepEqual(await names(), [...before].sort().reverse(), "a second click reverses");
  // counts: sleeper's last run was killed
  const killed = page.locator('.counts button[data-filter="killed"]');
  assert.match(await killed.textContent(), /Killed\s*1/);
  await killed.click();
  assert.deepEqual(await names(), ["sleeper"]);
  assert.equal(await killed.getAttribute("aria-pressed"), "true");
  await killed.click();
  await page.fill("#job-search", "made-in-the-browser");
  assert.deepEqual(await names(), ["from-the-form"], "search looks at commands too");
  await page.fill("#job-search", "no-such-thing");
  await page.locator(".empty", { hasText: "No job matches" }).waitFor();
  await page.click('.empty button:has-text("Clear filters")');
  assert.deepEqual(await names(), [...before].reverse(), "the sort is kept");
  await page.click('th button.sort:has-text("Name")');
  assert.deepEqual(await names(), before);

  const count = (await runs("xss-job")).length;
  await page.click('button[aria-label="Run now: xss-job"]');
  await page.click("#run-now button.run-confirm");
  await page.locator("#toast", { hasText: "Run of xss-job requested" }).waitFor();
  await waitUntil(10000, async () => (await runs("xss-job")).length === count + 1, "the manual run");
  noErrors(page);
  await page.closeAll();
});

test("runs are filtered, paginated with the cursor, and bad filters read as errors", async () => {
  const all = await runs("from-the-form");
  assert.ok(all.length >= 3, `from-the-form ran ${all.length} times`);
  const page = await console_("#/runs?job=from-the-form&limit=2", "#runs tbody tr");
  const ids = async () => page.$$eval("#runs tbody tr[data-run]", (rows) => rows.map((r) => r.dataset.run));
  const first = await ids();
  assert.deepEqual(first, all.slice(0, 2).map((r) => r.id), "newest first, two per page");
  await page.click('button[aria-label="Older runs"]');
  await waitUntil(5000, async () => (await ids())[0] === all[2].id, "the second page");
  assert.match(await page.textContent(".pager"), /Page 2/);
  await page.click('button[aria-label="Newer runs"]');
  await waitUntil(5000, async () => (await ids())[0] === first[0], "back to the first page");

  await page.selectOption("#rf-status", "failed");
  await page.locator(".empty", { hasText: "No runs match these filters" }).waitFor();
  assert.match(page.url(), /status=failed/);

  await page.goto(`${node.base}/#/runs?from=${encodeURIComponent(new Date(Date.now() + 3600e3).toISOString())}`);
  await page.locator(".empty", { hasText: "No runs match these filters" }).waitFor();
  assert.ok((await page.inputValue("#rf-from")).length > 0, "the time range is shown in the form");

  await page.goto(`${node.base}/#/runs?status=bogus`);
  await page.locator("#banner", { hasText: "Bad filter" }).waitFor();
  assert.match(await page.textContent("#banner"), /status "bogus" is not one of/);
  noErrors(page);
  await page.closeAll();
});

test("every view at 1280 and 390 px (screenshots in artifacts/ui)", async () => {
  const id = (await runs("from-the-form"))[0].id;
  for (const width of [1280, 390]) {
    const page = await console_("#/jobs", "#jobs tbody tr", { width, height: width > 800 ? 900 : 844 });
    // search narrows the list
    await page.fill("#job-search", "sleep");
    await waitUntil(3000, async () => (await page.locator("#jobs tbody tr").count()) === 1, "one match");
    await page.fill("#job-search", "");
    await shot(page, "jobs");
    await page.goto(`${node.base}/#/jobs/from-the-form/edit`);
    await page.locator("#fire-times li").first().waitFor();
    await shot(page, "editor");
    await page.goto(`${node.base}/#/runs`);
    await page.locator("#runs tbody tr").first().waitFor();
    await page.locator("#runs tbody tr button", { hasText: "Output" }).first().click();
    await page.locator("pre.output, .output-summary").first().waitFor();
    await shot(page, "runs");
    await page.goto(`${node.base}/#/runs/${id}`);
    await page.locator(".facts").waitFor();
    await shot(page, "run");
    await page.goto(`${node.base}/#/workers`);
    await page.locator("#workers tbody tr").first().waitFor();
    assert.match(await page.textContent("#workers tbody tr"), /alive/);
    await shot(page, "workers");
    noErrors(page);
    await page.closeAll();
  }
});
