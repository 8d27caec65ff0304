// chinwag's web UI on the full protocol (PROTOCOL.md section 2).
//
// # Layout
// - state: conversations (rooms and direct messages), the outbox, presence, persistence.
// - connection: connect with a name or the stored token, `session`, catch-up, events.
// - sending: the outbox (pending until acked, retry with the same clientId).
// - rendering: sidebar, header, messages, members, typing, banner, title.
// - input: composer, dialogs, panels, keyboard.
//
// Delivery rules: a message is sent only while the session is back (after `session` and the
// catch-up that follows it), keeps its clientId across retries so the server stores it once,
// and leaves the outbox only on the server's answer. All user text is rendered as text.

import { io, type Socket } from 'socket.io-client';
import './style.css';
import { byId, h } from './dom';
import { fold, mentions, richText } from './text';

// ---------------------------------------------------------------- state

interface Message {
  id: string;
  seq: number;
  ts: number;
  from: string;
  text: string;
  clientId: string | null;
  room?: string;
  with?: string;
}

type Kind = 'room' | 'dm';

interface Conversation {
  key: string;
  kind: Kind;
  /** Room name, or the other user's name. */
  name: string;
  /** Confirmed messages, by ascending seq, without duplicates. */
  messages: Message[];
  loaded: boolean;
  /** Older messages exist on the server. */
  more: boolean;
  loadingOlder: boolean;
  unread: number;
  /** Messages that arrived while the reader was scrolled up. */
  unseen: number;
  /** The first seq that was unread when the conversation was opened (an "unread" divider). */
  unreadFrom: number | null;
  /** Room members (name -> online) and their total; null until fetched. */
  members: Map<string, boolean> | null;
  memberTotal: number;
  /** Who is typing, with when their notice expires. */
  typing: Map<string, number>;
  /** Messages may be missing here: catching up failed and has not succeeded since. */
  gap: boolean;
  historyError: string;
  /** Why the last message was refused (shown under the composer). */
  sendError: string;
}

type OutState = 'queued' | 'sending' | 'failed';

interface Outgoing {
  clientId: string;
  key: string;
  text: string;
  ts: number;
  state: OutState;
  error: string;
  /** Bumped per attempt: answers to an older attempt are ignored. */
  attempt: number;
}

interface ErrorBody {
  code: string;
  message: string;
}

type Answer = { ok: true; [key: string]: unknown } | { error: ErrorBody };

const ACK_TIMEOUT_MS = 10_000;
const HISTORY_PAGE = 50;
const TYPING_SEND_EVERY_MS = 3_000;
const TYPING_IDLE_MS = 4_000;
const TYPING_SHOW_MS = 6_000;
const GROUP_GAP_MS = 5 * 60_000;
/** Refusals that a retry cannot fix: the draft goes back to the composer instead. */
const PERMANENT = new Set([
  'message_too_long',
  'invalid_message',
  'invalid_argument',
  'not_in_room',
  'unknown_room',
  'unknown_user',
  'not_supported',
  'invalid_room',
]);

const STORE = {
  token: 'chinwag.token',
  name: 'chinwag.name',
  dms: 'chinwag.dms',
  outbox: 'chinwag.outbox',
  active: 'chinwag.active',
  read: 'chinwag.read',
  draft: (key: string) => `chinwag.draft.${key}`,
};

const conversations = new Map<string, Conversation>();
const outbox: Outgoing[] = [];
const presence = new Map<string, boolean>();
let me = '';
let messageChars = 0;
let active = '';
let socket: Socket | null = null;
/** The session is back and caught up: sending is allowed. */
let ready = false;
let hadSession = false;
let catchUpFailed = false;

/** Per browser (localStorage): token, name, drafts, read marks. Per tab (sessionStorage, it
 * survives a reload): the outbox, so two tabs never overwrite each other's unsent messages. */
function storage(key: string): Storage {
  return key === STORE.outbox ? sessionStorage : localStorage;
}

function load<T>(key: string, fallback: T): T {
  try {
    const raw = storage(key).getItem(key);
    return raw === null ? fallback : (JSON.parse(raw) as T);
  } catch {
    return fallback;
  }
}

function save(key: string, value: unknown): void {
  try {
    if (value === null || value === '') storage(key).removeItem(key);
    else storage(key).setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the page still works, it only forgets on reload.
  }
}

const roomKey = (room: string) => `r:${room}`;
const dmKey = (name: string) => `d:${fold(name)}`;

function conversation(kind: Kind, name: string): Conversation {
  const key = kind === 'room' ? roomKey(name) : dmKey(name);
  let conv = conversations.get(key);
  if (!conv) {
    conv = {
      key,
      kind,
      name,
      messages: [],
      loaded: false,
      more: false,
      loadingOlder: false,
      unread: 0,
      unseen: 0,
      unreadFrom: null,
      members: null,
      memberTotal: 0,
      typing: new Map(),
      gap: false,
      historyError: '',
      sendError: '',
    };
    conversations.set(key, conv);
    if (kind === 'dm') saveDms();
  }
  return conv;
}

function saveDms(): void {
  save(
    STORE.dms,
    [...conversations.values()].filter((c) => c.kind === 'dm').map((c) => c.name),
  );
}

function saveOutbox(): void {
  save(
    STORE.outbox,
    outbox.map(({ clientId, key, text, ts }) => ({ clientId, key, text, ts })),
  );
}

const lastSeq = (conv: Conversation) => conv.messages.at(-1)?.seq ?? 0;

function readMarks(): Record<string, number> {
  return load<Record<string, number>>(STORE.read, {});
}

function markRead(conv: Conversation): void {
  const marks = readMarks();
  const seq = lastSeq(conv);
  if ((marks[conv.key] ?? 0) < seq) {
    marks[conv.key] = seq;
    save(STORE.read, marks);
  }
}

