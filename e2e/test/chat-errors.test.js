'use strict';
// The tutorial's bugs stay fixed (DESIGN.md section 2, issue 3): duplicate names (any case),
// invalid names, sends before addUser and wrong-typed arguments each get
// `updateChat("Server", reason)` in the client's spelling, to that client only; the user list
// stays right and the server keeps serving.
//
// "To that client only" is checked with a barrier instead of a sleep: after the faulty emit, a
// bystander's own message comes back to it; the server sends to one socket in order, so any
// notice caused by the faulty emit would have reached the bystander before its message.

const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startChinwag } = require('../lib/server');
const { ChatClient, YOU_HAVE_CONNECTED, hasConnected } = require('../lib/chat');

describe('tutorial protocol errors', () => {
  let server;
  let clients;
  let barrierCount = 0;
  const open = async (options = {}) => {
    const client = await ChatClient.open(options.version ?? 'v4', server.url, options);
    clients.push(client);
    return client;
  };

  /** Everything `bystander` received from `from` up to its own next message. */
  async function bystanderSawUntilBarrier(bystander, from) {
    const text = `barrier ${++barrierCount}`;
    bystander.say(text);
    await bystander.waitChat(bystander.name, text, { from });
    const seen = bystander.chats(from);
    return seen.slice(0, seen.findIndex(([s, t]) => s === bystander.name && t === text));
  }

  beforeEach(async () => {
    clients = [];
    server = await startChinwag();
  });
  afterEach(async () => {
    for (const client of clients) client.close();
    if (server) await server.stop();
  });

  for (const spelling of ['camel', 'lower']) {
    it(`refuses a taken name in any case, to that ${spelling} client only, and keeps the list right`, async () => {
      const alice = await open({ spelling: 'camel' });
      await alice.join('Alice');
      const intruder = await open({ spelling });
      for (const taken of ['Alice', 'ALICE', 'alice', '  aLiCe ']) {
        const from = intruder.mark();
        const aliceFrom = alice.mark();
        intruder.socket.emit(intruder.events.add, taken);
        const reason = await intruder.waitError({ from, what: `refusal of ${JSON.stringify(taken)}` });
        assert.ok(reason.length > 0);
        assert.deepEqual(await bystanderSawUntilBarrier(alice, aliceFrom), [], 'Alice heard nothing');
      }
      // The refused socket is still usable and can take a free name; the list is exactly right.
      const from = alice.mark();
      await intruder.join('Bob');
      await alice.waitChat('Server', hasConnected('Bob'), { from });
      await alice.waitUsers(['Alice', 'Bob'], { from });
      await intruder.waitUsers(['Alice', 'Bob']);
      assert.deepEqual(intruder.foreignEvents(), [], 'errors come in the client spelling');
    });
  }

  it('refuses invalid names (markup, too long, empty, "Server" in any case) and accepts valid ones', async () => {
    const watcher = await open({ spelling: 'camel' });
    await watcher.join('Watcher');
    const newcomer = await open({ spelling: 'lower' });
    const invalid = [
      '<b>bold</b>',
      '<img src=x onerror=alert(1)>',
      'quote"name',
      'a&b',
      'x'.repeat(33),
      '',
      '    ',
      'Server',
      'SERVER',
      ' server ',
      'line\nbreak',
    ];
    for (const name of invalid) {
      const from = newcomer.mark();
      const watcherFrom = watcher.mark();
      newcomer.socket.emit(newcomer.events.add, name);
      await newcomer.waitError({ from, what: `refusal of ${JSON.stringify(name)}` });
      assert.deepEqual(await bystanderSawUntilBarrier(watcher, watcherFrom), [], `nobody heard of ${JSON.stringify(name)}`);
    }
    assert.deepEqual(watcher.lastUsers(), ['Watcher']);

    // Boundaries that are valid: 32 characters, any script, digits, space, _ - . ; trimmed.
    const valid = ['y'.repeat(32), 'Zoë Ødegård', '李小龍', 'r2-d2_x.y', '  Padded  '];
    for (const name of valid) {
      const client = await open({ spelling: 'camel' });
      const from = watcher.mark();
      await client.join(name);
      await watcher.waitChat('Server', hasConnected(name.trim()), { from });
    }
    await watcher.waitUsers(['Watcher', ...valid.map((n) => n.trim())]);
  });

  for (const spelling of ['camel', 'lower']) {
    it(`answers a ${spelling} send before addUser with an error, not a broadcast`, async () => {
      const alice = await open({ spelling: 'camel' });
      await alice.join('Alice');
      const early = await open({ spelling });
      const from = early.mark();
      const aliceFrom = alice.mark();
      early.say('sent before adding myself');
      const reason = await early.waitError({ from, what: 'the send-before-add error' });
      assert.ok(reason.length > 0);
      assert.deepEqual(await bystanderSawUntilBarrier(alice, aliceFrom), [], 'no broadcast reached Alice');
      assert.deepEqual(early.foreignEvents(), [], 'the error came in the spelling of the send');
      // Adding afterwards works normally.
      await early.join('Early');
      early.say('now it works');
      await alice.waitChat('Early', 'now it works');
    });
  }

  it('refuses a second addUser naming someone else and ignores one repeating its own name', async () => {
    const alice = await open({ spelling: 'camel' });
    await alice.join('Alice');
    const bob = await open({ spelling: 'camel' });
    await bob.join('Bob');
    await alice.waitUsers(['Alice', 'Bob']);

    let from = bob.mark();
    let aliceFrom = alice.mark();
    bob.socket.emit('addUser', 'Robert');
    await bob.waitError({ from, what: 'refusal of a rename' });
    assert.deepEqual(await bystanderSawUntilBarrier(alice, aliceFrom), [], 'no rename leaked to Alice');

    from = bob.mark();
    aliceFrom = alice.mark();
    bob.socket.emit('addUser', 'Bob');
    assert.deepEqual(await bystanderSawUntilBarrier(alice, aliceFrom), [], 'repeating its own name is silent');
    bob.say('still Bob');
    await alice.waitChat('Bob', 'still Bob');
    await bob.waitChat('Bob', 'still Bob', { from });
    assert.deepEqual(bob.errors(from), [], 'repeating its own name is no error');
    assert.deepEqual(alice.lastUsers(), ['Alice', 'Bob']);
  });

  it('answers wrong-typed arguments with an error and keeps serving', async () => {
    const alice = await open({ spelling: 'camel' });
    await alice.join('Alice');
    const mallory = await open({ spelling: 'camel' });

    // addUser with things that are not a name; the Node tutorial server dies on the first.
    const badNames = [{ toString: 'x' }, ['Mallory'], 42, true, null, { name: 'Mallory' }];
    for (const bad of badNames) {
      const from = mallory.mark();
      mallory.socket.emit('addUser', bad);
      await mallory.waitError({ from, what: `refusal of addUser(${JSON.stringify(bad)})` });
    }
    assert.deepEqual(alice.lastUsers(), ['Alice']);

    const joined = alice.mark();
    await mallory.join('Mallory');
    await alice.waitUsers(['Alice', 'Mallory'], { from: joined });
    const badMessages = [{ toString: 'x' }, ['a', 'b'], 5, false, { text: 'hi' }, 'x'.repeat(100_000)];
    for (const bad of badMessages) {
      const from = mallory.mark();
      const aliceFrom = alice.mark();
      mallory.say(bad);
      await mallory.waitError({ from, what: `refusal of sendChat(${JSON.stringify(bad).slice(0, 40)})` });
      assert.deepEqual(await bystanderSawUntilBarrier(alice, aliceFrom), [], 'nothing was broadcast');
    }

    // The server is still fine: both chat, and a new client can join.
    mallory.say('a proper message');
    await alice.waitChat('Mallory', 'a proper message');
    const carol = await open({ version: 'v2', spelling: 'lower' });
    await carol.join('Carol');
    await alice.waitUsers(['Alice', 'Mallory', 'Carol']);
    assert.ok(!alice.chats().some(([, t]) => typeof t !== 'string' || t.includes('[object Object]')));
  });

  it('relays a 4000-character message intact', async () => {
    const alice = await open({ spelling: 'camel' });
    await alice.join('Alice');
    // 4000 characters is the tutorial page's input limit; every one must arrive intact.
    const long = 'é'.repeat(3_999) + '!';
    alice.say(long);
    await alice.waitChat('Alice', long);
    assert.equal(alice.errors().length, 0);
  });

  it('tells a joiner "you have connected" only once even when names are checked case-insensitively', async () => {
    const a = await open({ spelling: 'lower' });
    await a.join('Kim');
    const b = await open({ spelling: 'camel' });
    const from = b.mark();
    b.socket.emit('addUser', 'KIM');
    await b.waitError({ from });
    await b.join('Lee');
    assert.equal(b.chats().filter(([, t]) => t === YOU_HAVE_CONNECTED).length, 1);
    await a.waitUsers(['Kim', 'Lee']);
  });
});
