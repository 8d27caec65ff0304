'use strict';
// chinwag speaks the tutorial protocol (DESIGN.md section 2) to the real socket.io clients
// (issue 3): camelCase, lowercase and mixed clients chat together with the exact notice texts,
// user lists stay right after joins, leaves and abrupt drops, on every transport mode, and a
// socket.io-client 2.x client chats with a 4.x client.

const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { startChinwag } = require('../lib/server');
const { nextEvent, withTimeout } = require('../lib/wait');
const { waitForUpgrade, CLIENT_VERSIONS, TRANSPORT_MODES } = require('../lib/clients');
const { ChatClient, YOU_HAVE_CONNECTED, hasConnected, hasDisconnected } = require('../lib/chat');

const CHILD = path.join(__dirname, '..', 'lib', 'chat-child.js');

describe('tutorial protocol with real clients', () => {
  let server;
  let clients;
  const open = async (version, options) => {
    const client = await ChatClient.open(version, server.url, options);
    clients.push(client);
    return client;
  };

  beforeEach(async () => {
    clients = [];
    server = await startChinwag();
  });
  afterEach(async () => {
    for (const client of clients) client.close();
    if (server) await server.stop();
  });

  for (const version of CLIENT_VERSIONS) {
    for (const mode of TRANSPORT_MODES) {
      it(`camelCase, lowercase and mixed ${version} clients chat together over ${mode}`, async () => {
        const camel = await open(version, { mode, spelling: 'camel' });
        const lower = await open(version, { mode, spelling: 'lower' });
        const mixed = await open(version, { mode, spelling: 'mixed' });
        const mixedLower = await open(version, { mode, spelling: 'mixedLower' });
        if (mode === 'upgrade') {
          for (const client of clients) assert.equal(await waitForUpgrade(client.socket), 'websocket');
        }

        // Joins: "you have connected" to the joiner, "NAME has connected" to every other named
        // socket, and the full list to everyone right after each join.
        await camel.join('Alice');
        await camel.waitUsers(['Alice']);

        let fromCamel = camel.mark();
        await lower.join('bob');
        await camel.waitChat('Server', hasConnected('bob'), { from: fromCamel });
        await camel.waitUsers(['Alice', 'bob'], { from: fromCamel });
        await lower.waitUsers(['Alice', 'bob']);

        fromCamel = camel.mark();
        let fromLower = lower.mark();
        await mixed.join('Carol Ünï');
        await camel.waitChat('Server', hasConnected('Carol Ünï'), { from: fromCamel });
        await lower.waitChat('Server', hasConnected('Carol Ünï'), { from: fromLower });
        for (const c of [camel, lower, mixed]) await c.waitUsers(['Alice', 'bob', 'Carol Ünï']);

        await mixedLower.join('dan_the-man.2');
        const everyone = ['Alice', 'bob', 'Carol Ünï', 'dan_the-man.2'];
        for (const c of clients) await c.waitUsers(everyone);

        // Each joiner hears "you have connected" once and never its own "has connected".
        for (const c of clients) {
          const notices = c.chats().filter(([s]) => s === 'Server').map(([, t]) => t);
          assert.equal(notices.filter((t) => t === YOU_HAVE_CONNECTED).length, 1, `${c.name}: ${notices}`);
          assert.ok(!notices.includes(hasConnected(c.name)), `${c.name} was told it connected`);
        }

        // Messages reach everyone, the sender included, exactly as sent (no HTML escaping).
        const said = [
          [camel, 'hello from camelCase <b>not html</b> & "quotes" \'single\''],
          [lower, 'hi from lowercase 日本語 🙂'],
          [mixed, 'mixed: addUser then sendchat'],
          [mixedLower, 'mixedLower: adduser then sendChat\nsecond line'],
        ];
        const marks = clients.map((c) => c.mark());
        for (const [speaker, text] of said) {
          speaker.say(text);
          for (const c of clients) await c.waitChat(speaker.name, text);
        }
        clients.forEach((c, i) => {
          const messages = c.chats(marks[i]).filter(([s]) => s !== 'Server');
          assert.deepEqual(
            messages,
            said.map(([speaker, text]) => [speaker.name, text]),
            `${c.name} got the messages once each, in order`,
          );
        });

        // A clean leave: the others get the notice and the list without the leaver.
        const leaveMarks = clients.map((c) => c.mark());
        lower.close();
        for (const [i, c] of clients.entries()) {
          if (c === lower) continue;
          await c.waitChat('Server', hasDisconnected('bob'), { from: leaveMarks[i] });
          await c.waitUsers(['Alice', 'Carol Ünï', 'dan_the-man.2'], { from: leaveMarks[i] });
        }

        // Every client heard only its own spelling.
        for (const c of clients) assert.deepEqual(c.foreignEvents(), [], `${c.name} (${c.spelling})`);
      });
    }
  }

  for (const mode of TRANSPORT_MODES) {
    it(`a socket.io-client 2.x client and a 4.x client chat with each other over ${mode}`, async () => {
      const old = await open('v2', { mode, spelling: 'lower' });
      const current = await open('v4', { mode, spelling: 'camel' });
      await old.join('Oldtimer');
      const from = old.mark();
      await current.join('Newcomer');
      await old.waitChat('Server', hasConnected('Newcomer'), { from });
      await old.waitUsers(['Oldtimer', 'Newcomer']);
      await current.waitUsers(['Oldtimer', 'Newcomer']);
      old.say('hello from 2.x');
      current.say('hello from 4.x');
      for (const c of [old, current]) {
        await c.waitChat('Oldtimer', 'hello from 2.x');
        await c.waitChat('Newcomer', 'hello from 4.x');
      }
      const leave = current.mark();
      old.close();
      await current.waitChat('Server', hasDisconnected('Oldtimer'), { from: leave });
      await current.waitUsers(['Newcomer'], { from: leave });
    });
  }

  it('keeps serving: a client that disconnects before adding itself leaves no trace', async () => {
    const ghost = await open('v4', { spelling: 'camel' });
    const gone = nextEvent(ghost.socket, 'disconnect');
    ghost.close();
    await gone;
    const alice = await open('v4', { spelling: 'camel' });
    await alice.join('Alice');
    await alice.waitUsers(['Alice']);
    alice.say('still here');
    await alice.waitChat('Alice', 'still here');
    assert.deepEqual(alice.errors(), []);
    assert.ok(!alice.chats().some(([, t]) => /undefined|null/.test(t)), JSON.stringify(alice.chats()));
  });
});

