'use strict';
// A connect-join-leave storm leaves nobody listed who has left (issue 3, and issue 2's order
// rule: a socket's disconnect is handled only after every event it sent before).
//
// Each stormer connects, emits addUser and closes at once without waiting for an answer, some
// with a clean disconnect and some by dropping the TCP connection. A ghost user never leaves the
// list, so "the list becomes exactly the observer" within the deadline detects one; a server that
// handled a disconnect before the addUser sent ahead of it would never announce that user.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startChinwag } = require('../lib/server');
const { connect, connected } = require('../lib/clients');
const { ChatClient, hasConnected, hasDisconnected } = require('../lib/chat');

const STORMERS = 120;
const WAVE = 20;

describe('join/leave storm', () => {
  let server;
  const clients = [];
  before(async () => {
    server = await startChinwag();
  });
  after(async () => {
    for (const client of clients) client.close();
    if (server) await server.stop();
  });

  it(`${STORMERS} clients that join and leave at once leave no ghost in the user list`, async () => {
    const observer = await ChatClient.open('v4', server.url, { spelling: 'camel' });
    clients.push(observer);
    await observer.join('Observer');
    const from = observer.mark();

    // Stormers that close cleanly sent addUser before their disconnect on the same connection,
    // so each must be announced, then announced gone. Dropped ones may or may not have joined.
    const cleanClosers = [];
    for (let wave = 0; wave < STORMERS; wave += WAVE) {
      const sockets = [];
      for (let i = wave; i < wave + WAVE; i++) {
        const version = i % 3 === 0 ? 'v2' : 'v4';
        const mode = i % 4 === 0 ? 'polling' : 'websocket';
        const drop = i % 5 === 0 && mode === 'websocket';
        if (!drop) cleanClosers.push(`storm${i}`);
        const socket = connect(version, server.url, { mode });
        sockets.push(
          connected(socket).then(() => {
            socket.emit(i % 2 === 0 ? 'addUser' : 'adduser', `storm${i}`);
            if (drop) {
              // Drop the TCP connection without a close packet.
              socket.io.engine.transport.ws._socket.destroy();
            } else {
              socket.close();
            }
          }),
        );
      }
      await Promise.all(sockets);
    }

    const notices = () =>
      observer
        .chats(from)
        .filter(([sender]) => sender === 'Server')
        .map(([, text]) => text);
    await observer.recorder.until(
      () => {
        const seen = notices();
        const joined = seen.filter((t) => t.endsWith(' has connected')).map((t) => t.slice(0, -' has connected'.length));
        return (
          cleanClosers.every((name) => seen.includes(hasConnected(name))) &&
          joined.every((name) => seen.includes(hasDisconnected(name))) &&
          JSON.stringify(observer.lastUsers()) === JSON.stringify(['Observer'])
        );
      },
      () => `every clean closer announced joining and leaving, and the list back to only Observer; never announced: ${cleanClosers.filter((n) => !notices().includes(hasConnected(n))).join(' ')}`,
      30_000,
    );

    // Each stormer announced as connected was announced as gone exactly once, after joining.
    const seen = notices();
    for (let i = 0; i < STORMERS; i++) {
      const name = `storm${i}`;
      const joined = seen.indexOf(hasConnected(name));
      const left = seen.indexOf(hasDisconnected(name));
      if (joined === -1) {
        assert.equal(left, -1, `${name} left without having joined`);
        continue;
      }
      assert.equal(seen.lastIndexOf(hasConnected(name)), joined, `${name} joined once`);
      assert.ok(left > joined, `${name} has a leave notice after its join notice`);
      assert.equal(seen.lastIndexOf(hasDisconnected(name)), left, `${name} left once`);
    }

    // A newcomer sees exactly the observer and itself.
    const late = await ChatClient.open('v4', server.url, { spelling: 'camel' });
    clients.push(late);
    await late.join('Late');
    await late.waitUsers(['Observer', 'Late']);
  });
});
