'use strict';
// 200 real socket.io clients each receive a burst of 100 messages, in order, none lost (issue 3).
// Loopback only, bounded in count and time.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startChinwag } = require('../../lib/server');
const { ChatClient } = require('../../lib/chat');

const CLIENTS = 200;
const BURST = 100;
const JOIN_CONCURRENCY = 20;
const DELIVERY_TIMEOUT_MS = 60_000;

describe('fan-out to many clients', () => {
  let server;
  const clients = [];

  before(async () => {
    server = await startChinwag();
  });
  after(async () => {
    for (const client of clients) client.close();
    if (server) await server.stop();
  });

  it(`${CLIENTS} clients each receive a burst of ${BURST} messages in order with none lost`, async (t) => {
    const started = Date.now();
    // Joins in waves: every join sends the whole user list to everyone already there.
    for (let wave = 0; wave < CLIENTS; wave += JOIN_CONCURRENCY) {
      const joining = [];
      for (let i = wave; i < Math.min(CLIENTS, wave + JOIN_CONCURRENCY); i++) {
        joining.push(
          (async () => {
            const spelling = i % 2 === 0 ? 'camel' : 'lower';
            const client = await ChatClient.open('v4', server.url, { mode: 'websocket', spelling });
            clients.push(client);
            await client.join(`user${String(i).padStart(3, '0')}`);
          })(),
        );
      }
      await Promise.all(joining);
    }
    const joined = Date.now();
    const sender = clients[0];
    const marks = clients.map((c) => c.mark());
    const burst = Array.from({ length: BURST }, (_, i) => `burst message ${i}`);
    for (const text of burst) sender.say(text);

    const last = burst[burst.length - 1];
    await Promise.all(
      clients.map((c, i) => c.waitChat(sender.name, last, { from: marks[i], ms: DELIVERY_TIMEOUT_MS })),
    );
    const delivered = Date.now();
    clients.forEach((c, i) => {
      const got = c
        .chats(marks[i])
        .filter(([name]) => name === sender.name)
        .map(([, text]) => text);
      assert.deepEqual(got, burst, `${c.name} got every message once, in order`);
      assert.deepEqual(c.errors(), [], `${c.name} got no error`);
    });
    t.diagnostic(
      `${CLIENTS} joined in ${joined - started} ms; ${CLIENTS * BURST} deliveries in ${delivered - joined} ms`,
    );
  });
});
