//! PostgreSQL behind a [`Conn`](super::Conn): the blocking client with each statement
//! prepared once, `?N` parameters as `$N`, values to and from the server's types, many rows
//! by `COPY`, and transactions begun as a run's lease needs them.

use super::{Arg, Kind, Row, SqlResult, Value};
use rusqlite::types::ValueRef;
use std::collections::HashMap;

impl postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match *self {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        matches!(
            *ty,
            Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL | Type::TEXT | Type::VARCHAR
        )
    }

    postgres::types::to_sql_checked!();
}

/// A value read from PostgreSQL, before it is made the column's type.
pub(super) enum PgValue {
    Null,
    Int(i64),
    Text(String),
}

impl<'a> postgres::types::FromSql<'a> for PgValue {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        Ok(match *ty {
            Type::INT8 => PgValue::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => PgValue::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => PgValue::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => PgValue::Int(i64::from(bool::from_sql(ty, raw)?)),
            _ => PgValue::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(
        _: &postgres::types::Type,
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgValue::Null)
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::BOOL
                | Type::TEXT
                | Type::VARCHAR
                | Type::NAME
                | Type::BPCHAR
        )
    }
}

impl PgValue {
    /// As SQLite would hand it over, for one conversion to the column's type.
    pub(super) fn as_ref(&self) -> ValueRef<'_> {
        match self {
            PgValue::Null => ValueRef::Null,
            PgValue::Int(i) => ValueRef::Integer(*i),
            PgValue::Text(s) => ValueRef::Text(s.as_bytes()),
        }
    }
}

/// Round trips to PostgreSQL so far in this process (for the run's log and the bench).
static PG_ROUND_TRIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Round trips to PostgreSQL so far in this process (0 with SQLite).
pub fn pg_round_trips() -> u64 {
    PG_ROUND_TRIPS.load(std::sync::atomic::Ordering::Relaxed)
}

