'use strict';
// Transport limits as the real socket.io-client 4.8 sees them (PROTOCOL.md section 3): a slow
// reader is told why it is cut off, in a close frame its `disconnect` handler can log.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const ioc = require('socket.io-client');
const { startChinwag } = require('../lib/server');
const { connected } = require('../lib/clients');
const { withTimeout } = require('../lib/wait');

const MS = 20_000;

/** A full-protocol socket of user `name`, connected. */
async function user(url, name, sockets) {
  const socket = ioc(url, {
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    timeout: MS,
    auth: { name },
  });
  sockets.push(socket);
  return connected(socket, MS);
}

describe('transport limits', () => {
  let server;
  const sockets = [];
  before(async () => {
    // No message rate limit: one talker fills a slow reader's buffers in a second or two.
    server = await startChinwag(['--max-messages-per-second', '0']);
  });
  after(async () => {
    for (const socket of sockets) socket.close();
    if (server) await server.stop();
  });

  it('a slow reader over WebSocket gets close 1008 with a reason before it is cut off', async () => {
    const slow = await user(server.url, 'slowpoke', sockets);
    const talker = await user(server.url, 'talker', sockets);
    const disconnected = new Promise((resolve) => {
      slow.on('disconnect', (reason, details) => resolve({ reason, details }));
    });
    // The slow reader stops reading (the TCP socket under its WebSocket) while `general` is
    // busy: the kernel's buffers fill, then the server's 1 MiB outbox for it.
    const tcp = slow.io.engine.transport.ws._socket;
    assert.ok(tcp && typeof tcp.pause === 'function', 'the client runs on the ws package');
    tcp.pause();
    const text = 'x'.repeat(4000);
    let cutOff = false;
    for (let round = 0; round < 200 && !cutOff; round++) {
      const acks = [];
      for (let i = 0; i < 50; i++) {
        acks.push(talker.timeout(MS).emitWithAck('message:send', { room: 'general', text }));
      }
      for (const ack of await Promise.all(acks)) assert.equal(ack.ok, true, JSON.stringify(ack));
      const health = await (await fetch(`${server.url}/healthz`)).json();
      cutOff = health.connections === 1;
    }
    assert.ok(cutOff, 'the server cut the slow reader off');
    tcp.resume();
    const { reason, details } = await withTimeout(disconnected, MS, 'the disconnect');
    assert.equal(reason, 'transport close');
    assert.equal(details?.context?.code, 1008, `close code, details: ${details?.description}`);
    assert.match(String(details.context.reason), /^slow reader: more than \d+ bytes/);
    assert.equal(talker.connected, true, 'the talker is not affected');
  });
});
