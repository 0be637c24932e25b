//! A state's history copied whole from one store to another (SQLite ↔ PostgreSQL): what
//! `payrun state copy` does, and how `--dry-run` plans on a throwaway copy of a PostgreSQL
//! state. Rows keep their ids, so every reference between them holds.

use super::sql::{Arg, Conn, SqlResult, Value, args};

/// Every table of the state with its columns, in an order that respects references
/// (the same names in both stores).
const TABLES: &[(&str, &[&str])] = &[
    ("plans", &["id", "job", "scope", "created_at"]),
    (
        "batches",
        &[
            "id",
            "plan_id",
            "step",
            "seq",
            "group_key",
            "external_id",
            "state",
            "provider_ref",
            "created_at",
            "attempts",
            "first_attempt_at",
            "provider_status",
            "error_code",
            "error_message",
            "doubt_since",
            "doubt_applied",
        ],
    ),
    (
        "items",
        &[
            "id",
            "plan_id",
            "step",
            "step_index",
            "row_key",
            "row_line",
            "state",
            "version",
            "content_hash",
            "payload",
            "amount",
            "currency",
            "batch_id",
            "external_id",
            "conflict_hash",
            "conflict_payload",
            "attempts",
            "error_code",
            "error_message",
            "provider_ref",
            "created_at",
            "updated_at",
            "row_offset",
            "first_attempt_at",
            "provider_status",
            "group_key",
            "doubt_since",
            "doubt_applied",
        ],
    ),
    (
        "runs",
        &[
            "id",
            "plan_id",
            "started_at",
            "ended_at",
            "exit_code",
            "pid",
            "host",
            "requests",
            "retries",
            "rate_limited",
            "in_doubt_resolved",
            "counts",
            "settle_ms",
            "duplicates",
            "error",
        ],
    ),
    (
        "exports",
        &[
            "run_id",
            "plan_id",
            "step",
            "resource",
            "from_at",
            "to_at",
            "state",
            "rows",
            "pages",
            "duplicates",
            "path",
            "error",
            "started_at",
            "ended_at",
        ],
    ),
    (
        "duplicates",
        &[
            "plan_id",
            "step",
            "external_id",
            "row_key",
            "uuids",
            "found_at",
            "run_id",
        ],
    ),
    ("payout_methods", &["base", "name", "record", "fetched_at"]),
];

/// A column's value, owned, between the two stores.
enum Owned {
    Null,
    Int(i64),
    Text(String),
}

impl Arg for Owned {
    fn value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Int(i) => Value::Int(*i),
            Owned::Text(s) => Value::Text(s),
        }
    }
}

/// How many rows of each table were copied.
pub type Copied = Vec<(&'static str, u64)>;

/// Copies every row of `from` into `to`, whose tables must be empty of them, in one
/// transaction of `to`. (Locks and leases are not history: they are not copied.)
pub fn copy_all(from: &Conn, to: &Conn) -> SqlResult<Copied> {
    to.transaction(|to| {
        let mut copied = Vec::new();
        for (table, columns) in TABLES {
            let list = columns.join(", ");
            let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let insert = format!("INSERT INTO {table} ({list}) VALUES ({})", marks.join(", "));
            let mut n = 0;
            // Read whole, then written: a store's reader and writer are the same thread.
            let rows = from.all(&format!("SELECT {list} FROM {table}"), args![], |r| {
                (0..columns.len())
                    .map(|i| {
                        Ok(match r.get::<Option<i64>>(i) {
                            Ok(Some(v)) => Owned::Int(v),
                            Ok(None) => Owned::Null,
                            Err(_) => Owned::Text(r.get::<String>(i)?),
                        })
                    })
                    .collect::<SqlResult<Vec<Owned>>>()
            })?;
            let mut stmt = to.prepare(&insert)?;
            for row in &rows {
                let values: Vec<&dyn Arg> = row.iter().map(|v| v as &dyn Arg).collect();
                stmt.execute(&values)?;
                n += 1;
            }
            drop(stmt);
            if columns[0] == "id" {
                to.after_explicit_ids(table)?;
            }
            copied.push((*table, n));
        }
        // The instance and key check stay the target's own; the rest of meta is history.
        Ok(copied)
    })
}

/// How many plans (job and scope) a store holds: a target must hold none.
pub fn plans(conn: &Conn) -> SqlResult<u64> {
    conn.one("SELECT COUNT(*) FROM plans", args![], |r| r.get(0))
}