fn round_trip() {
    PG_ROUND_TRIPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Rows a streamed PostgreSQL query passes over at a time (see `Pg::stream`).
const STREAM_PAGE: usize = 512;

/// A PostgreSQL connection with its statements prepared once each, by their text.
pub(in crate::state) struct Pg {
    /// Always there but while it is dropped (see `Drop`).
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    /// Set while a run holds its job's lease: every write transaction checks it first
    /// ([`Conn::check_fence`]).
    pub(super) fence: Option<crate::state::pg::Fence>,
    /// Whether the next write transactions must be on disk before they return (an intent):
    /// `synchronous_commit` for each one.
    pub(super) durable: bool,
}

impl Pg {
    pub(in crate::state) fn new(client: postgres::Client) -> Pg {
        Pg {
            client: Some(client),
            statements: HashMap::new(),
            fence: None,
            durable: true,
        }
    }

    fn statement(&mut self, sql: &str) -> SqlResult<postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let text = dollars(sql);
        round_trip();
        let client = self.client();
        let s = off_runtime(|| client.prepare(&text))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub(super) fn query(&mut self, sql: &str, args: &[&dyn Arg]) -> SqlResult<Vec<postgres::Row>> {
        let stmt = self.statement(sql)?;
        let values: Vec<Value> = args.iter().map(|a| a.value()).collect();
        round_trip();
        let client = self.client();
        Ok(off_runtime(|| client.query(&stmt, &params(&values)))?)
    }

    /// Runs a query and hands its rows to `f` as they come, [`STREAM_PAGE`] at a time: a
    /// thread of its own reads them (the blocking client may not run on async threads, and
    /// its row iterator cannot be left to wait on one) and passes them over.
    pub(super) fn stream(
        &mut self,
        sql: &str,
        args: &[&dyn Arg],
        f: &mut dyn FnMut(&Row) -> SqlResult<()>,
    ) -> SqlResult<()> {
        use postgres::fallible_iterator::FallibleIterator;
        let stmt = self.statement(sql)?;
        let values: Vec<Value> = args.iter().map(|a| a.value()).collect();
        round_trip();
        let client = self.client();
        std::thread::scope(|scope| {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<Result<Vec<postgres::Row>, postgres::Error>>(2);
            let (stmt, values) = (&stmt, &values);
            scope.spawn(move || {
                let mut rows = match client.query_raw(stmt, params(values)) {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let mut page = Vec::with_capacity(STREAM_PAGE);
                loop {
                    match rows.next() {
                        Ok(Some(row)) => {
                            page.push(row);
                            if page.len() == STREAM_PAGE
                                && tx.send(Ok(std::mem::take(&mut page))).is_err()
                            {
                                return; // the reader stopped (an error of its own)
                            }
                        }
                        Ok(None) => {
                            let _ = tx.send(Ok(page));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            });
            for page in rx {
                for row in &page? {
                    f(&Row::Pg(row))?;
                }
            }
            Ok(())
        })
    }

    pub(super) fn execute(&mut self, sql: &str, args: &[&dyn Arg]) -> SqlResult<u64> {
        let stmt = self.statement(sql)?;
        let values: Vec<Value> = args.iter().map(|a| a.value()).collect();
        round_trip();
        let client = self.client();
        Ok(off_runtime(|| client.execute(&stmt, &params(&values)))?)
    }

    /// Writes `rows` into `table` with one `COPY … FROM STDIN` in binary: the rows stream
    /// to the server as they are encoded, and it takes them in without a statement's
    /// parameters to parse.
    pub(super) fn copy_in(
        &mut self,
        table: &str,
        columns: &[(&str, Kind)],
        rows: &[&[&dyn Arg]],
    ) -> SqlResult<()> {
        use postgres::types::Type;
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        let stmt = self.statement(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        ))?;
        let types: Vec<Type> = columns
            .iter()
            .map(|(_, k)| match k {
                Kind::Int => Type::INT8,
                Kind::Text => Type::TEXT,
            })
            .collect();
        let values: Vec<Value> = rows
            .iter()
            .flat_map(|r| r.iter().map(|a| a.value()))
            .collect();
        round_trip();
        let client = self.client();
        off_runtime(|| {
            let mut writer =
                postgres::binary_copy::BinaryCopyInWriter::new(client.copy_in(&stmt)?, &types);
            for row in values.chunks(columns.len()) {
                writer.write(&params(row))?;
            }
            writer.finish()
        })?;
        Ok(())
    }

    pub(super) fn batch(&mut self, sql: &str) -> SqlResult<()> {
        round_trip();
        let client = self.client();
        Ok(off_runtime(|| client.batch_execute(sql))?)
    }

    fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("the client lives as long as its connection")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // The client owns a runtime of its own, which may not be dropped where async
        // tasks run.
        if let Some(client) = self.client.take() {
            off_runtime(move || drop(client));
        }
    }
}

fn params<'a>(values: &'a [Value<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// Runs `f` where the blocking PostgreSQL client may run: on this thread, or — when this
/// thread drives async tasks (the client would start a runtime inside a runtime) — on a
/// thread of its own, waited for.
pub(in crate::state) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// How a PostgreSQL transaction starts: its durability, and — so that a holder frozen in
/// it keeps its row locks (the lease row's among them) no longer than its lease — the
/// server ending the session once it has idled in the transaction for the lease's length.
/// Both `SET LOCAL`: nothing outlives the transaction (connection poolers).
pub(super) fn pg_begin(durable: bool) -> String {
    format!(
        "BEGIN; SET LOCAL synchronous_commit = {}; SET LOCAL idle_in_transaction_session_timeout = {}",
        if durable { "on" } else { "off" },
        crate::state::pg::lease().as_millis()
    )
}

/// `?N` parameters as PostgreSQL's `$N` (outside quoted text).
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_numbered_with_dollars_outside_quotes() {
        assert_eq!(
            super::dollars("SELECT '?x', a FROM t WHERE b = ?1 AND c IN (?2, ?10)"),
            "SELECT '?x', a FROM t WHERE b = $1 AND c IN ($2, $10)"
        );
    }
}
