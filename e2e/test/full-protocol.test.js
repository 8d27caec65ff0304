'use strict';
// chinwag's full protocol (PROTOCOL.md section 2) through the real socket.io-client 4.8:
// identity and sessions, tabs and presence, rooms, messages with seqs and idempotent resends,
// history paging, catch-up with `sync`, direct messages, typing, every documented error code
// and Socket.IO connection-state recovery.
//
// `unavailable` (history could not be read or written) is not tested: it needs a failing
// database, which a black-box test cannot cause reliably.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const ioc = require('socket.io-client');
const { startChinwag } = require('../lib/server');
const { Recorder, withTimeout, nextEvent } = require('../lib/wait');
const { connected } = require('../lib/clients');

const MS = 15_000;

/** A socket with a Recorder attached before it connects (so `session` is never missed). */
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
  return socket;
}

/** Connects a full-protocol user and resolves with { socket, session }. */
async function join(url, auth, sockets, options) {
  const socket = dial(url, auth, options);
  sockets.push(socket);
  await connected(socket, MS);
  const [session] = await socket.rec.waitFor('session', () => true, { ms: MS });
  return { socket, session };
}

/** The connect_error data ({code, message}) of a refused connection. */
async function refusal(url, auth, sockets) {
  const socket = dial(url, auth);
  sockets.push(socket);
  const [error] = await nextEvent(socket, 'connect_error', MS);
  assert.equal(socket.connected, false);
  return error.data;
}

const ask = (socket, event, payload) => socket.timeout(MS).emitWithAck(event, payload);

