// The browser end-to-end test of `crewq serve`'s dashboard, run by
// cli/tests/dashboard.rs against a private Redis with a running crew:
// headless Chromium (the system's, through playwright-core) opens the page,
// checks its numbers against `crewq stats --json` (Monitor's), clicks Replay
// on a dead letter and checks with `crewq dlq list` / `crewq task` that it
// went back to its stream and ran, looks a task up, and saves a screenshot.
// Any difference, error or missing piece exits non-zero: it never skips.
//
// Environment (all required but CHROMIUM):
//   SERVE_URL     the dashboard, http://127.0.0.1:<port>/
//   CREWQ         the crewq binary
//   REDIS_URL     the crew's Redis, KEY_PREFIX its key prefix
//   AGENTS        the served agent types, comma-separated
//   REPLAY_AGENT, REPLAY_TASK  the dead letter to replay (it succeeds when run again)
//   SCREENSHOT    where to save the page as PNG
//   CHROMIUM      the browser (default /usr/bin/chromium)
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const serveUrl = required("SERVE_URL");
const crewq = required("CREWQ");
const target = ["--redis", required("REDIS_URL"), "--key-prefix", required("KEY_PREFIX")];
const agents = required("AGENTS").split(",");
const replayAgent = required("REPLAY_AGENT");
const replayTask = required("REPLAY_TASK");
const screenshot = required("SCREENSHOT");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function cli(...args) {
  return JSON.parse(execFileSync(crewq, [...args, ...target, "--json"], { encoding: "utf8" }));
}

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

// Monitor's numbers, summed over groups as the dashboard shows them.
function expected(stats) {
  return Object.fromEntries(stats.map((a) => {
    const lag = a.groups.length === 0 ? a.tasks.length : a.groups.reduce((s, g) => s + g.lag, 0);
    return [a.agent_type, {
      length: String(a.tasks.length),
      lag: String(lag),
      pending: String(a.groups.reduce((s, g) => s + g.pending, 0)),
      consumers: String(a.groups.reduce((s, g) => s + g.consumers.length, 0)),
      dlq: String(a.dlq_length),
      delayed: String(a.delayed_length),
      rate: rateText(a.rate),
    }];
  }));
}

// The rate limit's use as the page shows it: running and starts against
// their limits, a paused badge while paused; "–" without a rate limit.
function rateText(rate) {
  if (!rate) return "–";
  const of = (n, limit) => (limit === null || limit === undefined ? `${n}` : `${n}/${limit}`);
  const use = `${of(rate.running, rate.running_limit)} running, ${of(rate.starts_in_window, rate.starts_limit)} starts`;
  return rate.paused_ms === null || rate.paused_ms === undefined ? use : `${use} (paused)`;
}

async function shownNumbers(page) {
  return page.$$eval("#queues tbody tr[data-agent]", (rows) => Object.fromEntries(rows.map((tr) => {
    const field = (name) => tr.querySelector(`td[data-field="${name}"]`).textContent;
    return [tr.dataset.agent, {
      length: field("length"), lag: field("lag"), pending: field("pending"),
      consumers: field("consumers"), dlq: field("dlq"), delayed: field("delayed"),
      rate: (() => {
        const td = tr.querySelector('td[data-field="rate-limit"]');
        const use = td.querySelector(".use");
        if (!use) return td.textContent;
        return td.querySelector(".badge.paused") ? `${use.textContent} (paused)` : use.textContent;
      })(),
    }];
  })));
}

// Resolves after the page's next successful refresh of /api/stats.
function nextRefresh(page) {
  return page.waitForResponse((r) => r.url().endsWith("/api/stats") && r.ok(), { timeout: 30_000 })
    .then(() => page.waitForTimeout(100));
}

