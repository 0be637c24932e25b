//! The state database: SQLite in WAL mode, the single source of truth for what was planned,
//! sent and confirmed. This module is the one place that opens it and migrates its schema.

mod db;
pub mod exports;
pub mod lock;
mod plan_writer;
mod schema;
pub mod work;

pub use db::Db;
pub use plan_writer::{PlanCounts, PlanWriter, StepCounts};

use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// Errors of the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: cannot create its directory: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error(
        "state database {path} has schema version {found}, newer than this payrun knows ({known}); upgrade payrun"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// An open state database.
pub struct State {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
}

impl State {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<State, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, path.to_path_buf())
    }

    /// Opens a private in-memory database (tests).
    pub fn open_in_memory() -> Result<State, StateError> {
        let conn = Connection::open_in_memory().map_err(|source| StateError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into())
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<State, StateError> {
        let wrap = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        // WAL lets readers (status, report) run beside a writer; NORMAL sync in WAL mode is
        // durable at each checkpoint, and commits that must survive a crash use FULL.
        // 16 KiB pages for a new database (an existing one keeps its own): a plan writes a
        // quarter as many pages into the WAL and splits fewer of them.
        conn.pragma_update(None, "page_size", 16384).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "full")
            .map_err(wrap)?;
        conn.pragma_update(None, "foreign_keys", "on")
            .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        schema::migrate(&mut conn, &path)?;
        Ok(State { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Gives read access to the connection (reports, tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}
