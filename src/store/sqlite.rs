//! The SQLite store: one file, WAL, one write connection owned by the group-commit writer and a
//! small pool of read connections (WAL lets readers run while the writer commits). Its
//! queries are those of [`SqlStore`]; this file opens the database and names its dialect.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Sqlite};

use super::sql::{Dialect, SqlStore};
use super::{Durability, StoreError, StoreOptions, migrate};

/// How long a connection waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// History in a SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
    /// Opens the database file at `path`, creating it and its parent directories if missing,
    /// and brings its schema up to date.
    pub async fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                context: "creating the database directory",
                source: Arc::new(source),
            })?;
        }
        create_private(path)?;
        let synchronous = match options.durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::ProcessCrash => SqliteSynchronous::Normal,
        };
        let base = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::db("parsing SQLite options"))?
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT);

        let mut write = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .connect()
            .await
            .map_err(StoreError::db("opening the SQLite database"))?;
        migrate::migrator(migrate::SQLITE)
            .await?
            .run(&mut write)
            .await
            .map_err(|error| StoreError::Migration(Arc::new(error)))?;

        // Readers never write, so they need neither `synchronous` nor the journal mode (WAL is
        // a property of the file, set by the writer above).
        let reads = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .connect_with(base.read_only(true))
            .await
            .map_err(StoreError::db("opening the SQLite read pool"))?;

        // A file does not go away under its connection: a failed batch keeps it.
        Ok(Self::new(write, None, reads, &options))
    }
}

impl Dialect for Sqlite {
    /// `IMMEDIATE` takes the write lock up front (a deferred transaction could fail to
    /// upgrade half-way through a batch).
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Create the database file, if missing, readable and writable by its owner only (0600): it
/// holds every message and who holds which name. SQLite gives the `-wal` and `-shm` files it
/// creates next to it the same permissions. An existing file is left as its owner set it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io {
            context: "creating the database file",
            source: Arc::new(source),
        }),
    }
}
