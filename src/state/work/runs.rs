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
) -> SqlResult<(i32, Tally)> {
    let tally = Tally::of(conn, plan_id)?;
    let duplicates: i64 = conn.one(
        "SELECT COUNT(*) FROM duplicates WHERE plan_id = ?1",
        args![plan_id],
        |r| r.get(0),
    )?;
    let exit_code = crate::exit::of_run(ended, tally.needs_a_look(), duplicates > 0);
    let counts = tally.json();
    conn.execute(
        "UPDATE runs SET ended_at = ?2, exit_code = ?3, requests = ?4, retries = ?5, rate_limited = ?6, in_doubt_resolved = ?7, counts = ?8, settle_ms = ?9, duplicates = ?10
         WHERE id = ?1",
        args![run_id, now(), exit_code, stats.requests as i64, stats.retries as i64, stats.rate_limited as i64, stats.in_doubt_resolved as i64, counts, stats.settle_ms as i64, duplicates],
    )?;
    conn.execute(
        "DELETE FROM locks WHERE plan_id = ?1 AND run_id = ?2",
        args![plan_id, run_id],
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
) -> SqlResult<()> {
    finish_run(conn, plan_id, run_id, crate::exit::Ended::Fatal, stats)?;
    conn.execute(
        "UPDATE runs SET error = ?2 WHERE id = ?1",
        args![run_id, crate::redact::scrub(why)],
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
pub fn run_info(conn: &Conn, plan_id: i64, run_id: Option<i64>) -> SqlResult<Option<RunInfo>> {
    const COLUMNS: &str = "id, started_at, ended_at, exit_code, requests, retries, rate_limited, in_doubt_resolved, settle_ms, error";
    let (sql, run) = match run_id {
        Some(id) => (
            format!("SELECT {COLUMNS} FROM runs WHERE plan_id = ?1 AND id = ?2"),
            id,
        ),
        None => (
            format!(
                "SELECT {COLUMNS} FROM runs WHERE plan_id = ?1 AND ?2 = 0 ORDER BY id DESC LIMIT 1"
            ),
            0,
        ),
    };
    conn.optional(&sql, args![plan_id, run], |r| {
        Ok(RunInfo {
            id: r.get(0)?,
            started_at: r.get(1)?,
            ended_at: r.get(2)?,
            exit_code: r.get::<Option<i64>>(3)?.map(|c| c as i32),
            requests: r.get(4)?,
            retries: r.get(5)?,
            rate_limited: r.get(6)?,
            in_doubt_resolved: r.get(7)?,
            settle_ms: r.get(8)?,
            error: r.get(9)?,
        })
    })
}

/// The plan's latest runs, newest first.
pub fn recent_runs(conn: &Conn, plan_id: i64, n: usize) -> SqlResult<Vec<RunInfo>> {
    let ids: Vec<i64> = conn.all(
        "SELECT id FROM runs WHERE plan_id = ?1 ORDER BY id DESC LIMIT ?2",
        args![plan_id, n as i64],
        |r| r.get(0),
    )?;
    ids.into_iter()
        .filter_map(|id| run_info(conn, plan_id, Some(id)).transpose())
        .collect()
}

/// When run `run_id` of the plan started and ended (`9999` while it runs), if it exists.
pub fn run_span(conn: &Conn, plan_id: i64, run_id: i64) -> SqlResult<Option<(String, String)>> {
    conn.optional(
        "SELECT started_at, COALESCE(ended_at, '9999') FROM runs WHERE plan_id = ?1 AND id = ?2",
        args![plan_id, run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// The plan's latest run, if it ended fatally with a reason recorded.
pub fn latest_fatal(conn: &Conn, plan_id: i64) -> SqlResult<Option<i64>> {
    conn.optional(
        "SELECT id FROM runs WHERE plan_id = ?1 AND exit_code = ?2 AND error IS NOT NULL AND id = (SELECT MAX(id) FROM runs WHERE plan_id = ?1)",
        args![plan_id, crate::exit::FATAL],
        |r| r.get(0),
    )
}
