'use strict';
// A chinwag cluster (issue 13): three chinwag nodes on one PostgreSQL and one Redis, real
// socket.io-client 4.8 clients spread over them, and the shipped nginx and haproxy configs
// (deploy/) in front. Each test starts its own cluster on a fresh schema and Redis prefix
// (lib/cluster.js).
//
// Serial: each test runs three servers plus PostgreSQL, Redis and a balancer on two cores.

const { describe, it, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const ioc = require('socket.io-client');
const { startCluster, startRedis, fromAddress, httpGet, sleep } = require('../../lib/cluster');
const { Recorder, nextEvent } = require('../../lib/wait');
const { connected, waitForUpgrade } = require('../../lib/clients');
const { ChatClient, hasConnected, hasDisconnected } = require('../../lib/chat');

const MS = 15_000;

/** Everything a test opened, closed after it whatever happens. */
let cleanups = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) {
    try {
      await cleanup();
    } catch {
      // Best effort: the next cleanup still runs.
    }
  }
});

async function cluster(options) {
  const c = await startCluster(options);
  cleanups.push(() => c.stop());
  return c;
}

/**
 * A full-protocol socket with a Recorder attached before it connects. Once it has a session
 * its auth becomes the token, so a reconnect is the same user (a name alone would be taken
 * by its own away user).
 */
function dial(url, auth, options = {}) {
  const socket = ioc(url, {
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    timeout: MS,
    ...(auth ? { auth } : {}),
    ...options,
  });
  socket.rec = new Recorder(socket);
  // For waitForUpgrade: the engine exists already, so no upgrade can be missed.
  socket.upgraded = false;
  socket.io.engine.once('upgrade', () => {
    socket.upgraded = true;
  });
  // Arrival times of room messages by id, for latency.
  socket.arrivedAt = new Map();
  socket.on('message:new', (message) => socket.arrivedAt.set(message.id, performance.now()));
  socket.on('session', ({ token }) => {
    socket.auth = { token };
  });
  cleanups.push(() => socket.close());
  return socket;
}

/** Connects a full-protocol user; resolves with the socket once its `session` came. */
async function join(url, auth, options) {
  const socket = dial(url, auth, options);
  await connected(socket, MS);
  const [session] = await socket.rec.waitFor('session', () => true, { ms: MS });
  socket.session = session;
  return socket;
}

const ask = (socket, event, payload) => socket.timeout(MS).emitWithAck(event, payload);

function assertOk(ack, what) {
  assert.equal(ack && ack.ok, true, `${what}: ${JSON.stringify(ack)}`);
  return ack;
}

function assertError(ack, code, what = code) {
  assert.ok(ack && ack.error, `${what}: expected an error ack, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error.code, code, `${what}: ${JSON.stringify(ack)}`);
}

/** The `message:new` payloads a socket got in `room`, from recorder index `from`. */
const roomMessages = (socket, room, from = 0) =>
  socket.rec.events
    .slice(from)
    .filter((e) => e.event === 'message:new' && e.args[0].room === room)
    .map((e) => e.args[0]);

/** The `dm:new` payloads a socket got in its conversation with `peer`. */
const directMessages = (socket, peer, from = 0) =>
  socket.rec.events
    .slice(from)
    .filter((e) => e.event === 'dm:new' && e.args[0].with === peer)
    .map((e) => e.args[0]);

const presenceOf = (socket, name, from = 0) =>
  socket.rec.events
    .slice(from)
    .filter((e) => e.event === 'presence' && e.args[0].name === name)
    .map((e) => e.args[0].online);

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

/** Asserts `got` holds exactly the messages acked in `acks`, once each, in seq order. */
function assertExactly(got, acks, what) {
  assert.deepEqual(
    got.map((m) => [m.seq, m.id]),
    acks.map((a) => [a.seq, a.id]),
    `${what}: expected seqs ${acks.map((a) => a.seq)}, got ${got.map((m) => m.seq)}`,
  );
}

/** Runs `check()` until it stops throwing (state that reaches every node a little later). */
async function eventually(check, what, ms = MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}: ${last?.message}`);
    await sleep(100);
  }
}

