'use strict';
// Chat in a real browser (issue 3): Debian's Chromium through playwright-core.
//  - two pages chat through chinwag's tutorial-protocol page at GET /tutorial;
//  - markup in a message shows as literal text and runs nothing;
//  - a page of our own that behaves like the tutorial's (window.prompt for the name, lowercase
//    events, loads /socket.io/socket.io.js from chinwag) chats with a camelCase Node client.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startChinwag } = require('../../lib/server');
const { startStaticServer } = require('../../lib/static');
const { launchChromium, newContext, watchPage } = require('../../lib/browser');
const { ChatClient, hasConnected } = require('../../lib/chat');

const UI_TIMEOUT_MS = 15_000;
const FIXTURE = path.join(__dirname, '..', '..', 'fixtures', 'tutorial-like.html');

/** Waits until the page's #conversation shows `text` (as text, not markup). */
function waitForConversation(page, text) {
  return page.waitForFunction(
    (expected) => document.querySelector('#conversation')?.textContent.includes(expected),
    text,
    { timeout: UI_TIMEOUT_MS },
  );
}

/** Waits until the page's #users list shows exactly `names`. */
function waitForUsers(page, names) {
  return page.waitForFunction(
    (expected) => {
      const list = document.querySelector('#users');
      if (!list) return false;
      const shown = [...list.children].map((child) => child.textContent.trim()).sort();
      return JSON.stringify(shown) === JSON.stringify(expected);
    },
    [...names].sort(),
    { timeout: UI_TIMEOUT_MS },
  );
}

/** Joins through chinwag's page: the name form, then the chat appears. */
async function joinThroughPage(page, url, name) {
  await page.goto(url);
  await page.locator('#name').fill(name);
  await page.locator('#name').press('Enter');
  await page.locator('#data').waitFor({ state: 'visible', timeout: UI_TIMEOUT_MS });
}

async function sendThroughPage(page, text) {
  await page.locator('#data').fill(text);
  await page.locator('#data').press('Enter');
}

describe('chat in Chromium', () => {
  let server;
  let browser;
  const nodeClients = [];

  before(async () => {
    browser = await launchChromium();
    server = await startChinwag();
  });
  after(async () => {
    for (const client of nodeClients) client.close();
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('two pages chat through GET /tutorial and see each other in the user list', async () => {
    const context = await newContext(browser);
    try {
      const ann = await context.newPage();
      const ben = await context.newPage();
      const problems = [...[ann, ben].map(watchPage)];
      await joinThroughPage(ann, server.url + '/tutorial', 'Ann');
      await joinThroughPage(ben, server.url + '/tutorial', 'Ben');
      await waitForUsers(ann, ['Ann', 'Ben']);
      await waitForUsers(ben, ['Ann', 'Ben']);

      await sendThroughPage(ann, 'hello Ben, this is Ann');
      await waitForConversation(ben, 'hello Ben, this is Ann');
      await waitForConversation(ann, 'hello Ben, this is Ann');
      await sendThroughPage(ben, 'hi Ann! — Ben ✓');
      await waitForConversation(ann, 'hi Ann! — Ben ✓');

      await ben.close();
      await waitForUsers(ann, ['Ann']);
      assert.deepEqual(problems.flat(), [], 'no script errors on the pages');
    } finally {
      await context.close();
    }
  });

  it('shows markup in a message as literal text and runs nothing', async () => {
    const context = await newContext(browser);
    try {
      const sender = await context.newPage();
      const reader = await context.newPage();
      await joinThroughPage(sender, server.url + '/tutorial', 'Sender');
      await joinThroughPage(reader, server.url + '/tutorial', 'Reader');
      await waitForUsers(reader, ['Reader', 'Sender']);

      const attack = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
      await sendThroughPage(sender, attack);
      for (const page of [sender, reader]) {
        await waitForConversation(page, attack);
        assert.equal(await page.locator('#conversation img, #conversation script').count(), 0);
        assert.equal(await page.evaluate(() => window.__pwned), undefined);
      }
      // A message after the attack still arrives: the page kept working.
      await sendThroughPage(sender, 'after the attack');
      await waitForConversation(reader, 'after the attack');
      for (const page of [sender, reader]) {
        assert.equal(await page.evaluate(() => window.__pwned), undefined);
      }
    } finally {
      await context.close();
    }
  });

  it('a tutorial-like page (prompt, lowercase events) chats with a camelCase Node client', async () => {
    const fixtureServer = await startStaticServer({
      files: { '/tutorial-like.html': { file: FIXTURE, type: 'text/html; charset=utf-8' } },
    });
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      const problems = watchPage(page);
      const prompts = [];
      page.on('dialog', async (dialog) => {
        prompts.push(`${dialog.type()}: ${dialog.message()}`);
        await dialog.accept('Tutee');
      });
      const { port } = fixtureServer;
      // localhost is among chinwag's default allowed origins.
      const pageUrl = `http://localhost:${port}/tutorial-like.html?server=${encodeURIComponent(server.url)}`;
      await page.goto(pageUrl);
      await waitForConversation(page, 'Server: you have connected');
      assert.deepEqual(prompts, ["prompt: What's your name?"]);
      await waitForUsers(page, ['Tutee']);

      const node = await ChatClient.open('v4', server.url, { spelling: 'camel' });
      nodeClients.push(node);
      await node.join('Nodey');
      await waitForConversation(page, `Server: ${hasConnected('Nodey')}`);
      await waitForUsers(page, ['Nodey', 'Tutee']);

      node.say('hello tutorial page');
      await waitForConversation(page, 'Nodey: hello tutorial page');

      await page.locator('#data').fill('hello Node, from the page');
      await page.locator('#datasend').click();
      await node.waitChat('Tutee', 'hello Node, from the page');
      await waitForConversation(page, 'Tutee: hello Node, from the page');
      assert.deepEqual(problems, [], 'no script errors on the page');
    } finally {
      await context.close();
      await fixtureServer.close();
    }
  });
});
