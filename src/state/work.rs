//! The executor's reads and transitions of state, as plain functions on a connection (the
//! database thread runs them). Every state change an executor makes is one of these.

use super::states::{BatchState, ItemState, Status};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The plan record of a job and scope.
pub fn plan_id(conn: &Connection, job: &str, scope: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT id FROM plans WHERE job = ?1 AND scope = ?2",
        params![job, scope],
        |r| r.get(0),
    )
    .optional()
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
/// exit code is `floor` raised to what the items earn ([`Tally::exit_code`]); it is
/// returned with the counts.
pub fn finish_run(
    conn: &Connection,
    plan_id: i64,
    run_id: i64,
    floor: i32,
    stats: &RunStats,
) -> rusqlite::Result<(i32, Tally)> {
    let tally = Tally::of(conn, plan_id)?;
    let duplicates: i64 = conn.query_row(
        "SELECT COUNT(*) FROM duplicates WHERE plan_id = ?1",
        [plan_id],
        |r| r.get(0),
    )?;
    let mut exit_code = floor.max(tally.exit_code());
    if duplicates > 0 {
        exit_code = exit_code.max(crate::exit::DUPLICATE);
    }
    let counts = tally.json();
    conn.execute(
        "UPDATE runs SET ended_at = ?2, exit_code = ?3, requests = ?4, retries = ?5, rate_limited = ?6, in_doubt_resolved = ?7, counts = ?8, settle_ms = ?9, duplicates = ?10
         WHERE id = ?1",
        params![run_id, now(), exit_code, stats.requests as i64, stats.retries as i64, stats.rate_limited as i64, stats.in_doubt_resolved as i64, counts, stats.settle_ms as i64, duplicates],
    )?;
    conn.execute(
        "DELETE FROM locks WHERE plan_id = ?1 AND run_id = ?2",
        params![plan_id, run_id],
    )?;
    Ok((exit_code, tally))
}

/// A row of a step that needs a look: its key, its name, and why (see [`Status::reason`]).
pub type LookRow = (String, Status, Option<String>, Option<String>);

/// The rows of a step that need a look, in file order, and how many more are only not
/// sent yet (counted, not listed: a stopped run would list them all).
pub fn needing_a_look(
    conn: &Connection,
    plan_id: i64,
    step: &str,
) -> rusqlite::Result<(Vec<LookRow>, u64)> {
    let mut st = conn.prepare(
        "SELECT row_key, state, conflict_hash IS NOT NULL, error_code, error_message FROM items
         WHERE plan_id = ?1 AND step = ?2 AND (state NOT IN ('succeeded', 'skipped') OR conflict_hash IS NOT NULL)
         ORDER BY row_line",
    )?;
    let mut q = st.query(params![plan_id, step])?;
    let (mut rows, mut pending) = (Vec::new(), 0);
    while let Some(r) = q.next()? {
        let name = Status::of(r.get(1)?, r.get(2)?);
        if name == Status::Pending {
            pending += 1;
            continue;
        }
        let (code, message) = name.reason(r.get(3)?, r.get(4)?);
        rows.push((r.get(0)?, name, code, message));
    }
    Ok((rows, pending))
}

/// Ends a run that failed fatally: its figures, exit 5, and why (scrubbed of numbers).
pub fn finish_fatal(
    conn: &Connection,
    plan_id: i64,
    run_id: i64,
    stats: &RunStats,
    why: &str,
) -> rusqlite::Result<()> {
    finish_run(conn, plan_id, run_id, crate::exit::FATAL, stats)?;
    conn.execute(
        "UPDATE runs SET error = ?2 WHERE id = ?1",
        params![run_id, crate::redact::scrub(why)],
    )?;
    Ok(())
}

/// A plan's items counted by step (in step order) and [`Status`] (in name order), in one
/// pass over the plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    steps: Vec<(String, Vec<(Status, u64)>)>,
}

