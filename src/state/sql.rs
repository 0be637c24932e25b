//! The one way state's functions talk to a database: SQL text with `?1`-style parameters
//! ([`Arg`]s), rows read by column index ([`Col`]s), statements cached by their text. The
//! functions of `state` are written once against this, in SQL both SQLite and PostgreSQL
//! read the same way (`INSERT … ON CONFLICT`, `RETURNING`, no `json_extract`): the store
//! behind a [`Conn`] — an SQLite file, or a PostgreSQL database — is this module's
//! business alone.

use rusqlite::types::{ToSqlOutput, ValueRef};
use std::cell::RefCell;

mod pg_backend;

pub use pg_backend::pg_round_trips;
pub(super) use pg_backend::{Pg, off_runtime};
use pg_backend::{PgValue, pg_begin};

/// What a statement failed with.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Lite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Pg(postgres::Error),
    /// A statement that must return a row returned none.
    #[error("no row where one was expected")]
    NoRow,
    /// A value read back that its type cannot hold.
    #[error("column {0}: {1}")]
    Value(usize, String),
    /// This run no longer holds the lease of its job and scope: it may record nothing.
    #[error(
        "this run lost its lease (it was paused or cut off past it; another run may take the job over): it records nothing more"
    )]
    Fenced,
}

impl From<postgres::Error> for SqlError {
    fn from(e: postgres::Error) -> SqlError {
        // The server ends a session idle in a transaction for as long as the lease lasts
        // (see `pg_begin`): a holder frozen that long lost its lease.
        if e.code() == Some(&postgres::error::SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT) {
            return SqlError::Fenced;
        }
        SqlError::Pg(e)
    }
}

/// A PostgreSQL error as one line: the server's message and code when it sent one.
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // With its causes: "error performing TLS handshake" alone does not say that
            // the certificate's issuer is unknown.
            let mut said = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                said.push_str(": ");
                said.push_str(&c.to_string());
                cause = c.source();
            }
            said
        }
    }
}

pub type SqlResult<T> = Result<T, SqlError>;

/// A parameter's value, as both stores take it.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

/// A statement parameter.
pub trait Arg {
    fn value(&self) -> Value<'_>;
}

impl Arg for i64 {
    fn value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}

impl Arg for i32 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Arg for u32 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Arg for usize {
    fn value(&self) -> Value<'_> {
        Value::Int(*self as i64)
    }
}

impl Arg for bool {
    /// Stored as 0 or 1 (an integer column in both stores).
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Arg for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Arg for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl<T: Arg + ?Sized> Arg for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}

impl<T: Arg> Arg for Option<T> {
    fn value(&self) -> Value<'_> {
        match self {
            Some(v) => v.value(),
            None => Value::Null,
        }
    }
}

/// `args![a, b, …]`: statement parameters, in order (`?1`, `?2`, …).
macro_rules! args {
    () => { &[] as &[&dyn $crate::state::sql::Arg] };
    ($($a:expr),+ $(,)?) => { &[$(&$a as &dyn $crate::state::sql::Arg),+][..] };
}
pub(crate) use args;

fn lite_value(v: Value<'_>) -> ToSqlOutput<'_> {
    match v {
        Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        Value::Int(i) => ToSqlOutput::from(i),
        Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
    }
}

/// Parameters for rusqlite.
fn lite_args<'a>(
    args: &'a [&'a dyn Arg],
) -> rusqlite::ParamsFromIter<impl Iterator<Item = ToSqlOutput<'a>>> {
    rusqlite::params_from_iter(args.iter().map(|a| lite_value(a.value())))
}

/// A value read from a row's column.
pub trait Col: Sized {
    fn from_lite(v: ValueRef<'_>) -> Result<Self, String>;
}

impl Col for i64 {
    fn from_lite(v: ValueRef<'_>) -> Result<Self, String> {
        v.as_i64().map_err(|e| e.to_string())
    }
}

impl Col for u64 {
    fn from_lite(v: ValueRef<'_>) -> Result<Self, String> {
        let n = v.as_i64().map_err(|e| e.to_string())?;
        u64::try_from(n).map_err(|_| format!("{n} is negative"))
    }
}

impl Col for bool {
    fn from_lite(v: ValueRef<'_>) -> Result<Self, String> {
        Ok(i64::from_lite(v)? != 0)
    }
}

impl Col for String {
    fn from_lite(v: ValueRef<'_>) -> Result<Self, String> {
        v.as_str().map(str::to_string).map_err(|e| e.to_string())
    }
}

impl<T: Col> Col for Option<T> {
    fn from_lite(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_lite(v).map(Some),
        }
    }
}

