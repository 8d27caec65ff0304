//! [`Directory`]: who is connected under which name, keyed by connection.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use super::error::{DomainError, ErrorCode};
use super::name::{NameKey, UserName};

/// The named connections of one chat, with names unique by [`NameKey`].
///
/// `C` identifies a connection (the socket layer uses the engine's socket id; tests use
/// numbers). Names are listed in the order people arrived, as the tutorial's list does.
#[derive(Debug)]
pub struct Directory<C> {
    /// Every named connection and what it is called.
    by_connection: HashMap<C, Member>,
    /// Which connection holds each name, for the uniqueness check.
    by_key: HashMap<NameKey, C>,
    /// Arrival counter, so listings keep arrival order.
    next_arrival: u64,
}

#[derive(Debug)]
struct Member {
    name: UserName,
    arrival: u64,
}

/// What [`Directory::add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// The connection is now known under the name.
    Joined,
    /// The connection already had this very name (same key); nothing changed.
    AlreadyThere,
}

impl<C> Default for Directory<C> {
    fn default() -> Self {
        Self {
            by_connection: HashMap::new(),
            by_key: HashMap::new(),
            next_arrival: 0,
        }
    }
}

impl<C: Clone + Eq + Hash> Directory<C> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Give `connection` the name `name`. Refused when another connection holds the name, or
    /// when this connection already has a different name (no renaming).
    pub fn add(&mut self, connection: &C, name: UserName) -> Result<Added, DomainError> {
        let key = name.key();
        if let Some(current) = self.by_connection.get(connection) {
            if current.name.key() == key {
                return Ok(Added::AlreadyThere);
            }
            return Err(DomainError::new(
                ErrorCode::AlreadyNamed,
                format!("you are already in the chat as {}", current.name),
            ));
        }
        match self.by_key.entry(key) {
            Entry::Occupied(_) => Err(DomainError::new(
                ErrorCode::NameTaken,
                format!("the name {name} is already taken, please choose another"),
            )),
            Entry::Vacant(slot) => {
                slot.insert(connection.clone());
                let arrival = self.next_arrival;
                self.next_arrival += 1;
                self.by_connection
                    .insert(connection.clone(), Member { name, arrival });
                Ok(Added::Joined)
            }
        }
    }

    /// Forget `connection`; returns the name it had, if any.
    pub fn remove(&mut self, connection: &C) -> Option<UserName> {
        let member = self.by_connection.remove(connection)?;
        self.by_key.remove(&member.name.key());
        Some(member.name)
    }

    /// The name of `connection`, if it has one.
    pub fn name_of(&self, connection: &C) -> Option<&UserName> {
        self.by_connection
            .get(connection)
            .map(|member| &member.name)
    }

    /// Every name, in arrival order.
    pub fn names(&self) -> Vec<UserName> {
        let mut members: Vec<&Member> = self.by_connection.values().collect();
        members.sort_unstable_by_key(|member| member.arrival);
        members
            .into_iter()
            .map(|member| member.name.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_connection.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_connection.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> UserName {
        UserName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn listed(directory: &Directory<u32>) -> Vec<String> {
        directory
            .names()
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect()
    }

    #[test]
    fn names_are_listed_in_arrival_order() {
        let mut directory = Directory::new();
        for (connection, who) in [(3, "cy"), (1, "ann"), (2, "bob")] {
            assert_eq!(directory.add(&connection, name(who)), Ok(Added::Joined));
        }
        assert_eq!(listed(&directory), ["cy", "ann", "bob"]);
    }

    #[test]
    fn a_taken_name_is_refused_case_insensitively_and_the_list_stays_right() {
        let mut directory = Directory::new();
        assert_eq!(directory.add(&1, name("Ann")), Ok(Added::Joined));
        let refused = directory.add(&2, name("aNN")).err().map(|e| e.code());
        assert_eq!(refused, Some(ErrorCode::NameTaken));
        assert_eq!(listed(&directory), ["Ann"]);
        assert_eq!(directory.name_of(&2), None);
    }

    #[test]
    fn repeating_ones_own_name_changes_nothing() {
        let mut directory = Directory::new();
        assert_eq!(directory.add(&1, name("ann")), Ok(Added::Joined));
        assert_eq!(directory.add(&1, name("ann")), Ok(Added::AlreadyThere));
        assert_eq!(listed(&directory), ["ann"]);
    }

    #[test]
    fn a_named_connection_cannot_take_another_name() {
        let mut directory = Directory::new();
        assert_eq!(directory.add(&1, name("ann")), Ok(Added::Joined));
        let refused = directory.add(&1, name("bob")).err().map(|e| e.code());
        assert_eq!(refused, Some(ErrorCode::AlreadyNamed));
        assert_eq!(listed(&directory), ["ann"]);
        assert_eq!(
            directory.add(&2, name("bob")),
            Ok(Added::Joined),
            "bob stayed free"
        );
    }

    #[test]
    fn removing_a_connection_frees_its_name() {
        let mut directory = Directory::new();
        assert_eq!(directory.add(&1, name("ann")), Ok(Added::Joined));
        assert_eq!(directory.remove(&1), Some(name("ann")));
        assert_eq!(directory.remove(&1), None);
        assert!(directory.is_empty());
        assert_eq!(directory.add(&2, name("ANN")), Ok(Added::Joined));
    }
}
