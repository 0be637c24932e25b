//! Export steps in the state database: one row per step and run. The newest completed
//! row's `to_at` is the step's `last_run` watermark, so a failed or interrupted export
//! never moves it.

use super::Conn;
use super::states::ExportState;
use super::work::now;
use rusqlite::{OptionalExtension, params};

/// One export of one run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    pub step: String,
    pub resource: String,
    pub from_at: String,
    pub to_at: String,
    pub state: ExportState,
    pub rows: u64,
    pub pages: u64,
    pub duplicates: u64,
    pub path: String,
    pub error: Option<String>,
}

/// The `to` of the step's newest completed export.
pub fn watermark(conn: &Conn, plan_id: i64, step: &str) -> rusqlite::Result<Option<String>> {
    conn.0
        .query_row(
            "SELECT to_at FROM exports WHERE plan_id = ?1 AND step = ?2 AND state = 'completed'
         ORDER BY run_id DESC LIMIT 1",
            params![plan_id, step],
            |r| r.get(0),
        )
        .optional()
}

/// Records that an export has started.
pub fn start(conn: &Conn, run_id: i64, plan_id: i64, e: &ExportRecord) -> rusqlite::Result<()> {
    conn.0.execute(
        "INSERT OR REPLACE INTO exports (run_id, plan_id, step, resource, from_at, to_at, state, path, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?9, ?7, ?8)",
        params![run_id, plan_id, e.step, e.resource, e.from_at, e.to_at, e.path, now(), ExportState::Running],
    )?;
    Ok(())
}

/// Records how an export ended (`completed` moves the watermark).
pub fn finish(conn: &Conn, run_id: i64, e: &ExportRecord) -> rusqlite::Result<()> {
    conn.0.execute(
        "UPDATE exports SET state = ?3, rows = ?4, pages = ?5, duplicates = ?6, error = ?7, ended_at = ?8
         WHERE run_id = ?1 AND step = ?2",
        params![run_id, e.step, e.state, e.rows as i64, e.pages as i64, e.duplicates as i64, e.error, now()],
    )?;
    Ok(())
}

/// The exports of a run, in step order of the job file (by start).
pub fn of_run(conn: &Conn, run_id: i64) -> rusqlite::Result<Vec<ExportRecord>> {
    let mut st = conn.0.prepare(
        "SELECT step, resource, from_at, to_at, state, rows, pages, duplicates, path, error
         FROM exports WHERE run_id = ?1 ORDER BY started_at, step",
    )?;
    st.query_map(params![run_id], record)?.collect()
}

/// Each export step's latest export of the plan, by step name.
pub fn latest(conn: &Conn, plan_id: i64) -> rusqlite::Result<Vec<ExportRecord>> {
    let mut st = conn.0.prepare(
        "SELECT step, resource, from_at, to_at, state, rows, pages, duplicates, path, error
         FROM exports WHERE plan_id = ?1
           AND run_id = (SELECT MAX(run_id) FROM exports e2 WHERE e2.plan_id = ?1 AND e2.step = exports.step)
         ORDER BY step",
    )?;
    st.query_map(params![plan_id], record)?.collect()
}

fn record(r: &rusqlite::Row) -> rusqlite::Result<ExportRecord> {
    Ok(ExportRecord {
        step: r.get(0)?,
        resource: r.get(1)?,
        from_at: r.get(2)?,
        to_at: r.get(3)?,
        state: r.get(4)?,
        rows: r.get::<_, i64>(5)? as u64,
        pages: r.get::<_, i64>(6)? as u64,
        duplicates: r.get::<_, i64>(7)? as u64,
        path: r.get(8)?,
        error: r.get(9)?,
    })
}
