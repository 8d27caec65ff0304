'use strict';
// The web UI at / (issue 12) in Debian's Chromium through playwright-core, each user in a
// browser context of its own (its own localStorage, like separate browsers):
//  - three users chat in two rooms with unread counts (sidebar and tab title) and a DM;
//  - a reload keeps the session and shows the history; scrolling up loads older messages;
//  - kill -9 of the server while pages are open: the banner shows, a message typed meanwhile
//    is sent exactly once after the restart, and messages missed while away appear in order;
//  - markup in messages shows literally and runs nothing; links are http(s) only;
//  - a name with markup is refused at the name field;
//  - no horizontal overflow at 390x844; the draft survives a message_too_long and a reload.
// Screenshots of the main screens go to e2e/screenshots/ (not committed).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const ioc = require('socket.io-client');
const { startChinwag, startServer, chinwagBin, tempDir } = require('../../lib/server');
const { launchChromium, watchPage } = require('../../lib/browser');
const { Recorder } = require('../../lib/wait');

const MS = 15_000;
const SCREENSHOTS = path.join(__dirname, '..', '..', 'screenshots');
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

fs.mkdirSync(SCREENSHOTS, { recursive: true });

/** A browser context of its own (one user), at a viewport size and colour scheme. */
async function userContext(browser, { viewport = DESKTOP, colorScheme = 'light' } = {}) {
  const fresh = await browser.newContext({ viewport, colorScheme });
  try {
    await fresh.grantPermissions(['local-network-access']);
  } catch {
    // Older Chromium builds do not know this permission and need none.
  }
  return fresh;
}

/** Opens the UI in `context`, joins as `name`, and waits for the chat. */
async function join(context, url, name) {
  const page = await context.newPage();
  page.problems = watchPage(page);
  await page.goto(url + '/');
  await page.locator('#name').fill(name);
  await page.locator('#name').press('Enter');
  await page.locator('#app').waitFor({ state: 'visible', timeout: MS });
  await page.waitForFunction((n) => document.querySelector('#me')?.textContent === n, name, { timeout: MS });
  await waitReady(page);
  return page;
}

/** The page has its session and nothing on it is loading: the banner is gone. */
function waitReady(page) {
  return page.locator('#banner').waitFor({ state: 'hidden', timeout: MS });
}

async function send(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
}

/** The texts of the confirmed (not pending) messages shown, in page order. */
function shownTexts(page) {
  return page.$$eval('#messages li.msg:not(.pending):not(.failed) .body', (bodies) =>
    bodies.map((body) => body.textContent),
  );
}

/** Waits until a confirmed message with exactly this text is shown. */
function waitForMessage(page, text) {
  return page.waitForFunction(
    (expected) =>
      [...document.querySelectorAll('#messages li.msg:not(.pending):not(.failed) .body')].some(
        (body) => body.textContent === expected,
      ),
    text,
    { timeout: MS },
  );
}

/** Clicks a conversation in the sidebar (opening the drawer first on a phone). */
async function openConversation(page, key) {
  const item = page.locator(`#sidebar button[data-key="${key}"]`);
  await item.waitFor({ state: 'attached', timeout: MS });
  if (!(await item.isVisible())) await page.locator('#open-sidebar').click();
  await item.click();
  await page.waitForFunction((k) => document.querySelector(`button[data-key="${k}"]`)?.getAttribute('aria-current') === 'page', key, { timeout: MS });
}

/** The unread badge of a conversation in the sidebar ('' when there is none). */
function badge(page, key) {
  return page.$eval(`#sidebar button[data-key="${key}"]`, (button) => button.querySelector('.badge')?.textContent ?? '');
}