/// A row of a result.
pub enum Row<'a> {
    Lite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    /// The value of column `i` (from 0).
    pub fn get<T: Col>(&self, i: usize) -> SqlResult<T> {
        match self {
            Row::Lite(r) => T::from_lite(r.get_ref(i)?),
            Row::Pg(r) => {
                let v: PgValue = r.try_get(i)?;
                T::from_lite(v.as_ref())
            }
        }
        .map_err(|e| SqlError::Value(i, e))
    }

    /// Column `i` as text, borrowed from the row (`None` for NULL).
    pub fn text(&self, i: usize) -> SqlResult<Option<&str>> {
        match self {
            Row::Lite(r) => match r.get_ref(i)? {
                ValueRef::Null => Ok(None),
                v => v
                    .as_str()
                    .map(Some)
                    .map_err(|e| SqlError::Value(i, e.to_string())),
            },
            Row::Pg(r) => Ok(r.try_get::<_, Option<&str>>(i)?),
        }
    }
}

/// A connection to the state database, opaque outside `state`: other modules hand it to
/// state's typed functions (directly, or in a `Db` closure) and can run no SQL on it.
pub struct Conn(pub(super) Backend);

/// The store behind a [`Conn`].
pub(super) enum Backend {
    Lite(rusqlite::Connection),
    Pg(Box<RefCell<Pg>>),
}

