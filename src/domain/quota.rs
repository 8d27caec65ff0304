//! [`Quotas`]: how much one user or one client address may create — rooms (per user for good,
//! per address per hour, and a server-wide ceiling far above what one user may reach) and new
//! users (per address per minute).
//!
//! A check either refuses and changes nothing, or counts what it admits. A room creation is
//! *reserved* before it is stored ([`Quotas::reserve_room`]): the name is held and counted, so
//! a concurrent creation of the same name or past a quota is refused up front; the caller
//! then confirms it ([`Quotas::room_created`]) or gives it back ([`Quotas::room_abandoned`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::community::UserId;
use super::error::{DomainError, ErrorCode};
use super::room::RoomName;

/// Most client addresses remembered per rate; past it the idle ones are forgotten first.
const MAX_ADDRESSES: usize = 100_000;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

/// The limits; 0 means no limit for each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Rooms one user may create, ever.
    pub rooms_per_user: u32,
    /// Rooms that may be created from one client address per hour (bursts of as many).
    pub rooms_per_address_per_hour: u32,
    /// Rooms that may exist on the server.
    pub max_rooms: usize,
    /// New users (a connect with a name) one client address may create per minute.
    pub new_users_per_address_per_minute: u32,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self {
            rooms_per_user: 100,
            rooms_per_address_per_hour: 200,
            max_rooms: 100_000,
            new_users_per_address_per_minute: 60,
        }
    }
}

/// Which address a client counts as: an IPv4 address, or the /64 network of an IPv6 one (a
/// single host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(u128);

impl AddressKey {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                None => Self((u128::from(v6) >> 64) | (1 << 127)),
            },
        }
    }
}

/// At most `count` events per `period_ms` per address, in bursts of up to `count`: a
/// generic cell rate per address (each event pushes the address's "theoretical arrival
/// time" one interval into the future; an event is refused when that would be more than a
/// period ahead of now).
#[derive(Debug)]
struct AddressRate {
    /// Microseconds one event uses up; 0: unlimited.
    interval_us: u64,
    period_us: u64,
    due_us: HashMap<AddressKey, u64>,
}

impl AddressRate {
    fn new(count: u32, period_ms: u64) -> Self {
        let period_us = period_ms.saturating_mul(1_000);
        Self {
            interval_us: if count == 0 {
                0
            } else {
                period_us / u64::from(count)
            },
            period_us,
            due_us: HashMap::new(),
        }
    }

    /// Whether one more event from `address` at `now_ms` is allowed (nothing is counted).
    fn allows(&self, address: AddressKey, now_ms: u64) -> bool {
        if self.interval_us == 0 {
            return true;
        }
        let now = now_ms.saturating_mul(1_000);
        let due = self.due_us.get(&address).copied().unwrap_or(0).max(now);
        due.saturating_add(self.interval_us) - now <= self.period_us
    }

    /// Count one event (after [`Self::allows`]).
    fn count(&mut self, address: AddressKey, now_ms: u64) {
        if self.interval_us == 0 {
            return;
        }
        let now = now_ms.saturating_mul(1_000);
        if self.due_us.len() >= MAX_ADDRESSES && !self.due_us.contains_key(&address) {
            self.due_us.retain(|_, due| *due > now);
            if self.due_us.len() >= MAX_ADDRESSES
                && let Some(any) = self.due_us.keys().next().copied()
            {
                self.due_us.remove(&any);
            }
        }
        let due = self.due_us.entry(address).or_insert(0);
        *due = (*due).max(now).saturating_add(self.interval_us);
    }

    /// Give back one event counted at `now_ms` or before.
    fn uncount(&mut self, address: AddressKey) {
        if let Some(due) = self.due_us.get_mut(&address) {
            *due = due.saturating_sub(self.interval_us);
        }
    }

    /// Forget the addresses whose allowance is whole again.
    fn forget_idle(&mut self, now_ms: u64) {
        let now = now_ms.saturating_mul(1_000);
        self.due_us.retain(|_, due| *due > now);
    }
}

/// A room creation admitted by [`Quotas::reserve_room`], not yet stored.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation is confirmed or abandoned"]
pub struct RoomReservation {
    room: RoomName,
    user: UserId,
    address: Option<AddressKey>,
}

impl RoomReservation {
    pub fn room(&self) -> &RoomName {
        &self.room
    }
}

/// Creation quotas of one server.
#[derive(Debug)]
pub struct Quotas {
    limits: QuotaLimits,
    /// Rooms each user created (stored or being stored).
    created: HashMap<UserId, u32>,
    /// Rooms being stored: held, so nobody else creates them meanwhile.
    pending: BTreeSet<RoomName>,
    rooms_by_address: AddressRate,
    users_by_address: AddressRate,
}

