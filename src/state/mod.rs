//! The state database: SQLite in WAL mode, the single source of truth for what was planned,
//! sent and confirmed. This module is the one place that opens it and migrates its schema.

pub mod approvals;
pub mod copy;
mod db;
pub mod exports;
pub mod key;
pub mod lock;
pub mod methods;
pub mod pg;
mod plan_writer;
mod schema;
pub(crate) mod sql;
pub mod states;
#[cfg(test)]
pub(crate) mod testing;
pub mod work;

pub use states::{BatchState, ExportState, ItemState, Status};

pub use db::Db;
pub use plan_writer::{PlanCounts, PlanWriter, StepCounts};

use rusqlite::Connection;

/// A copy of a state in memory (see [`State::scratch_of`]).
pub struct Scratch {
    pub state: State,
    /// Keeps the shared in-memory database alive.
    _anchor: Connection,
}

pub use sql::{Conn, SqlError, SqlResult, pg_round_trips};
use std::path::{Path, PathBuf};

/// Errors of the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: SqlError,
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
        "{path} is not a payrun state database ({what}); it was left as it was — point --state at payrun's own file"
    )]
    Foreign { path: PathBuf, what: String },
    #[error(
        "state database {path} has schema version {found}, newer than this payrun knows ({known}); upgrade payrun"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// payrun's mark on its state databases (`PRAGMA application_id`): "payr".
pub const APPLICATION_ID: i32 = 0x7061_7972;

