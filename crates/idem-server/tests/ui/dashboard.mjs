// Drives the dashboard in headless Chromium: sends traffic, checks that
// the charts and totals move and that the inspector shows a key's state.
// Usage: node dashboard.mjs <http base url> <password> [screenshot dir]
// Exits non-zero, with the reason on stderr, when a check fails.
import { createRequire } from "node:module";

const [base, password, shots] = process.argv.slice(2);
const require = createRequire(process.env.PLAYWRIGHT_CORE_DIR + "/");
const { chromium } = require("playwright-core");

const TIMEOUT_MS = 20000;

async function command(args) {
  const resp = await fetch(base + "/v1/command", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + password },
    body: JSON.stringify(args),
  });
  return resp.json();
}

function fail(why) {
  console.error("FAIL: " + why);
  process.exit(1);
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ httpCredentials: { username: "idem", password }, viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const resp = await page.goto(base + "/ui/");
  if (!resp || resp.status() !== 200) fail("GET /ui/ answered " + (resp && resp.status()));
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("live"), null, { timeout: TIMEOUT_MS });
  const before = await page.evaluate(() => ({
    duplicates: Number(document.getElementById("total-duplicates").textContent),
    replays: Number(document.getElementById("total-replays").textContent),
  }));
  if (before.duplicates !== 0 || before.replays !== 0) fail("a fresh server shows " + JSON.stringify(before));

  // Traffic: duplicates of each kind, a replay, a conflict.
  const started = await command(["IDEM.BEGIN", "ui:order:1", "LEASE", "60000"]);
  if (started[0] !== "started") fail("IDEM.BEGIN: " + JSON.stringify(started));
  await command(["IDEM.BEGIN", "ui:order:1"]); // running: a concurrent duplicate
  await command(["IDEM.COMMIT", "ui:order:1", String(started[1]), "charged"]);
  for (let i = 0; i < 5; i++) await command(["IDEM.BEGIN", "ui:order:1"]); // done: replays
  await command(["CLAIM", "ui:email", "alice"]);
  await command(["CLAIM", "ui:email", "bob"]); // held
  await command(["IDEM.BEGIN", "ui:order:2", "FP", "a"]);
  await command(["IDEM.BEGIN", "ui:order:2", "FP", "b"]); // mismatch: a conflict

  await page.waitForFunction(() => Number(document.getElementById("total-duplicates").textContent) >= 7
      && Number(document.getElementById("total-replays").textContent) >= 5
      && Number(document.getElementById("total-conflicts").textContent) >= 2
      && Number(document.getElementById("chart-duplicates").dataset.max) > 0
      && Number(document.getElementById("chart-replays").dataset.max) > 0
      && Number(document.getElementById("chart-latency").dataset.max) > 0,
    null, { timeout: TIMEOUT_MS });
  const dupRow = await page.locator("#dup-table tr", { hasText: "idem" }).first().textContent();
  if (!/idem\s*6/.test(dupRow)) fail("duplicates table row for idem: " + dupRow);

  // The inspector: a running attempt with its fence, attempt and lease.
  const running = await command(["IDEM.BEGIN", "ui:inspect", "LEASE", "60000"]);
  await page.fill("#inspect-key", "ui:inspect");
  await page.click("#inspect-form button");
  await page.waitForSelector('td[data-field="idem.state"]', { timeout: TIMEOUT_MS });
  const field = (f) => page.locator(`td[data-field="${f}"]`).textContent();
  const state = await field("idem.state"), fence = await field("idem.fence"), attempt = await field("idem.attempt");
  const left = Number(await field("idem.lease_left_ms"));
  if (state !== "running" || fence !== String(running[1]) || attempt !== "1" || !(left > 0 && left <= 60000)) {
    fail(`inspector shows state=${state} fence=${fence} attempt=${attempt} left=${left}, began ${JSON.stringify(running)}`);
  }
  if (shots) {
    await page.waitForTimeout(2500); // a few more points on the charts
    await page.screenshot({ path: shots + "/dashboard.png", fullPage: true });
  }
  console.log(JSON.stringify({ ok: true, before, state, fence, attempt }));
} finally {
  await browser.close();
}
