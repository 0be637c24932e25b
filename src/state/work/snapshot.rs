//! Where a plan stands, read at once for `payrun status`: counts, exports, recent runs,
//! items in doubt, duplicates and the lock's holder.

use super::*;
use crate::state::exports::{self, ExportRecord};

/// A plan's state as `status` shows it.
#[derive(Debug)]
pub struct Snapshot {
    pub tally: Tally,
    /// Each export step's latest export, with its step's `last_run` watermark.
    pub exports: Vec<(ExportRecord, Option<String>)>,
    /// The latest runs, newest first.
    pub runs: Vec<RunInfo>,
    /// The first items in doubt, oldest first.
    pub in_doubt: Vec<InDoubt>,
    /// Duplicates the last check found: (step, duplicate).
    pub duplicates: Vec<(String, Duplicate)>,
    /// Who holds the plan's lock, with its last heartbeat.
    pub holder: Option<(Holder, String)>,
}

impl Snapshot {
    /// Reads the plan's snapshot: its last `runs` runs and first `in_doubt` items in doubt.
    pub fn of(conn: &Conn, plan_id: i64, runs: usize, in_doubt: usize) -> SqlResult<Snapshot> {
        let mut latest = Vec::new();
        for e in exports::latest(conn, plan_id)? {
            let mark = exports::watermark(conn, plan_id, &e.step)?;
            latest.push((e, mark));
        }
        Ok(Snapshot {
            tally: Tally::of(conn, plan_id)?,
            exports: latest,
            runs: recent_runs(conn, plan_id, runs)?,
            in_doubt: self::in_doubt(conn, plan_id, in_doubt)?,
            duplicates: duplicates_of(conn, plan_id)?,
            holder: crate::state::lock::holder(conn, plan_id)?,
        })
    }
}