impl Quotas {
    pub fn new(limits: QuotaLimits) -> Self {
        Self {
            limits,
            created: HashMap::new(),
            pending: BTreeSet::new(),
            rooms_by_address: AddressRate::new(limits.rooms_per_address_per_hour, HOUR_MS),
            users_by_address: AddressRate::new(limits.new_users_per_address_per_minute, MINUTE_MS),
        }
    }

    pub fn limits(&self) -> &QuotaLimits {
        &self.limits
    }

    /// Count a stored room against its creator (at startup).
    pub fn restore_room(&mut self, creator: &UserId) {
        *self.created.entry(creator.clone()).or_insert(0) += 1;
    }

    /// Whether `room` is being created right now.
    pub fn is_pending(&self, room: &RoomName) -> bool {
        self.pending.contains(room)
    }

    /// Admit the creation of `room` by `user` from `address` when `existing` rooms exist
    /// (the caller has checked that `room` is not one of them), or refuse it changing
    /// nothing: `room_exists` while another creation of it is being stored, else
    /// `limit_reached` past a quota.
    pub fn reserve_room(
        &mut self,
        user: &UserId,
        address: Option<IpAddr>,
        room: &RoomName,
        existing: usize,
        now_ms: u64,
    ) -> Result<RoomReservation, DomainError> {
        if self.pending.contains(room) {
            return Err(DomainError::new(
                ErrorCode::RoomExists,
                format!("#{room} exists already"),
            ));
        }
        let per_user = self.limits.rooms_per_user;
        if per_user > 0 && self.created.get(user).copied().unwrap_or(0) >= per_user {
            return Err(DomainError::new(
                ErrorCode::LimitReached,
                format!("you have created {per_user} rooms, the most one user may create"),
            ));
        }
        let max_rooms = self.limits.max_rooms;
        if max_rooms > 0 && existing + self.pending.len() >= max_rooms {
            return Err(DomainError::new(
                ErrorCode::LimitReached,
                format!("this server has {max_rooms} rooms, the most it keeps"),
            ));
        }
        let address = address.map(AddressKey::of);
        if let Some(address) = address
            && !self.rooms_by_address.allows(address, now_ms)
        {
            return Err(DomainError::new(
                ErrorCode::LimitReached,
                format!(
                    "{} rooms were created from your address in the last hour, the most allowed",
                    self.limits.rooms_per_address_per_hour
                ),
            ));
        }
        if let Some(address) = address {
            self.rooms_by_address.count(address, now_ms);
        }
        *self.created.entry(user.clone()).or_insert(0) += 1;
        self.pending.insert(room.clone());
        Ok(RoomReservation {
            room: room.clone(),
            user: user.clone(),
            address,
        })
    }

    /// The reserved room is stored: it stays counted, and is no longer held here (the caller
    /// has made it exist).
    pub fn room_created(&mut self, reservation: RoomReservation) {
        self.pending.remove(&reservation.room);
    }