impl Tally {
    pub fn of(conn: &Connection, plan_id: i64) -> rusqlite::Result<Tally> {
        // Counted here rather than by GROUP BY: the items come in the order of their
        // (plan, step, key) index, and a step's states mostly repeat, so no sort is needed.
        let mut stmt = conn.prepare_cached(
            "SELECT step_index, step, state, conflict_hash IS NOT NULL FROM items WHERE plan_id = ?1",
        )?;
        let mut rows = stmt.query([plan_id])?;
        // (step index, step, state, count), the last one touched at the end.
        let mut seen: Vec<(i64, String, Status, u64)> = Vec::new();
        while let Some(r) = rows.next()? {
            let (si, step) = (r.get::<_, i64>(0)?, r.get_ref(1)?.as_str()?);
            let state = Status::of(r.get(2)?, r.get(3)?);
            let same = |e: &(i64, String, Status, u64)| e.1 == step && e.2 == state;
            match seen.last_mut() {
                Some(e) if same(e) => e.3 += 1,
                _ => match seen.iter_mut().find(|e| same(e)) {
                    Some(e) => e.3 += 1,
                    None => seen.push((si, step.to_string(), state, 1)),
                },
            }
        }
        // Step order is that of the job (a step's lowest index), states by name.
        let mut first: Vec<(i64, &str)> = Vec::new();
        for (si, step, _, _) in &seen {
            match first.iter_mut().find(|f| f.1 == step) {
                Some(f) => f.0 = f.0.min(*si),
                None => first.push((*si, step)),
            }
        }
        first.sort();
        let steps = first
            .iter()
            .map(|(_, step)| {
                let mut states: Vec<(Status, u64)> = seen
                    .iter()
                    .filter(|e| e.1 == *step)
                    .map(|e| (e.2, e.3))
                    .collect();
                states.sort();
                (step.to_string(), states)
            })
            .collect();
        Ok(Tally { steps })
    }

    /// The exit code the items earn: 0 when every item is done (succeeded, skipped), 1
    /// when any needs a look ([`Status::needs_a_look`]): failed, blocked, in doubt,
    /// waiting for funds, in conflict or still pending.
    pub fn exit_code(&self) -> i32 {
        let open = self
            .steps
            .iter()
            .flat_map(|(_, s)| s)
            .any(|(state, n)| *n > 0 && state.needs_a_look());
        if open {
            crate::exit::ROWS_FAILED
        } else {
            crate::exit::SUCCESS
        }
    }

    /// The counts: each step (in job order) with its state names and counts.
    pub fn steps(&self) -> &[(String, Vec<(Status, u64)>)] {
        &self.steps
    }

    /// As JSON: `{"contact": {"succeeded": 20}, ...}` (also its `Display`).
    pub fn json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (step, states) in &self.steps {
            let counts = states
                .iter()
                .map(|(state, n)| (state.to_string(), serde_json::json!(n)))
                .collect();
            map.insert(step.clone(), serde_json::Value::Object(counts));
        }
        serde_json::Value::Object(map).to_string()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.json())
    }
}

/// The placeholders `?{first},?{first+1},…` of an `IN (...)` list of `n` bound values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// An item as the executor works on it.
#[derive(Debug, Clone)]
pub struct WorkItem {
    pub id: i64,
    pub row_key: String,
    pub row_line: u64,
    pub row_offset: u64,
    pub state: ItemState,
    pub attempts: u32,
    pub content_hash: String,
    pub first_attempt_at: Option<String>,
    pub batch_id: Option<i64>,
    pub external_id: Option<String>,
    pub provider_status: Option<String>,
    pub provider_ref: Option<String>,
    /// When its request in doubt was sent, if it is in doubt and that was recorded.
    pub doubt_since: Option<String>,
    /// Its request in doubt was applied (a 2xx that could not be read).
    pub doubt_applied: bool,
    /// The stored display copy of the fields (sensitive values masked, image hashes left
    /// out): the body to send when nothing in it was masked (see [`WorkItem::planned_body`]).
    pub payload: String,
}

impl WorkItem {
    /// The body planned for this item, when the stored payload is it: its hash is the
    /// item's content hash only when no value was masked and no image hash left out.
    /// Otherwise (KYC documents, account numbers) `None`: the row is read and rendered
    /// again.
    pub fn planned_body(&self, key: &super::key::ContentKey) -> Option<&str> {
        (key.hash(self.payload.as_bytes()) == self.content_hash).then_some(self.payload.as_str())
    }

    /// [`WorkItem::planned_body`], taken out of the item (its payload left empty).
    pub fn take_planned_body(&mut self, key: &super::key::ContentKey) -> Option<String> {
        self.planned_body(key)?;
        Some(std::mem::take(&mut self.payload))
    }
}