describe('cluster: three chinwag nodes on PostgreSQL and Redis', () => {
  it('clients on three nodes chat in one room and in direct messages: every message once, in seq order, p99 under 200 ms', async () => {
    const c = await cluster();
    const urls = c.nodes.map((n) => n.url);
    // Two users per node.
    const names = ['Ada', 'Bo', 'Cy', 'Dot', 'Eve', 'Fay'];
    const users = [];
    for (const [i, name] of names.entries()) users.push(await join(urls[i % 3], { name }));
    assertOk(await ask(users[0], 'room:create', { room: 'hot' }), 'room:create on A');
    for (const user of users.slice(1)) assertOk(await ask(user, 'room:join', { room: 'hot' }), 'room:join');
    const marks = users.map((u) => u.rec.mark());

    // Every user sends 10 messages, 30 ms apart, all users at once: 60 messages from 3 nodes.
    const sentAt = new Map();
    const acks = [];
    await Promise.all(
      users.map(async (user, u) => {
        for (let i = 0; i < 10; i++) {
          const clientId = `${names[u]}-${i}`;
          sentAt.set(clientId, performance.now());
          const ack = assertOk(await ask(user, 'message:send', { room: 'hot', text: `${names[u]} ${i}`, clientId }), 'send');
          acks.push({ ...ack, clientId });
          await sleep(30);
        }
      }),
    );
    acks.sort((a, b) => a.seq - b.seq);
    assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 60 }, (_, i) => i + 1), 'gapless seqs 1..60');

    const latencies = [];
    for (const [u, user] of users.entries()) {
      await user.rec.until(() => roomMessages(user, 'hot', marks[u]).length >= 60, `60 messages at ${names[u]}`, MS);
      await sleep(50);
      assertExactly(roomMessages(user, 'hot', marks[u]), acks, `room messages at ${names[u]} (node ${u % 3})`);
    }
    // Latency of each delivery: its arrival at a client minus the moment it was sent.
    for (const user of users) {
      for (const ack of acks) latencies.push(user.arrivedAt.get(ack.id) - sentAt.get(ack.clientId));
    }
    assert.equal(latencies.length, 360, 'every delivery timed');
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    console.log(`cross-node room delivery over 360 deliveries: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms`);
    assert.ok(p99 < 200, `p99 delivery ${p99.toFixed(1)} ms`);

    // Direct messages across nodes, and to a second tab of the receiver on a third node.
    const [ada, bo, cy] = users; // nodes A, B, C
    const boTab = await join(urls[2], { token: bo.session.token });
    const dmMarks = [ada, bo, boTab, cy].map((s) => s.rec.mark());
    const dmAcks = [];
    for (let i = 0; i < 4; i++) {
      const from = i % 2 === 0 ? ada : bo;
      const to = i % 2 === 0 ? 'Bo' : 'Ada';
      dmAcks.push(assertOk(await ask(from, 'dm:send', { to, text: `dm ${i}`, clientId: `dm-${i}` }), 'dm:send'));
    }
    assert.deepEqual(dmAcks.map((a) => a.seq), [1, 2, 3, 4]);
    const check = async (socket, peer, mark, what) => {
      await socket.rec.until(() => directMessages(socket, peer, mark).length >= 4, `4 dm:new at ${what}`, MS);
      await sleep(50);
      assertExactly(directMessages(socket, peer, mark), dmAcks, `dm:new at ${what}`);
    };
    await check(ada, 'Bo', dmMarks[0], 'Ada (A)');
    await check(bo, 'Ada', dmMarks[1], 'Bo (B)');
    await check(boTab, 'Ada', dmMarks[2], 'Bo’s second tab (C)');
    assert.equal(cy.rec.events.slice(dmMarks[3]).filter((e) => e.event === 'dm:new').length, 0, 'not to a third user');
  });

  it('member lists, room:list counts and presence agree on every node; room:create on A, room:join on B, a second create is room_exists', async () => {
    const c = await cluster();
    const urls = c.nodes.map((n) => n.url);
    const [ann, ben, cat] = [await join(urls[0], { name: 'Ann' }), await join(urls[1], { name: 'Ben' }), await join(urls[2], { name: 'Cat' })];
    for (const s of [ann, ben, cat]) assertOk(await ask(s, 'presence:subscribe', {}), 'presence:subscribe');

    const annMark = ann.rec.mark();
    assertOk(await ask(ann, 'room:create', { room: 'club' }), 'room:create on A');
    assertOk(await ask(ben, 'room:join', { room: 'club' }), 'room:join on B of a room created on A');
    assertError(await ask(cat, 'room:create', { room: 'Club' }), 'room_exists', 'room:create on C');
    assertError(await ask(ben, 'room:create', { room: 'club' }), 'room_exists', 'room:create on B');
    assertOk(await ask(cat, 'room:join', { room: 'club' }), 'room:join on C');
    await ann.rec.waitFor('room:member', (m) => m.room === 'club' && m.name === 'Ben' && m.joined, { from: annMark, ms: MS });
    await ann.rec.waitFor('room:member', (m) => m.room === 'club' && m.name === 'Cat' && m.joined, { from: annMark, ms: MS });

    const everyone = [
      { name: 'Ann', online: true },
      { name: 'Ben', online: true },
      { name: 'Cat', online: true },
    ];
    const agree = async (expected, members, online) => {
      for (const [i, s] of [ann, ben, cat].entries()) {
        const list = assertOk(await ask(s, 'room:members', { room: 'club' }), `room:members on node ${i}`);
        assert.deepEqual(
          [...list.members].sort((a, b) => a.name.localeCompare(b.name)),
          expected,
          `members on node ${i}`,
        );
        assert.equal(list.total, members, `total on node ${i}`);
        const rooms = assertOk(await ask(s, 'room:list', {}), `room:list on node ${i}`);
        const club = rooms.rooms.find((r) => r.name === 'club');
        assert.ok(club, `club listed on node ${i}: ${JSON.stringify(rooms)}`);
        assert.equal(club.members, members, `room:list members on node ${i}`);
        assert.equal(club.online, online, `room:list online on node ${i}`);
      }
    };
    await eventually(() => agree(everyone, 3, 3), 'the same members on every node');

    // A user with tabs on A and C: closing one keeps it online everywhere, closing both
    // announces it offline once, everywhere.
    const marks = [ann, ben, cat].map((s) => s.rec.mark());
    const dan = await join(urls[0], { name: 'Dan' });
    assertOk(await ask(dan, 'room:join', { room: 'club' }), 'Dan joins');
    const danTab = await join(urls[2], { token: dan.session.token });
    for (const [i, s] of [ann, ben, cat].entries()) {
      await s.rec.waitFor('presence', (p) => p.name === 'Dan' && p.online === true, { from: marks[i], ms: MS });
    }
    const withDan = [...everyone, { name: 'Dan', online: true }].sort((a, b) => a.name.localeCompare(b.name));
    await eventually(() => agree(withDan, 4, 4), 'Dan listed on every node');

    dan.close();
    await sleep(1_000); // over three grace periods
    await agree(withDan, 4, 4);
    danTab.close();
    for (const [i, s] of [ann, ben, cat].entries()) {
      await s.rec.waitFor('presence', (p) => p.name === 'Dan' && p.online === false, { from: marks[i], ms: MS });
    }
    await sleep(500);
    for (const [i, s] of [ann, ben, cat].entries()) {
      assert.deepEqual(presenceOf(s, 'Dan', marks[i]), [true, false], `Dan's presence as seen on node ${i}`);
    }
    const danAway = [...everyone, { name: 'Dan', online: false }].sort((a, b) => a.name.localeCompare(b.name));
    await eventually(() => agree(danAway, 4, 3), 'Dan away on every node');
  });

  it('concurrent connects with one name on three nodes: exactly one succeeds', async () => {
    const c = await cluster();
    for (let round = 0; round < 5; round++) {
      const name = `Same${round}`;
      const outcomes = await Promise.all(
        c.nodes.map(async (node) => {
          const socket = dial(node.url, { name: [name, name.toUpperCase(), name.toLowerCase()][node.index] });
          const result = await Promise.race([
            socket.rec.waitFor('session', () => true, { ms: MS }).then(() => 'ok'),
            nextEvent(socket, 'connect_error', MS).then(([error]) => error.data?.code ?? error.message),
          ]);
          return result;
        }),
      );
      assert.equal(outcomes.filter((o) => o === 'ok').length, 1, `round ${round}: ${outcomes}`);
      assert.deepEqual(outcomes.filter((o) => o !== 'ok'), ['name_taken', 'name_taken'], `round ${round}: ${outcomes}`);
    }
  });

  it('sync and room:join since on any node return exactly the messages written on another', async () => {
    const c = await cluster();
    const urls = c.nodes.map((n) => n.url);
    const writer = await join(urls[1], { name: 'Writer' });
    const readers = [await join(urls[0], { name: 'ReadA' }), await join(urls[2], { name: 'ReadC' })];
    assertOk(await ask(writer, 'room:create', { room: 'log' }), 'create');
    for (const r of readers) assertOk(await ask(r, 'room:join', { room: 'log' }), 'join');
    const first = [];
    for (let i = 0; i < 3; i++) first.push(assertOk(await ask(writer, 'message:send', { room: 'log', text: `a${i}` }), 'send'));
    // The readers saw these (their nodes' tails now hold seq 3).
    for (const r of readers) await r.rec.until(() => roomMessages(r, 'log').length >= 3, 'the first three', MS);

    // The readers leave; the writer on B writes five more, and two direct messages.
    const tokens = readers.map((r) => r.session.token);
    for (const r of readers) r.close();
    const missed = [];
    for (let i = 0; i < 5; i++) missed.push(assertOk(await ask(writer, 'message:send', { room: 'log', text: `b${i}` }), 'send'));
    const dms = [];
    for (let i = 0; i < 2; i++) dms.push(assertOk(await ask(writer, 'dm:send', { to: 'ReadA', text: `d${i}` }), 'dm'));

    // sync on every node, A and C (the readers' own) and B (the writer's).
    for (const [i, url] of urls.entries()) {
      const back = await join(url, { token: tokens[0] });
      const synced = assertOk(await ask(back, 'sync', { rooms: { log: 3 }, direct: { Writer: 0 } }), `sync on node ${i}`);
      assertExactly(synced.rooms.log, missed, `sync rooms on node ${i}`);
      assertExactly(synced.direct.Writer, dms, `sync direct on node ${i}`);
      assert.equal(synced.more, false);
      const upToDate = assertOk(await ask(back, 'sync', { rooms: { log: 8 } }), 'sync up to date');
      assert.deepEqual(upToDate.rooms.log, [], `nothing newer on node ${i}`);
      back.close();
    }
    const fresh = await join(urls[2], { name: 'Late' });
    const joined = assertOk(await ask(fresh, 'room:join', { room: 'log', since: 3 }), 'room:join since on C');
    assertExactly(joined.messages, missed, 'room:join since on C');
    const history = assertOk(await ask(fresh, 'message:history', { room: 'log' }), 'history on C');
    assertExactly(history.messages, [...first, ...missed], 'history on C');
  });

  // Vic joins `crash` after connecting: resumed on another node, Vic is in it again (from the
  // stored memberships, not the recovery record saved at connect, which the dead node never
  // updated) and is replayed what it missed there.
  it('kill -9 of a node: its clients reconnect through nginx to another node, get exactly what they missed; its lone user goes offline once', async () => {
    const c = await cluster({ balancer: 'nginx', args: ['--connection-state-recovery'] });
    // Vic connects through nginx; the node it lands on dies.
    const reconnecting = { reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 500, randomizationFactor: 0 };
    const { options, release } = fromAddress('127.0.0.2');
    cleanups.push(release);
    const landed = await c.landing(() => join(c.balancer.url, { name: 'Vic' }, { ...reconnecting, ...options }));
    const vic = landed.result;
    const victim = landed.node;
    const survivor = c.nodes[(victim + 1) % 3];
    const watcher = await join(survivor.url, { name: 'Watcher' });
    assertOk(await ask(watcher, 'presence:subscribe', {}), 'presence:subscribe');
    // A user only on the victim node, not coming back.
    const ghost = await join(c.nodes[victim].url, { name: 'Ghost' });
    assertOk(await ask(watcher, 'room:create', { room: 'crash' }), 'create');
    assertOk(await ask(vic, 'room:join', { room: 'crash' }), 'join');
    const seen = assertOk(await ask(watcher, 'message:send', { room: 'crash', text: 'before' }), 'send');
    await vic.rec.waitFor('message:new', (m) => m.id === seen.id, { ms: MS });
    const watchMark = watcher.rec.mark();

    const vicMark = vic.rec.mark();
    const down = nextEvent(vic, 'disconnect', MS);
    await c.nodes[victim].kill9();
    await down;
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push(assertOk(await ask(watcher, 'message:send', { room: 'crash', text: `missed ${i}` }), 'send while Vic is away'));
    await nextEvent(vic, 'connect', 30_000);

    let got;
    if (vic.recovered) {
      await vic.rec.until(() => roomMessages(vic, 'crash', vicMark).length >= 3, 'the missed messages replayed', MS);
      await sleep(200);
      got = roomMessages(vic, 'crash', vicMark);
    } else {
      // Not resumed: a new session as the same user (token), then sync.
      const synced = assertOk(await ask(vic, 'sync', { rooms: { crash: seen.seq } }), 'sync after reconnect');
      const live = roomMessages(vic, 'crash', vicMark).filter((m) => !synced.rooms.crash.some((s) => s.id === m.id));
      got = [...synced.rooms.crash, ...live];
    }
    assertExactly(got, missed, `Vic (recovered: ${vic.recovered}) after the crash`);
    // Live again, through another node.
    const after = assertOk(await ask(watcher, 'message:send', { room: 'crash', text: 'after' }), 'send after');
    await vic.rec.waitFor('message:new', (m) => m.id === after.id, { ms: MS });
    const counts = await c.connectionCounts();
    assert.equal(counts[victim], null, 'the victim is dead');

    // Ghost (only on the dead node) goes offline once, within heartbeat expiry and grace; Vic,
    // back on another node, does not.
    await watcher.rec.waitFor('presence', (p) => p.name === 'Ghost' && p.online === false, { from: watchMark, ms: 30_000 });
    await sleep(1_000);
    assert.deepEqual(presenceOf(watcher, 'Ghost', watchMark).filter((o) => !o), [false], 'Ghost offline once');
    assert.deepEqual(presenceOf(watcher, 'Vic', watchMark).filter((o) => o === false), [], 'Vic never offline');
    ghost.close();
  });

  it('Redis killed and restarted mid-test: every acked message is kept, delivery resumes, gaps are repaired', async () => {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const c = await cluster({ redisUrl: redis.url });
    const urls = c.nodes.map((n) => n.url);
    const [a, b] = [await join(urls[0], { name: 'RedA' }), await join(urls[1], { name: 'RedB' })];
    assertOk(await ask(a, 'room:create', { room: 'r' }), 'create');
    assertOk(await ask(b, 'room:join', { room: 'r' }), 'join');
    assertOk(await ask(a, 'room:create', { room: 'side' }), 'create side');
    assertOk(await ask(b, 'room:join', { room: 'side' }), 'join side');
    const acks = [];
    const send = async (socket, text) => {
      const ack = assertOk(await ask(socket, 'message:send', { room: 'r', text }), `send ${text}`);
      acks.push(ack);
      return ack;
    };
    await send(a, 'up 1');
    await send(b, 'up 2');
    for (const s of [a, b]) await s.rec.until(() => roomMessages(s, 'r').length >= 2, 'both', MS);

    await redis.kill();
    // Unready while Redis is away.
    await eventually(async () => {
      const { status } = await httpGet(`${urls[0]}/readyz`);
      assert.equal(status, 503);
    }, '/readyz to go unready without Redis');
    // Still storing and acknowledging: PostgreSQL is the truth.
    for (let i = 0; i < 3; i++) {
      await send(a, `down a${i}`);
      await send(b, `down b${i}`);
    }
    // Rooms and memberships stored while the bus is away reach the other nodes later.
    assertOk(await ask(a, 'room:create', { room: 'outage' }), 'room:create without Redis');
    assertOk(await ask(b, 'room:join', { room: 'outage' }), 'room:join on B without Redis');
    assertOk(await ask(b, 'room:leave', { room: 'side' }), 'room:leave on B without Redis');
    await redis.restart();
    await eventually(async () => {
      const { status } = await httpGet(`${urls[0]}/readyz`);
      assert.equal(status, 200);
    }, '/readyz ready again once Redis is back');

    // Delivery resumes (nodes resubscribe), and the gaps of the outage are repaired from
    // PostgreSQL: each client ends with every message exactly once, in order.
    await eventually(async () => {
      const probe = await send(a, `probe ${acks.length}`);
      await b.rec.waitFor('message:new', (m) => m.id === probe.id, { ms: 1_000 });
    }, 'a message from A to reach B again', 20_000);
    await send(b, 'back b');
    await eventually(async () => {
      const outage = assertOk(await ask(a, 'room:members', { room: 'outage' }), 'members of outage on A');
      assert.deepEqual(outage.members.map((m) => m.name).sort(), ['RedA', 'RedB']);
      const side = assertOk(await ask(a, 'room:members', { room: 'side' }), 'members of side on A');
      assert.deepEqual(side.members.map((m) => m.name), ['RedA']);
    }, 'A to learn the memberships stored on B while Redis was away');
    acks.sort((x, y) => x.seq - y.seq);
    assert.deepEqual(acks.map((x) => x.seq), acks.map((_, i) => i + 1), 'gapless seqs');
    for (const [i, s] of [a, b].entries()) {
      await s.rec.until(() => roomMessages(s, 'r').length >= acks.length, `all ${acks.length} at node ${i}`, MS);
      await sleep(100);
      assertExactly(roomMessages(s, 'r'), acks, `message:new at node ${i}`);
    }
    for (const url of urls) {
      const reader = await join(url, { token: a.session.token });
      const history = assertOk(await ask(reader, 'message:history', { room: 'r', limit: 100 }), 'history');
      assertExactly(history.messages, acks, `history on ${url}`);
      reader.close();
    }
  });

  it('tutorial protocol across nodes: a tutorial client on A sees one on B; names are unique cluster-wide', async () => {
    const c = await cluster();
    const urls = c.nodes.map((n) => n.url);
    const tutA = await ChatClient.open('v4', urls[0], { spelling: 'camel' });
    const tutB = await ChatClient.open('v4', urls[1], { spelling: 'lower' });
    cleanups.push(() => tutA.close(), () => tutB.close());
    await tutA.join('TutA');
    const fromA = tutA.mark();
    await tutB.join('TutB');
    await tutA.waitChat('Server', hasConnected('TutB'), { from: fromA, ms: MS });
    await tutA.waitUsers(['TutA', 'TutB'], { from: fromA, ms: MS });
    await tutB.waitUsers(['TutA', 'TutB'], { ms: MS });

    const markA = tutA.mark();
    const markB = tutB.mark();
    tutA.say('hello from A');
    tutB.say('hello from B');
    for (const [client, mark] of [[tutA, markA], [tutB, markB]]) {
      await client.waitChat('TutA', 'hello from A', { from: mark, ms: MS });
      await client.waitChat('TutB', 'hello from B', { from: mark, ms: MS });
    }
    assert.deepEqual(tutA.foreignEvents(), []);
    assert.deepEqual(tutB.foreignEvents(), []);

    // A full-protocol user on C sees the tutorial chat in general, and holds its name.
    const full = await join(urls[2], { name: 'FullC' });
    const fullMark = full.rec.mark();
    tutB.say('to everyone');
    await full.rec.waitFor('message:new', (m) => m.room === 'general' && m.from === 'TutB' && m.text === 'to everyone', { from: fullMark, ms: MS });

    // Names unique cluster-wide: TutA's name on C (another case), a full user's name on A.
    const tutC = await ChatClient.open('v4', urls[2]);
    cleanups.push(() => tutC.close());
    let mark = tutC.mark();
    tutC.socket.emit('addUser', 'tuta');
    assert.match(await tutC.waitError({ from: mark, ms: MS }), /taken/);
    mark = tutC.mark();
    tutC.socket.emit('addUser', 'fullc');
    assert.match(await tutC.waitError({ from: mark, ms: MS }), /taken/);

    // Concurrent addUser of one name on three nodes: one is connected, two are refused.
    const racers = await Promise.all(urls.map((url) => ChatClient.open('v4', url)));
    cleanups.push(...racers.map((r) => () => r.close()));
    const outcomes = await Promise.all(
      racers.map(async (r) => {
        const from = r.mark();
        r.socket.emit('addUser', 'Racer');
        return Promise.race([
          r.waitChat('Server', 'you have connected', { from, ms: MS }).then(() => 'ok'),
          r.waitError({ from, ms: MS }),
        ]);
      }),
    );
    assert.equal(outcomes.filter((o) => o === 'ok').length, 1, JSON.stringify(outcomes));

    const leaving = tutA.mark();
    tutB.close();
    await tutA.waitChat('Server', hasDisconnected('TutB'), { from: leaving, ms: MS });
  });

  it('behind nginx with --trusted-proxies, per-address limits count each client’s own address (X-Forwarded-For)', async () => {
    const c = await cluster({ balancer: 'nginx', args: ['--trusted-proxies', '127.0.0.1', '--max-new-users-per-ip', '2'] });
    // Two new users from each of three addresses: each address has its own allowance, so
    // all six connect, and a third from one address is refused.
    for (let i = 2; i < 5; i++) {
      const { options, release } = fromAddress(`127.0.0.${i}`);
      cleanups.push(release);
      for (let j = 0; j < 2; j++) await join(c.balancer.url, { name: `Addr${i}x${j}` }, options);
    }
    const { options, release } = fromAddress('127.0.0.2');
    cleanups.push(release);
    const refused = dial(c.balancer.url, { name: 'OneTooMany' }, options);
    const [error] = await nextEvent(refused, 'connect_error', MS);
    assert.equal(error.data?.code, 'rate_limited', JSON.stringify(error.data ?? error.message));
  });

  for (const balancer of ['nginx', 'haproxy']) {
    it(`through the shipped ${balancer} config: polling-only clients and polling→WebSocket upgrades on three nodes`, async () => {
      const c = await cluster({ balancer });
      // One client address per node: try addresses until every node has one.
      const addressOf = new Map();
      for (let i = 2; addressOf.size < 3 && i < 60; i++) {
        const ip = `127.0.0.${i}`;
        const { options, release } = fromAddress(ip);
        cleanups.push(release);
        // Probes stay connected: a closing one would upset the next count.
        const { node } = await c.landing(() => join(c.balancer.url, { name: `probe${i}` }, { transports: ['polling'], ...options }));
        if (!addressOf.has(node)) addressOf.set(node, ip);
      }
      assert.equal(addressOf.size, 3, `clients reached only nodes ${[...addressOf.keys()]}`);

      const clients = [];
      for (const [node, ip] of addressOf) {
        for (const mode of ['polling', 'upgrade']) {
          const { options, release } = fromAddress(ip);
          cleanups.push(release);
          const transports = mode === 'polling' ? ['polling'] : ['polling', 'websocket'];
          const socket = await join(c.balancer.url, { name: `${mode}${node}` }, { transports, ...options });
          socket.mode = mode;
          if (mode === 'upgrade') assert.equal(await waitForUpgrade(socket, MS), 'websocket', 'upgraded');
          clients.push(socket);
        }
      }
      const marks = clients.map((s) => s.rec.mark());
      const acks = [];
      for (const [i, s] of clients.entries()) {
        acks.push(assertOk(await ask(s, 'message:send', { room: 'general', text: `via ${balancer} ${i}` }), `send from ${s.session.user.name}`));
      }
      for (const [i, s] of clients.entries()) {
        await s.rec.until(() => roomMessages(s, 'general', marks[i]).length >= acks.length, `all messages at ${s.session.user.name}`, MS);
        assertExactly(roomMessages(s, 'general', marks[i]), acks, `general at ${s.session.user.name}`);
      }
      // Polling clients kept their one session (stickiness: no reconnects, still polling).
      for (const s of clients) {
        assert.equal(s.connected, true);
        assert.equal(s.io.engine.transport.name, s.mode === 'polling' ? 'polling' : 'websocket');
      }
    });
  }
});
