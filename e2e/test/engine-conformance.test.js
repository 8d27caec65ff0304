'use strict';
// The engine's conformance example against the real socket.io clients from npm (issue 2):
// socket.io-client 4.8 and 2.x, each over websocket-only, polling-only and the upgrade.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startConformance } = require('../lib/server');
const WebSocket = require('ws');
const { nextEvent, withTimeout } = require('../lib/wait');
const {
  connect,
  connected,
  open,
  engineOf,
  waitForUpgrade,
  emitWithAck,
  closeAll,
  CLIENT_VERSIONS,
  TRANSPORT_MODES,
} = require('../lib/clients');

/** Binary arrives as Buffer or ArrayBuffer depending on client and transport: compare bytes. */
function bytesOf(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new assert.AssertionError({ message: `expected binary, got ${typeof value}: ${JSON.stringify(value)}` });
}

describe('engine conformance example with real clients', () => {
  let server;
  const sockets = [];
  const track = (socket) => {
    sockets.push(socket);
    return socket;
  };

  before(async () => {
    server = await startConformance();
  });
  after(async () => {
    closeAll(sockets);
    if (server) await server.stop();
  });

  for (const version of CLIENT_VERSIONS) {
    for (const mode of TRANSPORT_MODES) {
      describe(`socket.io-client ${version} over ${mode}`, () => {
        it('connects and receives the auth payload echoed back in "auth"', async () => {
          const auth = version === 'v4' ? { token: 'abc', n: 1 } : undefined;
          const socket = track(connect(version, server.url, { mode, auth }));
          const authEvent = nextEvent(socket, 'auth');
          await connected(socket);
          const [payload] = await authEvent;
          // 2.x clients have no auth payload: the server reports an empty object.
          assert.deepEqual(payload, auth ?? {});
          socket.close();
        });

        it('echoes strings, numbers, objects and binary from "message" as "message-back"', async () => {
          const socket = track(await open(version, server.url, { mode }));
          if (mode === 'upgrade') {
            assert.equal(await waitForUpgrade(socket), 'websocket');
          }
          const binary = Buffer.from([0, 1, 2, 255, 254, 0x1e, 10, 13]);
          const cases = [
            ['hello'],
            ['unicode ✓ 日本語 🙂', 42, true, null],
            [{ nested: { list: [1, 'two', { three: 3 }] }, empty: {} }],
            [binary],
            ['text and binary', { inside: binary }, 7],
          ];
          for (const args of cases) {
            const back = nextEvent(socket, 'message-back');
            socket.emit('message', ...args);
            const got = await back;
            assert.equal(got.length, args.length, `argument count for ${JSON.stringify(args)}`);
            got.forEach((value, i) => {
              if (Buffer.isBuffer(args[i])) {
                assert.deepEqual(bytesOf(value), args[i]);
              } else if (args[i] && typeof args[i] === 'object' && Buffer.isBuffer(args[i].inside)) {
                assert.deepEqual(bytesOf(value.inside), args[i].inside);
              } else {
                assert.deepEqual(value, args[i]);
              }
            });
          }
          socket.close();
        });

        it('acks "message-with-ack" with the same arguments, binary included', async () => {
          const socket = track(await open(version, server.url, { mode }));
          assert.deepEqual(await emitWithAck(socket, 'message-with-ack', ['one', 2, { three: [3] }]), [
            'one',
            2,
            { three: [3] },
          ]);
          const binary = Buffer.from('binary ack \u0000\u00ff', 'latin1');
          const [back] = await emitWithAck(socket, 'message-with-ack', [binary]);
          assert.deepEqual(bytesOf(back), binary);
          socket.close();
        });

        it('echoes 100 quick emits in the order they were sent', async () => {
          const socket = track(await open(version, server.url, { mode }));
          const received = [];
          const all = new Promise((resolve) => {
            socket.on('message-back', (n) => {
              received.push(n);
              if (received.length === 100) resolve();
            });
          });
          // Emitted in one go: over polling they travel as batched payloads, and during the
          // upgrade mode some may cross the transport switch.
          for (let n = 0; n < 100; n++) socket.emit('message', n);
          await withTimeout(all, 10_000, `100 message-back events (got ${received.length})`);
          assert.deepEqual(received, Array.from({ length: 100 }, (_, n) => n));
          socket.close();
        });

        it('round-trips a 500 kB message under the 1 MB maxPayload', async () => {
          const socket = track(await open(version, server.url, { mode }));
          const big = 'x'.repeat(500_000);
          const back = nextEvent(socket, 'message-back');
          socket.emit('message', big);
          const [got] = await back;
          assert.equal(got.length, big.length);
          assert.equal(got, big);
          socket.close();
        });

        if (mode === 'upgrade') {
          it('really upgrades from polling to websocket and keeps working afterwards', async () => {
            const socket = track(connect(version, server.url, { mode }));
            assert.equal(engineOf(socket).transport.name, 'polling', 'starts on polling');
            await connected(socket);
            assert.equal(await waitForUpgrade(socket), 'websocket');
            assert.equal(socket.upgraded, true);
            const back = nextEvent(socket, 'message-back');
            socket.emit('message', 'after upgrade');
            assert.deepEqual(await back, ['after upgrade']);
            socket.close();
          });
        }

        it('serves namespace /custom and refuses /random with "Invalid namespace"', async () => {
          const custom = track(connect(version, server.url, { mode, namespace: '/custom' }));
          const authEvent = nextEvent(custom, 'auth');
          await connected(custom);
          assert.deepEqual((await authEvent)[0], {});
          assert.deepEqual(await emitWithAck(custom, 'message-with-ack', ['in custom']), ['in custom']);

          const random = track(connect(version, server.url, { mode, namespace: '/random' }));
          const error = await connected(random).then(
            () => assert.fail('/random must be refused'),
            (e) => e,
          );
          assert.match(error.message, /Invalid namespace/);
          custom.close();
          random.close();
        });

        it('stays connected across several heartbeats (pingInterval 300 ms)', async () => {
          const socket = track(await open(version, server.url, { mode }));
          const engine = engineOf(socket);
          // 4.x: the server pings and the client emits "ping"; 2.x: the client pings and the
          // server answers, which the client reports as "pong".
          const beat = version === 'v4' ? 'ping' : 'pong';
          let disconnected = null;
          socket.on('disconnect', (reason) => {
            disconnected = reason;
          });
          for (let i = 0; i < 3; i++) await nextEvent(engine, beat, 5_000, `heartbeat ${i + 1}`);
          assert.equal(disconnected, null);
          assert.equal(socket.connected, true);
          socket.close();
        });

        it('reports "io client disconnect" when the client disconnects, and can reconnect', async () => {
          const socket = track(await open(version, server.url, { mode }));
          const reason = nextEvent(socket, 'disconnect');
          socket.disconnect();
          assert.equal((await reason)[0], 'io client disconnect');
          const again = track(await open(version, server.url, { mode }));
          assert.deepEqual(await emitWithAck(again, 'message-with-ack', ['again']), ['again']);
          again.close();
        });
      });
    }
  }

  it('tells every client when the server goes away ("transport close")', async () => {
    const doomed = await startConformance();
    try {
      const clients = [];
      for (const version of CLIENT_VERSIONS) {
        for (const mode of TRANSPORT_MODES) clients.push(track(await open(version, doomed.url, { mode })));
      }
      const reasons = Promise.all(clients.map((socket) => nextEvent(socket, 'disconnect', 15_000)));
      await doomed.stop();
      for (const [reason] of await reasons) {
        assert.ok(
          ['transport close', 'transport error', 'io server disconnect'].includes(reason),
          `unexpected disconnect reason ${reason}`,
        );
      }
    } finally {
      await doomed.stop();
    }
  });

  // The raw-protocol case the official Socket.IO suite checks with the `ws` client: a second
  // WebSocket for an upgraded session opens and is then closed (no handshake error, which `ws`
  // would raise as an unhandled 'error'), and the first WebSocket keeps working.
  it('opens then closes a second WebSocket with the sid of an upgraded session', async () => {
    const base = server.url.replace(/\/$/, '');
    const wsBase = base.replace(/^http/, 'ws');
    const handshake = await fetch(`${base}/socket.io/?EIO=4&transport=polling`);
    const { sid } = JSON.parse((await handshake.text()).slice(1));
    const upgradeUrl = `${wsBase}/socket.io/?EIO=4&transport=websocket&sid=${sid}`;

    const first = new WebSocket(upgradeUrl);
    await withTimeout(new Promise((resolve) => first.once('open', resolve)), 5_000, 'the upgrade to open');
    first.send('2probe');
    first.send('5');

    const second = new WebSocket(upgradeUrl);
    const errors = [];
    second.on('error', (e) => errors.push(e));
    const opened = new Promise((resolve) => second.once('open', () => resolve(true)));
    const [code] = await withTimeout(
      new Promise((resolve) => second.once('close', (...args) => resolve(args))),
      5_000,
      'the second WebSocket to be closed',
    );
    assert.equal(await Promise.race([opened, Promise.resolve(false)]), true, 'the second WebSocket opened');
    assert.deepEqual(errors, []);
    assert.equal(code, 1008);

    // The session still answers on the first WebSocket: connect the main namespace over it.
    const reply = new Promise((resolve) =>
      first.on('message', (data) => {
        const text = data.toString();
        if (text.startsWith('40')) resolve(text);
      }),
    );
    first.send('40');
    assert.match(await withTimeout(reply, 5_000, 'CONNECT over the first WebSocket'), /^40\{"sid":/);
    first.close();
  });

  for (const version of CLIENT_VERSIONS) {
    for (const mode of ['websocket', 'polling']) {
      it(`closes a ${version} ${mode} connection that sends more than maxPayload, and only that one`, async () => {
        const bystander = track(await open(version, server.url, { mode }));
        const offender = track(await open(version, server.url, { mode }));
        const dropped = nextEvent(offender, 'disconnect', 15_000, 'the oversized sender to be disconnected');
        offender.emit('message', 'y'.repeat(1_100_000));
        const [reason] = await dropped;
        assert.ok(
          ['transport close', 'transport error', 'io server disconnect'].includes(reason),
          `unexpected disconnect reason ${reason}`,
        );
        assert.deepEqual(await emitWithAck(bystander, 'message-with-ack', ['still here']), ['still here']);
        bystander.close();
      });
    }
  }
});