/**
 * Adds messages to a conversation (dedupe by seq); returns those that were new. A message
 * from someone else in a conversation the reader is not looking at counts as unread.
 */
function insert(conv: Conversation, incoming: Message[], live: boolean): Message[] {
  const added: Message[] = [];
  for (const message of incoming) {
    const list = conv.messages;
    let at = list.length;
    while (at > 0 && list[at - 1].seq > message.seq) at--;
    if (at > 0 && list[at - 1].seq === message.seq) continue;
    list.splice(at, 0, message);
    added.push(message);
  }
  if (live) {
    const mark = readMarks()[conv.key] ?? 0;
    for (const message of added) {
      if (message.from === me || message.seq <= mark) continue;
      if (conv.key !== active || document.hidden) conv.unread++;
    }
  }
  return added;
}

// ---------------------------------------------------------------- connection

function connect(auth: { name: string } | { token: string }): void {
  socket?.close();
  const s = io({
    auth,
    // WebSocket first (one round trip less than polling then upgrading); polling if it fails.
    transports: ['websocket', 'polling'],
    tryAllTransports: true,
    reconnectionDelay: 300,
    reconnectionDelayMax: 2_000,
  });
  socket = s;

  // The member lists show who is online in general too: ask for everyone's presence (by
  // default a socket hears only about users it shares another room with). Per connection:
  // a reconnected socket is a new one.
  s.on('connect', () => {
    s.emit('presence:subscribe', {});
  });

  s.on('connect_error', (error: Error & { data?: ErrorBody }) => {
    if (s !== socket) return;
    if (s.active) {
      // The server is unreachable: the client retries by itself.
      setBanner(hadSession ? 'Offline — reconnecting…' : 'Connecting to the server…');
      return;
    }
    // Refused by the server: it will not retry.
    const code = error.data?.code ?? '';
    const message = error.data?.message ?? error.message;
    if ('token' in auth && code !== 'invalid_token') {
      // The session is fine but the server could not resume it now (e.g. `unavailable`).
      setBanner(`Could not reconnect: ${sentence(message)}`, () => connect(auth));
    } else if ('token' in auth) {
      save(STORE.token, null);
      showWelcome('Your session has expired. Pick a name to continue.');
    } else {
      showWelcome(message);
    }
  });

  s.on('disconnect', (reason) => {
    if (s !== socket) return;
    ready = false;
    for (const out of outbox) {
      if (out.state === 'sending') {
        out.state = 'queued';
        out.attempt++;
      }
    }
    if (reason !== 'io client disconnect') setBanner('Offline — reconnecting…');
    renderAll();
  });

  s.on('session', (session: {
    token: string;
    user: { name: string };
    rooms: string[];
    limits?: { messageChars?: number };
  }) => {
    if (s !== socket) return;
    save(STORE.token, session.token);
    save(STORE.name, session.user.name);
    s.auth = { token: session.token };
    me = session.user.name;
    messageChars = session.limits?.messageChars ?? 0;
    hadSession = true;
    for (const room of session.rooms) conversation('room', room);
    for (const conv of [...conversations.values()]) {
      if (conv.kind === 'room' && !session.rooms.includes(conv.name)) {
        conversations.delete(conv.key);
      }
    }
    if (!conversations.has(active)) {
      const stored = load<string>(STORE.active, '');
      active = conversations.has(stored) ? stored : roomKey('general');
    }
    showApp();
    setBanner(bannerText ? 'Reconnected — catching up…' : '');
    void catchUp(s);
  });

  s.on('message:new', (message: Message) => receive(conversation('room', message.room ?? ''), message));
  s.on('dm:new', (message: Message) => receive(conversation('dm', message.with ?? ''), message));

  s.on('room:member', ({ room, name, joined }: { room: string; name: string; joined: boolean }) => {
    const conv = conversations.get(roomKey(room));
    if (fold(name) === fold(me)) {
      // This user joined or left in another tab.
      if (joined && !conv) {
        conversation('room', room); // loaded when opened
        renderChrome();
      } else if (!joined && conv && room !== 'general') {
        conversations.delete(conv.key);
        if (active === conv.key) openConversation(roomKey('general'), false);
        else renderChrome();
      }
      if (!joined) return;
    }
    if (!conv?.members) return;
    if (joined && !conv.members.has(name)) {
      conv.members.set(name, presence.get(fold(name)) ?? true);
      conv.memberTotal++;
    } else if (!joined && conv.members.delete(name)) {
      conv.memberTotal--;
    }
    renderChrome();
  });

  s.on('presence', ({ name, online }: { name: string; online: boolean }) => {
    presence.set(fold(name), online);
    // Everyone is a member of general: a newcomer's arrival is its `presence`.
    const general = conversations.get(roomKey('general'));
    if (online && general?.members && !general.members.has(name)) {
      general.members.set(name, true);
      general.memberTotal++;
    }
    for (const conv of conversations.values()) {
      if (conv.members?.has(name)) conv.members.set(name, online);
    }
    renderChrome();
  });

  s.on('typing', ({ room, name, typing }: { room: string; name: string; typing: boolean }) => {
    const conv = conversations.get(roomKey(room));
    if (!conv || name === me) return;
    if (typing) conv.typing.set(name, Date.now() + TYPING_SHOW_MS);
    else conv.typing.delete(name);
    renderTyping();
  });
}

/** Emits with an acknowledgement; a missing answer becomes an `error` after a timeout. */
function request(event: string, payload: unknown, s: Socket | null = socket): Promise<Answer> {
  return new Promise((resolve) => {
    if (!s || !s.connected) {
      resolve({ error: { code: 'offline', message: 'not connected to the server' } });
      return;
    }
    s.timeout(ACK_TIMEOUT_MS).emit(event, payload, (timedOut: Error | null, answer: Answer) => {
      resolve(
        timedOut
          ? { error: { code: 'timeout', message: 'the server did not answer in time' } }
          : answer,
      );
    });
  });
}