const ITEM_COLUMNS: &str = "id, row_key, row_line, row_offset, state, attempts, content_hash, first_attempt_at, batch_id, external_id, provider_status, provider_ref, payload, doubt_since, doubt_applied";

fn work_item(r: &rusqlite::Row) -> rusqlite::Result<WorkItem> {
    Ok(WorkItem {
        id: r.get(0)?,
        row_key: r.get(1)?,
        row_line: r.get::<_, i64>(2)? as u64,
        row_offset: r.get::<_, i64>(3)? as u64,
        state: r.get(4)?,
        attempts: r.get::<_, i64>(5)? as u32,
        content_hash: r.get(6)?,
        first_attempt_at: r.get(7)?,
        batch_id: r.get(8)?,
        external_id: r.get(9)?,
        provider_status: r.get(10)?,
        provider_ref: r.get(11)?,
        payload: r.get(12)?,
        doubt_since: r.get(13)?,
        doubt_applied: r.get(14)?,
    })
}

/// Items of a step in the given states, in file order (conflicts are never work).
pub fn items_in(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    states: &[ItemState],
) -> rusqlite::Result<Vec<WorkItem>> {
    items_page(conn, plan_id, step, states, None, usize::MAX)
}

/// A page of [`items_in`]: at most `limit` items, those after the row `after` (its line
/// and key) in file order.
pub fn items_page(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    states: &[ItemState],
    after: Option<&(i64, String)>,
    limit: usize,
) -> rusqlite::Result<Vec<WorkItem>> {
    let marks = placeholders(5, states.len());
    let sql = format!(
        // Through the index in file order: by the (plan, step, key) index SQLite would
        // sort the step's items, a tenth of the time before the first request. A page
        // enters the index at the row after the last page's, not at the start.
        "SELECT {ITEM_COLUMNS} FROM items INDEXED BY items_by_line
         WHERE plan_id = ?1 AND (row_line, row_key) > (?3, ?4) AND step = ?2 AND state IN ({marks}) AND conflict_hash IS NULL
         ORDER BY row_line, row_key, id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let (line, key) = after.map_or((-1, ""), |(l, k)| (*l, k.as_str()));
    // The page ends by stepping no further, not by `LIMIT ?`: SQLite plans a bound LIMIT
    // by its value, so binding it expired the statement and every page was prepared
    // again.
    let fixed: [&dyn rusqlite::ToSql; 4] = [&plan_id, &step, &line, &key];
    let bound = fixed
        .into_iter()
        .chain(states.iter().map(|s| s as &dyn rusqlite::ToSql));
    stmt.query_map(rusqlite::params_from_iter(bound), work_item)?
        .take(limit)
        .collect()
}

/// How many items [`items_in`] would return.
pub fn count_in(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    states: &[ItemState],
) -> rusqlite::Result<u64> {
    let marks = placeholders(3, states.len());
    let sql = format!(
        "SELECT COUNT(*) FROM items WHERE plan_id = ?1 AND step = ?2 AND state IN ({marks}) AND conflict_hash IS NULL"
    );
    let fixed: [&dyn rusqlite::ToSql; 2] = [&plan_id, &step];
    let bound = fixed
        .into_iter()
        .chain(states.iter().map(|s| s as &dyn rusqlite::ToSql));
    conn.query_row(&sql, rusqlite::params_from_iter(bound), |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
}

/// Each row's step items: `(row_key, step) -> (state, provider_status)`.
pub type RowStates = std::collections::HashMap<(String, String), (ItemState, Option<String>)>;

/// The state of every step's item for these rows.
pub fn row_states(conn: &Connection, plan_id: i64) -> rusqlite::Result<RowStates> {
    let mut stmt =
        conn.prepare("SELECT row_key, step, state, provider_status FROM items WHERE plan_id = ?1")?;
    stmt.query_map([plan_id], |r| {
        Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?)))
    })?
    .collect()
}

/// Records the intent to send: in flight, one more attempt, first attempt time kept, no
/// earlier doubt (a new attempt's doubt is its own).
pub fn mark_in_flight(conn: &Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let t = now();
    let mut stmt = conn.prepare_cached(
        "UPDATE items SET state = ?3, attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?2), updated_at = ?2, doubt_since = NULL, doubt_applied = 0 WHERE id = ?1",
    )?;
    for id in ids {
        stmt.execute(params![id, t, ItemState::InFlight])?;
    }
    Ok(())
}

