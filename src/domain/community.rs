//! [`Community`]: who is here — users, their sockets and rooms — and who receives what.
//!
//! One user may have several sockets (tabs) speaking the full protocol; a tutorial socket is
//! a user of its own. Every user is in the default room `general`. Operations return the
//! notices to deliver as values ([`Outgoing`]); the socket layer turns them into emits.
//!
//! Time is an input (milliseconds), never read here: a user whose last full-protocol socket
//! left stays present for a grace period, and [`Community::sweep`] ends the ones whose grace
//! has run out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use super::error::{DomainError, ErrorCode};
use super::message::{DEFAULT_MAX_MESSAGE_CHARS, MessageBody};
use super::name::{NameKey, SERVER_NAME, UserName};
use super::room::RoomName;
use super::session;
use super::small_set::SmallSet;

/// Most away users remembered for direct messages.
const MAX_KNOWN_USERS: usize = 100_000;

/// Most users listed as present on other nodes of a cluster.
const MAX_ELSEWHERE: usize = 200_000;

/// A stable user identity: a session's user id, or a tutorial socket's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(std::sync::Arc<str>);

impl UserId {
    /// Shared (`Arc`): a user's id is a key or value in several maps and sets.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which protocol a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The classic tutorial's `addUser`/`sendChat` (one socket per user, no grace period).
    Tutorial,
    /// The full protocol of PROTOCOL.md section 2.
    Full,
}

/// Limits the community enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest message, in characters.
    pub max_message_chars: usize,
    /// How long a user whose last socket left is still considered present, in milliseconds.
    pub presence_grace_ms: u64,
    /// Most rooms that may exist.
    pub max_rooms: usize,
    /// Sustained messages per second per connection (bursts of twice that); 0: unlimited.
    pub messages_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
            presence_grace_ms: 5_000,
            max_rooms: 10_000,
            messages_per_second: 100,
        }
    }
}

/// Who a notice goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience<C> {
    /// One socket.
    Socket(C),
    /// Every named tutorial socket (they all live in `general`), but `except`.
    Tutorial { except: Option<C> },
    /// Every full-protocol socket of the room's members.
    Room(RoomName),
    /// Every full-protocol socket of the room's members but this one.
    RoomExcept(RoomName, C),
    /// Every full-protocol socket of one user.
    User(UserId),
    /// Every full-protocol socket.
    Everyone,
    /// Who sees a user's presence: every full-protocol socket that asked for everyone's
    /// (`presence:subscribe`), and every full-protocol socket of the members of these rooms
    /// (the user's rooms but `general`, which everyone is in: announcing every arrival to
    /// everyone would cost O(users²)).
    Watchers(Vec<RoomName>),
}

/// Who a tutorial chat line is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaker {
    /// The server itself ("Server" on the wire).
    Server,
    User(UserName),
}

impl Speaker {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Server => SERVER_NAME,
            Self::User(name) => name.as_str(),
        }
    }
}

/// Where a stored message belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Room(RoomName),
    /// A direct conversation between two users.
    Direct {
        from: UserId,
        to: UserId,
        to_name: UserName,
    },
}

/// A message as stored: what both protocols deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub place: Place,
    pub seq: i64,
    pub timestamp_ms: i64,
    pub from: UserName,
    pub text: String,
    pub client_id: Option<String>,
}

/// Something a client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Tutorial `updateChat(speaker, text)`.
    Chat { from: Speaker, text: String },
    /// Tutorial `updateUsers(map)`: every present user, in arrival order.
    Users(Vec<UserName>),
    /// Full `message:new` / `dm:new`.
    Message(Message),
    /// Full `room:member`.
    RoomMember {
        room: RoomName,
        name: UserName,
        joined: bool,
    },
    /// Full `presence`.
    Presence { name: UserName, online: bool },
    /// Full `typing` (volatile).
    Typing {
        room: RoomName,
        name: UserName,
        typing: bool,
    },
}

/// One notice and its audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<C> {
    pub to: Audience<C>,
    pub notice: Notice,
}

/// A validated message, ready to be stored; after storing, [`Community::posted`] says who
/// receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub author: UserId,
    pub author_name: UserName,
    pub place: Place,
    pub body: MessageBody,
}

/// A room and how many of its members are here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub name: RoomName,
    pub members: usize,
    pub online: usize,
}

/// A room member and whether it is present (connected, or within a grace period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub name: UserName,
    pub online: bool,
}

#[derive(Debug)]
struct User<C> {
    name: UserName,
    protocol: Protocol,
    sockets: SmallSet<C>,
    rooms: SmallSet<RoomName>,
    arrival: u64,
    /// With no socket: when its grace period ends and it is announced as gone, in
    /// milliseconds.
    leaves_at: Option<u64>,
}

/// A full-protocol user who left: still a member of its rooms, offline.
#[derive(Debug)]
struct Away {
    name: UserName,
    rooms: SmallSet<RoomName>,
    arrival: u64,
}

/// A user present on another node of a cluster.
#[derive(Debug)]
struct Remote {
    name: UserName,
    /// Its place in the arrival order here (the tutorial's user list is in that order).
    arrival: u64,
}

/// Users, sockets and rooms of one chat server, with its rules.
#[derive(Debug)]
pub struct Community<C> {
    users: HashMap<UserId, User<C>>,
    /// Which user holds each name.
    names: HashMap<NameKey, UserId>,
    /// Full-protocol users seen since startup, by name, so direct messages can reach someone
    /// who is away (they catch up with `sync`). The latest holder of a name wins. Bounded.
    known: HashMap<NameKey, (UserId, UserName)>,
    /// Full-protocol users whose grace period ended: they stay members of their rooms
    /// (listed offline) and get their rooms back when they return. Bounded.
    away: HashMap<UserId, Away>,
    /// Which user each named socket belongs to.
    sockets: HashMap<C, UserId>,
    /// Every room and its members.
    rooms: BTreeMap<RoomName, BTreeSet<UserId>>,
    next_arrival: u64,
    /// How many present users speak the tutorial protocol: with none, nobody needs the
    /// tutorial's user list, and it is not built.
    tutorial_users: usize,
    /// In a cluster: the users present on other nodes, as their arrivals and departures were
    /// announced, by name (names are unique cluster-wide). They are listed online and in the
    /// tutorial's user list. Bounded.
    elsewhere: HashMap<NameKey, Remote>,
    limits: Limits,
}

/// What [`Community::sweep`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept<C> {
    /// The departures to announce (and one tutorial user list for the batch).
    pub notices: Vec<Outgoing<C>>,
    /// The full-protocol users who left (now away).
    pub departed: Vec<UserId>,
}

/// What [`Community::connect`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected<C> {
    /// The user's name (a resumed session keeps the name it had).
    pub name: UserName,
    /// The user's rooms, which this socket should follow.
    pub rooms: Vec<RoomName>,
    pub notices: Vec<Outgoing<C>>,
}

