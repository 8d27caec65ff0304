'use strict';
// Debian's Chromium driven by playwright-core. Never a downloaded browser: if /usr/bin/chromium
// is missing the tests fail and say how to install it.

const fs = require('node:fs');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // Keep timers on time in every page: the engine tests run 300 ms heartbeats.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: install Debian's Chromium with "apt-get install -y chromium"`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
}

/**
 * A fresh browser context. Pages on loopback talking to another loopback origin may need the
 * local-network-access permission in recent Chromium; granting it is harmless elsewhere.
 */
async function newContext(browser) {
  const context = await browser.newContext();
  try {
    await context.grantPermissions(['local-network-access']);
  } catch {
    // Older Chromium builds do not know this permission and need none.
  }
  return context;
}

/**
 * Collects uncaught page errors, console errors and failed responses (with their URL; a missing
 * favicon is not a problem), for failure messages and assertions.
 */
function watchPage(page) {
  const problems = [];
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    // Failed loads are reported below with their URL instead.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console: ${message.text()}`);
    }
  });
  page.on('response', (response) => {
    if (response.status() >= 400 && !response.url().endsWith('/favicon.ico')) {
      problems.push(`HTTP ${response.status()} for ${response.url()}`);
    }
  });
  page.on('requestfailed', (request) => {
    problems.push(`request failed: ${request.url()} (${request.failure()?.errorText})`);
  });
  return problems;
}

module.exports = { launchChromium, newContext, watchPage, CHROMIUM };