/** A server message as a sentence for the page: capitalised, with a full stop. */
function sentence(message: string): string {
  const text = message.charAt(0).toUpperCase() + message.slice(1);
  return /[.!?…]$/.test(text) ? text : `${text}.`;
}

function failed(answer: Answer): answer is { error: ErrorBody } {
  return 'error' in answer;
}

/**
 * After `session`: load conversations seen for the first time, `sync` the others from their
 * last seq (repeating while the server says there is more), then open the outbox.
 */
async function catchUp(s: Socket): Promise<void> {
  catchUpFailed = false;
  const fresh = [...conversations.values()].filter((c) => !c.loaded);
  const known = [...conversations.values()].filter((c) => c.loaded);
  await Promise.all(fresh.map((conv) => loadConversation(conv, s)));

  if (known.length > 0) {
    const rooms: Record<string, number> = {};
    const direct: Record<string, number> = {};
    for (const conv of known) {
      if (conv.kind === 'room') rooms[conv.name] = lastSeq(conv);
      else direct[conv.name] = lastSeq(conv);
    }
    for (let round = 0; round < 100; round++) {
      const answer = await request('sync', { rooms, direct }, s);
      if (s !== socket) return;
      if (failed(answer)) {
        for (const conv of known) conv.gap = true;
        catchUpFailed = true;
        break;
      }
      const got = answer as unknown as {
        rooms: Record<string, Message[]>;
        direct: Record<string, Message[]>;
        unknown?: string[];
        more: boolean;
      };
      for (const [room, messages] of Object.entries(got.rooms ?? {})) {
        const conv = conversations.get(roomKey(room));
        if (!conv) continue;
        insert(conv, messages, true);
        conv.gap = false;
        rooms[room] = lastSeq(conv);
      }
      for (const [name, messages] of Object.entries(got.direct ?? {})) {
        const conv = conversations.get(dmKey(name));
        if (!conv) continue;
        insert(conv, messages, true);
        conv.gap = false;
        direct[name] = lastSeq(conv);
      }
      for (const name of got.unknown ?? []) {
        conversations.delete(dmKey(name));
        delete direct[name];
      }
      if (!got.more) break;
    }
    saveDms();
  }
  // Dropped again meanwhile: the next `session` catches up; the banner already says offline.
  if (s !== socket || !s.connected) return;
  const current = conversations.get(active);
  if (current?.kind === 'room') void refreshMembers(current);
  ready = s.connected;
  setBanner(
    catchUpFailed ? 'Some missed messages could not be loaded.' : '',
    catchUpFailed ? () => void catchUp(s) : null,
  );
  renderAll('auto');
  flushOutbox();
}

/** First load of a conversation: the latest page of history (and a room's members). */
async function loadConversation(conv: Conversation, s: Socket | null = socket): Promise<void> {
  let answer: Answer = { error: { code: 'offline', message: 'not connected to the server' } };
  // Joins count against the connection's rate: a user in hundreds of rooms waits its turn.
  for (let attempt = 0; attempt < 10; attempt++) {
    answer =
      conv.kind === 'room'
        ? await request('room:join', { room: conv.name, limit: HISTORY_PAGE }, s)
        : await request('dm:history', { with: conv.name, limit: HISTORY_PAGE }, s);
    if (!failed(answer) || answer.error.code !== 'rate_limited') break;
    await new Promise((resolve) => window.setTimeout(resolve, 1_000));
  }
  if (failed(answer)) {
    if (answer.error.code === 'unknown_user') {
      conversations.delete(conv.key);
      saveDms();
    } else {
      conv.gap = true;
      catchUpFailed = true;
    }
    return;
  }
  const got = answer as unknown as {
    messages: Message[];
    more: boolean;
    members?: { name: string; online: boolean }[];
    memberCount?: number;
  };
  insert(conv, got.messages, false);
  const mark = readMarks()[conv.key];
  if (mark !== undefined) {
    conv.unread = conv.messages.filter((m) => m.seq > mark && m.from !== me).length;
  }
  conv.more = got.more;
  conv.loaded = true;
  conv.gap = false;
  if (got.members) setMembers(conv, got.members, got.memberCount ?? got.members.length);
}

function setMembers(conv: Conversation, members: { name: string; online: boolean }[], total: number) {
  conv.members = new Map(members.map((m) => [m.name, m.online]));
  conv.memberTotal = total;
  for (const m of members) presence.set(fold(m.name), m.online);
}

async function refreshMembers(conv: Conversation): Promise<void> {
  const answer = await request('room:members', { room: conv.name });
  if (failed(answer)) return;
  const got = answer as unknown as { members: { name: string; online: boolean }[]; total: number };
  setMembers(conv, got.members, got.total);
  renderChrome();
}

/** A live message: in order it is appended; after a gap, the conversation catches up. */
function receive(conv: Conversation, message: Message): void {
  const before = lastSeq(conv);
  if (conv.loaded && before > 0 && message.seq > before + 1 && ready) {
    void fillGap(conv);
  }
  const added = insert(conv, [message], true);
  if (added.length === 0) return;
  conv.typing.delete(message.from);
  if (conv.key === active && message.from !== me) {
    announce(`${message.from}: ${message.text}`);
    if (!atBottom()) conv.unseen++;
  }
  renderAll('auto');
}