impl<C: Clone + Ord + Hash> Community<C> {
    pub fn new(limits: Limits) -> Self {
        let mut rooms = BTreeMap::new();
        rooms.insert(RoomName::general(), BTreeSet::new());
        Self {
            users: HashMap::new(),
            names: HashMap::new(),
            known: HashMap::new(),
            away: HashMap::new(),
            sockets: HashMap::new(),
            rooms,
            next_arrival: 0,
            tutorial_users: 0,
            elsewhere: HashMap::new(),
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Make rooms known (e.g. the ones in history at startup).
    pub fn restore_rooms(&mut self, rooms: impl IntoIterator<Item = RoomName>) {
        for room in rooms {
            self.rooms.entry(room).or_default();
        }
    }

    /// A full-protocol user known from storage but not here (e.g. after a restart): listed
    /// offline in `general` and those of `rooms` that exist, reachable by direct messages,
    /// and given its rooms back when it connects. Does nothing for a user present or already
    /// remembered as away. Bounded like the away users (an arbitrary one is forgotten).
    pub fn restore_member(
        &mut self,
        user: UserId,
        name: UserName,
        rooms: impl IntoIterator<Item = RoomName>,
    ) {
        if self.users.contains_key(&user) || self.away.contains_key(&user) {
            return;
        }
        if self.away.len() >= MAX_KNOWN_USERS {
            self.forget_one_away();
        }
        let (kept, arrival) = self.enroll(&user, &name, rooms);
        self.away.insert(
            user,
            Away {
                name,
                rooms: kept,
                arrival,
            },
        );
    }

    /// A full-protocol user who was online when the server stopped (known from storage):
    /// present without a socket, as if its connection had just dropped, until `leaves_at_ms`.
    /// If it reconnects by then nobody is told anything, else its departure is announced
    /// then. Falls back to [`Community::restore_member`] if its name is held by someone else.
    pub fn restore_present(
        &mut self,
        user: UserId,
        name: UserName,
        rooms: impl IntoIterator<Item = RoomName>,
        leaves_at_ms: u64,
    ) {
        if self.users.contains_key(&user) || self.away.contains_key(&user) {
            return;
        }
        if self.claim_name(&name, &user).is_err() {
            self.restore_member(user, name, rooms);
            return;
        }
        let (kept, arrival) = self.enroll(&user, &name, rooms);
        self.users.insert(
            user,
            User {
                name,
                protocol: Protocol::Full,
                sockets: SmallSet::new(),
                rooms: kept,
                arrival,
                leaves_at: Some(leaves_at_ms),
            },
        );
    }

    /// Make a user known from storage a member of `general` and of those of `rooms` that
    /// exist, reachable by name; returns its rooms and its arrival number.
    fn enroll(
        &mut self,
        user: &UserId,
        name: &UserName,
        rooms: impl IntoIterator<Item = RoomName>,
    ) -> (SmallSet<RoomName>, u64) {
        let mut kept = SmallSet::from([RoomName::general()]);
        kept.extend(
            rooms
                .into_iter()
                .filter(|room| self.rooms.contains_key(room)),
        );
        for room in &kept {
            if let Some(members) = self.rooms.get_mut(room) {
                members.insert(user.clone());
            }
        }
        self.remember_known(user, name);
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        (kept, arrival)
    }

    /// Full-protocol users present without a socket (their grace period is running).
    pub fn users_in_grace(&self) -> Vec<UserId> {
        self.users
            .iter()
            .filter(|(_, user)| user.protocol == Protocol::Full && user.sockets.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A user who never really arrived (its only connection closed while connecting, before
    /// it could learn its token): gone for good rather than remembered as away, so its name
    /// is free. Returns `None`, changing nothing, while the user has a socket open. The
    /// departures have no user list: the caller adds [`Community::users_notice`] once for
    /// the batch.
    pub fn forget_user(&mut self, id: &UserId) -> Option<Vec<Outgoing<C>>> {
        if self
            .users
            .get(id)
            .is_some_and(|user| !user.sockets.is_empty())
        {
            return None;
        }
        let notices = self.remove_user(id);
        if let Some(away) = self.away.remove(id) {
            for room in &away.rooms {
                if let Some(members) = self.rooms.get_mut(room) {
                    members.remove(id);
                }
            }
            let key = away.name.key();
            if self.known.get(&key).is_some_and(|(known, _)| known == id) {
                self.known.remove(&key);
            }
        }
        Some(notices)
    }

    /// Whether `user` is present: connected, or within a grace period.
    pub fn is_present(&self, user: &UserId) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `user` is present or remembered as away (its rooms are known here).
    pub fn knows_user(&self, user: &UserId) -> bool {
        self.users.contains_key(user) || self.away.contains_key(user)
    }

    /// Remember that `name` belongs to `user` (found in storage), so direct messages reach it.
    pub fn learn_user(&mut self, user: &UserId, name: &UserName) {
        self.remember_known(user, name);
    }

    /// A tutorial socket's `addUser(raw_name)`; `user` is the id it will have.
    pub fn add_tutorial(
        &mut self,
        socket: &C,
        user: UserId,
        raw_name: &str,
    ) -> Result<Vec<Outgoing<C>>, DomainError> {
        let name = UserName::parse(raw_name)?;
        if let Some(current) = self.name_of(socket) {
            if current.key() == name.key() {
                return Ok(Vec::new());
            }
            return Err(DomainError::new(
                ErrorCode::AlreadyNamed,
                format!("you are already in the chat as {current}"),
            ));
        }
        self.claim_name(&name, &user)?;
        self.insert_user(socket, user, name.clone(), Protocol::Tutorial);
        let mut notices = vec![Outgoing {
            to: Audience::Socket(socket.clone()),
            notice: server_says("you have connected".to_owned()),
        }];
        notices.extend(self.arrival_notices(&name, Some(socket), &SmallSet::new()));
        Ok(notices)
    }

    /// A full-protocol socket of `user` connects, wanting `raw_name`. A user already present
    /// (another tab, or back within the grace period) keeps its name and rooms, and nobody
    /// is told; a new user is announced.
    pub fn connect(
        &mut self,
        socket: &C,
        user: UserId,
        raw_name: &str,
    ) -> Result<Connected<C>, DomainError> {
        if let Some(present) = self.users.get_mut(&user) {
            present.sockets.insert(socket.clone());
            present.leaves_at = None;
            let connected = Connected {
                name: present.name.clone(),
                rooms: present.rooms.iter().cloned().collect(),
                notices: Vec::new(),
            };
            self.sockets.insert(socket.clone(), user);
            return Ok(connected);
        }
        let name = UserName::parse(raw_name)?;
        self.claim_name(&name, &user)?;
        let former = self.away.remove(&user);
        self.insert_user(socket, user.clone(), name.clone(), Protocol::Full);
        // A returning member gets its rooms back (it never left their member lists).
        let mut rooms = SmallSet::from([RoomName::general()]);
        if let Some(former) = former {
            for room in former.rooms {
                if let Some(members) = self.rooms.get_mut(&room) {
                    members.insert(user.clone());
                    rooms.insert(room);
                }
            }
        }
        if let Some(present) = self.users.get_mut(&user) {
            present.rooms.clone_from(&rooms);
        }
        Ok(Connected {
            name: name.clone(),
            notices: self.arrival_notices(&name, None, &rooms),
            rooms: rooms.into_iter().collect(),
        })
    }

    /// A socket is gone. A tutorial user leaves at once; a full user whose last socket this
    /// was starts its grace period at `now_ms` (see [`Community::sweep`]).
    pub fn disconnect(&mut self, socket: &C, now_ms: u64) -> Vec<Outgoing<C>> {
        self.leave(socket, now_ms, false)
    }

    /// A socket's connection dropped (with connection-state recovery on, it may resume):
    /// like [`Community::disconnect`], but a tutorial user is held for the grace period as
    /// well, so a client that resumes in time comes back unannounced.
    pub fn drop_connection(&mut self, socket: &C, now_ms: u64) -> Vec<Outgoing<C>> {
        self.leave(socket, now_ms, true)
    }

    /// A tutorial user's socket resumed by connection-state recovery, as `user` named
    /// `name`. Within its grace period it is back silently; after it (or after a restart)
    /// it arrives again, announced, unless its name was taken meanwhile.
    pub fn resume_tutorial(
        &mut self,
        socket: &C,
        user: UserId,
        name: &UserName,
    ) -> Result<Vec<Outgoing<C>>, DomainError> {
        if let Some(present) = self.users.get_mut(&user) {
            if present.protocol != Protocol::Tutorial {
                return Err(name.taken());
            }
            present.sockets.insert(socket.clone());
            present.leaves_at = None;
            self.sockets.insert(socket.clone(), user);
            return Ok(Vec::new());
        }
        self.claim_name(name, &user)?;
        self.insert_user(socket, user, name.clone(), Protocol::Tutorial);
        Ok(self.arrival_notices(name, Some(socket), &SmallSet::new()))
    }

    fn leave(&mut self, socket: &C, now_ms: u64, hold_tutorial: bool) -> Vec<Outgoing<C>> {
        let Some(user_id) = self.sockets.remove(socket) else {
            return Vec::new();
        };
        let Some(user) = self.users.get_mut(&user_id) else {
            return Vec::new();
        };
        user.sockets.remove(socket);
        if !user.sockets.is_empty() {
            return Vec::new();
        }
        match user.protocol {
            Protocol::Tutorial if !hold_tutorial => {
                let mut notices = self.remove_user(&user_id);
                notices.extend(self.users_notice());
                notices
            }
            Protocol::Tutorial | Protocol::Full => {
                user.leaves_at = Some(now_ms.saturating_add(self.limits.presence_grace_ms));
                Vec::new()
            }
        }
    }

    /// End the users whose grace period is over at `now_ms`; returns their departures, then
    /// (if a tutorial user is present) one user list for the whole batch: building a list
    /// per departure would cost O(departures × users).
    pub fn sweep(&mut self, now_ms: u64) -> Swept<C> {
        let leaving: Vec<(UserId, Protocol)> = self
            .users
            .iter()
            .filter(|(_, user)| user.leaves_at.is_some_and(|at| now_ms >= at))
            .map(|(id, user)| (id.clone(), user.protocol))
            .collect();
        let mut notices: Vec<Outgoing<C>> = leaving
            .iter()
            .flat_map(|(id, _)| self.remove_user(id))
            .collect();
        if !notices.is_empty() {
            notices.extend(self.users_notice());
        }
        let departed = leaving
            .into_iter()
            .filter(|(_, protocol)| *protocol == Protocol::Full)
            .map(|(id, _)| id)
            .collect();
        Swept { notices, departed }
    }

    /// Users whose grace period is over at `now_ms`, with their protocol: [`Community::sweep`]
    /// ends them all; a cluster first asks, for each full-protocol one, whether another
    /// node still has it, then ends them with [`Community::end_grace`].
    pub fn grace_over(&self, now_ms: u64) -> Vec<(UserId, Protocol)> {
        self.users
            .iter()
            .filter(|(_, user)| user.leaves_at.is_some_and(|at| now_ms >= at))
            .map(|(id, user)| (id.clone(), user.protocol))
            .collect()
    }

    /// End the grace periods of `users` that are still over at `now_ms` (one back meanwhile
    /// stays). Each `(user, announce)`: announced as gone, or, without `announce` (it is still
    /// present on another node of a cluster), gone from here without a word and not among
    /// the departed. One tutorial user list for the batch, as [`Community::sweep`].
    pub fn end_grace(
        &mut self,
        users: impl IntoIterator<Item = (UserId, bool)>,
        now_ms: u64,
    ) -> Swept<C> {
        let mut notices = Vec::new();
        let mut departed = Vec::new();
        let mut removed = false;
        for (id, announce) in users {
            let Some(user) = self.users.get(&id) else {
                continue;
            };
            if user.leaves_at.is_none_or(|at| now_ms < at) {
                continue;
            }
            let protocol = user.protocol;
            let name = user.name.clone();
            let gone = self.remove_user(&id);
            removed = true;
            if announce {
                self.elsewhere.remove(&name.key());
                notices.extend(gone);
                if protocol == Protocol::Full {
                    departed.push(id);
                }
            } else {
                // Still online, on another node.
                self.note_elsewhere(name);
            }
        }
        if removed {
            notices.extend(self.users_notice());
        }
        Swept { notices, departed }
    }

    /// How many sockets `user` has here, if present (0 during its grace period).
    pub fn socket_count(&self, user: &UserId) -> Option<usize> {
        self.users.get(user).map(|user| user.sockets.len())
    }

    /// A user held only by another node of a cluster, which stopped without a word: its
    /// departure, for whoever watches it here (the watchers of its rooms if it is remembered
    /// here as away). Nothing if it is present here.
    pub fn gone_elsewhere(&mut self, user: &UserId, name: UserName) -> Vec<Outgoing<C>> {
        if self.users.contains_key(user) {
            return Vec::new();
        }
        let rooms = self
            .away
            .get(user)
            .map(|away| away.rooms.clone())
            .unwrap_or_default();
        self.departed_elsewhere(name, rooms)
    }

    /// Another node of a cluster announced that the user called `name` arrived (its rooms
    /// but `general`: `rooms`): listed online from now on, and announced here as the node
    /// announced it. Nothing to announce if it is known here already (present here too, or
    /// announced before).
    pub fn arrived_elsewhere(
        &mut self,
        name: UserName,
        rooms: impl IntoIterator<Item = RoomName>,
    ) -> Vec<Outgoing<C>> {
        let key = name.key();
        let known = self.names.contains_key(&key) || self.elsewhere.contains_key(&key);
        self.note_elsewhere(name.clone());
        if known {
            return Vec::new();
        }
        self.arrival_notices(&name, None, &rooms.into_iter().collect())
    }

    /// Another node of a cluster announced that the user called `name` (in `rooms`) left
    /// the cluster: its departure, for the tutorial users and its watchers here. Nothing if
    /// it is present here (it came back here meanwhile).
    pub fn departed_elsewhere(
        &mut self,
        name: UserName,
        rooms: impl IntoIterator<Item = RoomName>,
    ) -> Vec<Outgoing<C>> {
        let listed = self.elsewhere.remove(&name.key()).is_some();
        if self.names.contains_key(&name.key()) {
            return Vec::new();
        }
        let [said, presence] = departure_notices(name, &rooms.into_iter().collect());
        if !listed {
            // Never listed here: only its watchers (presence subscribers) hear of it.
            return vec![presence];
        }
        let mut notices = vec![said, presence];
        notices.extend(self.users_notice());
        notices
    }

    /// Where the arrival order stands: pass it to [`Community::set_elsewhere`] with a list
    /// of who is on other nodes read after this call.
    pub fn elsewhere_mark(&self) -> u64 {
        self.next_arrival
    }

    /// Who is present on other nodes of a cluster, read from the shared store after
    /// `mark` ([`Community::elsewhere_mark`]): listed from now on, silently (a lost
    /// announcement, or a node that started after them). Those listed before `mark` and not
    /// in `names` are gone; those announced since stay. The tutorial's user list if the
    /// list changed.
    pub fn set_elsewhere(&mut self, names: Vec<UserName>, mark: u64) -> Option<Outgoing<C>> {
        let fresh: std::collections::HashSet<NameKey> = names.iter().map(UserName::key).collect();
        let before = self.elsewhere.len();
        self.elsewhere
            .retain(|key, remote| fresh.contains(key) || remote.arrival >= mark);
        let mut changed = self.elsewhere.len() != before;
        for name in names {
            if !self.elsewhere.contains_key(&name.key()) {
                self.note_elsewhere(name);
                changed = true;
            }
        }
        if changed { self.users_notice() } else { None }
    }

    /// A present user's presence (online), for the watchers of its rooms.
    pub fn presence_of(&self, user: &UserId) -> Option<Outgoing<C>> {
        let user = self.users.get(user)?;
        Some(Outgoing {
            to: watchers(&user.rooms),
            notice: Notice::Presence {
                name: user.name.clone(),
                online: true,
            },
        })
    }

    /// Whether the user called `name` is listed as present on another node.
    pub fn is_elsewhere(&self, name: &UserName) -> bool {
        self.elsewhere.contains_key(&name.key())
    }

    /// List `name` as present on another node (a new one at the end of the arrival order).
    fn note_elsewhere(&mut self, name: UserName) {
        let key = name.key();
        if self.elsewhere.contains_key(&key) {
            return;
        }
        if self.elsewhere.len() >= MAX_ELSEWHERE {
            // Bounded: forget an arbitrary one (it is then listed offline).
            if let Some(key) = self.elsewhere.keys().next().cloned() {
                self.elsewhere.remove(&key);
            }
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.elsewhere.insert(key, Remote { name, arrival });
    }

    /// The tutorial's user list for every tutorial socket, or nothing when no tutorial user
    /// is present. [`Community::forget_user`] leaves it out: add it once after a batch.
    pub fn users_notice(&self) -> Option<Outgoing<C>> {
        (self.tutorial_users > 0).then(|| Outgoing {
            to: Audience::Tutorial { except: None },
            notice: Notice::Users(self.names_present()),
        })
    }

    /// Whether some user's grace period is running (the caller then schedules a sweep).
    pub fn has_away_users(&self) -> bool {
        self.users.values().any(|user| user.leaves_at.is_some())
    }

    /// Validate a message from `socket` to `room` before it is stored.
    pub fn draft_for_room(
        &self,
        socket: &C,
        room: &RoomName,
        raw_text: &str,
    ) -> Result<Draft, DomainError> {
        let (author, user) = self.speaker(socket)?;
        if !self.rooms.contains_key(room) {
            return Err(unknown_room());
        }
        if !user.rooms.contains(room) {
            return Err(DomainError::new(
                ErrorCode::NotInRoom,
                format!("join #{room} first"),
            ));
        }
        let body = MessageBody::parse(raw_text, self.limits.max_message_chars)?;
        Ok(Draft {
            author: author.clone(),
            author_name: user.name.clone(),
            place: Place::Room(room.clone()),
            body,
        })
    }

    /// Validate a direct message from `socket` to the user called `raw_to`.
    pub fn draft_direct(
        &self,
        socket: &C,
        raw_to: &str,
        raw_text: &str,
    ) -> Result<Draft, DomainError> {
        let (author, user) = self.speaker(socket)?;
        let (to, to_name) = self.recipient_named(raw_to)?;
        // Tutorial clients have no event for direct messages: one would be stored and
        // acknowledged but never shown.
        let tutorial = |id: &UserId| {
            self.users
                .get(id)
                .is_some_and(|user| user.protocol == Protocol::Tutorial)
        };
        if tutorial(author) || tutorial(&to) {
            return Err(DomainError::new(
                ErrorCode::NotSupported,
                "direct messages are only between users of the full protocol",
            ));
        }
        let body = MessageBody::parse(raw_text, self.limits.max_message_chars)?;
        Ok(Draft {
            author: author.clone(),
            author_name: user.name.clone(),
            place: Place::Direct {
                from: author.clone(),
                to,
                to_name,
            },
            body,
        })
    }

    /// Who receives a stored message.
    pub fn posted(&self, message: Message) -> Vec<Outgoing<C>> {
        match &message.place {
            Place::Room(room) => {
                let mut notices = Vec::with_capacity(2);
                if *room == RoomName::general() {
                    // Tutorial clients see it as `updateChat(from, text)`; the message itself
                    // goes to them so the adapter can add its recovery offset.
                    notices.push(Outgoing {
                        to: Audience::Tutorial { except: None },
                        notice: Notice::Message(message.clone()),
                    });
                }
                notices.push(Outgoing {
                    to: Audience::Room(room.clone()),
                    notice: Notice::Message(message),
                });
                notices
            }
            Place::Direct { from, to, .. } => {
                let mut notices = vec![Outgoing {
                    to: Audience::User(from.clone()),
                    notice: Notice::Message(message.clone()),
                }];
                if to != from {
                    notices.push(Outgoing {
                        to: Audience::User(to.clone()),
                        notice: Notice::Message(message.clone()),
                    });
                }
                notices
            }
        }
    }

    /// A user creates a room (and joins it).
    pub fn create_room(
        &mut self,
        socket: &C,
        raw_room: &str,
    ) -> Result<(RoomName, Vec<Outgoing<C>>), DomainError> {
        let room = RoomName::parse(raw_room)?;
        if self.speaker(socket)?.1.protocol == Protocol::Tutorial {
            return Err(tutorial_lives_in_general());
        }
        if self.rooms.contains_key(&room) {
            return Err(DomainError::new(
                ErrorCode::RoomExists,
                format!("#{room} exists already"),
            ));
        }
        if self.rooms.len() >= self.limits.max_rooms {
            return Err(DomainError::new(
                ErrorCode::LimitReached,
                "this server has as many rooms as it keeps",
            ));
        }
        self.rooms.insert(room.clone(), BTreeSet::new());
        let notices = self.join_room(socket, room.as_str())?.1;
        Ok((room, notices))
    }

    /// A user joins a room; its other members hear of it. Joining twice changes nothing.
    pub fn join_room(
        &mut self,
        socket: &C,
        raw_room: &str,
    ) -> Result<(RoomName, Vec<Outgoing<C>>), DomainError> {
        let room = RoomName::parse(raw_room)?;
        let (user_id, user) = self.speaker(socket)?;
        let user_id = user_id.clone();
        if user.protocol == Protocol::Tutorial && room != RoomName::general() {
            return Err(tutorial_lives_in_general());
        }
        let members = self.rooms.get_mut(&room).ok_or_else(unknown_room)?;
        if !members.insert(user_id.clone()) {
            return Ok((room, Vec::new()));
        }
        let Some(user) = self.users.get_mut(&user_id) else {
            return Ok((room, Vec::new()));
        };
        user.rooms.insert(room.clone());
        let notice = Notice::RoomMember {
            room: room.clone(),
            name: user.name.clone(),
            joined: true,
        };
        Ok((
            room.clone(),
            vec![Outgoing {
                to: Audience::Room(room),
                notice,
            }],
        ))
    }

    /// A user leaves a room (not `general`); the remaining members hear of it.
    pub fn leave_room(
        &mut self,
        socket: &C,
        raw_room: &str,
    ) -> Result<(RoomName, Vec<Outgoing<C>>), DomainError> {
        let room = RoomName::parse(raw_room)?;
        let user_id = self.speaker(socket)?.0.clone();
        if room == RoomName::general() {
            return Err(DomainError::new(
                ErrorCode::InvalidRoom,
                "#general cannot be left",
            ));
        }
        let members = self.rooms.get_mut(&room).ok_or_else(unknown_room)?;
        if !members.remove(&user_id) {
            return Err(DomainError::new(
                ErrorCode::NotInRoom,
                format!("you are not in #{room}"),
            ));
        }
        let Some(user) = self.users.get_mut(&user_id) else {
            return Ok((room, Vec::new()));
        };
        user.rooms.remove(&room);
        let notice = Notice::RoomMember {
            room: room.clone(),
            name: user.name.clone(),
            joined: false,
        };
        Ok((
            room.clone(),
            vec![Outgoing {
                to: Audience::Room(room),
                notice,
            }],
        ))
    }

    /// Another node of a cluster stored that `user` (named `name`) joined or left `room`:
    /// the same membership here, the room made known if it was not, the user remembered
    /// (listed offline unless present here too). Its other members here hear of it when it
    /// changed anything.
    pub fn membership_elsewhere(
        &mut self,
        user: &UserId,
        name: &UserName,
        room: &RoomName,
        joined: bool,
    ) -> Vec<Outgoing<C>> {
        if *room == RoomName::general() {
            return Vec::new();
        }
        if joined {
            self.rooms.entry(room.clone()).or_default();
        }
        if !self.knows_user(user) {
            if !joined {
                return Vec::new();
            }
            // Known from now on (listed, reachable by DMs); the room is added below.
            self.restore_member(user.clone(), name.clone(), []);
        }
        let Some(members) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let changed = if joined {
            members.insert(user.clone())
        } else {
            members.remove(user)
        };
        if !changed {
            return Vec::new();
        }
        let rooms = match (self.users.get_mut(user), self.away.get_mut(user)) {
            (Some(present), _) => Some(&mut present.rooms),
            (None, Some(away)) => Some(&mut away.rooms),
            (None, None) => None,
        };
        if let Some(rooms) = rooms {
            if joined {
                rooms.insert(room.clone());
            } else {
                rooms.remove(room);
            }
        }
        vec![Outgoing {
            to: Audience::Room(room.clone()),
            notice: Notice::RoomMember {
                room: room.clone(),
                name: name.clone(),
                joined,
            },
        }]
    }

    /// A typing indicator for a room the user is in.
    pub fn typing(
        &self,
        socket: &C,
        raw_room: &str,
        typing: bool,
    ) -> Result<Vec<Outgoing<C>>, DomainError> {
        let room = RoomName::parse(raw_room)?;
        let (_, user) = self.speaker(socket)?;
        if !user.rooms.contains(&room) {
            return Err(DomainError::new(
                ErrorCode::NotInRoom,
                format!("join #{room} first"),
            ));
        }
        let notice = Notice::Typing {
            room: room.clone(),
            name: user.name.clone(),
            typing,
        };
        Ok(vec![Outgoing {
            to: Audience::RoomExcept(room, socket.clone()),
            notice,
        }])
    }

    /// Every room with its member counts, by name.
    pub fn rooms(&self) -> Vec<RoomSummary> {
        self.rooms
            .iter()
            .map(|(name, members)| RoomSummary {
                name: name.clone(),
                members: members.len(),
                online: members.iter().filter(|id| self.is_online(id)).count(),
            })
            .collect()
    }

    /// Up to `limit` rooms whose names sort after `after` (from the first when `None`), by
    /// name, with their member counts, and whether more follow.
    pub fn rooms_page(&self, after: Option<&RoomName>, limit: usize) -> (Vec<RoomSummary>, bool) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rooms = self.rooms.range::<RoomName, _>((start, Bound::Unbounded));
        let page = rooms
            .by_ref()
            .take(limit)
            .map(|(name, members)| RoomSummary {
                name: name.clone(),
                members: members.len(),
                online: members.iter().filter(|id| self.is_online(id)).count(),
            })
            .collect();
        (page, rooms.next().is_some())
    }

    /// Every room's name, in order.
    pub fn room_names(&self) -> impl Iterator<Item = &RoomName> {
        self.rooms.keys()
    }

    /// How many rooms exist.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// A room's members, in arrival order.
    pub fn members(&self, raw_room: &str) -> Result<Vec<MemberView>, DomainError> {
        let room = RoomName::parse(raw_room)?;
        let members = self.rooms.get(&room).ok_or_else(unknown_room)?;
        let mut listed: Vec<(u64, MemberView)> = members
            .iter()
            .filter_map(|id| match (self.users.get(id), self.away.get(id)) {
                (Some(user), _) => Some((
                    user.arrival,
                    MemberView {
                        name: user.name.clone(),
                        online: self.is_online(id),
                    },
                )),
                (None, Some(away)) => Some((
                    away.arrival,
                    MemberView {
                        name: away.name.clone(),
                        online: self.elsewhere.contains_key(&away.name.key()),
                    },
                )),
                (None, None) => None,
            })
            .collect();
        listed.sort_by_key(|(arrival, _)| *arrival);
        Ok(listed.into_iter().map(|(_, member)| member).collect())
    }

    /// The ids of a room's members (empty for an unknown room).
    pub fn member_ids(&self, room: &RoomName) -> Vec<&UserId> {
        self.rooms
            .get(room)
            .map(|members| members.iter().collect())
            .unwrap_or_default()
    }

    /// Whether `room` exists.
    pub fn room_exists(&self, room: &RoomName) -> bool {
        self.rooms.contains_key(room)
    }

    /// Whether the socket's user is in `room`.
    pub fn is_in_room(&self, socket: &C, room: &RoomName) -> bool {
        self.user_of(socket)
            .is_some_and(|(_, user)| user.rooms.contains(room))
    }

    /// The rooms of a socket's user (empty when it has no name).
    pub fn rooms_of(&self, socket: &C) -> Vec<RoomName> {
        self.user_of(socket)
            .map(|(_, user)| user.rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The rooms of a present user, if present.
    pub fn rooms_of_user(&self, user: &UserId) -> Option<Vec<RoomName>> {
        self.users
            .get(user)
            .map(|user| user.rooms.iter().cloned().collect())
    }

    /// The name of a socket's user, if it has one.
    pub fn name_of(&self, socket: &C) -> Option<&UserName> {
        self.user_of(socket).map(|(_, user)| &user.name)
    }

    /// The name of a user present or remembered as away.
    pub fn name_of_user(&self, user: &UserId) -> Option<&UserName> {
        match (self.users.get(user), self.away.get(user)) {
            (Some(present), _) => Some(&present.name),
            (None, Some(away)) => Some(&away.name),
            (None, None) => None,
        }
    }

    /// The user id of a socket, if it has one.
    pub fn user_id_of(&self, socket: &C) -> Option<&UserId> {
        self.sockets.get(socket)
    }

    /// The user called `raw_name` (any case), for direct messages.
    pub fn user_named(&self, raw_name: &str) -> Result<(UserId, UserName), DomainError> {
        let name = UserName::parse(raw_name)?;
        let id = self.names.get(&name.key()).ok_or_else(|| {
            DomainError::new(
                ErrorCode::UnknownUser,
                format!("nobody here is called {name}"),
            )
        })?;
        let user = self.users.get(id).ok_or_else(|| {
            DomainError::new(
                ErrorCode::UnknownUser,
                format!("nobody here is called {name}"),
            )
        })?;
        Ok((id.clone(), user.name.clone()))
    }

    /// The user called `raw_name` for a direct conversation: someone present, or a
    /// full-protocol user seen since startup who is away.
    pub fn recipient_named(&self, raw_name: &str) -> Result<(UserId, UserName), DomainError> {
        let present = self.user_named(raw_name);
        if present.is_ok() {
            return present;
        }
        let name = UserName::parse(raw_name)?;
        self.known.get(&name.key()).cloned().ok_or_else(|| {
            DomainError::new(
                ErrorCode::UnknownUser,
                format!("nobody here is called {name}"),
            )
        })
    }

    /// The protocol a socket speaks, if it has a name.
    pub fn protocol_of(&self, socket: &C) -> Option<Protocol> {
        self.user_of(socket).map(|(_, user)| user.protocol)
    }

    /// Number of present users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    fn user_of(&self, socket: &C) -> Option<(&UserId, &User<C>)> {
        let id = self.sockets.get(socket)?;
        self.users.get(id).map(|user| (id, user))
    }

    fn speaker(&self, socket: &C) -> Result<(&UserId, &User<C>), DomainError> {
        self.user_of(socket).ok_or_else(|| {
            DomainError::new(
                ErrorCode::NameRequired,
                "choose a name before sending messages",
            )
        })
    }

    /// Present, also during a grace period, here or on another node of a cluster: listed
    /// online exactly while `presence` says so.
    fn is_online(&self, id: &UserId) -> bool {
        self.users.contains_key(id)
            || (!self.elsewhere.is_empty()
                && self
                    .away
                    .get(id)
                    .is_some_and(|away| self.elsewhere.contains_key(&away.name.key())))
    }

    fn claim_name(&mut self, name: &UserName, user: &UserId) -> Result<(), DomainError> {
        session::claim_name(name, Some(user), self.names.get(&name.key()))?;
        self.names.insert(name.key(), user.clone());
        Ok(())
    }

    fn insert_user(&mut self, socket: &C, id: UserId, name: UserName, protocol: Protocol) {
        if protocol == Protocol::Full {
            self.remember_known(&id, &name);
        }
        let general = RoomName::general();
        self.rooms
            .entry(general.clone())
            .or_default()
            .insert(id.clone());
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        if protocol == Protocol::Tutorial {
            self.tutorial_users += 1;
        }
        self.users.insert(
            id.clone(),
            User {
                name,
                protocol,
                sockets: SmallSet::from([socket.clone()]),
                rooms: SmallSet::from([general]),
                arrival,
                leaves_at: None,
            },
        );
        self.sockets.insert(socket.clone(), id);
    }

    fn remember_known(&mut self, id: &UserId, name: &UserName) {
        if self.known.len() >= MAX_KNOWN_USERS && !self.known.contains_key(&name.key()) {
            // Bounded: forget an arbitrary one; a DM to them is then looked up in storage.
            if let Some(key) = self.known.keys().next().cloned() {
                self.known.remove(&key);
            }
        }
        self.known.insert(name.key(), (id.clone(), name.clone()));
    }

    fn remove_user(&mut self, id: &UserId) -> Vec<Outgoing<C>> {
        let Some(user) = self.users.remove(id) else {
            return Vec::new();
        };
        self.names.remove(&user.name.key());
        for socket in &user.sockets {
            self.sockets.remove(socket);
        }
        match user.protocol {
            // A tutorial user is gone for good.
            Protocol::Tutorial => {
                self.tutorial_users = self.tutorial_users.saturating_sub(1);
                for room in &user.rooms {
                    if let Some(members) = self.rooms.get_mut(room) {
                        members.remove(id);
                    }
                }
            }
            // A full user stays a member of its rooms, offline, until it returns.
            Protocol::Full => {
                if self.away.len() >= MAX_KNOWN_USERS {
                    self.forget_one_away();
                }
                let away = Away {
                    name: user.name.clone(),
                    rooms: user.rooms.clone(),
                    arrival: user.arrival,
                };
                self.away.insert(id.clone(), away);
            }
        }
        // No user list here: the caller adds one per batch of departures.
        departure_notices(user.name, &user.rooms).into()
    }

    /// Make room in `away` (bounded): an arbitrary away user stops being a member.
    fn forget_one_away(&mut self) {
        let Some(id) = self.away.keys().next().cloned() else {
            return;
        };
        if let Some(away) = self.away.remove(&id) {
            for room in &away.rooms {
                if let Some(members) = self.rooms.get_mut(room) {
                    members.remove(&id);
                }
            }
        }
    }

    /// What everyone else is told when `name` arrives (`newcomer`: a tutorial socket that
    /// already got its own greeting).
    fn arrival_notices(
        &self,
        name: &UserName,
        newcomer: Option<&C>,
        rooms: &SmallSet<RoomName>,
    ) -> Vec<Outgoing<C>> {
        let mut notices = vec![Outgoing {
            to: Audience::Tutorial {
                except: newcomer.cloned(),
            },
            notice: server_says(format!("{name} has connected")),
        }];
        notices.extend(self.users_notice());
        notices.push(Outgoing {
            to: watchers(rooms),
            notice: Notice::Presence {
                name: name.clone(),
                online: true,
            },
        });
        notices
    }

    /// Everyone present, here and on the other nodes of a cluster, in arrival order.
    fn names_present(&self) -> Vec<UserName> {
        let mut listed: Vec<(u64, &UserName)> = self
            .users
            .values()
            .map(|user| (user.arrival, &user.name))
            .collect();
        listed.extend(
            self.elsewhere
                .values()
                .filter(|remote| !self.names.contains_key(&remote.name.key()))
                .map(|remote| (remote.arrival, &remote.name)),
        );
        listed.sort_unstable_by_key(|(arrival, _)| *arrival);
        listed.into_iter().map(|(_, name)| name.clone()).collect()
    }
}

/// A departure: told to the tutorial users, and to the watchers of the user's `rooms`.
fn departure_notices<C>(name: UserName, rooms: &SmallSet<RoomName>) -> [Outgoing<C>; 2] {
    [
        Outgoing {
            to: Audience::Tutorial { except: None },
            notice: server_says(format!("{name} has disconnected.")),
        },
        Outgoing {
            to: watchers(rooms),
            notice: Notice::Presence {
                name,
                online: false,
            },
        },
    ]
}

/// Who sees the presence of a user in `rooms`.
fn watchers<C>(rooms: &SmallSet<RoomName>) -> Audience<C> {
    let general = RoomName::general();
    Audience::Watchers(
        rooms
            .iter()
            .filter(|room| **room != general)
            .cloned()
            .collect(),
    )
}

fn server_says(text: String) -> Notice {
    Notice::Chat {
        from: Speaker::Server,
        text,
    }
}

fn tutorial_lives_in_general() -> DomainError {
    DomainError::new(
        ErrorCode::NotSupported,
        "tutorial-protocol clients live in #general only",
    )
}

fn unknown_room() -> DomainError {
    DomainError::new(ErrorCode::UnknownRoom, "no such room")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Community = super::Community<u32>;

    fn community() -> Community {
        Community::new(Limits::default())
    }

    fn name(raw: &str) -> UserName {
        UserName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn room(raw: &str) -> RoomName {
        RoomName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn user(socket: u32) -> UserId {
        UserId::new(format!("u{socket}"))
    }

    fn chat(from: &str, text: &str) -> Notice {
        let from = if from == SERVER_NAME {
            Speaker::Server
        } else {
            Speaker::User(name(from))
        };
        Notice::Chat {
            from,
            text: text.to_owned(),
        }
    }

    fn users(names: &[&str]) -> Notice {
        Notice::Users(names.iter().map(|n| name(n)).collect())
    }

    fn tutorial_all() -> Audience<u32> {
        Audience::Tutorial { except: None }
    }

    fn code<T: std::fmt::Debug>(result: Result<T, DomainError>) -> Option<ErrorCode> {
        result.err().map(|e| e.code())
    }

    fn add(community: &mut Community, socket: u32, who: &str) {
        if let Err(e) = community.add_tutorial(&socket, user(socket), who) {
            panic!("{who}: {e}");
        }
    }

    fn connect(community: &mut Community, socket: u32, id: &str, who: &str) -> Connected<u32> {
        community
            .connect(&socket, UserId::new(id), who)
            .unwrap_or_else(|e| panic!("{who}: {e}"))
    }

    fn message(place: Place, seq: i64, from: &str, text: &str) -> Message {
        Message {
            id: format!("m{seq}"),
            place,
            seq,
            timestamp_ms: 1_000,
            from: name(from),
            text: text.to_owned(),
            client_id: None,
        }
    }

    #[test]
    fn a_tutorial_newcomer_is_greeted_announced_and_everyone_gets_the_list() {
        let mut community = community();
        add(&mut community, 1, "ann");
        assert_eq!(
            community.add_tutorial(&2, user(2), " bob "),
            Ok(vec![
                Outgoing {
                    to: Audience::Socket(2),
                    notice: chat("Server", "you have connected")
                },
                Outgoing {
                    to: Audience::Tutorial { except: Some(2) },
                    notice: chat("Server", "bob has connected"),
                },
                Outgoing {
                    to: tutorial_all(),
                    notice: users(&["ann", "bob"])
                },
                Outgoing {
                    to: Audience::Watchers(Vec::new()),
                    notice: Notice::Presence {
                        name: name("bob"),
                        online: true
                    },
                },
            ])
        );
    }

    #[test]
    fn a_taken_name_is_refused_case_insensitively_and_the_list_stays_right() {
        let mut community = community();
        add(&mut community, 1, "Ann");
        assert_eq!(
            code(community.add_tutorial(&2, user(2), "aNN")),
            Some(ErrorCode::NameTaken)
        );
        assert_eq!(
            code(community.connect(&3, user(3), "ANN")),
            Some(ErrorCode::NameTaken)
        );
        assert_eq!(community.user_count(), 1);
        assert_eq!(community.name_of(&2), None);
    }

    #[test]
    fn invalid_and_reserved_names_are_refused() {
        let mut community = community();
        assert_eq!(
            code(community.add_tutorial(&1, user(1), "<b>x</b>")),
            Some(ErrorCode::InvalidName)
        );
        assert_eq!(
            code(community.add_tutorial(&1, user(1), "server")),
            Some(ErrorCode::NameReserved)
        );
        assert_eq!(
            code(community.connect(&1, user(1), "SERVER")),
            Some(ErrorCode::NameReserved)
        );
        assert_eq!(community.user_count(), 0);
    }

    #[test]
    fn adding_oneself_again_is_silent_and_renaming_is_refused() {
        let mut community = community();
        add(&mut community, 1, "ann");
        assert_eq!(community.add_tutorial(&1, user(1), "ANN"), Ok(Vec::new()));
        assert_eq!(
            code(community.add_tutorial(&1, user(1), "bob")),
            Some(ErrorCode::AlreadyNamed)
        );
        assert_eq!(community.name_of(&1), Some(&name("ann")));
        assert!(
            community.add_tutorial(&2, user(2), "bob").is_ok(),
            "bob stayed free"
        );
    }

    #[test]
    fn sending_before_choosing_a_name_is_refused() {
        let community = community();
        let refused = community.draft_for_room(&1, &RoomName::general(), "hi");
        assert_eq!(code(refused), Some(ErrorCode::NameRequired));
    }

    #[test]
    fn a_message_is_validated_then_goes_to_tutorial_and_full_members_of_general() {
        let mut community = Community::new(Limits {
            max_message_chars: 5,
            ..Limits::default()
        });
        add(&mut community, 1, "ann");
        let general = RoomName::general();
        assert_eq!(
            code(community.draft_for_room(&1, &general, "")),
            Some(ErrorCode::InvalidMessage)
        );
        assert_eq!(
            code(community.draft_for_room(&1, &general, "123456")),
            Some(ErrorCode::MessageTooLong)
        );
        let draft = community.draft_for_room(&1, &general, "<i>");
        assert_eq!(draft.as_ref().map(|d| d.body.as_str()), Ok("<i>"));

        let stored = message(Place::Room(general.clone()), 1, "ann", "<i>");
        assert_eq!(
            community.posted(stored.clone()),
            vec![
                Outgoing {
                    to: tutorial_all(),
                    notice: Notice::Message(stored.clone())
                },
                Outgoing {
                    to: Audience::Room(general),
                    notice: Notice::Message(stored)
                },
            ]
        );
    }

    #[test]
    fn a_message_in_another_room_reaches_only_that_rooms_full_members() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        assert!(community.create_room(&1, "rust").is_ok());
        let stored = message(Place::Room(room("rust")), 1, "ann", "hi");
        assert_eq!(
            community.posted(stored.clone()),
            vec![Outgoing {
                to: Audience::Room(room("rust")),
                notice: Notice::Message(stored)
            }]
        );
    }

    #[test]
    fn only_members_may_post_in_a_room() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        connect(&mut community, 2, "b", "bob");
        assert!(community.create_room(&1, "rust").is_ok());
        assert_eq!(
            code(community.draft_for_room(&2, &room("rust"), "hi")),
            Some(ErrorCode::NotInRoom)
        );
        assert_eq!(
            code(community.draft_for_room(&2, &room("nope"), "hi")),
            Some(ErrorCode::UnknownRoom)
        );
    }

    #[test]
    fn a_departed_tutorial_user_is_announced_with_the_new_list() {
        let mut community = community();
        add(&mut community, 1, "ann");
        add(&mut community, 2, "bob");
        assert_eq!(
            community.disconnect(&1, 0),
            vec![
                Outgoing {
                    to: tutorial_all(),
                    notice: chat("Server", "ann has disconnected.")
                },
                Outgoing {
                    to: Audience::Watchers(Vec::new()),
                    notice: Notice::Presence {
                        name: name("ann"),
                        online: false
                    },
                },
                Outgoing {
                    to: tutorial_all(),
                    notice: users(&["bob"])
                },
            ]
        );
        assert!(
            community.add_tutorial(&3, user(3), "ann").is_ok(),
            "the name is free again"
        );
        assert_eq!(
            community.disconnect(&9, 0),
            Vec::new(),
            "an unnamed socket leaves silently"
        );
    }

    #[test]
    fn a_dropped_tutorial_user_resumed_in_time_is_never_announced_gone() {
        let mut community = community();
        add(&mut community, 1, "ann");
        add(&mut community, 2, "bob");
        assert_eq!(community.drop_connection(&1, 0), Vec::new());
        assert_eq!(
            code(community.add_tutorial(&3, user(3), "ANN")),
            Some(ErrorCode::NameTaken),
            "the name is held while ann may resume"
        );
        assert_eq!(
            community.resume_tutorial(&4, user(1), &name("ann")),
            Ok(Vec::new())
        );
        assert_eq!(community.name_of(&4), Some(&name("ann")));
        assert_eq!(community.sweep(60_000).notices, Vec::new());
        assert_eq!(
            community.add_tutorial(&4, user(1), "ann"),
            Ok(Vec::new()),
            "the page's addUser after a resume changes nothing"
        );
    }

    #[test]
    fn a_tutorial_user_resumed_after_its_grace_arrives_again_and_only_if_its_name_is_free() {
        let mut community = community();
        add(&mut community, 1, "ann");
        add(&mut community, 2, "bob");
        community.drop_connection(&1, 0);
        let swept = community.sweep(community.limits().presence_grace_ms);
        assert_eq!(
            swept.notices[0].notice,
            chat("Server", "ann has disconnected.")
        );
        assert_eq!(
            swept.departed,
            Vec::<UserId>::new(),
            "tutorial users are not stored"
        );
        let notices = community
            .resume_tutorial(&4, user(1), &name("ann"))
            .unwrap_or_default();
        assert!(
            notices
                .iter()
                .any(|o| o.notice == chat("Server", "ann has connected"))
        );

        community.drop_connection(&4, 0);
        community.sweep(community.limits().presence_grace_ms);
        add(&mut community, 5, "ann");
        assert_eq!(
            code(community.resume_tutorial(&6, user(1), &name("ann"))),
            Some(ErrorCode::NameTaken)
        );
    }

    #[test]
    fn a_user_with_two_tabs_stays_online_until_the_last_one_closes_and_its_grace_ends() {
        let mut community = community();
        let first = connect(&mut community, 1, "a", "ann");
        assert!(!first.notices.is_empty(), "the first tab announces ann");
        let second = connect(&mut community, 2, "a", "whatever");
        assert_eq!(second.name, name("ann"), "a resumed session keeps its name");
        assert_eq!(second.notices, Vec::new(), "a second tab announces nothing");

        assert_eq!(community.disconnect(&1, 1_000), Vec::new());
        assert_eq!(
            community.disconnect(&2, 2_000),
            Vec::new(),
            "the grace period starts"
        );
        assert_eq!(
            community.sweep(6_999).notices,
            Vec::new(),
            "still within 5 s of grace"
        );
        let gone = community.sweep(7_000).notices;
        assert!(gone.contains(&Outgoing {
            to: Audience::Watchers(Vec::new()),
            notice: Notice::Presence {
                name: name("ann"),
                online: false
            },
        }));
        assert_eq!(community.user_count(), 0);
    }

    #[test]
    fn a_grace_period_ended_for_a_cluster_is_announced_or_quiet_as_decided_and_only_once_over() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        connect(&mut community, 2, "b", "bob");
        connect(&mut community, 3, "c", "cy");
        assert!(community.create_room(&1, "rust").is_ok());
        for socket in [1, 2, 3] {
            assert_eq!(community.disconnect(&socket, 0), Vec::new());
        }
        assert_eq!(community.grace_over(4_999), Vec::new());
        let mut over = community.grace_over(5_000);
        over.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            over,
            [
                (UserId::new("a"), Protocol::Full),
                (UserId::new("b"), Protocol::Full),
                (UserId::new("c"), Protocol::Full)
            ]
        );
        // Cy came back meanwhile: it stays, whatever was decided.
        connect(&mut community, 4, "c", "cy");
        let swept = community.end_grace(
            [
                (UserId::new("a"), true),
                (UserId::new("b"), false),
                (UserId::new("c"), true),
            ],
            5_000,
        );
        assert_eq!(
            swept.departed,
            [UserId::new("a")],
            "bob is online on another node"
        );
        assert_eq!(
            swept
                .notices
                .iter()
                .filter(|outgoing| matches!(outgoing.notice, Notice::Presence { .. }))
                .collect::<Vec<_>>(),
            [&Outgoing {
                to: Audience::Watchers(vec![room("rust")]),
                notice: Notice::Presence {
                    name: name("ann"),
                    online: false
                },
            }]
        );
        assert!(
            !community.is_present(&UserId::new("a")) && !community.is_present(&UserId::new("b"))
        );
        assert!(community.is_present(&UserId::new("c")));
        assert_eq!(community.socket_count(&UserId::new("c")), Some(1));
        assert_eq!(
            community.name_of_user(&UserId::new("b")),
            Some(&name("bob"))
        );
    }

    #[test]
    fn a_user_gone_with_another_node_is_announced_to_the_watchers_of_its_rooms_unless_here() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        assert!(community.create_room(&1, "rust").is_ok());
        assert_eq!(community.disconnect(&1, 0), Vec::new());
        community.sweep(10_000);
        assert_eq!(
            community.gone_elsewhere(&UserId::new("a"), name("ann")),
            [Outgoing {
                to: Audience::Watchers(vec![room("rust")]),
                notice: Notice::Presence {
                    name: name("ann"),
                    online: false
                },
            }]
        );
        assert_eq!(
            community.gone_elsewhere(&UserId::new("z"), name("zed"))[0].to,
            Audience::Watchers(Vec::new()),
            "a stranger is announced to the subscribers"
        );
        connect(&mut community, 2, "a", "ann");
        assert_eq!(
            community.gone_elsewhere(&UserId::new("a"), name("ann")),
            Vec::new()
        );
    }

    #[test]
    fn presence_goes_to_subscribers_and_the_members_of_the_users_rooms_but_general() {
        let mut community = community();
        let ann = connect(&mut community, 1, "a", "ann");
        assert!(ann.notices.contains(&Outgoing {
            to: Audience::Watchers(Vec::new()),
            notice: Notice::Presence {
                name: name("ann"),
                online: true
            },
        }));
        assert!(community.create_room(&1, "rust").is_ok());
        assert_eq!(community.disconnect(&1, 0), Vec::new());
        assert!(community.sweep(5_000).notices.contains(&Outgoing {
            to: Audience::Watchers(vec![room("rust")]),
            notice: Notice::Presence {
                name: name("ann"),
                online: false
            },
        }));
        // Back with her token: announced to rust's members again.
        let back = connect(&mut community, 2, "a", "ann");
        assert!(back.notices.contains(&Outgoing {
            to: Audience::Watchers(vec![room("rust")]),
            notice: Notice::Presence {
                name: name("ann"),
                online: true
            },
        }));
    }

    #[test]
    fn a_user_online_before_a_restart_returns_silently_or_leaves_when_its_grace_ends() {
        let mut community = community();
        community.restore_rooms([room("rust")]);
        community.restore_present(UserId::new("a"), name("ann"), [room("rust")], 30_000);
        community.restore_present(UserId::new("b"), name("bob"), [], 30_000);
        let watcher = connect(&mut community, 3, "c", "cy");
        assert_eq!(watcher.name, name("cy"));
        assert_eq!(
            community.members("rust").unwrap_or_default(),
            vec![MemberView {
                name: name("ann"),
                online: true
            }],
            "listed online while its client reconnects"
        );
        assert_eq!(
            code(community.connect(&9, UserId::new("z"), "ANN")),
            Some(ErrorCode::NameTaken)
        );
        let back = connect(&mut community, 1, "a", "ann");
        assert_eq!(back.notices, Vec::new(), "ann's return is not announced");
        assert_eq!(back.rooms, vec![RoomName::general(), room("rust")]);
        assert_eq!(community.sweep(29_999).notices, Vec::new());
        let swept = community.sweep(30_000);
        assert_eq!(
            swept.departed,
            vec![UserId::new("b")],
            "only bob never came back"
        );
        assert!(swept.notices.contains(&Outgoing {
            to: Audience::Watchers(Vec::new()),
            notice: Notice::Presence {
                name: name("bob"),
                online: false
            },
        }));
    }

    #[test]
    fn a_user_back_within_the_grace_period_is_never_announced_as_gone() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        assert!(community.create_room(&1, "rust").is_ok());
        assert_eq!(community.disconnect(&1, 1_000), Vec::new());
        let back = connect(&mut community, 2, "a", "ann");
        assert_eq!(back.notices, Vec::new());
        assert_eq!(
            back.rooms,
            vec![RoomName::general(), room("rust")],
            "rooms are kept"
        );
        assert_eq!(community.sweep(100_000).notices, Vec::new());
    }

    #[test]
    fn a_member_away_past_the_grace_period_is_listed_offline_and_gets_its_rooms_back() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        connect(&mut community, 2, "b", "bob");
        assert!(community.create_room(&1, "rust").is_ok());
        assert!(community.join_room(&2, "rust").is_ok());
        assert_eq!(community.disconnect(&2, 0), Vec::new());
        assert!(
            !community.sweep(10_000).notices.is_empty(),
            "bob is announced offline"
        );
        let members = community.members("rust").unwrap_or_default();
        assert_eq!(
            members,
            vec![
                MemberView {
                    name: name("ann"),
                    online: true
                },
                MemberView {
                    name: name("bob"),
                    online: false
                },
            ]
        );
        assert_eq!(
            community.rooms()[1],
            RoomSummary {
                name: room("rust"),
                members: 2,
                online: 1
            }
        );
        let back = connect(&mut community, 3, "b", "bob");
        assert_eq!(back.rooms, vec![RoomName::general(), room("rust")]);
        assert!(community.is_in_room(&3, &room("rust")));
    }

    #[test]
    fn rooms_are_created_joined_listed_and_left() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        connect(&mut community, 2, "b", "bob");
        assert!(community.create_room(&1, "rust").is_ok());
        assert_eq!(
            code(community.create_room(&2, "rust")),
            Some(ErrorCode::RoomExists)
        );
        assert_eq!(
            code(community.create_room(&2, "a b")),
            Some(ErrorCode::InvalidRoom)
        );

        let (_, joined) = community
            .join_room(&2, "rust")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            joined,
            vec![Outgoing {
                to: Audience::Room(room("rust")),
                notice: Notice::RoomMember {
                    room: room("rust"),
                    name: name("bob"),
                    joined: true
                },
            }]
        );
        assert_eq!(
            community.join_room(&2, "rust").map(|(_, n)| n),
            Ok(Vec::new()),
            "idempotent"
        );
        let listed = community.rooms();
        assert_eq!(
            listed,
            vec![
                RoomSummary {
                    name: RoomName::general(),
                    members: 2,
                    online: 2
                },
                RoomSummary {
                    name: room("rust"),
                    members: 2,
                    online: 2
                },
            ]
        );
        let members = community.members("rust").unwrap_or_default();
        assert_eq!(
            members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["ann", "bob"]
        );

