'use strict';
// The real socket.io clients from npm, connected the way each test needs.
//
// `v4` is socket.io-client 4.8 (Engine.IO v4, Socket.IO v5); `v2` is socket.io-client 2.x through
// the npm alias `socket.io-client-v2` (Engine.IO v3, Socket.IO v4). Transport modes:
//   websocket: WebSocket from the first request;
//   polling:   HTTP long-polling only;
//   upgrade:   polling first, then the polling→WebSocket upgrade (waitForUpgrade asserts it).

const ioV4 = require('socket.io-client');
const ioV2 = require('socket.io-client-v2');
const { nextEvent, withTimeout, DEFAULT_TIMEOUT_MS } = require('./wait');

const TRANSPORTS = {
  websocket: ['websocket'],
  polling: ['polling'],
  upgrade: ['polling', 'websocket'],
};

const CLIENT_VERSIONS = ['v4', 'v2'];
const TRANSPORT_MODES = Object.keys(TRANSPORTS);

/**
 * Opens a socket (not waiting for it to connect). Reconnection is off so a refused or dropped
 * connection shows up as a failure instead of a silent retry.
 */
function connect(version, url, { mode = 'websocket', namespace = '/', auth, query } = {}) {
  const transports = TRANSPORTS[mode];
  if (!transports) throw new Error(`unknown transport mode ${mode}`);
  const target = url + namespace;
  const common = { transports, forceNew: true, reconnection: false, timeout: DEFAULT_TIMEOUT_MS };
  let socket;
  if (version === 'v4') {
    socket = ioV4(target, { ...common, ...(auth ? { auth } : {}), ...(query ? { query } : {}) });
  } else if (version === 'v2') {
    socket = ioV2(target, { ...common, ...(query ? { query } : {}) });
  } else {
    throw new Error(`unknown client version ${version}`);
  }
  // Both clients create their Engine.IO socket synchronously, so no upgrade can be missed here.
  socket.upgraded = false;
  engineOf(socket).once('upgrade', () => {
    socket.upgraded = true;
  });
  return socket;
}

/** Resolves once `socket` is connected; rejects with the server's reason on connect_error. */
function connected(socket, ms = DEFAULT_TIMEOUT_MS) {
  if (socket.connected) return Promise.resolve(socket);
  return withTimeout(
    new Promise((resolve, reject) => {
      const onConnect = () => {
        cleanup();
        resolve(socket);
      };
      const onError = (error) => {
        cleanup();
        const message = typeof error === 'string' ? error : error?.message ?? JSON.stringify(error);
        reject(Object.assign(new Error(`connect_error: ${message}`), { cause: error, data: error }));
      };
      // 2.x reports a namespace refusal as an `error` event, 4.x as `connect_error`.
      const cleanup = () => {
        socket.off('connect', onConnect);
        socket.off('connect_error', onError);
        socket.off('error', onError);
      };
      socket.on('connect', onConnect);
      socket.on('connect_error', onError);
      socket.on('error', onError);
    }),
    ms,
    'the socket to connect',
  );
}

/** Opens a socket and waits until it is connected. */
async function open(version, url, options) {
  const socket = connect(version, url, options);
  try {
    return await connected(socket);
  } catch (error) {
    socket.close();
    throw error;
  }
}

/** The Engine.IO client under a socket (same property in 2.x and 4.x). */
function engineOf(socket) {
  return socket.io.engine;
}

/**
 * Resolves once the connection runs over WebSocket after starting on polling: it waits for the
 * engine's `upgrade` event unless that already happened, then checks the transport's name.
 */
async function waitForUpgrade(socket, ms = DEFAULT_TIMEOUT_MS) {
  const engine = engineOf(socket);
  if (!socket.upgraded) {
    await nextEvent(engine, 'upgrade', ms, 'the polling→websocket upgrade');
  }
  return engine.transport.name;
}

/** Emits and resolves with the ack's arguments (2.x has no emitWithAck). */
function emitWithAck(socket, event, args, ms = DEFAULT_TIMEOUT_MS) {
  return withTimeout(
    new Promise((resolve) => socket.emit(event, ...args, (...reply) => resolve(reply))),
    ms,
    `the ack of "${event}"`,
  );
}

/** Closes every socket given, ignoring ones already closed. */
function closeAll(sockets) {
  for (const socket of sockets) {
    try {
      socket.close();
    } catch {
      // Closing twice is harmless; nothing to report.
    }
  }
}

module.exports = {
  connect,
  connected,
  open,
  engineOf,
  waitForUpgrade,
  emitWithAck,
  closeAll,
  CLIENT_VERSIONS,
  TRANSPORT_MODES,
};