function assertError(ack, code, what = code) {
  assert.ok(ack && ack.error, `${what}: expected an error ack, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error.code, code, `${what}: ${JSON.stringify(ack)}`);
  assert.equal(typeof ack.error.message, 'string');
  assert.ok(ack.error.message.length > 0);
  assert.equal(ack.ok, undefined);
}

function assertOk(ack, what) {
  assert.equal(ack && ack.ok, true, `${what}: ${JSON.stringify(ack)}`);
}

const closeAll = (sockets) => sockets.forEach((s) => s.close());

describe('full protocol', () => {
  let server;
  let sockets = [];
  before(async () => {
    server = await startChinwag(['--presence-grace-ms', '300']);
  });
  after(async () => {
    closeAll(sockets);
    if (server) await server.stop();
  });

  it('gives a session with a token; the token resumes the same user; identity errors are connect_errors', async () => {
    const { socket: ann, session } = await join(server.url, { name: '  Ann ' }, sockets);
    assert.equal(typeof session.token, 'string');
    assert.ok(session.token.length > 0);
    assert.deepEqual(session.user, { name: 'Ann' });
    assert.deepEqual(session.rooms, ['general']);

    const created = await ask(ann, 'room:create', { room: 'Ann-Room' });
    assertOk(created, 'room:create');
    assert.equal(created.room, 'ann-room');

    // The name is held by this user: another connection with it (any case) is refused.
    const taken = await refusal(server.url, { name: 'ANN' }, sockets);
    assert.equal(taken.code, 'name_taken');
    assert.equal(typeof taken.message, 'string');

    // A second tab with the token is the same user and learns its rooms.
    const { session: again } = await join(server.url, { token: session.token }, sockets);
    assert.deepEqual(again.user, { name: 'Ann' });
    assert.deepEqual([...again.rooms].sort(), ['ann-room', 'general']);
    assert.equal(again.token, session.token);

    assert.equal((await refusal(server.url, { token: 'no-such-token' }, sockets)).code, 'invalid_token');
    assert.equal((await refusal(server.url, { name: '<b>x</b>' }, sockets)).code, 'invalid_name');
    assert.equal((await refusal(server.url, { name: 'x'.repeat(33) }, sockets)).code, 'invalid_name');
    assert.equal((await refusal(server.url, { name: 'sErVeR' }, sockets)).code, 'name_reserved');
    assert.equal((await refusal(server.url, { name: 42 }, sockets)).code, 'invalid_argument');
    assert.equal((await refusal(server.url, { token: 7 }, sockets)).code, 'invalid_argument');
  });

  it('two tabs are one user: online while one tab is open, offline after the last closes', async () => {
    const { socket: watcher } = await join(server.url, { name: 'Watcher1' }, sockets);
    // Everyone's presence is opt-in (PROTOCOL.md): the watcher shares no room with Tabby.
    assertOk(await ask(watcher, 'presence:subscribe', {}), 'presence:subscribe');
    const isTabby = (p) => p.name === 'Tabby';
    const from = watcher.rec.mark();
    const { socket: tab1, session } = await join(server.url, { name: 'Tabby' }, sockets);
    await watcher.rec.waitFor('presence', (p) => isTabby(p) && p.online === true, { from, ms: MS });
    const { socket: tab2 } = await join(server.url, { token: session.token }, sockets);

    tab1.close();
    // For three times the grace period, Tabby stays listed online (its second tab is open).
    const start = Date.now();
    while (Date.now() - start < 1_000) {
      const members = await ask(watcher, 'room:members', { room: 'general' });
      assertOk(members, 'room:members');
      const tabby = members.members.find(isTabby);
      assert.deepEqual(tabby, { name: 'Tabby', online: true });
    }
    const presences = () => watcher.rec.of('presence').map((e) => e.args[0]).filter(isTabby);
    assert.deepEqual(presences(), [{ name: 'Tabby', online: true }], 'one online, no offline');

    const closing = watcher.rec.mark();
    tab2.close();
    await watcher.rec.waitFor('presence', (p) => isTabby(p) && p.online === false, { from: closing, ms: MS });
    assert.deepEqual(presences(), [
      { name: 'Tabby', online: true },
      { name: 'Tabby', online: false },
    ]);
    const members = await ask(watcher, 'room:members', { room: 'general' });
    assert.deepEqual(members.members.find(isTabby), { name: 'Tabby', online: false });
  });

  it('rooms: create, join, list, members, leave and their errors', async () => {
    const { socket: rita } = await join(server.url, { name: 'Rita' }, sockets);
    const { socket: sam } = await join(server.url, { name: 'Sam' }, sockets);

    const created = await ask(rita, 'room:create', { room: 'ＲoomOne' });
    assertOk(created, 'room:create');
    assert.equal(created.room, 'roomone');
    assertError(await ask(sam, 'room:create', { room: 'RoomOne' }), 'room_exists');
    assertError(await ask(sam, 'room:create', { room: 'has space' }), 'invalid_room');
    assertError(await ask(sam, 'room:create', { room: 'x'.repeat(49) }), 'invalid_room');
    assertError(await ask(sam, 'room:create', { room: 'a<b' }), 'invalid_room');
    assertError(await ask(sam, 'room:create', 'roomone'), 'invalid_argument');
    assertError(await ask(sam, 'room:join', { room: 'nowhere' }), 'unknown_room');
    assertError(await ask(sam, 'room:join', { room: 12 }), 'invalid_argument');
    assertError(await ask(sam, 'room:members', { room: 'nowhere' }), 'unknown_room');

    const from = rita.rec.mark();
    const joined = await ask(sam, 'room:join', { room: 'ROOMONE' });
    assertOk(joined, 'room:join');
    assert.equal(joined.room, 'roomone');
    assert.equal(joined.memberCount, 2);
    assert.deepEqual(joined.members, [
      { name: 'Rita', online: true },
      { name: 'Sam', online: true },
    ]);
    assert.deepEqual(joined.messages, []);
    assert.equal(joined.more, false);
    await rita.rec.waitFor('room:member', (m) => m.room === 'roomone' && m.name === 'Sam' && m.joined === true, {
      from,
      ms: MS,
    });

    const list = await ask(sam, 'room:list', {});
    assertOk(list, 'room:list');
    const entry = list.rooms.find((r) => r.name === 'roomone');
    assert.ok(entry, JSON.stringify(list));
    assert.equal(entry.members, 2);
    assert.equal(entry.online, 2);
    assert.ok(list.rooms.some((r) => r.name === 'general'));

    const members = await ask(rita, 'room:members', { room: 'roomone' });
    assertOk(members, 'room:members');
    assert.equal(members.total, 2);
    assert.deepEqual(members.members.map((m) => m.name), ['Rita', 'Sam']);

    const leaveFrom = rita.rec.mark();
    const left = await ask(sam, 'room:leave', { room: 'roomone' });
    assertOk(left, 'room:leave');
    assert.equal(left.room, 'roomone');
    await rita.rec.waitFor('room:member', (m) => m.room === 'roomone' && m.name === 'Sam' && m.joined === false, {
      from: leaveFrom,
      ms: MS,
    });
    const after = await ask(rita, 'room:members', { room: 'roomone' });
    assert.equal(after.total, 1);
    assertError(await ask(sam, 'room:leave', { room: 'roomone' }), 'not_in_room');
    assertError(await ask(sam, 'message:send', { room: 'roomone', text: 'hi' }), 'not_in_room');
    assert.ok((await ask(sam, 'room:leave', { room: 'general' })).error, 'general cannot be left');
  });

  it('messages: acks, seqs, message:new, clientId resends, history paging, join since and sync', async () => {
    const { socket: mia } = await join(server.url, { name: 'Mia' }, sockets);
    const { socket: ned } = await join(server.url, { name: 'Ned' }, sockets);
    assertOk(await ask(mia, 'room:create', { room: 'msgs' }), 'create');
    assertOk(await ask(ned, 'room:join', { room: 'msgs' }), 'join');

    const nedFrom = ned.rec.mark();
    const miaFrom = mia.rec.mark();
    const acks = [];
    for (let i = 1; i <= 3; i++) {
      const ack = await ask(mia, 'message:send', { room: 'msgs', text: `m${i}`, clientId: `c-${i}` });
      assertOk(ack, `send ${i}`);
      assert.equal(ack.seq, i);
      assert.equal(typeof ack.id, 'string');
      assert.ok(Number.isInteger(ack.ts) && Math.abs(ack.ts - Date.now()) < 60_000, `ts ${ack.ts}`);
      acks.push(ack);
    }
    assert.equal(new Set(acks.map((a) => a.id)).size, 3);
    const newIn = (s, from) => s.rec.events.slice(from).filter((e) => e.event === 'message:new' && e.args[0].room === 'msgs');
    await ned.rec.until(() => newIn(ned, nedFrom).length >= 3, 'three message:new at Ned', MS);
    await mia.rec.until(() => newIn(mia, miaFrom).length >= 3, 'three message:new at Mia', MS);
    const expected = acks.map((a, i) => ({
      id: a.id,
      room: 'msgs',
      seq: i + 1,
      ts: a.ts,
      from: 'Mia',
      text: `m${i + 1}`,
      clientId: `c-${i + 1}`,
    }));
    assert.deepEqual(newIn(ned, nedFrom).map((e) => e.args[0]), expected);
    assert.deepEqual(newIn(mia, miaFrom).map((e) => e.args[0]), expected);

    // A resend with a used clientId: the original id and seq, nothing stored or broadcast.
    const resent = await ask(mia, 'message:send', { room: 'msgs', text: 'm2', clientId: 'c-2' });
    assertOk(resent, 'resend');
    assert.equal(resent.id, acks[1].id);
    assert.equal(resent.seq, 2);
    const m4 = await ask(mia, 'message:send', { room: 'msgs', text: 'm4' });
    assert.equal(m4.seq, 4);
    const m5 = await ask(mia, 'message:send', { room: 'msgs', text: 'm5' });
    assert.equal(m5.seq, 5);
    await ned.rec.until(() => newIn(ned, nedFrom).some((e) => e.args[0].seq === 5), 'seq 5 at Ned', MS);
    const nedSeqs = newIn(ned, nedFrom).map((e) => e.args[0].seq);
    assert.deepEqual(nedSeqs, [1, 2, 3, 4, 5], 'no second message:new for the resend');
    assert.equal(newIn(ned, nedFrom)[3].args[0].clientId, null);

    // Sending errors.
    assertError(await ask(mia, 'message:send', { room: 'msgs', text: '' }), 'invalid_message');
    assertError(await ask(mia, 'message:send', { room: 'msgs', text: 'x'.repeat(4001) }), 'message_too_long');
    assertOk(await ask(mia, 'message:send', { room: 'general', text: 'y'.repeat(4000) }), 'exactly 4000');
    assertError(await ask(mia, 'message:send', { room: 'msgs', text: 5 }), 'invalid_argument');
    assertError(await ask(mia, 'message:send', 'just text'), 'invalid_argument');
    assertError(await ask(mia, 'message:send', { room: 'no-such-room', text: 'hi' }), 'unknown_room');
    assertError(await ask(mia, 'message:send', { room: 'bad room', text: 'hi' }), 'invalid_room');

    // History paging, oldest first within a page.
    const texts = (msgs) => msgs.map((m) => m.text);
    let page = await ask(ned, 'message:history', { room: 'msgs', limit: 2 });
    assertOk(page, 'history');
    assert.deepEqual(texts(page.messages), ['m4', 'm5']);
    assert.equal(page.more, true);
    page = await ask(ned, 'message:history', { room: 'msgs', before: 4, limit: 2 });
    assert.deepEqual(texts(page.messages), ['m2', 'm3']);
    assert.equal(page.more, true);
    page = await ask(ned, 'message:history', { room: 'msgs', before: 2, limit: 2 });
    assert.deepEqual(texts(page.messages), ['m1']);
    assert.equal(page.more, false);
    page = await ask(ned, 'message:history', { room: 'msgs' });
    assert.deepEqual(page.messages.map((m) => m.seq), [1, 2, 3, 4, 5]);
    assert.deepEqual(page.messages[0], expected[0]);
    assert.equal(page.more, false);
    assertError(await ask(ned, 'message:history', { room: 'nope' }), 'unknown_room');

    // room:join: latest messages, or those after `since`.
    const { socket: ola } = await join(server.url, { name: 'Ola' }, sockets);
    const latest = await ask(ola, 'room:join', { room: 'msgs', limit: 2 });
    assertOk(latest, 'join latest');
    assert.deepEqual(texts(latest.messages), ['m4', 'm5']);
    assert.equal(latest.more, true);
    const { socket: pia } = await join(server.url, { name: 'Pia' }, sockets);
    const since = await ask(pia, 'room:join', { room: 'msgs', since: 3 });
    assertOk(since, 'join since');
    assert.deepEqual(since.messages.map((m) => m.seq), [4, 5]);
    assert.equal(since.more, false);

    // sync: exactly the missed messages.
    const synced = await ask(ned, 'sync', { rooms: { msgs: 2 }, direct: { Nobody: 0 } });
    assertOk(synced, 'sync');
    assert.deepEqual(synced.rooms.msgs.map((m) => m.seq), [3, 4, 5]);
    assert.deepEqual(synced.rooms.msgs[0], expected[2]);
    assert.deepEqual(synced.unknown, ['Nobody']);
    assert.equal(synced.more, false);
    const upToDate = await ask(ned, 'sync', { rooms: { msgs: 5 } });
    assert.deepEqual(upToDate.rooms.msgs, []);
    assertError(await ask(ned, 'sync', 'everything'), 'invalid_argument');
  });

  it('direct messages: dm:send, dm:new to both users, dm:history, unknown_user', async () => {
    const { socket: dee } = await join(server.url, { name: 'Dee' }, sockets);
    const { socket: eli, session } = await join(server.url, { name: 'Eli' }, sockets);
    const { socket: eliTab } = await join(server.url, { token: session.token }, sockets);
    const marks = [dee, eli, eliTab].map((s) => s.rec.mark());
    const ack1 = await ask(dee, 'dm:send', { to: 'eli', text: 'psst', clientId: 'd-1' });
    assertOk(ack1, 'dm:send');
    assert.equal(ack1.seq, 1);
    const ack2 = await ask(eli, 'dm:send', { to: 'Dee', text: 'yes?' });
    assert.equal(ack2.seq, 2);
    const dmsAt = (s, i) => s.rec.events.slice(marks[i]).filter((e) => e.event === 'dm:new').map((e) => e.args[0]);
    const sockets3 = [dee, eli, eliTab];
    for (const [i, s] of sockets3.entries()) {
      await s.rec.until(() => dmsAt(s, i).length >= 2, 'two dm:new', MS);
      const dms = dmsAt(s, i);
      assert.deepEqual(dms.map((m) => [m.seq, m.from, m.text]), [
        [1, 'Dee', 'psst'],
        [2, 'Eli', 'yes?'],
      ]);
      assert.equal(dms[0].id, ack1.id);
      assert.equal(dms[0].with, s === dee ? 'Eli' : 'Dee');
      assert.equal(dms[0].room, undefined);
      assert.equal(dms[0].clientId, 'd-1');
    }
    const history = await ask(eli, 'dm:history', { with: 'DEE', limit: 1 });
    assertOk(history, 'dm:history');
    assert.deepEqual(history.messages.map((m) => m.text), ['yes?']);
    assert.equal(history.more, true);
    const older = await ask(eli, 'dm:history', { with: 'Dee', before: 2 });
    assert.deepEqual(older.messages.map((m) => m.text), ['psst']);
    assert.equal(older.more, false);

    const synced = await ask(eli, 'sync', { rooms: {}, direct: { Dee: 1 } });
    assertOk(synced, 'sync direct');
    assert.deepEqual(synced.direct.Dee.map((m) => m.text), ['yes?']);

    assertError(await ask(dee, 'dm:send', { to: 'ghost-user', text: 'hi' }), 'unknown_user');
    assertError(await ask(dee, 'dm:history', { with: 'ghost-user' }), 'unknown_user');
    assertError(await ask(dee, 'dm:send', { to: 'Eli', text: '' }), 'invalid_message');
    assertError(await ask(dee, 'dm:send', { to: 'Eli' }), 'invalid_argument');
  });

  it('typing reaches the room’s other sockets', async () => {
    const { socket: tia } = await join(server.url, { name: 'Tia' }, sockets);
    const { socket: uma } = await join(server.url, { name: 'Uma' }, sockets);
    assertOk(await ask(tia, 'room:create', { room: 'typers' }), 'create');
    assertOk(await ask(uma, 'room:join', { room: 'typers' }), 'join');
    const from = tia.rec.mark();
    // Volatile: sent again until one arrives.
    const got = tia.rec.waitFor('typing', (t) => t.room === 'typers' && t.name === 'Uma', { from, ms: MS });
    let arrived = false;
    got.then(() => (arrived = true), () => {});
    for (let i = 0; i < 5 && !arrived; i++) {
      uma.emit('typing', { room: 'typers', typing: true });
      await withTimeout(got, 2_000, 'typing').catch(() => {});
    }
    const [typing] = await got;
    assert.deepEqual(typing, { room: 'typers', name: 'Uma', typing: true });
    assert.equal(uma.rec.of('typing').filter((e) => e.args[0].name === 'Uma').length, 0, 'not to the typer');
  });

  it('tutorial sockets: name_required, not_supported, already_named, name_taken', async () => {
    const anon = dial(server.url);
    sockets.push(anon);
    await connected(anon, MS);
    assertError(await ask(anon, 'room:list', {}), 'name_required');
    assertError(await ask(anon, 'message:send', { room: 'general', text: 'hi' }), 'name_required');

    const { socket: vic } = await join(server.url, { name: 'Vic' }, sockets);
    // A tutorial name held by a full user is name_taken; as a full connection too.
    let from = anon.rec.mark();
    anon.emit('addUser', 'vic');
    const [, takenReason] = await anon.rec.waitFor('updateChat', (s) => s === 'Server', { from, ms: MS });
    assert.match(takenReason, /already taken/);

    from = anon.rec.mark();
    anon.emit('addUser', 'Tutti');
    await anon.rec.waitFor('updateChat', (s, t) => s === 'Server' && t === 'you have connected', { from, ms: MS });
    assert.equal((await refusal(server.url, { name: 'tutti' }, sockets)).code, 'name_taken');
    assertError(await ask(anon, 'dm:send', { to: 'Vic', text: 'hi' }), 'not_supported');
    assertError(await ask(vic, 'dm:send', { to: 'Tutti', text: 'hi' }), 'not_supported');
    assertError(await ask(anon, 'room:create', { room: 'tutroom' }), 'not_supported');

    // already_named: the tutorial protocol has no acks, so only the reason is visible.
    from = vic.rec.mark();
    vic.emit('addUser', 'Someone');
    const [, reason] = await vic.rec.waitFor('updateChat', (s) => s === 'Server', { from, ms: MS });
    assert.equal(reason, 'you are already in the chat as Vic');
  });
});

describe('full protocol: rate limit', () => {
  let server;
  const sockets = [];
  before(async () => {
    server = await startChinwag(['--max-messages-per-second', '2']);
  });
  after(async () => {
    closeAll(sockets);
    if (server) await server.stop();
  });

  it('refuses messages over the per-connection rate with rate_limited', async () => {
    const { socket } = await join(server.url, { name: 'Rapid' }, sockets);
    const acks = await Promise.all(
      Array.from({ length: 12 }, (_, i) => ask(socket, 'message:send', { room: 'general', text: `r${i}` })),
    );
    const limited = acks.filter((a) => a.error);
    assert.ok(acks[0].ok, JSON.stringify(acks[0]));
    assert.ok(limited.length > 0, JSON.stringify(acks));
    for (const a of limited) assertError(a, 'rate_limited');
    assert.ok(acks.filter((a) => a.ok).length <= 6, JSON.stringify(acks));
  });
});

describe('full protocol: connection-state recovery', () => {
  let server;
  const sockets = [];
  before(async () => {
    server = await startChinwag(['--connection-state-recovery']);
  });
  after(async () => {
    closeAll(sockets);
    if (server) await server.stop();
  });

  it('the official client resumes with recovered === true and gets the missed message:new in order', async () => {
    const { socket: rex } = await join(server.url, { name: 'Rex' }, sockets, {
      reconnection: true,
      reconnectionDelay: 1_500,
      reconnectionDelayMax: 1_500,
      randomizationFactor: 0,
    });
    const { socket: sue } = await join(server.url, { name: 'Sue' }, sockets);
    assertOk(await ask(rex, 'room:create', { room: 'rec' }), 'create');
    assertOk(await ask(sue, 'room:join', { room: 'rec' }), 'join');
    const first = await ask(sue, 'message:send', { room: 'rec', text: 'before' });
    const [seen, offset] = await rex.rec.waitFor('message:new', (m) => m.id === first.id, { ms: MS });
    assert.equal(seen.text, 'before');
    assert.equal(typeof offset, 'string', 'an offset as last argument');
    assert.equal(rex.recovered, false);

    const gone = nextEvent(rex, 'disconnect', MS);
    rex.io.engine.close();
    await gone;
    const from = rex.rec.mark();
    const missed = [];
    for (let i = 1; i <= 3; i++) {
      const ack = await ask(sue, 'message:send', { room: 'rec', text: `missed ${i}` });
      assertOk(ack, 'send while away');
      missed.push(ack);
    }
    await nextEvent(rex, 'connect', 30_000);
    assert.equal(rex.recovered, true);
    await rex.rec.until(
      (events) => events.slice(from).filter((e) => e.event === 'message:new' && e.args[0].room === 'rec').length >= 3,
      'the missed messages',
      MS,
    );
    const got = rex.rec.events
      .slice(from)
      .filter((e) => e.event === 'message:new' && e.args[0].room === 'rec')
      .map((e) => e.args[0]);
    assert.deepEqual(got.map((m) => m.id), missed.map((a) => a.id));
    assert.deepEqual(got.map((m) => m.text), ['missed 1', 'missed 2', 'missed 3']);
    assert.deepEqual(got.map((m) => m.seq), [2, 3, 4]);
    assert.equal(rex.rec.events.slice(from).filter((e) => e.event === 'session').length, 0, 'no new session');
    // Still the same user in the same room.
    const ack = await ask(rex, 'message:send', { room: 'rec', text: 'back' });
    assertOk(ack, 'send after recovery');
    assert.equal(ack.seq, 5);
  });
});
