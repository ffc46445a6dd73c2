// Regenerates the README's screenshots (docs/screenshots/*.png) from a real node with a few
// example jobs: `node tests/ui/readme-screenshots.mjs` after `cargo build`. Not a test (the
// browser tests write their own screenshots to artifacts/ui/).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { startNode, launchBrowser, openPage, waitUntil, ROOT } from "./support.mjs";

const OUT = join(ROOT, "docs", "screenshots");
const TOKEN = "readme";

const JOBS = [
  { name: "billing-report", command: 'echo "billing report for $(date +%F)"; echo "rows: 1204"', cron_expr: "0 7 * * 1-5",
    tz: "Europe/Berlin", description: "Daily billing report for finance", timeout_secs: 900 },
  { name: "db-backup", command: 'echo "backup started"; sleep 1; echo "backup done: 1.4 GiB"', cron_expr: "30 2 * * *",
    tz: "America/New_York", timeout_secs: 3600, description: "Nightly dump of the app database" },
  { name: "cache-warmup", command: "echo warming; sleep 0.3; echo 320 keys", cron_expr: "*/5 * * * *" },
  { name: "queue-watchdog", command: 'echo "queue depth 512 > 500" >&2; exit 3', cron_expr: "*/20 * * * * *",
    description: "Fails when the job queue backs up" },
  { name: "log-rotate", command: "echo rotated", cron_expr: "@daily", enabled: false },
  { name: "slow-import", command: 'echo "importing batch 1/40"; sleep 600', cron_expr: "0 */6 * * *", tz: "Asia/Tokyo",
    concurrency: "forbid", description: "Imports the partner feed" },
];

const node = await startNode({ token: TOKEN });
const browser = await launchBrowser();
try {
  for (const job of JOBS) {
    const r = await node.api("POST", "/api/v1/jobs", job);
    if (r.status !== 201) throw new Error(JSON.stringify(r.body));
  }
  for (const name of ["billing-report", "db-backup", "cache-warmup", "queue-watchdog", "slow-import", "billing-report"]) {
    await node.api("POST", `/api/v1/jobs/${name}/run`);
    await new Promise((r) => setTimeout(r, 300));
  }
  await waitUntil(15000, async () => {
    const runs = (await node.api("GET", "/api/v1/runs?status=succeeded")).body.runs;
    return runs.filter((r) => r.job === "db-backup").length >= 1 && runs.length >= 4;
  }, "the example runs");
  mkdirSync(OUT, { recursive: true });
  const page = await openPage(browser, { width: 1280, height: 820, token: TOKEN });
  await page.goto(`${node.base}/#/jobs`);
  await page.locator('#jobs tr[data-job="slow-import"] .run-link').waitFor();
  await page.screenshot({ path: join(OUT, "jobs.png") });
  await page.goto(`${node.base}/#/runs`);
  const failed = page.locator('#runs tr[data-status="failed"]').first();
  await failed.waitFor();
  await failed.locator("button", { hasText: "Output" }).click();
  await page.locator("pre.output").waitFor();
  await page.mouse.move(0, 0);
  await page.screenshot({ path: join(OUT, "runs.png") });
  // The audit log: a job edited once, then its history with the diff.
  const current = (await node.api("GET", "/api/v1/jobs/billing-report")).body;
  const edited = { ...JOBS[0], cron_expr: "0 6 * * 1-5", timeout_secs: 1200, version: current.version };
  const put = await node.api("PUT", "/api/v1/jobs/billing-report", edited);
  if (put.status !== 200) throw new Error(JSON.stringify(put.body));
  await page.goto(`${node.base}/#/jobs/billing-report/history`);
  await page.getByText("timeout_secs").first().waitFor();
  await page.screenshot({ path: join(OUT, "history.png") });
  const phone = await openPage(browser, { width: 390, height: 844, token: TOKEN });
  await phone.goto(`${node.base}/#/jobs`);
  await phone.locator('#jobs tr[data-job="slow-import"]').waitFor();
  await phone.screenshot({ path: join(OUT, "jobs-phone.png") });
  console.log(`written to ${OUT}`);
} finally {
  await browser.close();
  await node.stop();
}
