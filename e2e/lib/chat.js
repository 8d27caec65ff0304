'use strict';
// A tutorial-protocol chat participant (DESIGN.md section 2) over a real socket.io client.
//
// Spellings: the tutorial's server speaks camelCase, its final page lowercase; chinwag accepts
// both and answers each client in the spelling it added itself with. `mixed` adds itself in
// camelCase but sends in lowercase, `mixedLower` the other way round.

const { connect, connected } = require('./clients');
const { Recorder } = require('./wait');

const SPELLINGS = {
  camel: { add: 'addUser', send: 'sendChat', chat: 'updateChat', users: 'updateUsers' },
  lower: { add: 'adduser', send: 'sendchat', chat: 'updatechat', users: 'updateusers' },
  mixed: { add: 'addUser', send: 'sendchat', chat: 'updateChat', users: 'updateUsers' },
  mixedLower: { add: 'adduser', send: 'sendChat', chat: 'updatechat', users: 'updateusers' },
};
const ALL_EVENTS = ['updateChat', 'updateUsers', 'updatechat', 'updateusers'];

const YOU_HAVE_CONNECTED = 'you have connected';
const hasConnected = (name) => `${name} has connected`;
const hasDisconnected = (name) => `${name} has disconnected.`;

class ChatClient {
  /**
   * @param socket a socket.io client socket (4.x or 2.x), connected or not
   * @param spelling one of the SPELLINGS keys
   */
  constructor(socket, spelling = 'camel') {
    this.socket = socket;
    this.spelling = spelling;
    this.events = SPELLINGS[spelling];
    this.recorder = new Recorder(socket, ALL_EVENTS);
    this.name = null;
  }

  /** Connects a new client and waits until the socket is up. */
  static async open(version, url, { mode = 'websocket', spelling = 'camel' } = {}) {
    const client = new ChatClient(connect(version, url, { mode }), spelling);
    try {
      await connected(client.socket);
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  }

  mark() {
    return this.recorder.mark();
  }

  /** Adds itself and waits for the server's "you have connected". */
  async join(name, { ms } = {}) {
    const from = this.mark();
    this.socket.emit(this.events.add, name);
    await this.waitChat('Server', YOU_HAVE_CONNECTED, { from, ms });
    this.name = name.trim();
    return from;
  }

  say(text) {
    this.socket.emit(this.events.send, text);
  }

  /** Waits for `updateChat(from, text)` in this client's spelling, after index `from`. */
  waitChat(sender, text, { from = 0, ms } = {}) {
    return this.recorder.waitFor(this.events.chat, (n, t) => n === sender && t === text, {
      what: `${this.events.chat}(${JSON.stringify(sender)}, ${JSON.stringify(text).slice(0, 200)})`,
      from,
      ms,
    });
  }

  /**
   * Waits for an error notice: `updateChat("Server", reason)` after index `from` whose reason
   * is not one of the protocol's normal notices. Returns the reason.
   */
  async waitError({ from = 0, ms, what = 'an error notice' } = {}) {
    const [, reason] = await this.recorder.waitFor(
      this.events.chat,
      (sender, text) => sender === 'Server' && isErrorNotice(text),
      { what: `${this.events.chat}("Server", <${what}>)`, from, ms },
    );
    return reason;
  }

  /** Waits for an `updateUsers` whose map holds exactly `names` (keys and values). */
  async waitUsers(names, { from = 0, ms } = {}) {
    const expected = [...names].sort();
    const [map] = await this.recorder.waitFor(this.events.users, (m) => sameUsers(m, expected), {
      what: `${this.events.users} with exactly ${JSON.stringify(expected)}`,
      from,
      ms,
    });
    return map;
  }

  /** The last user map received, as a sorted list of names (null if none yet). */
  lastUsers() {
    const all = this.recorder.of(this.events.users);
    if (all.length === 0) return null;
    return usersOf(all[all.length - 1].args[0]);
  }

  /** `[sender, text]` pairs of every chat event in this client's spelling, from index `from`. */
  chats(from = 0) {
    return this.recorder.events
      .slice(from)
      .filter((e) => e.event === this.events.chat)
      .map((e) => e.args);
  }

  /** Error notices received from index `from` on. */
  errors(from = 0) {
    return this.chats(from)
      .filter(([sender, text]) => sender === 'Server' && isErrorNotice(text))
      .map(([, text]) => text);
  }

  /** Events received in the other spelling (a client must only get its own). */
  foreignEvents() {
    const own = new Set([this.events.chat, this.events.users]);
    return this.recorder.events.filter((e) => !own.has(e.event)).map((e) => e.event);
  }

  close() {
    this.socket.close();
  }
}

function isErrorNotice(text) {
  return (
    typeof text === 'string' &&
    text !== YOU_HAVE_CONNECTED &&
    !/ has connected$/.test(text) &&
    !/ has disconnected\.$/.test(text)
  );
}

function usersOf(map) {
  if (!map || typeof map !== 'object' || Array.isArray(map)) return null;
  return Object.keys(map).sort();
}

function sameUsers(map, expectedSorted) {
  const keys = usersOf(map);
  if (!keys || keys.length !== expectedSorted.length) return false;
  return keys.every((key, i) => key === expectedSorted[i] && map[key] === key);
}

module.exports = {
  ChatClient,
  SPELLINGS,
  ALL_EVENTS,
  YOU_HAVE_CONNECTED,
  hasConnected,
  hasDisconnected,
  isErrorNotice,
};