/// Checks, writing nothing, that the database at `path` is payrun's, or new, or from a
/// payrun before the mark (it has payrun's tables and a schema version): `true` when it is
/// to be marked. Anything else is refused untouched.
fn mine(conn: &Connection, path: &Path) -> Result<bool, StateError> {
    let wrap = |source: rusqlite::Error| StateError::Sqlite {
        path: path.to_path_buf(),
        source: source.into(),
    };
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| match e {
            // Not SQLite at all ("file is not a database").
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                StateError::Foreign {
                    path: path.to_path_buf(),
                    what: "not an SQLite database".into(),
                }
            }
            e => wrap(e),
        })?;
    if app == APPLICATION_ID {
        return Ok(false);
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(wrap)?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(wrap)?;
    let new = app == 0 && version == 0 && tables.is_empty();
    let earlier_payrun = app == 0
        && version > 0
        && ["items", "plans", "runs"]
            .iter()
            .all(|t| tables.iter().any(|n| n == t));
    if !new && !earlier_payrun {
        return Err(StateError::Foreign {
            path: path.to_path_buf(),
            what: if app != 0 {
                format!("its application id is {app:#x}")
            } else {
                format!(
                    "it holds {} table(s) that are not payrun's: {}",
                    tables.len(),
                    tables
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        });
    }
    Ok(true)
}

/// A state's location as payrun shows it: a file's path, or a URL without its password.
pub fn shown(location: &Path) -> String {
    let text = location.to_string_lossy();
    if pg::is_url(&text) {
        crate::redact::url_without_password(&text)
    } else {
        location.display().to_string()
    }
}

/// Whether a state exists at `location`: a file that is there, or a PostgreSQL URL (the
/// database is asked when it is opened).
pub fn exists(location: &Path) -> bool {
    pg::is_url(&location.to_string_lossy()) || location.exists()
}

/// An open state database.
pub struct State {
    pub(crate) conn: Conn,
    pub(crate) path: PathBuf,
    /// The key planned content is hashed with (see [`key`]).
    pub(crate) key: key::ContentKey,
}

impl State {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<State, StateError> {
        let text = path.to_string_lossy();
        if pg::is_url(&text) {
            return Self::open_pg(&text);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir_all(dir).map_err(|source| StateError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StateError::Sqlite {
            path: path.to_path_buf(),
            source: source.into(),
        })?;
        let mut state = Self::init(conn, path.to_path_buf())?;
        state.key = key::load(&state.conn, path)?;
        // Owner-only, whatever the umask or whoever created it: SQLite gives its -wal and
        // -shm files the database's mode.
        if !path.to_string_lossy().starts_with("file:") {
            for suffix in ["", "-wal", "-shm"] {
                let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
                crate::private::restrict(&file).map_err(|source| StateError::Dir {
                    path: file.clone(),
                    source,
                })?;
            }
        }
        Ok(state)
    }

    /// Opens the state in the PostgreSQL database at `url` (its schema brought up to date);
    /// its path, in messages, is the URL without its password.
    fn open_pg(url: &str) -> Result<State, StateError> {
        let shown = PathBuf::from(crate::redact::url_without_password(url));
        let conn = pg::open(url).map_err(|message| StateError::Db {
            path: shown.clone(),
            message,
        })?;
        let key = key::load_external(&conn, &shown)?;
        Ok(State {
            conn,
            path: shown,
            key,
        })
    }

    /// A throwaway copy in memory of the state at `path` (an empty one when there is none
    /// yet), hashed with that state's key: what is planned into it changes nothing on
    /// disk (`--dry-run`). The copy lives as long as the returned [`Scratch`].
    pub fn scratch_of(path: &Path) -> Result<Scratch, StateError> {
        // An in-memory database shared by this process's connections, alive while the
        // anchor connection is.
        let uri = format!(
            "file:payrun-dry-{}-{}?mode=memory&cache=shared",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let memory = PathBuf::from(&uri);
        let anchor = Connection::open(&uri).map_err(|source| StateError::Sqlite {
            path: "(memory)".into(),
            source: source.into(),
        })?;
        // The copy is hashed with the state's own key (kept beside it, not in it).
        let pg = pg::is_url(&path.to_string_lossy());
        let source = if path.exists() || pg {
            Some(State::open(path)?)
        } else {
            None
        };
        if let Some(st) = source.as_ref().filter(|_| !pg) {
            st.copy_into(&uri)?;
        }
        let key = source
            .as_ref()
            .map_or_else(key::ContentKey::random, |st| st.key().clone());
        let state = State::open_with_key(&memory, key)?;
        if let Some(st) = source.as_ref().filter(|_| pg) {
            copy::copy_all(st.connection(), state.connection()).map_err(|e| st.err(e))?;
        }
        Ok(Scratch {
            state,
            _anchor: anchor,
        })
    }

    /// Opens a database whose key is not beside it: a throwaway copy of a state (an
    /// in-memory URI), planned with the key of the state it copies.
    fn open_with_key(path: &Path, key: key::ContentKey) -> Result<State, StateError> {
        let conn = Connection::open(path).map_err(|source| StateError::Sqlite {
            path: path.to_path_buf(),
            source: source.into(),
        })?;
        let mut state = Self::init(conn, path.to_path_buf())?;
        state.key = key;
        Ok(state)
    }

    /// The key planned content is hashed with.
    pub fn key(&self) -> &key::ContentKey {
        &self.key
    }

    /// Opens a private in-memory database (tests).
    pub fn open_in_memory() -> Result<State, StateError> {
        let conn = Connection::open_in_memory().map_err(|source| StateError::Sqlite {
            path: ":memory:".into(),
            source: source.into(),
        })?;
        Self::init(conn, ":memory:".into())
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<State, StateError> {
        let wrap = |source: rusqlite::Error| StateError::Sqlite {
            path: path.clone(),
            source: source.into(),
        };
        // Before anything is written: is this payrun's? (Another application's SQLite file
        // must not get payrun's tables, nor its journal mode changed.)
        let unmarked = mine(&conn, &path)?;
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
        // Every statement of state is run through the cache (see `sql`): room for all.
        conn.set_prepared_statement_cache_capacity(128);
        // Marked only now: the first write fixes a new database's page size.
        if unmarked {
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(wrap)?;
        }
        schema::migrate(&mut conn, &path)?;
        Ok(State {
            conn: Conn(sql::Backend::Lite(conn)),
            path,
            key: key::ContentKey::random(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, source: impl Into<SqlError>) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    /// Copies the whole database into `target` (a path or an SQLite URI), consistently.
    fn copy_into(&self, target: &str) -> Result<(), StateError> {
        self.conn
            .execute("VACUUM INTO ?1", sql::args![target])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The database as other modules see it: something to hand to `state`'s functions.
    pub fn connection(&self) -> &Conn {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_state_is_marked_payruns_and_keeps_its_large_pages() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("s.db")).unwrap();
        let c = st.connection();
        let (app, page): (i32, i64) = (
            c.lite()
                .unwrap()
                .pragma_query_value(None, "application_id", |r| r.get(0))
                .unwrap(),
            c.lite()
                .unwrap()
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .unwrap(),
        );
        // The mark is written after the page size is set (the first write fixes it).
        assert_eq!((app, page), (APPLICATION_ID, 16384));
    }
}
