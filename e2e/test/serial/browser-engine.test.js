'use strict';
// The socket.io browser bundles (2.x and 4.x, from npm) in Chromium against the engine's
// conformance example (issue 2). Browsers use what Node clients do not: 2.x over polling sends
// and receives binary in Engine.IO v3's binary payload format (XHR2), not base64.
//
// The page is served by a tiny static server that also forwards /socket.io/ to the conformance
// example, so the page and the engine share one origin.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startConformance } = require('../../lib/server');
const { startStaticServer } = require('../../lib/static');
const { launchChromium, newContext, watchPage } = require('../../lib/browser');
const { CLIENT_VERSIONS, TRANSPORT_MODES } = require('../../lib/clients');

const E2E_DIR = path.resolve(__dirname, '..', '..');
const JS = 'application/javascript; charset=utf-8';
const FILES = {
  '/client-page.html': { file: path.join(E2E_DIR, 'fixtures', 'client-page.html'), type: 'text/html; charset=utf-8' },
  '/vendor/v2/socket.io.js': { file: require.resolve('socket.io-client-v2/dist/socket.io.js'), type: JS },
  '/vendor/v4/socket.io.js': { file: path.join(path.dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.js'), type: JS },
};

/** Runs in the page: connect, echo text and binary, ack, report what came back. */
async function exercise({ mode }) {
  const TIMEOUT_MS = 10_000;
  const transports = { websocket: ['websocket'], polling: ['polling'], upgrade: ['polling', 'websocket'] }[mode];
  const socket = io(location.origin, { transports, forceNew: true, reconnection: false });
  // What the client saw, for the failure message if something never arrives.
  const history = [];
  socket.on('disconnect', (reason) => history.push(`disconnect: ${reason}`));
  socket.io.engine.on('close', (reason, detail) => history.push(`engine close: ${reason} ${detail || ''}`));
  socket.io.engine.on('upgrade', () => history.push('upgrade'));
  const within = (promise, what) =>
    Promise.race([
      promise,
      new Promise((_, reject) =>
        setTimeout(
          () => reject(new Error(`timed out waiting for ${what}; client saw: ${history.join('; ') || 'nothing'}`)),
          TIMEOUT_MS,
        ),
      ),
    ]);
  const next = (emitter, name) => within(new Promise((resolve) => emitter.once(name, (...args) => resolve(args))), name);
  const upgrade = mode === 'upgrade' ? next(socket.io.engine, 'upgrade') : null;
  const auth = next(socket, 'auth');
  await within(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', (e) => reject(new Error(`connect_error: ${e && e.message}`)));
      socket.once('error', (e) => reject(new Error(`error: ${e}`)));
    }),
    'connect',
  );
  const bytesOf = async (value) => {
    if (typeof Blob !== 'undefined' && value instanceof Blob) value = await value.arrayBuffer();
    if (ArrayBuffer.isView(value)) value = value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
    if (!(value instanceof ArrayBuffer)) return `not binary: ${JSON.stringify(value)}`;
    return Array.from(new Uint8Array(value));
  };
  // An ArrayBuffer: the 2.x bundle sends a typed-array view as JSON, not as binary.
  const bytes = new Uint8Array([0, 1, 2, 253, 254, 255, 0x1e, 58, 10, 13]).buffer;
  const back = next(socket, 'message-back');
  history.push('emit message');
  socket.emit('message', 'text ✓ 🙂', bytes, { nested: bytes, n: 1 });
  const [text, binary, nested] = await back;
  history.push('got message-back');
  const ack = await within(
    new Promise((resolve) => socket.emit('message-with-ack', bytes, 'after binary', (...args) => resolve(args))),
    'the ack',
  );
  if (upgrade) await upgrade;
  // One more round trip after the upgrade, on the final transport.
  history.push('got ack');
  const late = next(socket, 'message-back');
  socket.emit('message', bytes);
  const [lateBinary] = await late;
  const result = {
    auth: (await auth)[0],
    text,
    binary: await bytesOf(binary),
    nested: await bytesOf(nested.nested),
    nestedN: nested.n,
    ackBinary: await bytesOf(ack[0]),
    ackText: ack[1],
    lateBinary: await bytesOf(lateBinary),
    transport: socket.io.engine.transport.name,
  };
  socket.close();
  return result;
}

describe('socket.io browser clients in Chromium against the conformance example', () => {
  let engine;
  let statics;
  let browser;

  before(async () => {
    browser = await launchChromium();
    engine = await startConformance();
    statics = await startStaticServer({ files: FILES, proxyTo: engine.url });
  });
  after(async () => {
    if (browser) await browser.close();
    if (statics) await statics.close();
    if (engine) await engine.stop();
  });

  for (const version of CLIENT_VERSIONS) {
    for (const mode of TRANSPORT_MODES) {
      it(`socket.io-client ${version} in the browser echoes text and binary and acks over ${mode}`, async () => {
        const context = await newContext(browser);
        try {
          const page = await context.newPage();
          const problems = watchPage(page);
          const postTypes = new Set();
          page.on('request', (request) => {
            if (request.method() === 'POST' && request.url().includes('/socket.io/')) {
              postTypes.add(request.headers()['content-type']);
            }
          });
          await page.goto(`http://127.0.0.1:${statics.port}/client-page.html?client=${version}`);
          await page.waitForFunction(() => typeof window.io === 'function', null, { timeout: 10_000 });
          const result = await page.evaluate(exercise, { mode });
          const bytes = [0, 1, 2, 253, 254, 255, 0x1e, 58, 10, 13];
          assert.deepEqual(result.auth, {});
          assert.equal(result.text, 'text ✓ 🙂');
          assert.deepEqual(result.binary, bytes);
          assert.deepEqual(result.nested, bytes);
          assert.equal(result.nestedN, 1);
          assert.deepEqual(result.ackBinary, bytes);
          assert.equal(result.ackText, 'after binary');
          assert.deepEqual(result.lateBinary, bytes);
          assert.equal(result.transport, mode === 'polling' ? 'polling' : 'websocket');
          assert.deepEqual(problems, [], 'no page errors or failed requests');
          if (version === 'v2' && mode === 'polling') {
            // Proof that the v3 binary payload format was used, not base64.
            assert.ok(postTypes.has('application/octet-stream'), `POST types: ${[...postTypes]}`);
          }
        } finally {
          await context.close();
        }
      });
    }
  }
});