// Over polling an abrupt drop shows only as missed heartbeats, so this server beats fast.
describe('tutorial protocol: abrupt drops', () => {
  let server;
  let clients;
  const open = async (version, options) => {
    const client = await ChatClient.open(version, server.url, options);
    clients.push(client);
    return client;
  };

  beforeEach(async () => {
    clients = [];
    server = await startChinwag(['--ping-interval-ms', '500', '--ping-timeout-ms', '500']);
  });
  afterEach(async () => {
    for (const client of clients) client.close();
    if (server) await server.stop();
  });

  for (const mode of TRANSPORT_MODES) {
    it(`notices an abrupt drop without a disconnect packet over ${mode}`, async () => {
      const watcher = await open('v4', { mode: 'websocket', spelling: 'camel' });
      await watcher.join('Watcher');
      const from = watcher.mark();
      const child = spawn(process.execPath, [CHILD, server.url, 'v4', mode, 'lower', 'Dropper'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise((resolve) => child.once('exit', resolve));
      let afterDrop = 0;
      try {
        await withTimeout(
          new Promise((resolve, reject) => {
            child.stdout.on('data', (d) => d.toString().includes('joined') && resolve());
            exited.then((code) => reject(new Error(`child exited ${code}: ${stderr}`)));
          }),
          15_000,
          'the child client to join',
        );
        await watcher.waitChat('Server', hasConnected('Dropper'), { from });
        await watcher.waitUsers(['Watcher', 'Dropper'], { from });
      } finally {
        afterDrop = watcher.mark();
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      await exited;
      await watcher.waitChat('Server', hasDisconnected('Dropper'), { from: afterDrop });
      await watcher.waitUsers(['Watcher'], { from: afterDrop });
      assert.deepEqual(watcher.lastUsers(), ['Watcher']);
    });
  }

});