    /// The reserved room was not created after all: everything it counted is given back.
    pub fn room_abandoned(&mut self, reservation: RoomReservation) {
        self.pending.remove(&reservation.room);
        if let Some(count) = self.created.get_mut(&reservation.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.created.remove(&reservation.user);
            }
        }
        if let Some(address) = reservation.address {
            self.rooms_by_address.uncount(address);
        }
    }

    /// Admit one new user (a connect with a name) from `address` at `now_ms`, or refuse with
    /// `rate_limited`, counting nothing.
    pub fn admit_new_user(
        &mut self,
        address: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<(), DomainError> {
        let Some(address) = address.map(AddressKey::of) else {
            return Ok(());
        };
        if !self.users_by_address.allows(address, now_ms) {
            return Err(DomainError::new(
                ErrorCode::RateLimited,
                "too many new users from your address; try again in a minute",
            ));
        }
        self.users_by_address.count(address, now_ms);
        Ok(())
    }

    /// Forget the addresses whose allowances are whole again (call now and then).
    pub fn forget_idle(&mut self, now_ms: u64) {
        self.rooms_by_address.forget_idle(now_ms);
        self.users_by_address.forget_idle(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rooms_per_user: u32, per_address: u32, max_rooms: usize) -> QuotaLimits {
        QuotaLimits {
            rooms_per_user,
            rooms_per_address_per_hour: per_address,
            max_rooms,
            new_users_per_address_per_minute: 2,
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn code<T: std::fmt::Debug>(result: Result<T, DomainError>) -> ErrorCode {
        result
            .err()
            .map(|e| e.code())
            .unwrap_or_else(|| panic!("refused"))
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));

    #[test]
    fn one_user_creates_at_most_its_quota_whatever_its_connections() {
        let mut quotas = Quotas::new(limits(2, 0, 0));
        let ann = UserId::new("ann");
        for name in ["a", "b"] {
            let reserved = quotas.reserve_room(&ann, HOME, &room(name), 0, 0);
            quotas.room_created(reserved.unwrap_or_else(|e| panic!("{e}")));
        }
        let refused = quotas.reserve_room(&ann, HOME, &room("c"), 2, 0);
        assert_eq!(code(refused), ErrorCode::LimitReached);
        let bob = UserId::new("bob");
        assert!(quotas.reserve_room(&bob, HOME, &room("c"), 2, 0).is_ok());
    }

    #[test]
    fn a_stored_room_counts_against_its_creator_after_a_restart() {
        let mut quotas = Quotas::new(limits(1, 0, 0));
        let ann = UserId::new("ann");
        quotas.restore_room(&ann);
        let refused = quotas.reserve_room(&ann, HOME, &room("b"), 1, 0);
        assert_eq!(code(refused), ErrorCode::LimitReached);
    }

    #[test]
    fn an_abandoned_creation_gives_everything_back() {
        let mut quotas = Quotas::new(limits(1, 1, 1));
        let ann = UserId::new("ann");
        let reserved = quotas.reserve_room(&ann, HOME, &room("a"), 0, 0);
        let reserved = reserved.unwrap_or_else(|e| panic!("{e}"));
        assert!(quotas.is_pending(&room("a")));
        let twice = quotas.reserve_room(&UserId::new("bob"), None, &room("a"), 0, 0);
        assert_eq!(
            code(twice),
            ErrorCode::RoomExists,
            "held while being stored"
        );
        quotas.room_abandoned(reserved);
        assert!(!quotas.is_pending(&room("a")));
        assert!(quotas.reserve_room(&ann, HOME, &room("a"), 0, 0).is_ok());
    }

    #[test]
    fn the_server_wide_ceiling_counts_rooms_being_created() {
        let mut quotas = Quotas::new(limits(0, 0, 3));
        let ann = UserId::new("ann");
        let _held = quotas.reserve_room(&ann, None, &room("a"), 2, 0);
        let refused = quotas.reserve_room(&ann, None, &room("b"), 2, 0);
        assert_eq!(code(refused), ErrorCode::LimitReached);
    }

    #[test]
    fn one_address_creates_at_most_its_rooms_per_hour_and_refusals_count_nothing() {
        let mut quotas = Quotas::new(limits(0, 2, 0));
        for (index, name) in ["a", "b"].into_iter().enumerate() {
            let user = UserId::new(format!("u{index}"));
            let reserved = quotas.reserve_room(&user, HOME, &room(name), 0, 0);
            quotas.room_created(reserved.unwrap_or_else(|e| panic!("{e}")));
        }
        let user = UserId::new("u9");
        for _ in 0..3 {
            let refused = quotas.reserve_room(&user, HOME, &room("c"), 2, 1_000);
            assert_eq!(code(refused), ErrorCode::LimitReached);
        }
        let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));
        assert!(
            quotas
                .reserve_room(&user, other, &room("c"), 2, 1_000)
                .is_ok()
        );
        // Half an hour later one more is allowed from the first address, not two.
        let half_hour = HOUR_MS / 2;
        let one = quotas.reserve_room(&user, HOME, &room("d"), 3, half_hour);
        quotas.room_created(one.unwrap_or_else(|e| panic!("{e}")));
        let refused = quotas.reserve_room(&user, HOME, &room("e"), 4, half_hour);
        assert_eq!(code(refused), ErrorCode::LimitReached);
    }

    #[test]
    fn new_users_per_address_are_bounded_per_minute_and_ipv6_counts_per_network() {
        let mut quotas = Quotas::new(limits(0, 0, 0));
        let v6 = |last: u16| {
            Some(IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0, 0, 0, 0, 0, last,
            )))
        };
        assert!(quotas.admit_new_user(v6(1), 0).is_ok());
        assert!(quotas.admit_new_user(v6(2), 0).is_ok());
        assert_eq!(
            code(quotas.admit_new_user(v6(3), 0)),
            ErrorCode::RateLimited
        );
        assert!(quotas.admit_new_user(HOME, 0).is_ok(), "another address");
        assert!(quotas.admit_new_user(v6(4), MINUTE_MS / 2).is_ok());
        assert_eq!(
            code(quotas.admit_new_user(v6(4), MINUTE_MS / 2)),
            ErrorCode::RateLimited
        );
        assert!(
            quotas.admit_new_user(None, 0).is_ok(),
            "no address, no bound"
        );
        quotas.forget_idle(10 * MINUTE_MS);
        assert!(quotas.users_by_address.due_us.is_empty());
    }

    #[test]
    fn zero_means_no_limit() {
        let mut quotas = Quotas::new(QuotaLimits {
            rooms_per_user: 0,
            rooms_per_address_per_hour: 0,
            max_rooms: 0,
            new_users_per_address_per_minute: 0,
        });
        let ann = UserId::new("ann");
        for index in 0..1_000 {
            let name = room(&format!("r{index}"));
            let reserved = quotas.reserve_room(&ann, HOME, &name, index, 0);
            quotas.room_created(reserved.unwrap_or_else(|e| panic!("{e}")));
            assert!(quotas.admit_new_user(HOME, 0).is_ok());
        }
    }
}
