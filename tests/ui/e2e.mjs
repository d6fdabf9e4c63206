// The dashboard end to end in headless Chromium, driven by Playwright. tests/it/ui.rs starts
// a gateway (routes `crm`, which answers 200, and `flaky`, whose first answer is a 500 with no
// retry) and runs this with the addresses in the environment; it exits non-zero on the first
// thing that is not as it should be, and writes a screenshot of every view.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const UI = env('CALLGATE_UI_URL');
const TOKEN = env('CALLGATE_ADMIN_TOKEN');
const INGEST = env('CALLGATE_INGEST_URL');
const PAYLOAD = env('CALLGATE_PAYLOAD');
const PAYLOAD_2 = env('CALLGATE_PAYLOAD_2');
const BAD_PAYLOAD = env('CALLGATE_BAD_PAYLOAD');
const SHOTS = env('CALLGATE_SCREENSHOTS');
const CHROMIUM = process.env.CALLGATE_CHROMIUM || '/usr/bin/chromium';
// Longest wait for one step (a deadline under a loaded machine, not a timing assertion).
const WAIT = 30_000;

mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1360, height: 860 }, deviceScaleFactor: 1 });
const page = await context.newPage();
page.setDefaultTimeout(WAIT);

const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  // A refused token (401) and an event nobody stored (404) are answers the browser reports by
  // itself; anything else (a CSP violation, an exception) is a problem.
  if (m.type() === 'error' && !/status of 40[14]/.test(m.text())) problems.push(`console: ${m.text()}`);
});
page.on('response', (r) => {
  if (new URL(r.url()).pathname.startsWith('/ui') && r.status() >= 400) problems.push(`${r.url()}: ${r.status()}`);
});
// A vendor's value that ran as markup would open a dialog.
page.on('dialog', async (d) => {
  problems.push(`a dialog opened: ${d.message()}`);
  await d.dismiss();
});
page.on('request', (r) => {
  if (r.url().includes(TOKEN)) problems.push(`the token is in a URL: ${r.url()}`);
});