function waitForBadge(page, key, expected) {
  return page.waitForFunction(
    ([k, want]) => (document.querySelector(`#sidebar button[data-key="${k}"] .badge`)?.textContent ?? '') === want,
    [key, expected],
    { timeout: MS },
  );
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

/** A full-protocol Node client (socket.io-client 4.8) that records what it receives. */
async function nodeUser(url, auth) {
  const socket = ioc(url, { transports: ['websocket'], forceNew: true, reconnection: false, auth });
  socket.rec = new Recorder(socket);
  const [session] = await socket.rec.waitFor('session', () => true, { ms: MS });
  return { socket, session };
}

async function say(socket, room, text) {
  const ack = await socket.timeout(MS).emitWithAck('message:send', { room, text });
  assert.ok(ack.ok, JSON.stringify(ack));
  return ack;
}

function assertNoProblems(...pages) {
  assert.deepEqual(pages.flatMap((page) => page.problems), [], 'no script errors on the pages');
}

describe('the web UI at /', () => {
  let browser;
  const contexts = [];
  const sockets = [];

  before(async () => {
    browser = await launchChromium();
  });
  after(async () => {
    for (const socket of sockets) socket.close();
    for (const context of contexts) await context.close().catch(() => {});
    if (browser) await browser.close();
  });

  async function context(options) {
    const created = await userContext(browser, options);
    contexts.push(created);
    return created;
  }

  it('three users chat in two rooms with unread counts and a direct message', async () => {
    const server = await startChinwag();
    try {
      const welcome = await (await context()).newPage();
      await welcome.goto(server.url + '/');
      await welcome.locator('#name').waitFor({ state: 'visible', timeout: MS });
      await shot(welcome, 'welcome-light');

      const ann = await join(await context(), server.url, 'Ann');
      const ben = await join(await context(), server.url, 'Ben');
      const cy = await join(await context({ colorScheme: 'dark' }), server.url, 'Cy');

      await send(ann, 'hello everyone, see https://example.com/notes?id=1.');
      for (const page of [ann, ben, cy]) await waitForMessage(page, 'hello everyone, see https://example.com/notes?id=1.');
      const link = ben.locator('#messages a');
      assert.equal(await link.count(), 1);
      assert.equal(await link.getAttribute('href'), 'https://example.com/notes?id=1');
      assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
      assert.equal(await link.getAttribute('target'), '_blank');

      // Ann creates #design, Ben joins it from the room directory, then looks at #general.
      await ann.locator('#add-room').click();
      await ann.locator('#room-name').fill('design');
      await ann.locator('#room-create').click();
      await openConversation(ann, 'r:design');
      await ben.locator('#add-room').click();
      await ben.locator('#room-directory button', { hasText: '# design' }).waitFor({ timeout: MS });
      await shot(ben, 'desktop-light-rooms-dialog');
      await ben.locator('#room-directory button', { hasText: '# design' }).click();
      await ben.waitForFunction(() => document.querySelector('#title')?.textContent === '# design', null, { timeout: MS });
      await openConversation(ben, 'r:general');

      // Ann in #design: Ben sees an unread count of 2 on #design and in the tab title.
      await send(ann, 'first design note');
      await send(ann, 'second design note, @Ben please look');
      await waitForBadge(ben, 'r:design', '2');
      await ben.waitForFunction(() => document.title.startsWith('(2) '), null, { timeout: MS });
      // Ben answers in #general: Ann (in #design) gets an unread count there.
      await send(ben, 'on it');
      await waitForBadge(ann, 'r:general', '1');
      assert.equal(await badge(ann, 'r:design'), '');

      await openConversation(ben, 'r:design');
      await waitForMessage(ben, 'second design note, @Ben please look');
      assert.deepEqual((await shownTexts(ben)).slice(-2), ['first design note', 'second design note, @Ben please look']);
      assert.equal(await ben.locator('#messages li.msg.mentioned').count(), 1, 'the mention of Ben is highlighted');
      await waitForBadge(ben, 'r:design', '');
      await ben.waitForFunction(() => !document.title.startsWith('('), null, { timeout: MS });
      // Cy never joined #design.
      assert.equal(await cy.locator('#sidebar button[data-key="r:design"]').count(), 0);

      // Ann opens a direct message with Cy from the member list of #general.
      await openConversation(ann, 'r:general');
      await ann.locator('#open-members').click();
      await ann.locator('#members button.member', { hasText: 'Cy' }).click();
      await ann.waitForFunction(() => document.querySelector('#title')?.textContent === 'Cy', null, { timeout: MS });
      await send(ann, 'psst, Cy: a secret');
      await waitForBadge(cy, 'd:ann', '1');
      await openConversation(cy, 'd:ann');
      await waitForMessage(cy, 'psst, Cy: a secret');
      await send(cy, 'got it, Ann');
      await waitForMessage(ann, 'got it, Ann');
      // Ben sees no trace of it.
      assert.equal(await ben.locator('#sidebar button[data-key^="d:"]').count(), 0);
      assert.ok(!(await ben.locator('body').textContent()).includes('psst'));

      await openConversation(ben, 'r:general');
      await ben.locator('#open-members').click();
      await ben.locator('#members li').nth(2).waitFor({ timeout: MS });
      await shot(ben, 'desktop-light-room');
      await shot(cy, 'desktop-dark-dm');

      // Typing shows to the others; Shift+Enter is a new line, Enter sends.
      await openConversation(ann, 'r:general');
      await ben.locator('#text').focus();
      await ben.keyboard.type('first line');
      await ann.waitForFunction(() => document.querySelector('#typing')?.textContent === 'Ben is typing…', null, { timeout: MS });
      await ben.keyboard.press('Shift+Enter');
      await ben.keyboard.type('second line');
      await ben.keyboard.press('Enter');
      await waitForMessage(ann, 'first line\nsecond line');
      await ann.waitForFunction(() => document.querySelector('#typing')?.textContent === '', null, { timeout: MS });

      // Ben leaves #design: it leaves his sidebar, and Ann's member list of #design.
      await openConversation(ann, 'r:design');
      await ann.waitForFunction(() => document.querySelector('#subtitle')?.textContent === '2 members, 2 online', null, { timeout: MS });
      await openConversation(ben, 'r:design');
      await ben.locator('#leave').click();
      await ben.waitForFunction(() => document.querySelector('#title')?.textContent === '# general', null, { timeout: MS });
      assert.equal(await ben.locator('#sidebar button[data-key="r:design"]').count(), 0);
      await ann.waitForFunction(() => document.querySelector('#subtitle')?.textContent === '1 member, 1 online', null, { timeout: MS });
      assertNoProblems(ann, ben, cy);
    } finally {
      await server.stop();
    }
  });

  it('a reload keeps the session and the history; scrolling up loads older messages', async () => {
    const server = await startChinwag();
    try {
      const { socket: feeder } = await nodeUser(server.url, { name: 'Feeder' });
      sockets.push(feeder);
      for (let i = 1; i <= 130; i++) await say(feeder, 'general', `old message ${i}`);

      const ctx = await context();
      const dana = await join(ctx, server.url, 'Dana');
      await waitForMessage(dana, 'old message 130');
      const first = await shownTexts(dana);
      assert.ok(!first.includes('old message 1'), 'only the latest page at first');
      await send(dana, 'Dana was here');
      await waitForMessage(dana, 'Dana was here');

      // Scroll to the top until the beginning of the room shows.
      await dana.waitForFunction(
        () => {
          const scroller = document.querySelector('#scroller');
          scroller.scrollTop = 0;
          scroller.dispatchEvent(new Event('scroll'));
          return document.querySelector('#history-status')?.textContent.includes('beginning of #general');
        },
        null,
        { timeout: MS, polling: 200 },
      );
      const all = (await shownTexts(dana)).filter((text) => text.startsWith('old message'));
      assert.deepEqual(all, Array.from({ length: 130 }, (_, i) => `old message ${i + 1}`), 'every message once, in order');

      // The reader scrolled up: a new message does not pull the view down; a marker offers it.
      const top = await dana.$eval('#scroller', (s) => s.scrollTop);
      await say(feeder, 'general', 'while Dana reads old ones');
      await dana.locator('#new-messages').waitFor({ state: 'visible', timeout: MS });
      assert.equal(await dana.$eval('#scroller', (s) => s.scrollTop), top, 'the view stayed where the reader was');
      await dana.locator('#new-messages').click();
      await dana.locator('#new-messages').waitFor({ state: 'hidden', timeout: MS });

      await dana.reload();
      await dana.locator('#app').waitFor({ state: 'visible', timeout: MS });
      await waitReady(dana);
      assert.equal(await dana.locator('#welcome').isVisible(), false, 'no name screen after a reload');
      assert.equal(await dana.locator('#me').textContent(), 'Dana');
      await waitForMessage(dana, 'Dana was here');
      await waitForMessage(dana, 'while Dana reads old ones');
      assertNoProblems(dana);
    } finally {
      await server.stop();
    }
  });

  it('kill -9 of the server: banner, the message typed meanwhile is sent once, missed ones in order', async () => {
    const db = tempDir('ui-restart');
    const args = ['--host', '127.0.0.1', '--db', path.join(db.dir, 'chinwag.db')];
    let server = await startServer(chinwagBin(), ['--port', '0', ...args], { label: 'chinwag' });
    try {
      const annContext = await context();
      const benContext = await context();
      const ann = await join(annContext, server.url, 'Ann');
      const ben = await join(benContext, server.url, 'Ben');
      const { socket: observer, session } = await nodeUser(server.url, { name: 'Obs' });
      await send(ann, 'before the crash');
      // Ben can see it before Ann's acknowledgement arrives: wait for both, so that the only
      // message pending across the crash is the one typed while the server is down.
      await waitForMessage(ann, 'before the crash');
      await waitForMessage(ben, 'before the crash');
      observer.close();

      // Ben's browser goes offline: he will miss what is said after the restart.
      await benContext.setOffline(true);
      process.kill(server.pid, 'SIGKILL');
      await server.exited;

      await ann.locator('#banner').waitFor({ state: 'visible', timeout: MS });
      assert.match(await ann.locator('#banner').textContent(), /offline|reconnecting/i);
      await send(ann, 'typed while the server was down');
      const pending = ann.locator('#messages li.msg.pending');
      await pending.waitFor({ timeout: MS });
      assert.equal(await pending.locator('.body').textContent(), 'typed while the server was down');
      assert.equal(await ann.locator('#text').inputValue(), '', 'the composer is free for the next one');
      await shot(ann, 'desktop-light-offline');

      server = await startServer(chinwagBin(), ['--port', String(server.port), ...args], { label: 'chinwag' });
      await waitForMessage(ann, 'typed while the server was down');
      await waitReady(ann);
      assert.equal(await ann.locator('#messages li.msg.pending, #messages li.msg.failed').count(), 0);

      // Said while Ben is away.
      const back = await nodeUser(server.url, { token: session.token });
      sockets.push(back.socket);
      for (let i = 1; i <= 5; i++) await say(back.socket, 'general', `missed ${i}`);
      await waitForMessage(ann, 'missed 5');

      await benContext.setOffline(false);
      await waitForMessage(ben, 'missed 5');
      await waitReady(ben);
      const expected = ['before the crash', 'typed while the server was down', 'missed 1', 'missed 2', 'missed 3', 'missed 4', 'missed 5'];
      for (const page of [ann, ben]) {
        assert.deepEqual(await shownTexts(page), expected, 'each message once, in order');
      }
      // Stored exactly once.
      const history = await back.socket.timeout(MS).emitWithAck('message:history', { room: 'general' });
      const typed = history.messages.filter((m) => m.text === 'typed while the server was down');
      assert.equal(typed.length, 1, 'the message typed while the server was down is stored once');
      // Reconnection attempts while the server was down are refused: expected, not a fault.
      const refused = /ERR_CONNECTION_REFUSED|ERR_INTERNET_DISCONNECTED/;
      for (const page of [ann, ben]) page.problems = page.problems.filter((problem) => !refused.test(problem));
      assertNoProblems(ann, ben);
    } finally {
      await server.stop();
      db.remove();
    }
  });

  it('shows markup literally, runs nothing, and refuses a name with markup at the name field', async () => {
    const server = await startChinwag();
    try {
      const ctx = await context();
      const page = await ctx.newPage();
      page.problems = watchPage(page);
      await page.goto(server.url + '/');
      // Every file (the icon too) is in before the reload, which would abort its request.
      await page.waitForLoadState('networkidle');
      // A token the server does not know (expired): back to the name screen, saying why.
      await page.evaluate(() => localStorage.setItem('chinwag.token', JSON.stringify('0123456789abcdef')));
      await page.reload();
      await page.waitForFunction(() => document.querySelector('#name-error')?.textContent.includes('expired'), null, { timeout: MS });
      assert.equal(await page.evaluate(() => localStorage.getItem('chinwag.token')), null);

      await page.locator('#name').fill('<b>Eve</b>');
      await page.locator('#name').press('Enter');
      await page.waitForFunction(() => document.querySelector('#name-error')?.textContent.includes('only letters'), null, { timeout: MS });
      assert.equal(await page.locator('#app').isVisible(), false);
      assert.equal(await page.locator('#name').getAttribute('aria-invalid'), 'true');
      await shot(page, 'welcome-name-refused');

      await page.locator('#name').fill('Eve');
      await page.locator('#name').press('Enter');
      await page.locator('#app').waitFor({ state: 'visible', timeout: MS });
      await waitReady(page);
      const { socket: mallory } = await nodeUser(server.url, { name: 'Mallory' });
      sockets.push(mallory);
      const attack = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><a href="javascript:window.__pwned=3">click</a> javascript:window.__pwned=4';
      await say(mallory, 'general', attack);
      await waitForMessage(page, attack);
      await send(page, '<b>not bold</b> <svg onload="window.__pwned=5">');
      await waitForMessage(page, '<b>not bold</b> <svg onload="window.__pwned=5">');
      assert.equal(await page.locator('#messages img, #messages script, #messages b, #messages svg, #messages a').count(), 0);
      await page.locator('#messages li.msg .body').last().click();
      assert.equal(await page.evaluate(() => window.__pwned), undefined);
      assertNoProblems(page);
    } finally {
      await server.stop();
    }
  });

  it('marks messages refused as rate_limited failed, and Retry sends each exactly once', async () => {
    const server = await startChinwag(['--max-messages-per-second', '1']);
    try {
      const page = await join(await context(), server.url, 'Rita');
      const texts = Array.from({ length: 8 }, (_, i) => `burst ${i + 1}`);
      for (const text of texts) await send(page, text);
      const failed = page.locator('#messages li.msg.failed');
      await failed.first().waitFor({ timeout: MS });
      assert.match(await failed.first().locator('.status').textContent(), /Not sent: .*too fast/);
      await shot(page, 'desktop-light-failed');
      // Retry until everything is through (the limit lets one a second pass).
      await page.waitForFunction(
        () => {
          const retry = document.querySelector('#messages li.msg.failed button.retry');
          if (retry) retry.click();
          return document.querySelectorAll('#messages li.msg.failed, #messages li.msg.pending').length === 0;
        },
        null,
        { timeout: 60_000, polling: 1_100 },
      );
      const { socket } = await nodeUser(server.url, { name: 'Checker' });
      sockets.push(socket);
      const history = await socket.timeout(MS).emitWithAck('message:history', { room: 'general' });
      const stored = history.messages.map((m) => m.text).filter((t) => t.startsWith('burst ')).sort();
      assert.deepEqual(stored, [...texts].sort(), 'each message stored exactly once');
      assert.deepEqual((await shownTexts(page)).filter((t) => t.startsWith('burst ')).sort(), [...texts].sort());
      assertNoProblems(page);
    } finally {
      await server.stop();
    }
  });

  it('fits a 390x844 phone without sideways scrolling and keeps the draft after message_too_long', async () => {
    const server = await startChinwag(['--max-message-chars', '50']);
    try {
      const phone = await join(await context({ viewport: PHONE }), server.url, 'Pat');
      const dark = await join(await context({ viewport: PHONE, colorScheme: 'dark' }), server.url, 'Quinn');
      await send(phone, 'a'.repeat(50));
      await send(phone, 'https://example.com/' + 'b'.repeat(29));
      await send(dark, 'hi Pat, how is it going on the small screen?');
      await waitForMessage(phone, 'hi Pat, how is it going on the small screen?');
      await waitForMessage(dark, 'a'.repeat(50));
      // Quinn arrived after Pat: Pat's header counts Quinn in (every user is in general).
      await phone.waitForFunction(() => document.querySelector('#subtitle')?.textContent === '2 members, 2 online', null, { timeout: MS });

      const overflow = (page) =>
        page.evaluate(() =>
          [document.documentElement, document.body, document.querySelector('#scroller'), document.querySelector('.topbar')]
            .filter((el) => el.scrollWidth > el.clientWidth)
            .map((el) => `${el.id || el.className || el.tagName}: ${el.scrollWidth} > ${el.clientWidth}`),
        );
      assert.deepEqual(await overflow(phone), [], 'no horizontal overflow at 390x844');
      assert.deepEqual(await overflow(dark), [], 'no horizontal overflow at 390x844 (dark)');
      await dark.setViewportSize({ width: 360, height: 740 });
      assert.deepEqual(await overflow(dark), [], 'no horizontal overflow at 360x740 either');
      assert.ok(await phone.locator('#send').isVisible(), 'Send is on screen');
      const send_box = await phone.locator('#send').boundingBox();
      assert.ok(send_box.x + send_box.width <= PHONE.width, 'Send is not cut off');
      await shot(phone, 'phone-light-room');
      await shot(dark, 'phone-dark-room');

      await phone.locator('#open-sidebar').click();
      await phone.locator('#sidebar button[data-key="r:general"]').waitFor({ state: 'visible', timeout: MS });
      // The drawer has slid in.
      await phone.waitForFunction(() => document.querySelector('#sidebar').getBoundingClientRect().left === 0, null, { timeout: MS });
      assert.deepEqual(await overflow(phone), []);
      await shot(phone, 'phone-light-sidebar');
      await phone.keyboard.press('Escape');
      await phone.locator('#sidebar button[data-key="r:general"]').waitFor({ state: 'hidden', timeout: MS });

      // The limit comes from the server (50 here): over it, the refusal keeps the draft.
      const draft = 'this draft is one character over the fifty limit!!!';
      assert.equal([...draft].length, 51);
      await phone.locator('#text').fill(draft);
      assert.equal(await phone.locator('#counter').textContent(), '51 / 50');
      await phone.locator('#text').press('Enter');
      await phone.waitForFunction(() => document.querySelector('#composer-error')?.textContent.includes('at most 50 characters'), null, { timeout: MS });
      assert.equal(await phone.locator('#text').inputValue(), draft, 'the draft is back in the composer');
      assert.equal(await phone.locator('#messages li.msg.pending, #messages li.msg.failed').count(), 0);
      await shot(phone, 'phone-light-too-long');

      // The draft also survives a reload.
      await phone.reload();
      await phone.locator('#app').waitFor({ state: 'visible', timeout: MS });
      await waitReady(phone);
      assert.equal(await phone.locator('#text').inputValue(), draft);
      assertNoProblems(phone, dark);
    } finally {
      await server.stop();
    }
  });
});
