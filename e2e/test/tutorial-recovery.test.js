'use strict';
// Socket.IO connection-state recovery for tutorial clients (issue 9): with
// `--connection-state-recovery`, the official client 4.8 resumes a tutorial chat after a
// transport drop and across a restart: `socket.recovered` is true, the name is kept, nobody is
// told it left and came back (for a drop), and the missed `updateChat` events arrive in order,
// each once.
//
// The resuming client behaves like the tutorial's page: it emits `addUser(name)` on every
// `connect`, recovered or not.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const ioV4 = require('socket.io-client');
const { startServer, startChinwag, chinwagBin, tempDir } = require('../lib/server');
const { ChatClient, hasConnected, hasDisconnected } = require('../lib/chat');
const { Recorder, nextEvent } = require('../lib/wait');

const MS = 15_000;
const MISSED = 30;

/** A tutorial client like the tutorial's page: `addUser(name)` on every connect. */
function tutorialPageClient(url, name, { reconnection }) {
  const socket = ioV4(url, {
    transports: ['websocket'],
    forceNew: true,
    reconnection,
    reconnectionDelay: 1_500,
    reconnectionDelayMax: 1_500,
    randomizationFactor: 0,
  });
  const recorder = new Recorder(socket);
  socket.on('connect', () => socket.emit('addUser', name));
  return { socket, recorder };
}

/** The `updateChat` texts from `speaker` recorded at index `from` or later. */
function chatsFrom(recorder, speaker, from) {
  return recorder.events
    .slice(from)
    .filter((e) => e.event === 'updateChat' && e.args[0] === speaker)
    .map((e) => e.args[1]);
}

/** Sends `texts` in order, each once its echo came back (so all are stored before returning). */
async function sayAll(client, texts) {
  for (const text of texts) {
    const from = client.mark();
    client.say(text);
    await client.waitChat(client.name, text, { from, ms: MS });
  }
}

describe('tutorial clients with connection-state recovery', () => {
  const cleanups = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('resume after a transport drop: recovered, name kept, no notices, missed messages in order', async () => {
    const server = await startChinwag(['--connection-state-recovery']);
    cleanups.push(() => server.stop());
    const watcher = await ChatClient.open('v4', server.url);
    cleanups.push(() => watcher.close());
    await watcher.join('Watcher');

    const ann = tutorialPageClient(server.url, 'Ann', { reconnection: true });
    cleanups.push(() => ann.socket.close());
    await ann.recorder.waitFor('updateChat', (who, text) => who === 'Server' && text === 'you have connected', {
      ms: MS,
    });
    await sayAll(watcher, ['before']);
    const [, , offset] = await ann.recorder.waitFor('updateChat', (who, text) => text === 'before', { ms: MS });
    assert.equal(typeof offset, 'string', 'updateChat carries an offset as its last argument');
    assert.equal(ann.socket.recovered, false);

    const watcherFrom = watcher.mark();
    const gone = nextEvent(ann.socket, 'disconnect', MS);
    ann.socket.io.engine.close();
    await gone;
    const from = ann.recorder.mark();
    const missed = Array.from({ length: MISSED }, (_, i) => `missed ${i + 1}`);
    await sayAll(watcher, missed);

    await nextEvent(ann.socket, 'connect', MS);
    assert.equal(ann.socket.recovered, true, 'the official client reports the session recovered');
    await ann.recorder.until(
      () => chatsFrom(ann.recorder, 'Watcher', from).length >= MISSED,
      'the missed messages',
      MS,
    );
    assert.deepEqual(chatsFrom(ann.recorder, 'Watcher', from), missed, 'each missed message once, in order');

    // Still Ann, without a new addUser round: its messages reach the others under its name.
    const sent = watcher.mark();
    ann.socket.emit('sendChat', 'back again');
    await watcher.waitChat('Ann', 'back again', { from: sent, ms: MS });
    const notices = chatsFrom(watcher.recorder, 'Server', watcherFrom);
    assert.ok(!notices.includes(hasDisconnected('Ann')), `no departure notice: ${notices}`);
    assert.ok(!notices.includes(hasConnected('Ann')), `no arrival notice: ${notices}`);
    assert.deepEqual(watcher.lastUsers(), ['Ann', 'Watcher']);
    assert.equal(
      chatsFrom(ann.recorder, 'Server', from).filter((text) => /taken|already/.test(text)).length,
      0,
      "the page's addUser after the resume is accepted silently",
    );
  });

  for (const signal of ['SIGKILL', 'SIGTERM']) {
    it(`resume across a restart (${signal}): recovered, name kept, missed messages replayed`, async () => {
      const tmp = tempDir('recovery');
      cleanups.push(() => tmp.remove());
      const args = (port) => [
        '--port',
        String(port),
        '--host',
        '127.0.0.1',
        '--db',
        path.join(tmp.dir, 'chinwag.db'),
        '--connection-state-recovery',
      ];
      const first = await startServer(chinwagBin(), args(0), { label: 'chinwag (first run)' });
      cleanups.push(() => first.stop('SIGKILL'));

      // Reconnected by hand, so the missed messages are surely sent before it comes back.
      const ann = tutorialPageClient(first.url, 'Ann', { reconnection: false });
      cleanups.push(() => ann.socket.close());
      await ann.recorder.waitFor('updateChat', (who, text) => who === 'Server' && text === 'you have connected', {
        ms: MS,
      });
      const sam = await ChatClient.open('v4', first.url);
      await sam.join('Sam');
      await sayAll(sam, ['one']);
      await ann.recorder.waitFor('updateChat', (who, text) => who === 'Sam' && text === 'one', { ms: MS });
      sam.close();

      const gone = nextEvent(ann.socket, 'disconnect', MS);
      await first.stop(signal);
      await gone;
      const second = await startServer(chinwagBin(), args(first.port), { label: 'chinwag (second run)' });
      cleanups.push(() => second.stop());
      const sam2 = await ChatClient.open('v4', second.url);
      cleanups.push(() => sam2.close());
      await sam2.join('Sam');
      const missed = ['two', 'three', 'four'];
      await sayAll(sam2, missed);

      const from = ann.recorder.mark();
      ann.socket.connect();
      await nextEvent(ann.socket, 'connect', MS);
      assert.equal(ann.socket.recovered, true, 'recovered across the restart');
      await ann.recorder.until(() => chatsFrom(ann.recorder, 'Sam', from).length >= missed.length, 'the missed messages', MS);
      assert.deepEqual(chatsFrom(ann.recorder, 'Sam', from), missed);

      const sent = sam2.mark();
      ann.socket.emit('sendChat', 'still Ann');
      await sam2.waitChat('Ann', 'still Ann', { from: sent, ms: MS });
    });
  }
});