async function sleep(ms) {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console error: ${msg.text()}`); });
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("response", (r) => { if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`); });
  // Everything the page loads comes from crewq serve: no CDN, no internet.
  page.on("request", (r) => { if (!r.url().startsWith(serveUrl)) problems.push(`foreign request: ${r.url()}`); });

  await page.goto(serveUrl);
  await page.waitForFunction(
    (n) => document.querySelectorAll("#queues tbody tr[data-agent]").length === n, agents.length,
    { timeout: 30_000 });

  // The page's numbers are Monitor's: read the CLI, then the page's next refresh.
  const stats = cli("stats", ...agents);
  await nextRefresh(page);
  const shown = await shownNumbers(page);
  const want = expected(stats);
  check(JSON.stringify(shown) === JSON.stringify(want),
    `the queue numbers shown equal crewq stats --json: ${JSON.stringify(shown)} vs ${JSON.stringify(want)}`);
  // The review tasks dispatched for an hour later wait in the delayed set.
  check(shown.review && shown.review.delayed === "2",
    `the delayed column shows review's two tasks dispatched for later: ${JSON.stringify(shown.review)}`);
  // The rate limit column: research's workers share one (three held tasks
  // running, ten started in its hour-long window); review is paused by a
  // slow-down; report has none.
  check(shown.research && shown.research.rate === "3/8 running, 10/100 starts",
    `the rate limit column shows research's permits: ${JSON.stringify(shown.research)}`);
  check(shown.review && shown.review.rate.endsWith("(paused)"),
    `the rate limit column shows review paused: ${JSON.stringify(shown.review)}`);
  check(shown.report && shown.report.rate === "–",
    `no rate limit shown for report: ${JSON.stringify(shown.report)}`);
  const consumers = stats.flatMap((a) => a.groups.flatMap((g) => g.consumers.map((c) => `${a.agent_type}/${c.name}`)));
  const shownConsumers = await page.$$eval("#consumers tbody tr",
    (rows) => rows.map((tr) => `${tr.children[0].textContent}/${tr.children[2].textContent}`));
  check(JSON.stringify(shownConsumers) === JSON.stringify(consumers),
    `the consumers shown are Monitor's: ${shownConsumers} vs ${consumers}`);

  // The dead letters listed are crewq dlq list's.
  const letters = cli("dlq", "list", ...agents.flatMap((a) => ["--agent", a]));
  await page.waitForFunction((n) => document.querySelectorAll("#dlq tbody tr[data-entry]").length === n,
    letters.length, { timeout: 30_000 });
  check(letters.length > 1, `${letters.length} dead letters listed on the page`);
  const letter = letters.find((l) => l.agent_type === replayAgent && l.task_id === replayTask);
  check(letter !== undefined, `the dead letter of ${replayTask} is listed`);

  // Inspect shows the whole letter.
  const row = page.locator(`#dlq tbody tr[data-entry="${letter.entry_id}"]`);
  await row.locator('button[data-action="inspect"]').click();
  await page.waitForFunction(() => !document.querySelector("#dlq-detail").hidden);
  const detail = JSON.parse(await page.locator("#dlq-detail").textContent());
  check(detail.entry_id === letter.entry_id && detail.task.task_id === replayTask, "Inspect shows the dead letter");

  // Replay, clicked on the page, moves it back to its stream, where it runs.
  const appendedBefore = stats.find((a) => a.agent_type === replayAgent).tasks.entries_added;
  await row.locator('button[data-action="replay"]').click();
  await page.waitForFunction(() => document.querySelector("#message").textContent.startsWith("replayed"),
    null, { timeout: 30_000 });
  await page.waitForFunction((id) => !document.querySelector(`#dlq tbody tr[data-entry="${id}"]`),
    letter.entry_id, { timeout: 30_000 });
  const after = cli("dlq", "list", "--agent", replayAgent);
  check(!after.some((l) => l.entry_id === letter.entry_id), "the dead letter left the dead-letter stream");
  const afterStats = cli("stats", replayAgent)[0];
  check(afterStats.tasks.entries_added === appendedBefore + 1, "one entry was appended to its task stream");
  let completed = false;
  for (let i = 0; i < 100 && !completed; i++) {
    const found = cli("task", replayTask, "--agent", replayAgent);
    completed = found.some((s) => s.place.state === "completed" && s.place.status === "success");
    if (!completed) await sleep(100);
  }
  check(completed, `the replayed task ${replayTask} ran and completed`);

  // Task lookup shows it completed.
  await page.fill("#task-id", replayTask);
  await page.click('#task-form button[type="submit"]');
  await page.waitForFunction(() => [...document.querySelectorAll("#task tbody td")]
    .some((td) => td.textContent === "completed"), null, { timeout: 30_000 });
  check(true, "task lookup on the page finds it completed");

  // Numbers after the replay, shown once the page refreshed.
  await nextRefresh(page);
  await nextRefresh(page);
  const finalShown = await shownNumbers(page);
  const finalWant = expected(cli("stats", ...agents));
  check(JSON.stringify(finalShown) === JSON.stringify(finalWant),
    `after the replay the numbers shown equal crewq stats --json: ${JSON.stringify(finalShown)} vs ${JSON.stringify(finalWant)}`);

  await page.screenshot({ path: screenshot, fullPage: true });
  check(problems.length === 0, `no page errors, failed or foreign requests: ${problems.join("; ")}`);
  console.log(`screenshot: ${screenshot}`);
} catch (err) {
  failed = true;
  console.error(`dashboard test FAILED: ${err.stack || err}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
