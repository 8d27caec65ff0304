//! Room index and cluster fan-out.
//!
//! Each namespace keeps a `NsCore`: room → sockets and socket → (connection, rooms), so a
//! broadcast finds its recipients without scanning. The [`Adapter`] decides where a broadcast
//! goes beyond this process; [`LocalAdapter`] delivers to this process's sockets only.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::conn::Conn;
use crate::eio::Frame;
use crate::types::SocketId;

/// A broadcast as the adapter sees it: where it goes and the frames, already encoded.
#[derive(Debug, Clone)]
pub struct BroadcastPacket {
    /// Namespace, e.g. `/`.
    pub namespace: String,
    /// Target rooms; empty means every socket of the namespace.
    pub rooms: Vec<String>,
    /// Rooms (or socket ids) excluded.
    pub except: Vec<String>,
    /// Dropped for recipients that are not writable.
    pub volatile: bool,
    /// The Engine.IO text frame (`4…`), shared by v3 and v4 clients.
    pub text: bytes::Bytes,
    /// Binary attachments that follow the text frame.
    pub attachments: Vec<bytes::Bytes>,
}

/// Fan-out of broadcasts beyond the local room index. The engine always delivers locally;
/// a cluster adapter also forwards the encoded packet to other nodes (which deliver it with
/// [`crate::SocketIo::deliver_remote`]).
pub trait Adapter: Send + Sync + 'static {
    /// Called once per broadcast after local delivery. Default: nothing (single node).
    fn publish(&self, packet: &BroadcastPacket) {
        let _ = packet;
    }
}

/// Delivers broadcasts to sockets of this process only.
#[derive(Debug, Default)]
pub struct LocalAdapter;

impl Adapter for LocalAdapter {}

struct Member {
    conn: Arc<Conn>,
    /// Rooms this socket joined (its own id excluded), for O(rooms) leave-all.
    rooms: Vec<Arc<str>>,
}

#[derive(Default)]
struct RoomIndex {
    rooms: HashMap<Arc<str>, HashSet<SocketId>>,
    members: HashMap<SocketId, Member>,
}

/// Per-namespace state shared by its sockets: path, room index and the server's adapter.
pub(crate) struct NsCore {
    pub(crate) path: Arc<str>,
    /// `""` for `/`, else `/nsp,`: what every packet of this namespace carries.
    pub(crate) prefix: String,
    /// Where this namespace's broadcasts go beyond this process (the server's one adapter).
    pub(crate) adapter: Arc<dyn Adapter>,
    /// A std `Mutex`: joins, leaves and broadcast lookups are short synchronous map
    /// operations, never held across `.await`.
    index: Mutex<RoomIndex>,
}

/// Broadcast targets, resolved against the index.
pub(crate) struct Targets<'a> {
    pub rooms: &'a [String],
    pub except: &'a [String],
    pub except_socket: Option<&'a SocketId>,
    pub volatile: bool,
}

impl NsCore {
    pub(crate) fn new(path: &str, adapter: Arc<dyn Adapter>) -> Self {
        Self {
            path: path.into(),
            prefix: crate::sio::nsp_prefix(path),
            adapter,
            index: Mutex::new(RoomIndex::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_member(&self, id: &SocketId, conn: Arc<Conn>) {
        self.lock().members.insert(
            id.clone(),
            Member {
                conn,
                rooms: Vec::new(),
            },
        );
    }

    pub(crate) fn has_member(&self, id: &SocketId) -> bool {
        self.lock().members.contains_key(id)
    }

    pub(crate) fn remove_member(&self, id: &SocketId) {
        let mut index = self.lock();
        if let Some(member) = index.members.remove(id) {
            for room in member.rooms {
                if let Some(set) = index.rooms.get_mut(&room) {
                    set.remove(id);
                    if set.is_empty() {
                        index.rooms.remove(&room);
                    }
                }
            }
        }
    }

    pub(crate) fn join(&self, id: &SocketId, room: &str) {
        let mut index = self.lock();
        let index = &mut *index;
        let Some(member) = index.members.get_mut(id) else {
            return;
        };
        if member.rooms.iter().any(|r| &**r == room) {
            return;
        }
        let key: Arc<str> = match index.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => room.into(),
        };
        member.rooms.push(key.clone());
        index.rooms.entry(key).or_default().insert(id.clone());
    }

    pub(crate) fn leave(&self, id: &SocketId, room: &str) {
        let mut index = self.lock();
        let Some(member) = index.members.get_mut(id) else {
            return;
        };
        member.rooms.retain(|r| &**r != room);
        if let Some(set) = index.rooms.get_mut(room) {
            set.remove(id);
            if set.is_empty() {
                index.rooms.remove(room);
            }
        }
    }

    pub(crate) fn rooms_of(&self, id: &SocketId) -> Vec<String> {
        self.lock()
            .members
            .get(id)
            .map(|m| m.rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    /// Number of sockets in `room` (a socket id counts as a room of one).
    pub(crate) fn room_size(&self, room: &str) -> usize {
        let index = self.lock();
        match index.rooms.get(room) {
            Some(set) => set.len(),
            None => usize::from(index.members.contains_key(room)),
        }
    }

    /// Number of sockets in the namespace.
    pub(crate) fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// Queue `frames` to every recipient; each is pushed once even if in several rooms.
    pub(crate) fn deliver(&self, targets: &Targets<'_>, frames: &[Frame]) {
        let index = self.lock();
        let mut excluded: HashSet<&SocketId> = HashSet::new();
        if let Some(id) = targets.except_socket {
            excluded.insert(id);
        }
        for room in targets.except {
            match index.rooms.get(room.as_str()) {
                Some(set) => excluded.extend(set.iter()),
                None => {
                    if let Some((id, _)) = index.members.get_key_value(room.as_str()) {
                        excluded.insert(id);
                    }
                }
            }
        }
        // Pushing never blocks; an overflowing recipient is closed (by a spawned cleanup),
        // which does not touch this index until we release it.
        // Most broadcasts exclude nobody: then skip hashing each recipient's id.
        let check_excluded = !excluded.is_empty();
        let send = |id: &SocketId, member: &Member| {
            if !(check_excluded && excluded.contains(id)) {
                let _ = member.conn.push(frames, targets.volatile);
            }
        };
        if targets.rooms.is_empty() {
            for (id, member) in &index.members {
                send(id, member);
            }
            return;
        }
        let mut seen: HashSet<&SocketId> = HashSet::new();
        let single = targets.rooms.len() == 1;
        for room in targets.rooms {
            // A room name that is no room may be a socket id (every socket is its own room).
            let set = index.rooms.get(room.as_str());
            let own_room = match set {
                Some(_) => None,
                None => index.members.get_key_value(room.as_str()).map(|(id, _)| id),
            };
            let ids = set.into_iter().flatten().chain(own_room);
            for id in ids {
                if (single || seen.insert(id))
                    && let Some(member) = index.members.get(id)
                {
                    send(id, member);
                }
            }
        }
    }
}

impl std::borrow::Borrow<str> for SocketId {
    fn borrow(&self) -> &str {
        &self.0
    }
}