/// What is in doubt: an item, or a payout batch (and with it all its items).
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Item(i64),
    Batch(i64),
}

/// Records when a unit's request in doubt was sent, and whether it was applied (a 2xx that
/// could not be read). One statement.
pub fn set_doubt(
    conn: &Connection,
    unit: Unit,
    since: &str,
    applied: bool,
) -> rusqlite::Result<()> {
    let sql = match unit {
        Unit::Item(_) => {
            "UPDATE items SET doubt_since = ?2, doubt_applied = ?3 WHERE id = ?1 AND state = 'in_flight'"
        }
        Unit::Batch(_) => {
            "UPDATE batches SET doubt_since = ?2, doubt_applied = ?3 WHERE id = ?1 AND state = 'in_flight'"
        }
    };
    let (Unit::Item(id) | Unit::Batch(id)) = unit;
    conn.prepare_cached(sql)?
        .execute(params![id, since, applied])?;
    Ok(())
}

/// An item's outcome.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub state: ItemState,
    pub provider_ref: Option<String>,
    pub provider_status: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Records an item's outcome. A message (often the provider's words) is scrubbed of
/// account-like numbers before it is stored.
pub fn set_outcome(conn: &Connection, id: i64, o: &Outcome) -> rusqlite::Result<()> {
    let message = o.error_message.as_deref().map(crate::redact::scrub);
    conn.prepare_cached(
        "UPDATE items SET state = ?2, provider_ref = COALESCE(?3, provider_ref), provider_status = COALESCE(?4, provider_status),
                error_code = ?5, error_message = ?6, updated_at = ?7 WHERE id = ?1",
    )?
    .execute(params![id, o.state, o.provider_ref, o.provider_status, o.error_code, message, now()])?;
    Ok(())
}

/// A payout batch as the executor sends it.
#[derive(Debug, Clone)]
pub struct WorkBatch {
    pub id: i64,
    pub external_id: String,
    pub state: BatchState,
    pub first_attempt_at: Option<String>,
    pub provider_ref: Option<String>,
    /// When its request in doubt was sent, if it is in doubt and that was recorded.
    pub doubt_since: Option<String>,
    /// Its request in doubt was applied (a 2xx that could not be read).
    pub doubt_applied: bool,
}

/// Batches of a step in the given states, oldest first.
pub fn batches_in(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    states: &[BatchState],
) -> rusqlite::Result<Vec<WorkBatch>> {
    let marks = placeholders(3, states.len());
    let sql = format!(
        "SELECT id, external_id, state, first_attempt_at, provider_ref, doubt_since, doubt_applied FROM batches WHERE plan_id = ?1 AND step = ?2 AND state IN ({marks}) ORDER BY seq"
    );
    let mut stmt = conn.prepare(&sql)?;
    let fixed: [&dyn rusqlite::ToSql; 2] = [&plan_id, &step];
    let bound = fixed
        .into_iter()
        .chain(states.iter().map(|s| s as &dyn rusqlite::ToSql));
    stmt.query_map(rusqlite::params_from_iter(bound), |r| {
        Ok(WorkBatch {
            id: r.get(0)?,
            external_id: r.get(1)?,
            state: r.get(2)?,
            first_attempt_at: r.get(3)?,
            provider_ref: r.get(4)?,
            doubt_since: r.get(5)?,
            doubt_applied: r.get(6)?,
        })
    })?
    .collect()
}

pub fn batch_items(conn: &Connection, batch_id: i64) -> rusqlite::Result<Vec<WorkItem>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = ?1 ORDER BY id"
    ))?;
    stmt.query_map([batch_id], work_item)?.collect()
}

/// The intent to send a batch: batch and its items in flight, in one transaction (a new
/// attempt's doubt is its own).
pub fn mark_batch_in_flight(conn: &Connection, batch_id: i64) -> rusqlite::Result<()> {
    let t = now();
    conn.execute(
        "UPDATE batches SET state = 'in_flight', attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?2), doubt_since = NULL, doubt_applied = 0 WHERE id = ?1",
        params![batch_id, t],
    )?;
    conn.execute(
        "UPDATE items SET state = 'in_flight', attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?2), updated_at = ?2 WHERE batch_id = ?1",
        params![batch_id, t],
    )?;
    Ok(())
}

