//! The PostgreSQL store: the same schema and guarantees as SQLite, for deployments whose
//! history lives in a shared database server. One write connection is owned by the
//! group-commit writer; reads go through a pool. Its queries are those of [`SqlStore`]; this
//! file connects and names its dialect.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::{ConnectOptions, Postgres};

use super::sql::{Dialect, SqlStore};
use super::{Durability, StoreError, StoreOptions, migrate};

/// History in a PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

impl SqlStore<Postgres> {
    /// Connects to the database a `postgres://` URL names and brings its schema up to date.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::InvalidUrl(super::redact_url(url)))?;
        Self::open_with(connect, options).await
    }

    /// [`PostgresStore::open`] with connect options built by the caller (e.g. a test that sets
    /// `search_path` to a schema of its own).
    pub async fn open_with(
        connect: PgConnectOptions,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        // Relaxed durability: the server acknowledges a commit before its WAL is flushed. A
        // crash of chinwag loses nothing; a crash of PostgreSQL's machine may lose the last
        // instants. Only the writer commits, so only its connection needs the setting.
        let write_options = match options.durability {
            Durability::Full => connect.clone(),
            Durability::ProcessCrash => connect.clone().options([("synchronous_commit", "off")]),
        };
        let mut write = write_options
            .connect()
            .await
            .map_err(StoreError::db("connecting to PostgreSQL"))?;
        migrate::migrator(migrate::POSTGRES)
            .await?
            .run(&mut write)
            .await
            .map_err(|error| StoreError::Migration(Arc::new(error)))?;
        let reads = PgPoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .connect_with(connect)
            .await
            .map_err(StoreError::db("opening the PostgreSQL read pool"))?;
        // The server may drop the writer's connection (a restart, a failover): a failed batch
        // then replaces it.
        Ok(Self::new(write, Some(write_options), reads, &options))
    }
}

impl Dialect for Postgres {
    const BEGIN: &'static str = "BEGIN";

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}
