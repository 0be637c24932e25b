//! The one way state's functions talk to a database: SQL text with `?1`-style parameters
//! ([`Arg`]s), rows read by column index ([`Col`]s), statements cached by their text. The
//! functions of `state` are written once against this, in SQL both SQLite and PostgreSQL
//! read the same way (`INSERT … ON CONFLICT`, `RETURNING`, no `json_extract`): the store
//! behind a [`Conn`] is this module's business alone.

use rusqlite::types::{ToSqlOutput, ValueRef};

/// What a statement failed with.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Lite(#[from] rusqlite::Error),
    /// A statement that must return a row returned none.
    #[error("no row where one was expected")]
    NoRow,
    /// A value read back that its type cannot hold.
    #[error("column {0}: {1}")]
    Value(usize, String),
}

pub type SqlResult<T> = Result<T, SqlError>;

/// A statement parameter.
pub trait Arg {
    fn to_lite(&self) -> ToSqlOutput<'_>;
}

impl Arg for i64 {
    fn to_lite(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::from(*self)
    }
}

impl Arg for i32 {
    fn to_lite(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::from(i64::from(*self))
    }
}

impl Arg for u32 {
    fn to_lite(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::from(i64::from(*self))
    }
}

impl Arg for usize {
    fn to_lite(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::from(*self as i64)
    }
}

impl Arg for bool {
    /// Stored as 0 or 1 (an integer column in both stores).
    fn to_lite(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::from(i64::from(*self))
    }
}

impl Arg for str {
    fn to_lite(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(self.as_bytes()))
    }
}

impl Arg for String {
    fn to_lite(&self) -> ToSqlOutput<'_> {
        self.as_str().to_lite()
    }
}

impl<T: Arg + ?Sized> Arg for &T {
    fn to_lite(&self) -> ToSqlOutput<'_> {
        (**self).to_lite()
    }
}

impl<T: Arg> Arg for Option<T> {
    fn to_lite(&self) -> ToSqlOutput<'_> {
        match self {
            Some(v) => v.to_lite(),
            None => ToSqlOutput::Borrowed(ValueRef::Null),
        }
    }
}

/// `args![a, b, …]`: statement parameters, in order (`?1`, `?2`, …).
macro_rules! args {
    () => { &[] as &[&dyn $crate::state::sql::Arg] };
    ($($a:expr),+ $(,)?) => { &[$(&$a as &dyn $crate::state::sql::Arg),+][..] };
}
pub(crate) use args;

/// Parameters for rusqlite.
fn lite_args<'a>(
    args: &'a [&'a dyn Arg],
) -> rusqlite::ParamsFromIter<impl Iterator<Item = ToSqlOutput<'a>>> {
    rusqlite::params_from_iter(args.iter().map(|a| a.to_lite()))
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
pub struct Row<'a>(&'a rusqlite::Row<'a>);

impl Row<'_> {
    /// The value of column `i` (from 0).
    pub fn get<T: Col>(&self, i: usize) -> SqlResult<T> {
        T::from_lite(self.0.get_ref(i)?).map_err(|e| SqlError::Value(i, e))
    }

    /// Column `i` as text, borrowed from the row (`None` for NULL).
    pub fn text(&self, i: usize) -> SqlResult<Option<&str>> {
        match self.0.get_ref(i)? {
            ValueRef::Null => Ok(None),
            v => v
                .as_str()
                .map(Some)
                .map_err(|e| SqlError::Value(i, e.to_string())),
        }
    }
}

/// A connection to the state database, opaque outside `state`: other modules hand it to
/// state's typed functions (directly, or in a `Db` closure) and can run no SQL on it.
#[derive(ref_cast::RefCastCustom)]
#[repr(transparent)]
pub struct Conn(pub(super) rusqlite::Connection);

impl Conn {
    #[ref_cast::ref_cast_custom]
    pub(in crate::state) fn of(conn: &rusqlite::Connection) -> &Conn;

    /// Runs a statement; returns how many rows it changed.
    pub(super) fn execute(&self, sql: &str, args: &[&dyn Arg]) -> SqlResult<usize> {
        Ok(self.0.prepare_cached(sql)?.execute(lite_args(args))?)
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
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(lite_args(args))?;
        match rows.next()? {
            Some(r) => f(&Row(r)).map(Some),
            None => Ok(None),
        }
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

    /// Calls `f` with every row, in order.
    pub(super) fn each(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        mut f: impl FnMut(&Row) -> SqlResult<()>,
    ) -> SqlResult<()> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(lite_args(args))?;
        while let Some(r) = rows.next()? {
            f(&Row(r))?;
        }
        Ok(())
    }

    /// A statement prepared once, for a loop that runs it row after row.
    pub(super) fn prepare(&self, sql: &str) -> SqlResult<Stmt<'_>> {
        Ok(Stmt(self.0.prepare_cached(sql)?))
    }

    /// Runs SQL text of one or more statements, without parameters.
    pub(super) fn batch(&self, sql: &str) -> SqlResult<()> {
        Ok(self.0.execute_batch(sql)?)
    }

    /// Starts the one transaction a plan is written in. Planning writes each page about
    /// once: a run's large page cache would only hold memory.
    pub(super) fn begin_plan(&self) -> SqlResult<()> {
        self.batch("PRAGMA cache_size = -16384; BEGIN IMMEDIATE")
    }

    /// The SQL expression of a JSON text column's top-level `key`, as text.
    pub(super) fn json_text(&self, column: &str, key: &str) -> String {
        format!("json_extract({column}, '$.{key}')")
    }

    /// Calls `f` with rows, in order, until it returns `false`.
    pub(super) fn each_while(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        mut f: impl FnMut(&Row) -> SqlResult<bool>,
    ) -> SqlResult<()> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(lite_args(args))?;
        while let Some(r) = rows.next()? {
            if !f(&Row(r))? {
                break;
            }
        }
        Ok(())
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back otherwise.
    pub(super) fn transaction<T>(&self, f: impl FnOnce(&Conn) -> SqlResult<T>) -> SqlResult<T> {
        let tx = self.0.unchecked_transaction()?;
        let out = f(self)?;
        tx.commit()?;
        Ok(out)
    }
}

/// A prepared statement (see [`Conn::prepare`]).
pub(super) struct Stmt<'c>(rusqlite::CachedStatement<'c>);

impl Stmt<'_> {
    pub(super) fn execute(&mut self, args: &[&dyn Arg]) -> SqlResult<usize> {
        Ok(self.0.execute(lite_args(args))?)
    }

    /// The first row's value, if there is a row.
    pub(super) fn optional<T>(
        &mut self,
        args: &[&dyn Arg],
        f: impl FnOnce(&Row) -> SqlResult<T>,
    ) -> SqlResult<Option<T>> {
        let mut rows = self.0.query(lite_args(args))?;
        match rows.next()? {
            Some(r) => f(&Row(r)).map(Some),
            None => Ok(None),
        }
    }
}