pub fn set_batch(
    conn: &Connection,
    batch_id: i64,
    state: BatchState,
    provider_ref: Option<&str>,
    provider_status: Option<&str>,
    error: Option<(&str, &str)>,
) -> rusqlite::Result<()> {
    let message = error.map(|e| crate::redact::scrub(e.1));
    conn.execute(
        "UPDATE batches SET state = ?2, provider_ref = COALESCE(?3, provider_ref), provider_status = COALESCE(?4, provider_status),
                error_code = ?5, error_message = ?6 WHERE id = ?1",
        params![batch_id, state, provider_ref, provider_status, error.map(|e| e.0), message],
    )?;
    Ok(())
}

/// Takes items out of an unsent batch (their row is not ready): they wait, `blocked`, for a
/// later run, which puts them into a new batch.
pub fn detach(conn: &Connection, id: i64, reason: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE items SET batch_id = NULL, state = 'blocked', error_code = 'WAITING', error_message = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, reason, now()],
    )?;
    Ok(())
}

/// Puts unbatched payout items that are ready to go (pending, or blocked earlier) into open
/// batches of their group, creating batches as needed — never under an external id in
/// `taken` (the provider holds a batch with it already); drops empty open batches.
pub fn rebatch(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    size: u32,
    (job, scope): (&str, &str),
    taken: &std::collections::HashSet<String>,
) -> rusqlite::Result<()> {
    let waiting: Vec<(i64, String)> = conn
        .prepare("SELECT id, COALESCE(group_key, '') FROM items WHERE plan_id = ?1 AND step = ?2 AND batch_id IS NULL AND state IN ('pending', 'blocked') AND conflict_hash IS NULL ORDER BY id")?
        .query_map(params![plan_id, step], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, group) in waiting {
        let open: Option<i64> = conn
            .query_row(
                "SELECT b.id FROM batches b WHERE b.plan_id = ?1 AND b.step = ?2 AND b.state = 'open' AND b.group_key = ?3
                   AND (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id) < ?4 ORDER BY b.seq LIMIT 1",
                params![plan_id, step, group, size],
                |r| r.get(0),
            )
            .optional()?;
        let batch = match open {
            Some(b) => b,
            None => {
                let mut seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE plan_id = ?1 AND step = ?2", params![plan_id, step], |r| r.get(0))?;
                let mut ext = crate::plan::external_id(&[job, scope, step, &format!("b{seq:04}")]);
                while taken.contains(&ext) {
                    seq += 1;
                    ext = crate::plan::external_id(&[job, scope, step, &format!("b{seq:04}")]);
                }
                conn.execute(
                    "INSERT INTO batches (plan_id, step, seq, group_key, external_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![plan_id, step, seq, group, ext, now()],
                )?;
                conn.last_insert_rowid()
            }
        };
        conn.execute("UPDATE items SET batch_id = ?2, state = 'pending', error_code = NULL, error_message = NULL WHERE id = ?1", params![id, batch])?;
    }
    conn.execute("DELETE FROM batches WHERE plan_id = ?1 AND state = 'open' AND NOT EXISTS (SELECT 1 FROM items WHERE batch_id = batches.id)", [plan_id])?;
    Ok(())
}

/// `--retry-failed`: failed items go back to pending (never conflicts or successes); failed
/// payout items leave their batch, so they go out in a new batch with a new external id —
/// but only when that batch can no longer pay: it never reached the provider, or the
/// provider ended it (`expired`, `cancelled`). A row of a batch the provider holds and may
/// still pay stays as it is. Returns how many went back, and how many were kept so.
pub fn retry_failed(conn: &Connection, plan_id: i64) -> rusqlite::Result<(usize, usize)> {
    let retried = conn.execute(
        "UPDATE items SET state = 'pending', error_code = NULL, error_message = NULL,
                batch_id = NULL, updated_at = ?2
         WHERE plan_id = ?1 AND state = 'failed' AND conflict_hash IS NULL
           AND (batch_id IS NULL OR batch_id IN (
                SELECT id FROM batches WHERE plan_id = ?1
                  AND (provider_ref IS NULL OR state IN ('expired', 'cancelled'))))",
        params![plan_id, now()],
    )?;
    let kept: i64 = conn.query_row(
        "SELECT COUNT(*) FROM items WHERE plan_id = ?1 AND state = 'failed' AND conflict_hash IS NULL AND batch_id IS NOT NULL",
        [plan_id],
        |r| r.get(0),
    )?;
    Ok((retried, kept as usize))
}