async function fillGap(conv: Conversation): Promise<void> {
  if (!conv.loaded) {
    await loadConversation(conv);
    renderAll('auto');
    return;
  }
  // Repeated while the server has more (it sends at most 1000 per answer).
  for (let round = 0; round < 100; round++) {
    const since = { [conv.name]: lastSeq(conv) };
    const answer = await request(
      'sync',
      conv.kind === 'room' ? { rooms: since, direct: {} } : { rooms: {}, direct: since },
    );
    if (failed(answer)) {
      conv.gap = true;
      break;
    }
    const got = answer as unknown as {
      rooms: Record<string, Message[]>;
      direct: Record<string, Message[]>;
      more: boolean;
    };
    const found = Object.entries(conv.kind === 'room' ? got.rooms : got.direct);
    for (const [, messages] of found) insert(conv, messages, true);
    conv.gap = false;
    if (!got.more) break;
  }
  renderAll('auto');
}

async function loadOlder(conv: Conversation): Promise<void> {
  if (conv.loadingOlder || !conv.more || !ready) return;
  conv.loadingOlder = true;
  renderHistoryStatus();
  const before = conv.messages[0]?.seq;
  const answer =
    conv.kind === 'room'
      ? await request('message:history', { room: conv.name, before, limit: HISTORY_PAGE })
      : await request('dm:history', { with: conv.name, before, limit: HISTORY_PAGE });
  conv.loadingOlder = false;
  if (failed(answer)) {
    conv.historyError = `Could not load older messages: ${answer.error.message}.`;
  } else {
    const got = answer as unknown as { messages: Message[]; more: boolean };
    insert(conv, got.messages, false);
    conv.more = got.more;
    conv.historyError = '';
  }
  if (conv.key === active) renderMessages('keep-bottom');
  renderHistoryStatus();
}

// ---------------------------------------------------------------- sending

function newClientId(): string {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return `w-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function queue(conv: Conversation, text: string): void {
  outbox.push({
    clientId: newClientId(),
    key: conv.key,
    text,
    ts: Date.now(),
    state: 'queued',
    error: '',
    attempt: 0,
  });
  saveOutbox();
  renderAll('bottom');
  flushOutbox();
}

function flushOutbox(): void {
  if (!ready) return;
  for (const out of outbox) if (out.state === 'queued') send(out);
}

function send(out: Outgoing): void {
  const conv = conversations.get(out.key);
  const s = socket;
  if (!conv || !s) return;
  out.state = 'sending';
  out.error = '';
  const attempt = ++out.attempt;
  const payload =
    conv.kind === 'room'
      ? { room: conv.name, text: out.text, clientId: out.clientId }
      : { to: conv.name, text: out.text, clientId: out.clientId };
  s.timeout(ACK_TIMEOUT_MS).emit(
    conv.kind === 'room' ? 'message:send' : 'dm:send',
    payload,
    (timedOut: Error | null, answer: Answer) => {
      if (out.attempt !== attempt || !outbox.includes(out)) return;
      if (timedOut) {
        // Lost with the connection: sent again (same clientId) once the session is back.
        if (!ready) out.state = 'queued';
        else settle(out, { code: 'timeout', message: 'no answer from the server' });
      } else if (failed(answer)) {
        settle(out, answer.error);
      } else {
        const ok = answer as unknown as { id: string; seq: number; ts: number };
        outbox.splice(outbox.indexOf(out), 1);
        saveOutbox();
        insert(conv, [{ id: ok.id, seq: ok.seq, ts: ok.ts, from: me, text: out.text, clientId: out.clientId }], true);
        if (conv.key === active) markRead(conv);
      }
      renderAll(conv.key === active ? 'bottom' : 'auto');
    },
  );
  renderAll('bottom');
}

/** A refusal: permanent ones give the text back to the composer, the rest offer a retry. */
function settle(out: Outgoing, error: ErrorBody): void {
  const conv = conversations.get(out.key);
  if (PERMANENT.has(error.code) && conv) {
    outbox.splice(outbox.indexOf(out), 1);
    saveOutbox();
    const draft = load<string>(STORE.draft(conv.key), '');
    const restored = draft ? `${out.text}\n${draft}` : out.text;
    save(STORE.draft(conv.key), restored);
    conv.sendError = sentence(error.message);
    if (conv.key === active) {
      composer.value = restored;
      resizeComposer();
      updateCounter();
    }
    return;
  }
  out.state = 'failed';
  out.error = error.message;
}

// ---------------------------------------------------------------- rendering

const welcome = byId('welcome');
const app = byId('app');
const nameForm = byId<HTMLFormElement>('name-form');
const nameInput = byId<HTMLInputElement>('name');
const nameError = byId('name-error');
const joinButton = byId<HTMLButtonElement>('join');
const banner = byId('banner');
const bannerLabel = byId('banner-text');
const bannerAction = byId<HTMLButtonElement>('banner-action');
const roomsList = byId('rooms');
const dmsList = byId('dms');
const meLabel = byId('me');
const title = byId('title');
const subtitle = byId('subtitle');
const leaveButton = byId<HTMLButtonElement>('leave');
const membersButton = byId<HTMLButtonElement>('open-members');
const menuBadge = byId('menu-badge');
const scroller = byId('scroller');
const historyStatus = byId('history-status');
const list = byId('messages');
const newMessages = byId<HTMLButtonElement>('new-messages');
const typingLine = byId('typing');
const composerForm = byId<HTMLFormElement>('composer');
const composer = byId<HTMLTextAreaElement>('text');
const composerError = byId('composer-error');
const counter = byId('counter');
const membersList = byId('members');
const memberCount = byId('member-count');
const scrim = byId('scrim');
const announcer = byId('announce');

let bannerText = '';
let bannerRetry: (() => void) | null = null;

/** The banner at the top; with `retry`, a warning with a Retry button that calls it. */
function setBanner(text: string, retry: (() => void) | null = null): void {
  bannerText = text;
  bannerRetry = retry;
  bannerLabel.textContent = text;
  bannerAction.hidden = !retry;
  banner.hidden = text === '';
  banner.classList.toggle('warn', retry !== null);
}

function showWelcome(error = ''): void {
  socket?.close();
  socket = null;
  ready = false;
  hadSession = false;
  setBanner('');
  app.hidden = true;
  welcome.hidden = false;
  joinButton.disabled = false;
  nameError.textContent = error ? sentence(error) : '';
  nameInput.setAttribute('aria-invalid', error ? 'true' : 'false');
  if (!nameInput.value) nameInput.value = load<string>(STORE.name, '');
  nameInput.focus();
}

function showApp(): void {
  welcome.hidden = true;
  if (app.hidden) {
    app.hidden = false;
    openConversation(active, false);
  }
}

function announce(text: string): void {
  announcer.textContent = text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

const byName = (a: Conversation, b: Conversation) =>
  a.name === 'general' ? -1 : b.name === 'general' ? 1 : a.name.localeCompare(b.name);

function renderAll(mode: ScrollMode = 'auto'): void {
  if (app.hidden) return;
  renderChrome();
  renderMessages(mode);
  renderComposerState();
}

/** Everything but the message list: sidebar, header, members, typing, title. */
function renderChrome(): void {
  meLabel.textContent = me;
  // Lists are rebuilt: keep keyboard focus on the same entry.
  const focused = document.activeElement as HTMLElement | null;
  const focusedKey = focused?.closest('#sidebar, #members') ? (focused.dataset.key ?? null) : null;
  const convs = [...conversations.values()].sort(byName);
  roomsList.replaceChildren(...convs.filter((c) => c.kind === 'room').map(sidebarItem));
  dmsList.replaceChildren(...convs.filter((c) => c.kind === 'dm').map(sidebarItem));
  if (!dmsList.children.length) {
    dmsList.append(h('li', { class: 'empty muted' }, 'Pick someone in Members to start one.'));
  }

  const conv = conversations.get(active);
  if (conv) {
    title.textContent = conv.kind === 'room' ? `# ${conv.name}` : conv.name;
    if (conv.kind === 'room') {
      const online = conv.members ? [...conv.members.values()].filter(Boolean).length : 0;
      subtitle.textContent = conv.members
        ? `${plural(conv.memberTotal, 'member')}, ${online} online`
        : '';
    } else {
      subtitle.textContent = presence.get(fold(conv.name)) ? 'online' : 'away';
    }
    leaveButton.hidden = conv.kind !== 'room' || conv.name === 'general';
    membersButton.hidden = conv.kind !== 'room';
  }
  renderMembers(conv);
  renderTyping();
  if (focusedKey !== null && document.activeElement !== focused) {
    document.querySelector<HTMLElement>(`[data-key="${CSS.escape(focusedKey)}"]`)?.focus();
  }

  const total = [...conversations.values()].reduce((sum, c) => sum + c.unread, 0);
  menuBadge.textContent = String(total);
  menuBadge.hidden = total === 0;
  const where = conv ? (conv.kind === 'room' ? `#${conv.name}` : conv.name) : '';
  document.title = `${total ? `(${total}) ` : ''}${where ? `${where} · ` : ''}chinwag`;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function sidebarItem(conv: Conversation): HTMLLIElement {
  const current = conv.key === active;
  const online = presence.get(fold(conv.name));
  const label = conv.kind === 'room' ? conv.name : conv.name;
  return h(
    'li',
    null,
    h(
      'button',
      {
        type: 'button',
        class: `conv${conv.unread ? ' has-unread' : ''}`,
        'aria-current': current ? 'page' : false,
        'data-key': conv.key,
        on: { click: () => openConversation(conv.key, true) },
      },
      conv.kind === 'room'
        ? h('span', { class: 'hash', 'aria-hidden': 'true' }, '#')
        : h('span', { class: `dot${online ? ' online' : ''}`, 'aria-hidden': 'true' }),
      h('span', { class: 'conv-name' }, label),
      conv.unread
        ? h('span', { class: 'badge', 'aria-label': `${conv.unread} unread` }, String(conv.unread))
        : null,
    ),
  );
}

