'use strict';
// chinwag shuts down gracefully on SIGTERM and SIGINT (issue 3): connected clients on every
// transport are disconnected and the process exits 0, well within its grace period.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { startChinwag } = require('../lib/server');
const { nextEvent } = require('../lib/wait');
const { ChatClient } = require('../lib/chat');

describe('graceful shutdown', () => {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    it(`on ${signal} disconnects every client and exits 0`, async () => {
      const server = await startChinwag();
      const clients = [];
      try {
        const setups = [
          ['v4', 'websocket'],
          ['v4', 'polling'],
          ['v2', 'websocket'],
          ['v2', 'polling'],
        ];
        for (const [i, [version, mode]] of setups.entries()) {
          const client = await ChatClient.open(version, server.url, { mode, spelling: 'camel' });
          clients.push(client);
          await client.join(`user${i}`);
        }
        const disconnects = clients.map((c) => nextEvent(c.socket, 'disconnect', 15_000, `${c.name} to be disconnected`));
        const started = Date.now();
        const status = await server.stop(signal);
        const took = Date.now() - started;
        assert.deepEqual(
          { code: status.code, signal: status.signal, forced: status.forced ?? false },
          { code: 0, signal: null, forced: false },
          `exit status after ${signal}:\n${server.output().slice(-2_000)}`,
        );
        assert.ok(took < 5_000, `shutdown took ${took} ms`);
        await Promise.all(disconnects);
      } finally {
        for (const client of clients) client.close();
        await server.stop();
      }
    });
  }
});