/// Puts back to pending the items refused with `code` and `message` since `since` (a run
/// stopped because every row was refused the same way: the rows were not at fault). A
/// payout row leaves its batch, which never reached the provider.
pub fn requeue_refused(
    conn: &Connection,
    plan_id: i64,
    since: &str,
    code: &str,
    message: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE items SET state = 'pending', error_code = NULL, error_message = NULL,
                batch_id = CASE WHEN batch_id IN (SELECT id FROM batches WHERE provider_ref IS NULL) THEN NULL ELSE batch_id END
         WHERE plan_id = ?1 AND state = 'failed' AND updated_at >= ?2 AND error_code = ?3 AND error_message = ?4",
        // As set_outcome stored it.
        params![plan_id, since, code, crate::redact::scrub(message)],
    )
}

/// Calls `f` with every payout external id of a step: its batches' and its items'.
pub fn each_payout_external_id(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    mut f: impl FnMut(&str),
) -> rusqlite::Result<()> {
    for sql in [
        "SELECT external_id FROM batches WHERE plan_id = ?1 AND step = ?2",
        "SELECT external_id FROM items WHERE plan_id = ?1 AND step = ?2 AND external_id IS NOT NULL",
    ] {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query(params![plan_id, step])?;
        while let Some(r) = rows.next()? {
            f(r.get_ref(0)?.as_str()?);
        }
    }
    Ok(())
}

/// A payout step's span: its first batch's first attempt, and the latest `scheduled_at`
/// its rows ask for.
pub fn payout_span(
    conn: &Connection,
    plan_id: i64,
    step: &str,
) -> rusqlite::Result<(Option<String>, Option<String>)> {
    let first = conn.query_row(
        "SELECT MIN(first_attempt_at) FROM batches WHERE plan_id = ?1 AND step = ?2",
        params![plan_id, step],
        |r| r.get(0),
    )?;
    let latest = conn.query_row(
        "SELECT MAX(json_extract(payload, '$.scheduled_at')) FROM items WHERE plan_id = ?1 AND step = ?2",
        params![plan_id, step],
        |r| r.get(0),
    )?;
    Ok((first, latest))
}

/// The step's items whose external id is one of `ids` (one pass over the step).
pub fn items_by_external_id(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    ids: &std::collections::HashSet<String>,
) -> rusqlite::Result<Vec<WorkItem>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE plan_id = ?1 AND step = ?2 AND external_id IS NOT NULL"
    ))?;
    let mut out = Vec::new();
    let mut rows = stmt.query(params![plan_id, step])?;
    while let Some(r) = rows.next()? {
        // Column 9 of ITEM_COLUMNS: the external id.
        if ids.contains(r.get_ref(9)?.as_str()?) {
            out.push(work_item(r)?);
        }
    }
    Ok(out)
}

/// A batch the provider holds that this state did not know, taken as this plan's: it is
/// recorded (in the open batch of the same external id, if there is one, else a new
/// one) with `outcomes` for the rows it pays; the open batch's other rows leave it, to be
/// batched again. Returns the batch's id.
pub fn adopt_batch(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    found: &FoundBatch<'_>,
    outcomes: &[(i64, Outcome)],
) -> rusqlite::Result<i64> {
    let open: Option<i64> = conn
        .query_row(
            "SELECT id FROM batches WHERE plan_id = ?1 AND step = ?2 AND external_id = ?3 AND state = 'open' ORDER BY seq LIMIT 1",
            params![plan_id, step, found.external_id],
            |r| r.get(0),
        )
        .optional()?;
    let id = match open {
        Some(id) => id,
        None => {
            let seq: i64 = conn.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE plan_id = ?1 AND step = ?2",
                params![plan_id, step],
                |r| r.get(0),
            )?;
            conn.execute(
                "INSERT INTO batches (plan_id, step, seq, group_key, external_id, created_at) VALUES (?1, ?2, ?3, '', ?4, ?5)",
                params![plan_id, step, seq, found.external_id, now()],
            )?;
            conn.last_insert_rowid()
        }
    };
    set_batch(
        conn,
        id,
        found.state,
        Some(found.uuid),
        found.status,
        found.error,
    )?;
    // Its rows that the provider's batch does not pay go back to be batched again.
    conn.execute(
        "UPDATE items SET batch_id = NULL, state = 'pending' WHERE batch_id = ?1",
        [id],
    )?;
    for (item, o) in outcomes {
        conn.execute(
            "UPDATE items SET batch_id = ?2 WHERE id = ?1",
            params![item, id],
        )?;
        set_outcome(conn, *item, o)?;
    }
    Ok(id)
}