function renderMembers(conv: Conversation | undefined): void {
  if (!conv || conv.kind !== 'room' || !conv.members) {
    membersList.replaceChildren();
    memberCount.textContent = '';
    return;
  }
  const members = [...conv.members.entries()].sort(
    ([a, aOn], [b, bOn]) => Number(bOn) - Number(aOn) || a.localeCompare(b),
  );
  memberCount.textContent = String(conv.memberTotal);
  membersList.replaceChildren(
    ...members.map(([name, online]) =>
      h(
        'li',
        null,
        h(
          'button',
          {
            type: 'button',
            class: 'member',
            'data-key': `m:${name}`,
            disabled: name === me,
            title: name === me ? 'you' : `Message ${name}`,
            on: { click: () => openDm(name) },
          },
          h('span', { class: `dot${online ? ' online' : ''}`, 'aria-hidden': 'true' }),
          h('span', { class: 'member-name' }, name),
          name === me ? h('span', { class: 'muted' }, ' (you)') : null,
          h('span', { class: 'visually-hidden' }, online ? ', online' : ', away'),
        ),
      ),
    ),
  );
}

function renderTyping(): void {
  const conv = conversations.get(active);
  const now = Date.now();
  const names: string[] = [];
  for (const [name, until] of conv?.typing ?? []) {
    if (until > now) names.push(name);
    else conv?.typing.delete(name);
  }
  typingLine.textContent =
    names.length === 0
      ? ''
      : names.length === 1
        ? `${names[0]} is typing…`
        : names.length <= 3
          ? `${names.join(', ')} are typing…`
          : 'Several people are typing…';
}

type ScrollMode = 'auto' | 'bottom' | 'keep-bottom';

const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric', year: 'numeric' });
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function dayLabel(ts: number): string {
  const day = new Date(ts).toDateString();
  const today = new Date();
  if (day === today.toDateString()) return 'Today';
  if (day === new Date(today.getTime() - 86_400_000).toDateString()) return 'Yesterday';
  return dayFormat.format(ts);
}

