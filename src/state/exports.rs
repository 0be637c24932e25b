//! Export steps in the state database: one row per step and run. The newest completed
//! row's `to_at` is the step's `last_run` watermark, so a failed or interrupted export
//! never moves it.

use super::Conn;
use super::sql::{Row, SqlResult, args};
use super::states::ExportState;
use super::work::now;

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
pub fn watermark(conn: &Conn, plan_id: i64, step: &str) -> SqlResult<Option<String>> {
    conn.optional(
        "SELECT to_at FROM exports WHERE plan_id = ?1 AND step = ?2 AND state = 'completed'
         ORDER BY run_id DESC LIMIT 1",
        args![plan_id, step],
        |r| r.get(0),
    )
}

/// Records that an export has started.
pub fn start(conn: &Conn, run_id: i64, plan_id: i64, e: &ExportRecord) -> SqlResult<()> {
    conn.execute(
        "INSERT INTO exports (run_id, plan_id, step, resource, from_at, to_at, state, path, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?9, ?7, ?8)
         ON CONFLICT (run_id, step) DO UPDATE SET plan_id = excluded.plan_id,
             resource = excluded.resource, from_at = excluded.from_at, to_at = excluded.to_at,
             state = excluded.state, path = excluded.path, started_at = excluded.started_at,
             rows = 0, pages = 0, duplicates = 0, error = NULL, ended_at = NULL",
        args![run_id, plan_id, e.step, e.resource, e.from_at, e.to_at, e.path, now(), ExportState::Running],
    )?;
    Ok(())
}

/// Records how an export ended (`completed` moves the watermark).
pub fn finish(conn: &Conn, run_id: i64, e: &ExportRecord) -> SqlResult<()> {
    conn.execute(
        "UPDATE exports SET state = ?3, rows = ?4, pages = ?5, duplicates = ?6, error = ?7, ended_at = ?8
         WHERE run_id = ?1 AND step = ?2",
        args![run_id, e.step, e.state, e.rows as i64, e.pages as i64, e.duplicates as i64, e.error, now()],
    )?;
    Ok(())
}

/// The exports of a run, in step order of the job file (by start).
pub fn of_run(conn: &Conn, run_id: i64) -> SqlResult<Vec<ExportRecord>> {
    conn.all(
        "SELECT step, resource, from_at, to_at, state, rows, pages, duplicates, path, error
         FROM exports WHERE run_id = ?1 ORDER BY started_at, step",
        args![run_id],
        record,
    )
}

/// Each export step's latest export of the plan, by step name.
pub fn latest(conn: &Conn, plan_id: i64) -> SqlResult<Vec<ExportRecord>> {
    conn.all(
        "SELECT step, resource, from_at, to_at, state, rows, pages, duplicates, path, error
         FROM exports WHERE plan_id = ?1
           AND run_id = (SELECT MAX(run_id) FROM exports e2 WHERE e2.plan_id = ?1 AND e2.step = exports.step)
         ORDER BY step",
        args![plan_id],
        record,
    )
}

fn record(r: &Row) -> SqlResult<ExportRecord> {
    Ok(ExportRecord {
        step: r.get(0)?,
        resource: r.get(1)?,
        from_at: r.get(2)?,
        to_at: r.get(3)?,
        state: r.get(4)?,
        rows: r.get(5)?,
        pages: r.get(6)?,
        duplicates: r.get(7)?,
        path: r.get(8)?,
        error: r.get(9)?,
    })
}