        assert!(community.leave_room(&2, "rust").is_ok());
        assert_eq!(
            code(community.leave_room(&2, "rust")),
            Some(ErrorCode::NotInRoom)
        );
        assert_eq!(
            code(community.leave_room(&2, "general")),
            Some(ErrorCode::InvalidRoom)
        );
        assert_eq!(
            code(community.join_room(&2, "nope")),
            Some(ErrorCode::UnknownRoom)
        );
    }

    #[test]
    fn a_direct_message_goes_to_every_socket_of_both_users() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        connect(&mut community, 2, "b", "bob");
        let draft = community
            .draft_direct(&1, "BOB", "psst")
            .unwrap_or_else(|e| panic!("{e}"));
        let place = Place::Direct {
            from: UserId::new("a"),
            to: UserId::new("b"),
            to_name: name("bob"),
        };
        assert_eq!(draft.place, place);
        let stored = message(place, 1, "ann", "psst");
        assert_eq!(
            community.posted(stored.clone()),
            vec![
                Outgoing {
                    to: Audience::User(UserId::new("a")),
                    notice: Notice::Message(stored.clone())
                },
                Outgoing {
                    to: Audience::User(UserId::new("b")),
                    notice: Notice::Message(stored)
                },
            ]
        );
        assert_eq!(
            code(community.draft_direct(&1, "nobody", "hi")),
            Some(ErrorCode::UnknownUser)
        );
    }

    #[test]
    fn a_direct_message_may_go_to_someone_away_but_not_to_a_stranger() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        connect(&mut community, 2, "b", "bob");
        assert_eq!(community.disconnect(&2, 0), Vec::new());
        assert!(!community.sweep(10_000).notices.is_empty(), "bob is gone");
        let draft = community.draft_direct(&1, "bob", "later");
        assert_eq!(
            draft.map(|d| d.place).ok(),
            Some(Place::Direct {
                from: UserId::new("a"),
                to: UserId::new("b"),
                to_name: name("bob"),
            })
        );
        add(&mut community, 3, "tut");
        community.disconnect(&3, 0);
        assert_eq!(
            code(community.draft_direct(&1, "tut", "?")),
            Some(ErrorCode::UnknownUser)
        );
        assert!(
            community.connect(&4, user(4), "bob").is_ok(),
            "the name is free for others"
        );
        let draft = community.draft_direct(&1, "bob", "hi");
        assert_eq!(
            draft.map(|d| d.place).ok().and_then(|p| match p {
                Place::Direct { to, .. } => Some(to),
                Place::Room(_) => None,
            }),
            Some(user(4)),
            "the latest holder of a name wins"
        );
    }

    #[test]
    fn a_restored_member_is_listed_offline_reachable_and_gets_its_rooms_back() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        community.create_room(&1, "dev").expect("create");
        community.restore_member(UserId::new("b"), name("Bob"), [room("dev"), room("gone")]);
        assert!(community.knows_user(&UserId::new("b")));
        let dev = community.members("dev").expect("members");
        assert_eq!(
            dev.iter()
                .map(|m| (m.name.as_str(), m.online))
                .collect::<Vec<_>>(),
            [("ann", true), ("Bob", false)]
        );
        assert!(
            community.draft_direct(&1, "bob", "hi").is_ok(),
            "DM to an away user"
        );
        // Restoring someone present or remembered changes nothing.
        community.restore_member(UserId::new("a"), name("ann"), [room("dev")]);
        community.restore_member(UserId::new("b"), name("Bob"), []);

        let back = connect(&mut community, 2, "b", "Bob");
        assert_eq!(
            back.rooms,
            [room("dev"), room("general")],
            "unknown rooms dropped"
        );
        let dev = community.members("dev").expect("members");
        assert!(dev.iter().all(|m| m.online), "{dev:?}");
    }

    #[test]
    fn a_forgotten_user_is_no_member_and_unreachable_unless_it_is_connected() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        connect(&mut community, 2, "g", "ghost");
        assert!(
            community.forget_user(&UserId::new("g")).is_none(),
            "connected"
        );
        community.disconnect(&2, 0);
        assert!(community.forget_user(&UserId::new("g")).is_some());
        let general = community.members("general").expect("members");
        assert_eq!(general.len(), 1, "{general:?}");
        assert_eq!(
            code(community.draft_direct(&1, "ghost", "hi")),
            Some(ErrorCode::UnknownUser)
        );
        connect(&mut community, 3, "x", "ghost");
    }

    #[test]
    fn tutorial_users_have_no_direct_messages_and_no_other_rooms() {
        let mut community = community();
        add(&mut community, 1, "tut");
        connect(&mut community, 2, "f", "full");
        community.create_room(&2, "dev").expect("create");
        assert_eq!(
            code(community.draft_direct(&2, "tut", "hi")),
            Some(ErrorCode::NotSupported)
        );
        assert_eq!(
            code(community.draft_direct(&1, "full", "hi")),
            Some(ErrorCode::NotSupported)
        );
        assert_eq!(
            code(community.join_room(&1, "dev")),
            Some(ErrorCode::NotSupported)
        );
        assert_eq!(
            code(community.create_room(&1, "x")),
            Some(ErrorCode::NotSupported)
        );
        assert!(community.join_room(&1, "general").is_ok());
    }

    #[test]
    fn typing_goes_to_the_rooms_other_sockets() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        assert_eq!(
            community.typing(&1, "general", true),
            Ok(vec![Outgoing {
                to: Audience::RoomExcept(RoomName::general(), 1),
                notice: Notice::Typing {
                    room: RoomName::general(),
                    name: name("ann"),
                    typing: true
                },
            }])
        );
        assert_eq!(
            code(community.typing(&9, "general", true)),
            Some(ErrorCode::NameRequired)
        );
    }

    #[test]
    fn tutorial_users_see_full_users_arrive_in_the_list() {
        let mut community = community();
        add(&mut community, 1, "ann");
        let connected = connect(&mut community, 2, "b", "bob");
        assert!(connected.notices.contains(&Outgoing {
            to: tutorial_all(),
            notice: users(&["ann", "bob"])
        }));
        assert!(connected.notices.contains(&Outgoing {
            to: Audience::Tutorial { except: None },
            notice: chat("Server", "bob has connected"),
        }));
    }

    fn lists(notices: &[Outgoing<u32>]) -> Vec<&Notice> {
        notices
            .iter()
            .map(|outgoing| &outgoing.notice)
            .filter(|notice| matches!(notice, Notice::Users(_)))
            .collect()
    }

    #[test]
    fn a_sweep_of_many_departures_builds_one_user_list_after_every_notice() {
        let mut community = community();
        add(&mut community, 1, "watcher");
        for socket in 2..202 {
            connect(
                &mut community,
                socket,
                &format!("id{socket}"),
                &format!("u{socket}"),
            );
        }
        for socket in 2..202 {
            assert_eq!(community.disconnect(&socket, 0), Vec::new());
        }
        let notices = community.sweep(60_000).notices;
        assert_eq!(
            lists(&notices),
            vec![&users(&["watcher"])],
            "one list, the final one"
        );
        let farewells = notices
            .iter()
            .filter(|outgoing| {
                matches!(&outgoing.notice, Notice::Chat { text, .. } if text.ends_with("has disconnected."))
            })
            .count();
        assert_eq!(farewells, 200, "every leaver is still announced");
        assert!(
            matches!(
                notices.last(),
                Some(Outgoing {
                    notice: Notice::Users(_),
                    ..
                })
            ),
            "the list comes after the notices"
        );
    }

    #[test]
    fn without_a_tutorial_user_no_list_is_built() {
        let mut community = community();
        for socket in 1..101 {
            let connected = connect(
                &mut community,
                socket,
                &format!("id{socket}"),
                &format!("u{socket}"),
            );
            assert!(lists(&connected.notices).is_empty());
        }
        for socket in 1..101 {
            community.disconnect(&socket, 0);
        }
        let notices = community.sweep(60_000).notices;
        assert!(lists(&notices).is_empty());
        assert_eq!(notices.len(), 200, "a notice and a presence per leaver");
        assert!(community.users_notice().is_none());

        add(&mut community, 200, "late");
        assert_eq!(
            community.users_notice().map(|outgoing| outgoing.notice),
            Some(users(&["late"]))
        );
        community.disconnect(&200, 0);
        assert!(
            community.users_notice().is_none(),
            "the count follows departures"
        );
    }

    #[test]
    fn a_membership_stored_on_another_node_is_mirrored_and_announced_once() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        community.create_room(&1, "rust").expect("create");
        let (bob, rust) = (UserId::new("b"), room("rust"));
        let joined = community.membership_elsewhere(&bob, &name("bob"), &rust, true);
        assert_eq!(
            joined,
            vec![Outgoing {
                to: Audience::Room(rust.clone()),
                notice: Notice::RoomMember {
                    room: rust.clone(),
                    name: name("bob"),
                    joined: true
                },
            }]
        );
        let listed = community.members("rust").expect("members");
        assert_eq!(listed.len(), 2);
        assert!(!listed[1].online, "bob is on another node: listed offline");
        assert!(
            community
                .membership_elsewhere(&bob, &name("bob"), &rust, true)
                .is_empty(),
            "a repeat changes nothing"
        );
        assert_eq!(
            community
                .membership_elsewhere(&bob, &name("bob"), &rust, false)
                .len(),
            1
        );
        assert_eq!(community.members("rust").map(|m| m.len()), Ok(1));
        // A room created elsewhere is learnt from a join to it.
        community.membership_elsewhere(&bob, &name("bob"), &room("go"), true);
        assert!(community.room_exists(&room("go")));
    }

    #[test]
    fn a_user_announced_on_another_node_is_listed_online_and_in_the_tutorial_list_until_it_leaves()
    {
        let mut community = community();
        add(&mut community, 1, "tina");
        connect(&mut community, 2, "a", "ann");
        community.create_room(&2, "rust").expect("create");
        let rust = room("rust");
        community.membership_elsewhere(&UserId::new("b"), &name("bob"), &rust, true);
        assert_eq!(
            community.arrived_elsewhere(name("bob"), [rust.clone()]),
            vec![
                Outgoing {
                    to: tutorial_all(),
                    notice: chat(SERVER_NAME, "bob has connected"),
                },
                Outgoing {
                    to: tutorial_all(),
                    notice: users(&["tina", "ann", "bob"]),
                },
                Outgoing {
                    to: Audience::Watchers(vec![rust.clone()]),
                    notice: Notice::Presence {
                        name: name("bob"),
                        online: true
                    },
                },
            ]
        );
        let online = |community: &Community| {
            community
                .members("rust")
                .expect("members")
                .into_iter()
                .map(|member| (member.name.as_str().to_owned(), member.online))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            online(&community),
            [("ann".to_owned(), true), ("bob".to_owned(), true)]
        );
        let rust_summary = community.rooms().into_iter().find(|r| r.name == rust);
        assert_eq!(rust_summary.map(|r| (r.members, r.online)), Some((2, 2)));
        assert_eq!(
            community.arrived_elsewhere(name("bob"), [rust.clone()]),
            Vec::new(),
            "announced once"
        );

        assert_eq!(
            community.departed_elsewhere(name("bob"), [rust.clone()]),
            vec![
                Outgoing {
                    to: tutorial_all(),
                    notice: chat(SERVER_NAME, "bob has disconnected."),
                },
                Outgoing {
                    to: Audience::Watchers(vec![rust.clone()]),
                    notice: Notice::Presence {
                        name: name("bob"),
                        online: false
                    },
                },
                Outgoing {
                    to: tutorial_all(),
                    notice: users(&["tina", "ann"]),
                },
            ]
        );
        assert_eq!(
            online(&community),
            [("ann".to_owned(), true), ("bob".to_owned(), false)]
        );
    }

    #[test]
    fn a_user_whose_grace_ended_here_while_another_node_holds_it_stays_listed_online() {
        let mut community = community();
        connect(&mut community, 1, "a", "ann");
        connect(&mut community, 2, "b", "bob");
        community.create_room(&1, "rust").expect("create");
        community.join_room(&2, "rust").expect("join");
        assert_eq!(community.disconnect(&2, 0), Vec::new());
        let swept = community.end_grace([(UserId::new("b"), false)], 5_000);
        assert!(swept.departed.is_empty());
        assert!(!community.is_present(&UserId::new("b")));
        let bob = |community: &Community| {
            community
                .members("rust")
                .expect("members")
                .into_iter()
                .find(|member| member.name == name("bob"))
                .map(|member| member.online)
        };
        assert_eq!(bob(&community), Some(true), "online on the other node");
        let gone = community.departed_elsewhere(name("bob"), [room("rust")]);
        assert!(
            gone.iter().any(|outgoing| outgoing.notice
                == Notice::Presence {
                    name: name("bob"),
                    online: false
                }),
            "{gone:?}"
        );
        assert_eq!(bob(&community), Some(false));
    }

    #[test]
    fn who_is_on_other_nodes_is_read_again_without_losing_what_was_announced_meanwhile() {
        let mut community = community();
        add(&mut community, 1, "tina");
        let mark = community.elsewhere_mark();
        community.arrived_elsewhere(name("cy"), []);
        let list = community.set_elsewhere(vec![name("dan")], mark);
        assert_eq!(
            list.map(|outgoing| outgoing.notice),
            Some(users(&["tina", "cy", "dan"])),
            "cy was announced after the read began: kept"
        );
        assert!(community.is_elsewhere(&name("cy")) && community.is_elsewhere(&name("dan")));
        let mark = community.elsewhere_mark();
        assert_eq!(
            community.set_elsewhere(vec![name("dan"), name("cy")], mark),
            None,
            "nothing changed"
        );
        let list = community.set_elsewhere(vec![name("dan")], mark);
        assert_eq!(
            list.map(|outgoing| outgoing.notice),
            Some(users(&["tina", "dan"]))
        );
        assert!(!community.is_elsewhere(&name("cy")));
    }

    #[test]
    fn a_user_announced_here_and_on_another_node_at_once_is_announced_here_once() {
        let mut community = community();
        let arrived = connect(&mut community, 1, "a", "ann");
        assert_eq!(
            arrived
                .notices
                .iter()
                .filter(|outgoing| matches!(outgoing.notice, Notice::Presence { .. }))
                .count(),
            1
        );
        // Another node saw her first tab at the same instant and announced her too.
        assert_eq!(community.arrived_elsewhere(name("ann"), []), Vec::new());
        // Her tab here closes, the other node still has her: quiet, and still listed.
        assert_eq!(community.disconnect(&1, 0), Vec::new());
        let swept = community.end_grace([(UserId::new("a"), false)], 10_000);
        assert!(
            !swept
                .notices
                .iter()
                .any(|outgoing| matches!(outgoing.notice, Notice::Presence { .. })),
            "{swept:?}"
        );
        assert!(community.is_elsewhere(&name("ann")));
    }
}