function atBottom(): boolean {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
}

/** Rebuilds the message list, keeping the reader's place unless told otherwise. */
function renderMessages(mode: ScrollMode): void {
  const conv = conversations.get(active);
  const wasAtBottom = atBottom();
  const oldTop = scroller.scrollTop;
  const oldHeight = scroller.scrollHeight;

  const items: HTMLElement[] = [];
  let previous = null as { from: string; ts: number; day: string } | null;
  const pending = outbox.filter((o) => o.key === active);
  const rows: (Message | Outgoing)[] = [...(conv?.messages ?? []), ...pending];
  for (const row of rows) {
    const day = new Date(row.ts).toDateString();
    const from = 'from' in row ? row.from : me;
    if (previous?.day !== day) {
      items.push(h('li', { class: 'day', role: 'separator' }, h('span', null, dayLabel(row.ts))));
      previous = null;
    }
    if ('seq' in row && conv?.unreadFrom !== null && row.seq === conv?.unreadFrom) {
      items.push(h('li', { class: 'unread-divider', role: 'separator' }, h('span', null, 'New')));
      previous = null;
    }
    const first = !previous || previous.from !== from || row.ts - previous.ts > GROUP_GAP_MS;
    items.push(cachedItem(row, first));
    previous = { from, ts: row.ts, day };
  }
  if (conv?.gap) {
    items.push(
      h(
        'li',
        { class: 'gap', role: 'note' },
        'Some messages may be missing here. ',
        h('button', { type: 'button', class: 'link', on: { click: () => void fillGap(conv) } }, 'Load them'),
      ),
    );
  }
  if (rows.length === 0 && conv?.loaded) {
    items.push(h('li', { class: 'empty muted' }, 'No messages yet. Say hello!'));
  }
  list.replaceChildren(...items);

  if (mode === 'bottom' || (mode === 'auto' && wasAtBottom)) {
    scroller.scrollTop = scroller.scrollHeight;
  } else if (mode === 'keep-bottom') {
    scroller.scrollTop = oldTop + (scroller.scrollHeight - oldHeight);
  } else {
    scroller.scrollTop = oldTop;
  }
  if (conv) {
    const bottom = atBottom();
    if (bottom && !document.hidden) {
      conv.unseen = 0;
      conv.unread = 0;
      markRead(conv);
    }
    newMessages.hidden = bottom || conv.unseen === 0;
    newMessages.textContent = `${plural(conv.unseen, 'new message')} ↓`;
    renderHistoryStatus();
    // Not enough to scroll: fetch older ones right away.
    if (scroller.scrollHeight <= scroller.clientHeight && conv.more) void loadOlder(conv);
  }
}

/** Rendered confirmed messages, reused while their grouping is unchanged. */
const rendered = new WeakMap<Message, { first: boolean; item: HTMLLIElement }>();

function cachedItem(row: Message | Outgoing, first: boolean): HTMLLIElement {
  if (!('seq' in row)) return messageItem(row, first);
  const cached = rendered.get(row);
  if (cached?.first === first) return cached.item;
  const item = messageItem(row, first);
  rendered.set(row, { first, item });
  return item;
}

function messageItem(row: Message | Outgoing, first: boolean): HTMLLIElement {
  const outgoing = !('seq' in row);
  const from = outgoing ? me : row.from;
  const mine = from === me;
  const classes = ['msg'];
  if (first) classes.push('first');
  if (mine) classes.push('mine');
  if (!outgoing && !mine && mentions(row.text, me)) classes.push('mentioned');
  if (outgoing) classes.push(row.state === 'failed' ? 'failed' : 'pending');
  const time = h('time', { datetime: new Date(row.ts).toISOString(), title: fullFormat.format(row.ts) }, timeFormat.format(row.ts));
  return h(
    'li',
    { class: classes.join(' '), 'data-seq': outgoing ? false : row.seq, 'data-client-id': row.clientId ?? false },
    first ? avatar(from) : null,
    first ? h('div', { class: 'meta' }, h('span', { class: 'from' }, from), time) : h('span', { class: 'side-time' }, time),
    h('div', { class: 'body' }, ...richText(row.text, me)),
    outgoing ? outgoingStatus(row) : null,
  );
}

/** A round badge with the name's initial, in one of eight colours picked by the name. */
function avatar(name: string): HTMLElement {
  let hash = 0;
  for (const char of fold(name)) hash = (hash * 31 + (char.codePointAt(0) ?? 0)) >>> 0;
  const initial = [...name][0]?.toUpperCase() ?? '?';
  return h('span', { class: `avatar av-${hash % 8}`, 'aria-hidden': 'true' }, initial);
}

function outgoingStatus(out: Outgoing): HTMLElement {
  if (out.state === 'failed') {
    return h(
      'div',
      { class: 'status failed', role: 'alert' },
      `Not sent: ${out.error}. `,
      h('button', { type: 'button', class: 'link retry', on: { click: () => retry(out) } }, 'Retry'),
      ' · ',
      h('button', { type: 'button', class: 'link discard', on: { click: () => discard(out) } }, 'Discard'),
    );
  }
  return h('div', { class: 'status' }, ready ? 'Sending…' : 'Waiting for the connection…');
}

function retry(out: Outgoing): void {
  out.state = 'queued';
  out.error = '';
  flushOutbox();
  renderAll();
}

function discard(out: Outgoing): void {
  const at = outbox.indexOf(out);
  if (at >= 0) outbox.splice(at, 1);
  saveOutbox();
  renderAll();
}

