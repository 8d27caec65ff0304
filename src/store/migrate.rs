//! Schema migrations embedded in the binary.
//!
//! `sqlx::migrate!` would embed them too, but it needs sqlx's `macros` feature (and the
//! proc-macro build it brings); listing the files here with `include_str!` gives the same
//! result through sqlx's public `MigrationSource` trait. Add a file under
//! `migrations/<backend>/` and a line below; never edit a migration that has shipped (sqlx
//! checks their checksums).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::StoreError;

/// One backend's migrations: (version, description, SQL), ascending by version.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Embedded(&'static [(i64, &'static str, &'static str)]);

pub(crate) const SQLITE: Embedded = Embedded(&[
    (
        1,
        "history",
        include_str!("../../migrations/sqlite/0001_history.sql"),
    ),
    (
        2,
        "conversation counters",
        include_str!("../../migrations/sqlite/0002_conversation_counters.sql"),
    ),
    (
        3,
        "direct members",
        include_str!("../../migrations/sqlite/0003_direct_members.sql"),
    ),
    (
        4,
        "users and memberships",
        include_str!("../../migrations/sqlite/0004_users_and_memberships.sql"),
    ),
    (
        5,
        "presence",
        include_str!("../../migrations/sqlite/0005_presence.sql"),
    ),
    (
        6,
        "room creators",
        include_str!("../../migrations/sqlite/0006_room_creators.sql"),
    ),
    (
        7,
        "names",
        include_str!("../../migrations/sqlite/0007_names.sql"),
    ),
    (
        8,
        "online node",
        include_str!("../../migrations/sqlite/0008_online_node.sql"),
    ),
]);

pub(crate) const POSTGRES: Embedded = Embedded(&[
    (
        1,
        "history",
        include_str!("../../migrations/postgres/0001_history.sql"),
    ),
    (
        2,
        "conversation counters",
        include_str!("../../migrations/postgres/0002_conversation_counters.sql"),
    ),
    (
        3,
        "direct members",
        include_str!("../../migrations/postgres/0003_direct_members.sql"),
    ),
    (
        4,
        "users and memberships",
        include_str!("../../migrations/postgres/0004_users_and_memberships.sql"),
    ),
    (
        5,
        "presence",
        include_str!("../../migrations/postgres/0005_presence.sql"),
    ),
    (
        6,
        "room creators",
        include_str!("../../migrations/postgres/0006_room_creators.sql"),
    ),
    (
        7,
        "names",
        include_str!("../../migrations/postgres/0007_names.sql"),
    ),
    (
        8,
        "online node",
        include_str!("../../migrations/postgres/0008_online_node.sql"),
    ),
]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        description.into(),
                        MigrationType::Simple,
                        sql.into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The migrator for one backend's embedded migrations.
pub(crate) async fn migrator(migrations: Embedded) -> Result<Migrator, StoreError> {
    Migrator::new(migrations)
        .await
        .map_err(|error| StoreError::Migration(Arc::new(error)))
}