/// What payrun records of a batch the provider holds.
#[derive(Debug, Clone, Copy)]
pub struct FoundBatch<'a> {
    pub uuid: &'a str,
    pub external_id: &'a str,
    /// The batch's state in payrun's terms: sent, completed or expired.
    pub state: BatchState,
    pub status: Option<&'a str>,
    /// The provider's code and message (a funding answer), if any.
    pub error: Option<(&'a str, &'a str)>,
}

/// A duplicate found at the provider: an external id of this plan carried by more than
/// one batch that can still pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub external_id: String,
    /// The row whose transaction it is; `None` for a batch's own external id.
    pub row_key: Option<String>,
    /// The provider's batches carrying it, oldest first.
    pub uuids: Vec<String>,
}

/// Replaces a step's recorded duplicates with what the last check found.
pub fn record_duplicates(
    conn: &Connection,
    plan_id: i64,
    step: &str,
    run_id: i64,
    found: &[Duplicate],
) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM duplicates WHERE plan_id = ?1 AND step = ?2",
        params![plan_id, step],
    )?;
    for d in found {
        conn.execute(
            "INSERT INTO duplicates (plan_id, step, external_id, row_key, uuids, found_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![plan_id, step, d.external_id, d.row_key, d.uuids.join(","), now(), run_id],
        )?;
    }
    Ok(())
}

/// The duplicates recorded for a plan: (step, duplicate).
pub fn duplicates_of(
    conn: &Connection,
    plan_id: i64,
) -> rusqlite::Result<Vec<(String, Duplicate)>> {
    let mut stmt = conn.prepare(
        "SELECT step, external_id, row_key, uuids FROM duplicates WHERE plan_id = ?1 ORDER BY step, external_id",
    )?;
    stmt.query_map([plan_id], |r| {
        let uuids: String = r.get(3)?;
        Ok((
            r.get(0)?,
            Duplicate {
                external_id: r.get(1)?,
                row_key: r.get(2)?,
                uuids: uuids.split(',').map(str::to_string).collect(),
            },
        ))
    })?
    .collect()
}