function renderHistoryStatus(): void {
  const conv = conversations.get(active);
  historyStatus.textContent = !conv
    ? ''
    : conv.historyError
      ? conv.historyError
      : conv.loadingOlder
        ? 'Loading older messages…'
        : conv.loaded && !conv.more && conv.messages.length > 0
          ? conv.kind === 'room'
            ? `This is the beginning of #${conv.name}.`
            : `This is the beginning of your conversation with ${conv.name}.`
          : '';
}

function renderComposerState(): void {
  const conv = conversations.get(active);
  composerError.textContent = conv?.sendError ?? '';
  composer.placeholder = conv
    ? conv.kind === 'room'
      ? `Message #${conv.name}`
      : `Message ${conv.name}`
    : 'Write a message';
}

// ---------------------------------------------------------------- input

function openConversation(key: string, focus: boolean): void {
  const conv = conversations.get(key) ?? conversations.get(roomKey('general'));
  if (!conv) return;
  const previous = conversations.get(active);
  if (previous && previous.key !== conv.key) {
    previous.sendError = '';
    sendTyping(false);
  }
  active = conv.key;
  save(STORE.active, active);
  const mark = readMarks()[conv.key] ?? 0;
  conv.unreadFrom = conv.unread ? (conv.messages.find((m) => m.seq > mark && m.from !== me)?.seq ?? null) : null;
  conv.unseen = 0;
  composer.value = load<string>(STORE.draft(conv.key), '');
  resizeComposer();
  updateCounter();
  closePanels();
  if (!conv.loaded && ready) {
    void loadConversation(conv).then(() => renderAll('bottom'));
  } else if (conv.kind === 'room' && ready) {
    void refreshMembers(conv);
  }
  renderAll('bottom');
  const divider = list.querySelector('.unread-divider');
  if (divider) divider.scrollIntoView({ block: 'center' });
  if (focus && !matchMedia('(max-width: 760px)').matches) composer.focus();
}

async function openDm(name: string): Promise<void> {
  if (fold(name) === fold(me)) return;
  const conv = conversation('dm', name);
  if (ready && !conv.loaded) await loadConversation(conv);
  if (!conversations.has(conv.key)) return;
  openConversation(conv.key, true);
}

function closePanels(): void {
  app.classList.remove('sidebar-open', 'members-open');
  scrim.hidden = true;
  membersButton.setAttribute('aria-expanded', 'false');
}

function resizeComposer(): void {
  composer.style.height = 'auto';
  composer.style.height = `${Math.min(composer.scrollHeight, 200)}px`;
}

function updateCounter(): void {
  const length = [...composer.value].length;
  const over = messageChars > 0 && length > messageChars;
  counter.textContent =
    messageChars > 0 && length > messageChars * 0.9
      ? `${length.toLocaleString()} / ${messageChars.toLocaleString()}`
      : '';
  counter.classList.toggle('over', over);
}

let typingSentAt = 0;
let typingTimer = 0;

function sendTyping(typing: boolean): void {
  const conv = conversations.get(active);
  if (!conv || conv.kind !== 'room' || !ready || !socket) return;
  if (typing) {
    if (Date.now() - typingSentAt < TYPING_SEND_EVERY_MS) return;
    typingSentAt = Date.now();
  } else {
    if (typingSentAt === 0) return;
    typingSentAt = 0;
  }
  socket.volatile.emit('typing', { room: conv.name, typing });
}

nameForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = nameInput.value.trim();
  if (!name) {
    nameError.textContent = 'Please enter a name.';
    nameInput.focus();
    return;
  }
  nameError.textContent = '';
  joinButton.disabled = true;
  connect({ name });
});
nameInput.addEventListener('input', () => {
  nameError.textContent = '';
  nameInput.setAttribute('aria-invalid', 'false');
});

composerForm.addEventListener('submit', (event) => {
  event.preventDefault();
  submitComposer();
});

function submitComposer(): void {
  const conv = conversations.get(active);
  const text = composer.value;
  if (!conv || text.trim() === '') return;
  conv.sendError = '';
  composer.value = '';
  save(STORE.draft(conv.key), null);
  resizeComposer();
  updateCounter();
  sendTyping(false);
  queue(conv, text);
}

composer.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submitComposer();
  }
});
composer.addEventListener('input', () => {
  const conv = conversations.get(active);
  if (conv) {
    save(STORE.draft(conv.key), composer.value);
    if (conv.sendError) {
      conv.sendError = '';
      renderComposerState();
    }
  }
  resizeComposer();
  updateCounter();
  window.clearTimeout(typingTimer);
  if (composer.value) {
    sendTyping(true);
    typingTimer = window.setTimeout(() => sendTyping(false), TYPING_IDLE_MS);
  } else {
    sendTyping(false);
  }
});

scroller.addEventListener('scroll', () => {
  const conv = conversations.get(active);
  if (!conv) return;
  if (scroller.scrollTop < 200) void loadOlder(conv);
  if (atBottom() && (conv.unseen || conv.unread)) {
    conv.unseen = 0;
    conv.unread = 0;
    markRead(conv);
    newMessages.hidden = true;
    renderChrome();
  }
});

newMessages.addEventListener('click', () => {
  scroller.scrollTop = scroller.scrollHeight;
  composer.focus();
});

bannerAction.addEventListener('click', () => bannerRetry?.());

leaveButton.addEventListener('click', async () => {
  const conv = conversations.get(active);
  if (!conv || conv.kind !== 'room') return;
  const answer = await request('room:leave', { room: conv.name });
  if (failed(answer)) {
    conv.sendError = sentence(answer.error.message);
    renderComposerState();
    return;
  }
  conversations.delete(conv.key);
  openConversation(roomKey('general'), true);
});