impl Conn {
    /// The SQLite connection (backend code only: pragmas, the schema, backups).
    pub(super) fn lite(&self) -> Option<&rusqlite::Connection> {
        match &self.0 {
            Backend::Lite(c) => Some(c),
            Backend::Pg(_) => None,
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub(super) fn execute(&self, sql: &str, args: &[&dyn Arg]) -> SqlResult<usize> {
        match &self.0 {
            Backend::Lite(c) => Ok(c.prepare_cached(sql)?.execute(lite_args(args))?),
            Backend::Pg(p) => Ok(p.borrow_mut().execute(sql, args)? as usize),
        }
    }

    /// Runs an `INSERT … RETURNING id`; returns the id.
    pub(super) fn insert(&self, sql: &str, args: &[&dyn Arg]) -> SqlResult<i64> {
        self.one(sql, args, |r| r.get(0))
    }

    /// The first row's value; [`SqlError::NoRow`] when there is none.
    pub(super) fn one<T>(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        f: impl FnOnce(&Row) -> SqlResult<T>,
    ) -> SqlResult<T> {
        self.optional(sql, args, f)?.ok_or(SqlError::NoRow)
    }

    /// The first row's value, if there is a row.
    pub(super) fn optional<T>(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        f: impl FnOnce(&Row) -> SqlResult<T>,
    ) -> SqlResult<Option<T>> {
        let mut f = Some(f);
        let mut out = None;
        self.each_while(sql, args, |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// Every row's value, in order.
    pub(super) fn all<T>(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        mut f: impl FnMut(&Row) -> SqlResult<T>,
    ) -> SqlResult<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, args, |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with every row, in order. PostgreSQL's rows come a page at a time, not
    /// all at once: a listing of a large job is never held whole.
    pub(super) fn each(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        mut f: impl FnMut(&Row) -> SqlResult<()>,
    ) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(_) => self.each_while(sql, args, |r| f(r).map(|()| true)),
            Backend::Pg(p) => p.borrow_mut().stream(sql, args, &mut f),
        }
    }

    /// Calls `f` with rows, in order, until it returns `false`.
    pub(super) fn each_while(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        mut f: impl FnMut(&Row) -> SqlResult<bool>,
    ) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(lite_args(args))?;
                while let Some(r) = rows.next()? {
                    if !f(&Row::Lite(r))? {
                        break;
                    }
                }
            }
            Backend::Pg(p) => {
                let rows = p.borrow_mut().query(sql, args)?;
                for r in &rows {
                    if !f(&Row::Pg(r))? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// A statement prepared once, for a loop that runs it row after row.
    pub(super) fn prepare(&self, sql: &str) -> SqlResult<Stmt<'_>> {
        match &self.0 {
            Backend::Lite(c) => Ok(Stmt::Lite(c.prepare_cached(sql)?)),
            Backend::Pg(_) => Ok(Stmt::Pg(self, sql.to_string())),
        }
    }

    /// Inserts `rows` (each a value per column of `columns`) into `table`: SQLite
    /// [`INSERT_ROWS`] to a statement, PostgreSQL all with one `COPY` (for a plan's new
    /// items, a third of what its `INSERT`s cost the server).
    pub(super) fn insert_rows(
        &self,
        table: &str,
        columns: &[(&str, Kind)],
        rows: &[&[&dyn Arg]],
    ) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(_) => {
                let head = format!(
                    "INSERT INTO {table} ({}) VALUES ",
                    columns
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for part in rows.chunks(INSERT_ROWS) {
                    let mut sql = head.clone();
                    for r in 0..part.len() {
                        if r > 0 {
                            sql.push(',');
                        }
                        sql.push('(');
                        sql.push_str(&placeholders(1 + r * columns.len(), columns.len()));
                        sql.push(')');
                    }
                    let all: Vec<&dyn Arg> = part.iter().flat_map(|r| r.iter().copied()).collect();
                    self.execute(&sql, &all)?;
                }
                Ok(())
            }
            Backend::Pg(p) if !rows.is_empty() => p.borrow_mut().copy_in(table, columns, rows),
            Backend::Pg(_) => Ok(()),
        }
    }

    /// Runs SQL text of one or more statements, without parameters.
    pub(super) fn batch(&self, sql: &str) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(c) => Ok(c.execute_batch(sql)?),
            Backend::Pg(p) => p.borrow_mut().batch(sql),
        }
    }

    /// Whether a failed statement spoils its whole transaction (PostgreSQL), so that a
    /// statement that must fail alone needs a savepoint of its own; SQLite undoes the
    /// statement alone.
    pub(super) fn failure_spoils_transaction(&self) -> bool {
        matches!(self.0, Backend::Pg(_))
    }

    /// `SAVEPOINT`, `RELEASE` or `ROLLBACK TO` (prepared once on SQLite).
    pub(super) fn savepoint_command(&self, sql: &str) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(c) => Ok(c.prepare_cached(sql)?.execute([]).map(drop)?),
            Backend::Pg(_) => self.batch(sql),
        }
    }

    /// Starts the one transaction a plan is written in. Planning writes each page about
    /// once: a run's large page cache would only hold memory.
    pub(super) fn begin_plan(&self) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(_) => self.batch("PRAGMA cache_size = -16384; BEGIN IMMEDIATE"),
            Backend::Pg(_) => {
                self.batch(&pg_begin(true))?;
                self.check_fence()
            }
        }
    }

    /// Starts a transaction of writes (SQLite: taking the write lock at once).
    pub(super) fn begin(&self) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(_) => self.batch("BEGIN IMMEDIATE"),
            Backend::Pg(p) => {
                let durable = p.borrow().durable;
                self.batch(&pg_begin(durable))?;
                self.check_fence()
            }
        }
    }

    /// Whether the commits that follow must reach the disk before they return (an
    /// intent) or may follow shortly after (an outcome).
    pub(super) fn set_durable(&self, durable: bool) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(c) => {
                c.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
                Ok(())
            }
            Backend::Pg(p) => {
                // Applied to each transaction by `begin` (`SET LOCAL`): nothing of it
                // outlives a transaction, for connection poolers.
                p.borrow_mut().durable = durable;
                Ok(())
            }
        }
    }

    /// From now on, every write transaction checks that `fence` still holds the lease
    /// (PostgreSQL; SQLite's file lock needs nothing).
    pub(super) fn set_fence(&self, fence: super::pg::Fence) {
        if let Backend::Pg(p) = &self.0 {
            p.borrow_mut().fence = Some(fence);
        }
    }

    /// In a write transaction of a run holding a lease: the lease is still this run's, or
    /// [`SqlError::Fenced`] (nothing of the transaction may be committed).
    pub(super) fn check_fence(&self) -> SqlResult<()> {
        let Backend::Pg(p) = &self.0 else {
            return Ok(());
        };
        let fence = p.borrow().fence.clone();
        match fence {
            Some(f) => super::pg::check_fence(self, &f),
            None => Ok(()),
        }
    }

    /// After rows were inserted with their ids: new rows get ids after them (PostgreSQL's
    /// identity sequences; SQLite takes the largest id + 1 by itself).
    pub(super) fn after_explicit_ids(&self, table: &str) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(_) => Ok(()),
            Backend::Pg(_) => self.batch(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            )),
        }
    }

    /// The SQL expression of a JSON text column's top-level `key`, as text.
    pub(super) fn json_text(&self, column: &str, key: &str) -> String {
        match &self.0 {
            Backend::Lite(_) => format!("json_extract({column}, '$.{key}')"),
            Backend::Pg(_) => format!("({column}::jsonb ->> '{key}')"),
        }
    }

    /// `LIMIT n` where a query's rows are all fetched before the first is read
    /// (PostgreSQL), else nothing: SQLite steps through a result only as far as it is read.
    pub(super) fn fetch_limit(&self, n: usize) -> String {
        match &self.0 {
            Backend::Pg(_) if n < i64::MAX as usize => format!("LIMIT {n}"),
            _ => String::new(),
        }
    }

    /// After many rows were written to `table` (`table (columns…)`: the columns queries
    /// filter and sort on) in this transaction: the store's planner learns of them now
    /// (PostgreSQL's `ANALYZE`, which counts the transaction's own rows), not when
    /// autovacuum comes by — meanwhile, taking the fresh table for empty, it read a whole
    /// step's items for each page of them. SQLite needs nothing.
    pub(super) fn after_bulk_write(&self, table: &str) -> SqlResult<()> {
        match &self.0 {
            Backend::Lite(_) => Ok(()),
            Backend::Pg(_) => self.batch(&format!("ANALYZE {table}")),
        }
    }

    /// `INDEXED BY index` where the store takes the hint (SQLite), else nothing.
    pub(super) fn indexed_by(&self, index: &str) -> String {
        match &self.0 {
            Backend::Lite(_) => format!("INDEXED BY {index}"),
            Backend::Pg(_) => String::new(),
        }
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back otherwise.
    pub(super) fn transaction<T>(&self, f: impl FnOnce(&Conn) -> SqlResult<T>) -> SqlResult<T> {
        match &self.0 {
            Backend::Lite(_) => self.batch("BEGIN")?,
            Backend::Pg(_) => self.batch(&pg_begin(true))?,
        }
        let out = self.check_fence().and_then(|()| f(self));
        match out {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// What a column of [`Conn::insert_rows`] holds (PostgreSQL's `COPY` in binary must know).
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// `BIGINT` (PostgreSQL) or `INTEGER` (SQLite).
    Int,
    Text,
}

/// Rows of [`Conn::insert_rows`] a statement on SQLite: one statement of many rows runs
/// faster than many of one.
const INSERT_ROWS: usize = 128;

/// A prepared statement (see [`Conn::prepare`]).
pub(super) enum Stmt<'c> {
    Lite(rusqlite::CachedStatement<'c>),
    /// PostgreSQL's are prepared once per connection already (by their text).
    Pg(&'c Conn, String),
}

impl Stmt<'_> {
    pub(super) fn execute(&mut self, args: &[&dyn Arg]) -> SqlResult<usize> {
        match self {
            Stmt::Lite(s) => Ok(s.execute(lite_args(args))?),
            Stmt::Pg(c, sql) => c.execute(sql, args),
        }
    }
}

/// The placeholders `?{first},?{first+1},…` of `n` bound values (an `IN (...)` list, a
/// row of a multi-row `VALUES`).
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(",")
}