let step = 0;
async function shot(name) {
  step += 1;
  const file = join(SHOTS, `${String(step).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

function check(condition, what) {
  if (!condition) throw new Error(what);
}

/** Opens a view from the navigation bar and waits until it has rendered. */
async function open(label, view) {
  await page.locator('#nav a', { hasText: label }).click();
  await ready(view);
}

async function ready(view) {
  await page.locator(`.view[data-view="${view}"][data-ready="yes"]`).waitFor();
}

async function ingest(body) {
  const response = await fetch(INGEST, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  return { status: response.status, body: await response.json().catch(() => null) };
}

try {
  // Sign-in: a wrong token is refused inline, the right one opens the overview.
  await page.goto(UI);
  await page.locator('#token').waitFor();
  await shot('sign-in');
  await page.fill('#token', 'not-the-token');
  await page.click('#login button[type=submit]');
  await page.locator('#login-error', { hasText: 'refused' }).waitFor();
  await page.fill('#token', TOKEN);
  await page.click('#login button[type=submit]');
  await ready('overview');
  for (const route of ['crm', 'flaky']) {
    await page.locator('[data-testid=routes] tr', { hasText: route }).waitFor();
  }
  check(!page.url().includes(TOKEN), 'the token is in the address');

  // The live tail: started before the payload, it shows it accepted and both outcomes.
  await open('Live tail', 'tail');
  await page.click('[data-testid=tail-toggle]');
  await page.locator('.notice', { hasText: 'Live:' }).waitFor();
  const posted = await ingest(PAYLOAD);
  check(posted.status === 200, `ingest answered ${posted.status}: ${JSON.stringify(posted.body)}`);
  const eventId = posted.body.ids[0];
  const tail = page.locator('[data-testid=tail] tbody tr');
  await tail.filter({ hasText: 'accepted' }).filter({ hasText: eventId }).waitFor();
  await tail.filter({ hasText: 'crm' }).filter({ hasText: 'success' }).waitFor();
  await tail.filter({ hasText: 'flaky' }).filter({ hasText: 'dead' }).waitFor();
  await page.locator('#tail-dot').waitFor();
  await shot('live-tail');

  // The delivery log shows the event's delivery, and its filters narrow it.
  await open('Delivery log', 'deliveries');
  const logRow = page.locator('[data-testid=deliveries] tbody tr', { hasText: eventId.slice(0, 20) });
  await logRow.filter({ hasText: 'success' }).waitFor();
  await shot('delivery-log');
  await page.selectOption('select[name=outcome]', 'dead');
  await page.click('form.filters button[type=submit]');
  await ready('deliveries');
  await page.locator('.empty', { hasText: 'Nothing logged' }).waitFor();
  await page.selectOption('.filters select:not([name])', 'flaky');
  await ready('deliveries');
  await page.selectOption('select[name=outcome]', 'dead');
  await page.click('form.filters button[type=submit]');
  await ready('deliveries');
  await page.locator('[data-testid=deliveries] tbody tr', { hasText: 'dead' }).waitFor();
  await shot('delivery-log-filtered');

  // The event: delivered to crm, dead on flaky.
  await page.locator('[data-testid=deliveries] tbody tr a', { hasText: eventId.slice(0, 20) }).first().click();
  await ready('event');
  await page.locator('[data-testid=delivery-crm] .route-head .badge', { hasText: 'delivered' }).waitFor();
  await page.locator('[data-testid=delivery-flaky] .route-head .badge', { hasText: 'dead' }).waitFor();
  await shot('event');

  // An error is said inline: an event id nobody stored.
  await open('Event', 'event');
  await page.fill('input[name=id]', 'ce_never_stored');
  await page.click('form.filters button[type=submit]');
  await ready('event');
  await page.locator('.notice.bad', { hasText: 'no stored event' }).waitFor();
  await shot('event-not-found');

  // Dead letters: replay it, and see it delivered (the receiver answers 200 now).
  await open('Dead letters', 'dead-letters');
  const dead = page.locator('[data-testid=dead-letters] tbody tr', { hasText: 'flaky' });
  await dead.waitFor();
  await shot('dead-letters');
  await dead.locator('button', { hasText: 'Replay' }).click();
  await page.locator('.notice', { hasText: 'back in flaky' }).waitFor();
  await open('Live tail', 'tail');
  await tail.filter({ hasText: 'flaky' }).filter({ hasText: 'success' }).waitFor();
  await page.evaluate((id) => { location.hash = `#/event/${encodeURIComponent(id)}`; }, eventId);
  await ready('event');
  await page.locator('[data-testid=delivery-flaky] .route-head .badge', { hasText: 'delivered' }).waitFor();
  await shot('event-replayed');
  await open('Dead letters', 'dead-letters');
  await page.locator('.empty', { hasText: 'No dead letters' }).waitFor();

  // Overview: pause a route, run a test send and see the receiver's answer, resume.
  await open('Overview', 'overview');
  await page.click('[data-testid=pause-flaky]');
  await ready('overview');
  await page.locator('[data-testid=routes] tr', { hasText: 'flaky' }).locator('.badge', { hasText: 'paused' }).waitFor();
  await page.selectOption('.card select[name=route]', 'crm');
  await page.selectOption('.card select[name=type]', 'call.ended');
  await page.click('[data-testid=send-test]');
  await page.locator('[data-testid=test-result] .notice', { hasText: 'Delivered: HTTP 200' }).waitFor();
  await shot('overview');
  await page.click('[data-testid=resume-flaky]');
  await ready('overview');
  await page.locator('[data-testid=routes] tr', { hasText: 'flaky' }).locator('.badge', { hasText: 'delivering' }).waitFor();

  // A second dead letter, replayed with "Replay all matching" on the route's filter (pressed
  // twice: the first press only arms it).
  const second = await ingest(PAYLOAD_2);
  check(second.status === 200, `ingest answered ${second.status}`);
  const secondId = second.body.ids[0];
  await open('Live tail', 'tail');
  await tail.filter({ hasText: 'flaky' }).filter({ hasText: 'dead' }).filter({ hasText: secondId }).waitFor();
  await open('Dead letters', 'dead-letters');
  await page.selectOption('select[name=route]', 'flaky');
  await page.click('form.filters button[type=submit]');
  await ready('dead-letters');
  await page.locator('[data-testid=dead-letters] tbody tr', { hasText: secondId }).waitFor();
  await page.click('[data-testid=replay-all]');
  await page.locator('[data-testid=replay-all]', { hasText: 'Press again' }).waitFor();
  await page.click('[data-testid=replay-all]');
  await page.locator('.notice', { hasText: '1 dead letter put back in the queue' }).waitFor();
  await page.locator('.empty', { hasText: 'No dead letters' }).waitFor();
  await open('Live tail', 'tail');
  await tail.filter({ hasText: 'flaky' }).filter({ hasText: 'success' }).filter({ hasText: secondId }).waitFor();

  // The quarantine: a rejected payload, replayed and rejected again (it stays).
  const bad = await ingest(BAD_PAYLOAD);
  check(bad.status >= 400 && bad.status < 500, `a bad payload answered ${bad.status}`);
  await open('Quarantine', 'quarantine');
  const q = page.locator('[data-testid=quarantine] tbody tr', { hasText: 'oneinbox' });
  await q.waitFor();
  await shot('quarantine');
  await q.locator('button', { hasText: 'Replay' }).click();
  await page.locator('.notice', { hasText: 'rejected again' }).waitFor();
  await q.locator('a').first().click();
  await ready('quarantine');
  // The hostile body is shown as text.
  await page.locator('pre.json', { hasText: '<img src=x onerror=alert(1)>' }).waitFor();
  check(await page.locator('main img').count() === 0, 'a vendor value became markup');
  await shot('quarantined-payload');

  // Calls: the call of the payload, and its record.
  await open('Calls', 'calls');
  const callRow = page.locator('[data-testid=calls] tbody tr', { hasText: 'oneinbox:ui_e2e_1' });
  await callRow.waitFor();
  await shot('calls');
  await callRow.locator('a').first().click();
  await ready('call');
  // Only started: not completed, and no late pieces.
  await page.locator('[data-testid=call-completed]', { hasText: 'not ended' }).waitFor();
  check(await page.locator('[data-testid=call-late]').count() === 0, 'late pieces shown for a call that did not end');
  await shot('call');

  // A token that stops working sends the operator back to the form; signing out forgets it.
  await page.evaluate(() => sessionStorage.setItem('callgate.admin-token', 'rotated-away'));
  await page.locator('#nav a', { hasText: 'Overview' }).click();
  await page.locator('#login-error', { hasText: 'refused' }).waitFor();
  await page.fill('#token', TOKEN);
  await page.click('#login button[type=submit]');
  await ready('overview');
  await page.click('#signout');
  await page.locator('#token').waitFor();
  const stored = await page.evaluate(() => ({ session: sessionStorage.length, local: localStorage.length, cookie: document.cookie }));
  check(stored.session === 0 && stored.local === 0 && stored.cookie === '', `something was kept: ${JSON.stringify(stored)}`);

  check(problems.length === 0, `problems in the page:\n${problems.join('\n')}`);
  console.log('dashboard end to end: ok');
} catch (e) {
  console.error(`dashboard end to end FAILED at step ${step}: ${e.stack ?? e}`);
  if (problems.length) console.error(problems.join('\n'));
  await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
