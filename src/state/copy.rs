//! A state's history copied whole from one store to another (SQLite ↔ PostgreSQL): what
//! `payrun state copy` does, and how `--dry-run` plans on a throwaway copy of a PostgreSQL
//! state. Rows keep their ids, so every reference between them holds.

use super::sql::{Arg, Conn, SqlResult, Value, args};

/// Every table of the state with its columns, in an order that respects references
/// (the same names in both stores).
const TABLES: &[(&str, &[&str])] = &[
    ("plans", &["id", "job", "scope", "created_at", "digest_id"]),
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
            "payee_hash",
            "details",
        ],
    ),
    (
        "digests",
        &[
            "id",
            "plan_id",
            "digest",
            "planned_by",
            "planned_at",
            "rows",
            "totals",
        ],
    ),
    (
        "digest_rows",
        &[
            "digest_id",
            "step",
            "row_key",
            "content_hash",
            "amount",
            "currency",
            "batch",
        ],
    ),
    (
        "approvals",
        &["digest_id", "approver", "note", "approved_at"],
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

/// Why a copy was not made.
#[derive(Debug)]
pub enum CopyError {
    /// A run holds a job of the source.
    Locked(String),
    Failed(String),
}

impl From<String> for CopyError {
    fn from(message: String) -> CopyError {
        CopyError::Failed(message)
    }
}

/// Copies the whole state at `from` into the state at `to` (a SQLite file or a PostgreSQL
/// URL each), which must hold no plan yet, while holding the lock of every job and scope
/// of `from` (a run holding one is refused). `to` keeps `from`'s content key: a new SQLite
/// file gets it as its key file; a PostgreSQL state must be given it
/// (`PAYRUN_STATE_KEY_FILE`).
pub fn copy_state(from: &std::path::Path, to: &std::path::Path) -> Result<Copied, CopyError> {
    let shown_from = super::shown(from);
    let shown_to = super::shown(to);
    if !super::exists(from) {
        return Err(CopyError::Failed(format!("{shown_from} does not exist")));
    }
    let source = super::State::open(from).map_err(|e| CopyError::Failed(e.to_string()))?;
    let jobs = source
        .connection()
        .all("SELECT job, scope FROM plans ORDER BY id", args![], |r| {
            Ok((r.get::<String>(0)?, r.get::<String>(1)?))
        })
        .map_err(|e| source.err(e).to_string())?;
    let mut locks = Vec::new();
    for (job, scope) in &jobs {
        match super::lock::try_take(from, job, scope) {
            Ok(Some(lock)) => locks.push(lock),
            Ok(None) => {
                return Err(CopyError::Locked(format!(
                    "a run of '{job}' scope '{scope}' holds {shown_from}: copy it when the run ends"
                )));
            }
            Err(e) => {
                return Err(CopyError::Failed(format!(
                    "cannot take the lock of '{job}' scope '{scope}': {e}"
                )));
            }
        }
    }
    let to_is_file = !super::pg::is_url(&to.to_string_lossy());
    if to_is_file {
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir_all(dir)
                .map_err(|e| CopyError::Failed(format!("{shown_to}: {e}")))?;
        }
        source.key().write_beside(to).map_err(|e| {
            CopyError::Failed(format!("cannot write the key file of {shown_to}: {e}"))
        })?;
    }
    let target = super::State::open(to).map_err(|e| CopyError::Failed(e.to_string()))?;
    if !target.key().same_as(source.key()) {
        return Err(CopyError::Failed(format!(
            "{shown_to} has another content key than {shown_from}: the copy must keep it — give \
             {shown_to} the key of {shown_from} ({})",
            if super::pg::is_url(&from.to_string_lossy()) {
                "the same PAYRUN_STATE_KEY_FILE or PAYRUN_STATE_KEY".to_string()
            } else {
                format!(
                    "PAYRUN_STATE_KEY_FILE={}",
                    super::key::key_path(from).display()
                )
            }
        )));
    }
    let held = plans(target.connection()).map_err(|e| target.err(e).to_string())?;
    if held > 0 {
        return Err(CopyError::Failed(format!(
            "{shown_to} holds {held} plan(s) already: copy into a state that holds none"
        )));
    }
    let copied = copy_all(source.connection(), target.connection())
        .map_err(|e| target.err(e).to_string())?;
    drop(locks);
    Ok(copied)
}
