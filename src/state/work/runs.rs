//! Runs: how one ends, with its figures, counts and exit code.

use super::*;

/// Run figures recorded at the end.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub in_doubt_resolved: u64,
    /// Time spent waiting for requests in doubt to settle, in milliseconds.
    pub settle_ms: u64,
}

/// Ends a run: its figures, counts by step and state, exit code; releases the lock. The
/// exit code is how it `ended` with what its items and the provider's duplicates add
/// ([`crate::exit::of_run`]); it is returned with the counts.
pub fn finish_run(
    conn: &Conn,
    plan_id: i64,
    run_id: i64,
    ended: crate::exit::Ended,
    stats: &RunStats,
) -> rusqlite::Result<(i32, Tally)> {
    let tally = Tally::of(conn, plan_id)?;
    let duplicates: i64 = conn.0.query_row(
        "SELECT COUNT(*) FROM duplicates WHERE plan_id = ?1",
        [plan_id],
        |r| r.get(0),
    )?;
    let exit_code = crate::exit::of_run(ended, tally.needs_a_look(), duplicates > 0);
    let counts = tally.json();
    conn.0.execute(
        "UPDATE runs SET ended_at = ?2, exit_code = ?3, requests = ?4, retries = ?5, rate_limited = ?6, in_doubt_resolved = ?7, counts = ?8, settle_ms = ?9, duplicates = ?10
         WHERE id = ?1",
        params![run_id, now(), exit_code, stats.requests as i64, stats.retries as i64, stats.rate_limited as i64, stats.in_doubt_resolved as i64, counts, stats.settle_ms as i64, duplicates],
    )?;
    conn.0.execute(
        "DELETE FROM locks WHERE plan_id = ?1 AND run_id = ?2",
        params![plan_id, run_id],
    )?;
    Ok((exit_code, tally))
}

/// Ends a run that failed fatally: its figures, exit 5, and why (scrubbed of numbers).
pub fn finish_fatal(
    conn: &Conn,
    plan_id: i64,
    run_id: i64,
    stats: &RunStats,
    why: &str,
) -> rusqlite::Result<()> {
    finish_run(conn, plan_id, run_id, crate::exit::Ended::Fatal, stats)?;
    conn.0.execute(
        "UPDATE runs SET error = ?2 WHERE id = ?1",
        params![run_id, crate::redact::scrub(why)],
    )?;
    Ok(())
}

/// A run as reports show it.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub id: i64,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub exit_code: Option<i32>,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub in_doubt_resolved: u64,
    /// Time spent waiting for requests in doubt to settle, in milliseconds.
    pub settle_ms: u64,
    /// Why the run stopped, when it failed fatally (exit 5).
    pub error: Option<String>,
}

/// Run `run_id` of the plan, or its latest run when `None`.
pub fn run_info(
    conn: &Conn,
    plan_id: i64,
    run_id: Option<i64>,
) -> rusqlite::Result<Option<RunInfo>> {
    conn.0.query_row(
        "SELECT id, started_at, ended_at, exit_code, requests, retries, rate_limited, in_doubt_resolved, settle_ms, error FROM runs
         WHERE plan_id = ?1 AND (?2 IS NULL OR id = ?2) ORDER BY id DESC LIMIT 1",
        params![plan_id, run_id],
        |r| {
            Ok(RunInfo {
                id: r.get(0)?,
                started_at: r.get(1)?,
                ended_at: r.get(2)?,
                exit_code: r.get(3)?,
                requests: r.get::<_, i64>(4)? as u64,
                retries: r.get::<_, i64>(5)? as u64,
                rate_limited: r.get::<_, i64>(6)? as u64,
                in_doubt_resolved: r.get::<_, i64>(7)? as u64,
                settle_ms: r.get::<_, i64>(8)? as u64,
                error: r.get(9)?,
            })
        },
    )
    .optional()
}

/// The plan's latest runs, newest first.
pub fn recent_runs(conn: &Conn, plan_id: i64, n: usize) -> rusqlite::Result<Vec<RunInfo>> {
    let mut stmt = conn
        .0
        .prepare("SELECT id FROM runs WHERE plan_id = ?1 ORDER BY id DESC LIMIT ?2")?;
    let ids: Vec<i64> = stmt
        .query_map(params![plan_id, n as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.into_iter()
        .filter_map(|id| run_info(conn, plan_id, Some(id)).transpose())
        .collect()
}

/// When run `run_id` of the plan started and ended (`9999` while it runs), if it exists.
pub fn run_span(
    conn: &Conn,
    plan_id: i64,
    run_id: i64,
) -> rusqlite::Result<Option<(String, String)>> {
    conn.0.query_row(
        "SELECT started_at, COALESCE(ended_at, '9999') FROM runs WHERE plan_id = ?1 AND id = ?2",
        params![plan_id, run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// The plan's latest run, if it ended fatally with a reason recorded.
pub fn latest_fatal(conn: &Conn, plan_id: i64) -> rusqlite::Result<Option<i64>> {
    conn.0.query_row(
        "SELECT id FROM runs WHERE plan_id = ?1 AND exit_code = ?2 AND error IS NOT NULL AND id = (SELECT MAX(id) FROM runs WHERE plan_id = ?1)",
        params![plan_id, crate::exit::FATAL],
        |r| r.get(0),
    )
    .optional()
}