/// The provider reference (a FinHub customer id) of each row whose item in one of `steps`
/// succeeded.
pub fn refs_of(
    conn: &Connection,
    plan_id: i64,
    steps: &[String],
) -> rusqlite::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT row_key, provider_ref FROM items WHERE plan_id = ?1 AND step = ?2 AND state = 'succeeded' AND provider_ref IS NOT NULL",
    )?;
    for step in steps {
        let rows = stmt.query_map(params![plan_id, step], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (k, v) = row?;
            out.insert(k, v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state database with plans 1 and 2 (one job, two scopes) and no item yet.
    fn two_plans() -> crate::state::State {
        let state = crate::state::State::open_in_memory().unwrap();
        state
            .connection()
            .execute_batch("INSERT INTO plans (id, job, scope, created_at) VALUES (1, 'j', 's', 't'), (2, 'j', 'other', 't')")
            .unwrap();
        state
    }

    #[test]
    fn a_tally_counts_by_step_in_job_order_and_earns_the_exit_code() {
        let state = two_plans();
        let c = state.connection();
        let items = [
            (1, "pay", 2, "succeeded"),
            (1, "contact", 0, "succeeded"),
            (1, "kyc", 1, "skipped"),
            (1, "contact", 0, "succeeded"),
            (1, "pay", 2, "succeeded"),
            (1, "contact", 0, "skipped"),
            (2, "contact", 0, "failed"),
        ];
        for (i, (plan, step, si, st)) in items.iter().enumerate() {
            c.execute(
                "INSERT INTO items (plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, 'h', '{}', 't', 't')",
                params![plan, step, si, i as i64, st],
            )
            .unwrap();
        }
        let tally = Tally::of(c, 1).unwrap();
        assert_eq!(
            tally.json(),
            r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"skipped":1},"pay":{"succeeded":2}}"#
        );
        assert_eq!(tally.exit_code(), crate::exit::SUCCESS);
        // Another plan's failure is not this plan's.
        assert_eq!(
            Tally::of(c, 2).unwrap().exit_code(),
            crate::exit::ROWS_FAILED
        );
        // A paid row that changed since: done as sent, but its change is not.
        c.execute(
            "UPDATE items SET conflict_hash = 'h2' WHERE plan_id = 1 AND step = 'pay'",
            [],
        )
        .unwrap();
        let tally = Tally::of(c, 1).unwrap();
        assert_eq!(
            tally.json(),
            r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"skipped":1},"pay":{"conflict":2}}"#
        );
        assert_eq!(tally.exit_code(), crate::exit::ROWS_FAILED);
        c.execute("UPDATE items SET conflict_hash = NULL", [])
            .unwrap();
        c.execute(
            "UPDATE items SET state = 'in_flight' WHERE plan_id = 1 AND step = 'kyc'",
            [],
        )
        .unwrap();
        assert_eq!(
            Tally::of(c, 1).unwrap().json(),
            r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"in_doubt":1},"pay":{"succeeded":2}}"#
        );
        assert_eq!(
            Tally::of(c, 1).unwrap().exit_code(),
            crate::exit::ROWS_FAILED
        );
    }

    #[test]
    fn a_providers_words_are_stored_scrubbed() {
        let state = two_plans();
        let c = state.connection();
        c.execute(
            "INSERT INTO items (id, plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at)
             VALUES (1, 1, 'pay', 0, 'k', 1, 'pending', 'h', '{}', 't', 't')",
            [],
        )
        .unwrap();
        let o = Outcome {
            state: ItemState::Failed,
            error_code: Some("HTTP_422".into()),
            error_message: Some("acct 987654321 (bsb 062000) rejected; limit 250000 AUD".into()),
            ..Outcome::default()
        };
        set_outcome(c, 1, &o).unwrap();
        let stored: String = c
            .query_row("SELECT error_message FROM items WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            stored,
            "acct ******321 (bsb ***000) rejected; limit 250000 AUD"
        );
    }

    #[test]
    fn pages_of_a_step_are_its_items_in_file_order_each_once() {
        let state = two_plans();
        let c = state.connection();
        // Rows on one line each, except two keys on line 7 (a row's key sorts them); each
        // row has an item in two steps, and another plan has the same rows.
        let mut n = 0;
        for plan in [1, 2] {
            for i in 0..23i64 {
                let (line, key) = if i == 8 { (7, "K08") } else { (i, "") };
                let key = if key.is_empty() {
                    format!("K{i:02}")
                } else {
                    key.into()
                };
                let state = match i % 5 {
                    0 => "succeeded",
                    1 => "in_flight",
                    _ => "pending",
                };
                for step in ["contact", "pay"] {
                    n += 1;
                    c.execute(
                        "INSERT INTO items (plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at, conflict_hash)
                         VALUES (?1, ?2, 0, ?3, ?4, ?5, 'h', '{}', 't', 't', ?6)",
                        params![plan, step, key, line, state, (i == 12).then_some("changed")],
                    )
                    .unwrap();
                }
            }
        }
        assert_eq!(n, 92);
        let states = [ItemState::Pending, ItemState::InFlight];
        let whole: Vec<i64> = items_in(c, 1, "contact", &states)
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        // 23 rows, less 5 succeeded and 1 conflict.
        assert_eq!(whole.len(), 17);
        for size in [1, 2, 5, 17, 100] {
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let page = items_page(c, 1, "contact", &states, after.as_ref(), size).unwrap();
                assert!(page.len() <= size);
                let Some(last) = page.last() else { break };
                after = Some((last.row_line as i64, last.row_key.clone()));
                paged.extend(page.iter().map(|i| i.id));
            }
            assert_eq!(paged, whole, "pages of {size}");
        }
    }
}