byId('open-sidebar').addEventListener('click', () => {
  app.classList.add('sidebar-open');
  scrim.hidden = false;
  roomsList.querySelector('button')?.focus();
});
byId('close-sidebar').addEventListener('click', closePanels);
membersButton.addEventListener('click', () => {
  const open = !app.classList.contains('members-open');
  closePanels();
  if (open) {
    app.classList.add('members-open');
    membersButton.setAttribute('aria-expanded', 'true');
    scrim.hidden = !matchMedia('(max-width: 1100px)').matches;
  }
});
byId('close-members').addEventListener('click', closePanels);
scrim.addEventListener('click', closePanels);
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && (app.classList.contains('sidebar-open') || app.classList.contains('members-open'))) {
    closePanels();
    composer.focus();
  }
});

// Dialogs: <dialog> closes itself on Esc and keeps focus inside while open.
const roomDialog = byId<HTMLDialogElement>('room-dialog');
const roomName = byId<HTMLInputElement>('room-name');
const roomError = byId('room-error');
const roomDirectory = byId('room-directory');
const dmDialog = byId<HTMLDialogElement>('dm-dialog');
const dmName = byId<HTMLInputElement>('dm-name');
const dmError = byId('dm-error');

for (const button of document.querySelectorAll<HTMLButtonElement>('.close-dialog')) {
  button.addEventListener('click', () => button.closest('dialog')?.close());
}

const DIRECTORY_PAGE = 100;

byId('add-room').addEventListener('click', () => {
  roomError.textContent = '';
  roomName.value = '';
  roomDirectory.replaceChildren(h('li', { class: 'muted' }, 'Loading…'));
  roomDialog.showModal();
  roomName.focus();
  void listRooms(null);
});

/** One page of the room directory (by name), with a button for the next one. */
async function listRooms(cursor: string | null): Promise<void> {
  const answer = await request('room:list', cursor ? { cursor, limit: DIRECTORY_PAGE } : { limit: DIRECTORY_PAGE });
  if (cursor === null) roomDirectory.replaceChildren();
  roomDirectory.querySelector('.directory-more')?.remove();
  if (failed(answer)) {
    roomDirectory.append(h('li', { class: 'muted' }, sentence(answer.error.message)));
    return;
  }
  const page = answer as unknown as {
    rooms: { name: string; members: number; online: number }[];
    more?: boolean;
    cursor?: string | null;
  };
  roomDirectory.append(
    ...page.rooms.map((room) =>
      h(
        'li',
        null,
        h(
          'button',
          { type: 'button', class: 'directory-item', on: { click: () => void enterRoom('room:join', room.name) } },
          h('span', { class: 'conv-name' }, `# ${room.name}`),
          h('span', { class: 'muted' }, `${plural(room.members, 'member')} · ${room.online} online`),
          conversations.has(roomKey(room.name)) ? h('span', { class: 'joined' }, 'joined') : null,
        ),
      ),
    ),
  );
  const next = page.cursor;
  if (page.more && next) {
    roomDirectory.append(
      h(
        'li',
        { class: 'directory-more' },
        h('button', { type: 'button', class: 'link', on: { click: () => void listRooms(next) } }, 'More rooms'),
      ),
    );
  }
}

async function enterRoom(event: 'room:join' | 'room:create', raw: string): Promise<void> {
  const room = raw.trim();
  if (!room) {
    roomError.textContent = 'Please enter a room name.';
    return;
  }
  const answer = await request(event, event === 'room:join' ? { room, limit: HISTORY_PAGE } : { room });
  if (failed(answer)) {
    roomError.textContent = sentence(answer.error.message);
    roomName.focus();
    return;
  }
  const name = (answer as unknown as { room: string }).room;
  const conv = conversation('room', name);
  if (event === 'room:join') {
    const got = answer as unknown as {
      messages: Message[];
      more: boolean;
      members: { name: string; online: boolean }[];
      memberCount: number;
    };
    insert(conv, got.messages, false);
    conv.more = got.more;
    conv.loaded = true;
    setMembers(conv, got.members, got.memberCount);
  } else {
    conv.loaded = true;
    conv.members = new Map([[me, true]]);
    conv.memberTotal = 1;
  }
  roomDialog.close();
  openConversation(conv.key, true);
}

byId<HTMLFormElement>('room-form').addEventListener('submit', (event) => {
  event.preventDefault();
  void enterRoom('room:join', roomName.value);
});
byId('room-create').addEventListener('click', () => void enterRoom('room:create', roomName.value));
roomName.addEventListener('input', () => {
  roomError.textContent = '';
});

byId('add-dm').addEventListener('click', () => {
  dmError.textContent = '';
  dmName.value = '';
  dmDialog.showModal();
  dmName.focus();
});
byId<HTMLFormElement>('dm-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = dmName.value.trim();
  if (!name) {
    dmError.textContent = 'Please enter a name.';
    return;
  }
  if (fold(name) === fold(me)) {
    dmError.textContent = 'That is you.';
    return;
  }
  const answer = await request('dm:history', { with: name, limit: HISTORY_PAGE });
  if (failed(answer)) {
    dmError.textContent = sentence(answer.error.message);
    return;
  }
  const got = answer as unknown as { messages: Message[]; more: boolean };
  const conv = conversation('dm', got.messages[0]?.with ?? name);
  insert(conv, got.messages, false);
  conv.more = got.more;
  conv.loaded = true;
  dmDialog.close();
  openConversation(conv.key, true);
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) renderAll('auto');
});
window.setInterval(renderTyping, 1_000);

// ---------------------------------------------------------------- start

for (const name of load<string[]>(STORE.dms, [])) conversation('dm', name);
for (const saved of load<{ clientId: string; key: string; text: string; ts: number }[]>(STORE.outbox, [])) {
  outbox.push({ ...saved, state: 'queued', error: '', attempt: 0 });
}
const token = load<string>(STORE.token, '');
if (token) {
  me = load<string>(STORE.name, '');
  setBanner('Connecting…');
  connect({ token });
} else {
  showWelcome();
}
