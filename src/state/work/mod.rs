//! The executor's reads and transitions of state, as plain functions on a connection (the
//! database thread runs them). Every state change an executor makes is one of these: items
//! ([`items`]), payout batches ([`batches`]), runs ([`runs`]), the counts ([`tally`]) and
//! duplicates found at the provider ([`duplicates`]).

use super::Conn;
use super::sql::{Arg, Row, SqlResult, args, placeholders};
use super::states::{BatchState, ItemState, Status};
use std::collections::HashMap;

mod batches;
mod cancel;
mod duplicates;
mod guards;
mod items;
mod runs;
mod snapshot;
mod tally;
#[cfg(test)]
mod tests;

pub use batches::*;
pub use cancel::*;
pub use duplicates::*;
pub use guards::*;
pub use items::*;
pub use runs::*;
pub use snapshot::*;
pub use tally::*;

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The plan record of a job and scope.
pub fn plan_id(conn: &Conn, job: &str, scope: &str) -> SqlResult<Option<i64>> {
    conn.optional(
        "SELECT id FROM plans WHERE job = ?1 AND scope = ?2",
        args![job, scope],
        |r| r.get(0),
    )
}

/// Creates the plan record of a job and scope, if there is none.
pub fn create_plan(conn: &Conn, job: &str, scope: &str) -> SqlResult<()> {
    conn.execute(
        "INSERT INTO plans (job, scope, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (job, scope) DO NOTHING",
        args![job, scope, now()],
    )?;
    Ok(())
}

/// Which state file this is (see the `meta` table), empty when not recorded.
pub fn instance(conn: &Conn) -> SqlResult<String> {
    Ok(conn
        .optional(
            "SELECT value FROM meta WHERE key = 'instance'",
            args![],
            |r| r.get(0),
        )?
        .unwrap_or_default())
}

/// Who holds a plan's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub run_id: i64,
    pub pid: i64,
    pub host: String,
    pub started_at: String,
}

/// This machine's name, for lock records.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A statement's parameters: `fixed`, then `states` for its `IN (...)` list (see
/// [`placeholders`]).
pub(super) fn with_states<'a, S: Arg>(fixed: &[&'a dyn Arg], states: &'a [S]) -> Vec<&'a dyn Arg> {
    let mut all = fixed.to_vec();
    all.extend(states.iter().map(|s| s as &dyn Arg));
    all
}
