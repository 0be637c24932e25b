//! Payout batches: sending, recording, rebatching, retrying and adopting what the
//! provider holds.

use super::*;

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
    conn: &Conn,
    plan_id: i64,
    step: &str,
    states: &[BatchState],
) -> SqlResult<Vec<WorkBatch>> {
    let marks = placeholders(3, states.len());
    let sql = format!(
        "SELECT id, external_id, state, first_attempt_at, provider_ref, doubt_since, doubt_applied FROM batches WHERE plan_id = ?1 AND step = ?2 AND state IN ({marks}) ORDER BY seq"
    );
    conn.all(&sql, &with_states(args![plan_id, step], states), |r| {
        Ok(WorkBatch {
            id: r.get(0)?,
            external_id: r.get(1)?,
            state: r.get(2)?,
            first_attempt_at: r.get(3)?,
            provider_ref: r.get(4)?,
            doubt_since: r.get(5)?,
            doubt_applied: r.get(6)?,
        })
    })
}

pub fn batch_items(conn: &Conn, batch_id: i64) -> SqlResult<Vec<WorkItem>> {
    conn.all(
        &format!("SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = ?1 ORDER BY id"),
        args![batch_id],
        work_item,
    )
}

/// The intent to send a batch: batch and its items in flight, in one transaction (a new
/// attempt's doubt is its own).
pub fn mark_batch_in_flight(conn: &Conn, batch_id: i64) -> SqlResult<()> {
    let t = now();
    conn.execute(
        "UPDATE batches SET state = 'in_flight', attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?2), doubt_since = NULL, doubt_applied = 0 WHERE id = ?1",
        args![batch_id, t],
    )?;
    conn.execute(
        "UPDATE items SET state = 'in_flight', attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?2), updated_at = ?2 WHERE batch_id = ?1",
        args![batch_id, t],
    )?;
    Ok(())
}

pub fn set_batch(
    conn: &Conn,
    batch_id: i64,
    state: BatchState,
    provider_ref: Option<&str>,
    provider_status: Option<&str>,
    error: Option<(&str, &str)>,
) -> SqlResult<()> {
    let message = error.map(|e| crate::redact::scrub(e.1));
    conn.execute(
        "UPDATE batches SET state = ?2, provider_ref = COALESCE(?3, provider_ref), provider_status = COALESCE(?4, provider_status),
                error_code = ?5, error_message = ?6 WHERE id = ?1",
        args![batch_id, state, provider_ref, provider_status, error.map(|e| e.0), message],
    )?;
    Ok(())
}

/// Takes items out of an unsent batch (their row is not ready): they wait, `blocked`, for a
/// later run, which puts them into a new batch.
pub fn detach(conn: &Conn, id: i64, reason: &str) -> SqlResult<()> {
    conn.execute(
        "UPDATE items SET batch_id = NULL, state = 'blocked', error_code = 'WAITING', error_message = ?2, updated_at = ?3 WHERE id = ?1",
        args![id, reason, now()],
    )?;
    Ok(())
}

/// Puts unbatched payout items that are ready to go (pending, or blocked earlier) into open
/// batches of their group, creating batches as needed — never under an external id in
/// `taken` (the provider holds a batch with it already); drops empty open batches.
pub fn rebatch(
    conn: &Conn,
    plan_id: i64,
    step: &str,
    size: u32,
    (job, scope): (&str, &str),
    taken: &std::collections::HashSet<String>,
) -> SqlResult<()> {
    let waiting: Vec<(i64, String)> = conn.all(
        "SELECT id, COALESCE(group_key, '') FROM items WHERE plan_id = ?1 AND step = ?2 AND batch_id IS NULL AND state IN ('pending', 'blocked') AND conflict_hash IS NULL ORDER BY id",
        args![plan_id, step],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    for (id, group) in waiting {
        let open: Option<i64> = conn.optional(
            "SELECT b.id FROM batches b WHERE b.plan_id = ?1 AND b.step = ?2 AND b.state = 'open' AND b.group_key = ?3
               AND (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id) < ?4 ORDER BY b.seq LIMIT 1",
            args![plan_id, step, group, size],
            |r| r.get(0),
        )?;
        let batch = match open {
            Some(b) => b,
            None => {
                let mut seq: i64 = conn.one("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE plan_id = ?1 AND step = ?2", args![plan_id, step], |r| r.get(0))?;
                let mut ext = crate::plan::external_id(&[job, scope, step, &format!("b{seq:04}")]);
                while taken.contains(&ext) {
                    seq += 1;
                    ext = crate::plan::external_id(&[job, scope, step, &format!("b{seq:04}")]);
                }
                conn.insert(
                    "INSERT INTO batches (plan_id, step, seq, group_key, external_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                    args![plan_id, step, seq, group, ext, now()],
                )?
            }
        };
        conn.execute("UPDATE items SET batch_id = ?2, state = 'pending', error_code = NULL, error_message = NULL WHERE id = ?1", args![id, batch])?;
    }
    conn.execute("DELETE FROM batches WHERE plan_id = ?1 AND state = 'open' AND NOT EXISTS (SELECT 1 FROM items WHERE batch_id = batches.id)", args![plan_id])?;
    Ok(())
}

/// `--retry-failed`: failed and cancelled items go back to pending (never conflicts or
/// successes); failed
/// payout items leave their batch, so they go out in a new batch with a new external id —
/// but only when that batch can no longer pay: it never reached the provider, or the
/// provider ended it (`expired`, `cancelled`). A row of a batch the provider holds and may
/// still pay stays as it is. Returns how many went back, and how many were kept so.
pub fn retry_failed(conn: &Conn, plan_id: i64) -> SqlResult<(usize, usize)> {
    let retried = conn.execute(
        "UPDATE items SET state = 'pending', error_code = NULL, error_message = NULL,
                batch_id = NULL, updated_at = ?2
         WHERE plan_id = ?1 AND state IN ('failed', 'cancelled') AND conflict_hash IS NULL
           AND (batch_id IS NULL OR batch_id IN (
                SELECT id FROM batches WHERE plan_id = ?1
                  AND (provider_ref IS NULL OR state IN ('expired', 'cancelled'))))",
        args![plan_id, now()],
    )?;
    let kept: i64 = conn.one(
        "SELECT COUNT(*) FROM items WHERE plan_id = ?1 AND state = 'failed' AND conflict_hash IS NULL AND batch_id IS NOT NULL",
        args![plan_id],
        |r| r.get(0),
    )?;
    Ok((retried, kept as usize))
}

/// Puts back to pending the items refused with `code` and `message` since `since` (a run
/// stopped because every row was refused the same way: the rows were not at fault). A
/// payout row leaves its batch, which never reached the provider.
pub fn requeue_refused(
    conn: &Conn,
    plan_id: i64,
    since: &str,
    code: &str,
    message: &str,
) -> SqlResult<usize> {
    conn.execute(
        "UPDATE items SET state = 'pending', error_code = NULL, error_message = NULL,
                batch_id = CASE WHEN batch_id IN (SELECT id FROM batches WHERE provider_ref IS NULL) THEN NULL ELSE batch_id END
         WHERE plan_id = ?1 AND state = 'failed' AND updated_at >= ?2 AND error_code = ?3 AND error_message = ?4",
        // As set_outcome stored it.
        args![plan_id, since, code, crate::redact::scrub(message)],
    )
}

/// Calls `f` with every payout external id of a step: its batches' and its items'.
pub fn each_payout_external_id(
    conn: &Conn,
    plan_id: i64,
    step: &str,
    mut f: impl FnMut(&str),
) -> SqlResult<()> {
    for sql in [
        "SELECT external_id FROM batches WHERE plan_id = ?1 AND step = ?2",
        "SELECT external_id FROM items WHERE plan_id = ?1 AND step = ?2 AND external_id IS NOT NULL",
    ] {
        conn.each(sql, args![plan_id, step], |r| {
            f(r.text(0)?.unwrap_or_default());
            Ok(())
        })?;
    }
    Ok(())
}

/// A payout step's span: its first batch's first attempt, and the latest `scheduled_at`
/// its rows ask for.
pub fn payout_span(
    conn: &Conn,
    plan_id: i64,
    step: &str,
) -> SqlResult<(Option<String>, Option<String>)> {
    let first = conn.one(
        "SELECT MIN(first_attempt_at) FROM batches WHERE plan_id = ?1 AND step = ?2",
        args![plan_id, step],
        |r| r.get(0),
    )?;
    let latest = conn.one(
        &format!(
            "SELECT MAX({}) FROM items WHERE plan_id = ?1 AND step = ?2",
            conn.json_text("payload", "scheduled_at")
        ),
        args![plan_id, step],
        |r| r.get(0),
    )?;
    Ok((first, latest))
}

/// The step's items whose external id is one of `ids` (one pass over the step).
pub fn items_by_external_id(
    conn: &Conn,
    plan_id: i64,
    step: &str,
    ids: &std::collections::HashSet<String>,
) -> SqlResult<Vec<WorkItem>> {
    let mut out = Vec::new();
    conn.each(
        &format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE plan_id = ?1 AND step = ?2 AND external_id IS NOT NULL"
        ),
        args![plan_id, step],
        |r| {
            // Column 9 of ITEM_COLUMNS: the external id.
            if ids.contains(r.text(9)?.unwrap_or_default()) {
                out.push(work_item(r)?);
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// A batch the provider holds that this state did not know, taken as this plan's: it is
/// recorded (in the open batch of the same external id, if there is one, else a new
/// one) with `outcomes` for the rows it pays; the open batch's other rows leave it, to be
/// batched again. Returns the batch's id.
pub fn adopt_batch(
    conn: &Conn,
    plan_id: i64,
    step: &str,
    found: &FoundBatch<'_>,
    outcomes: &[(i64, Outcome)],
) -> SqlResult<i64> {
    let open: Option<i64> = conn.optional(
        "SELECT id FROM batches WHERE plan_id = ?1 AND step = ?2 AND external_id = ?3 AND state = 'open' ORDER BY seq LIMIT 1",
        args![plan_id, step, found.external_id],
        |r| r.get(0),
    )?;
    let id = match open {
        Some(id) => id,
        None => {
            let seq: i64 = conn.one(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE plan_id = ?1 AND step = ?2",
                args![plan_id, step],
                |r| r.get(0),
            )?;
            conn.insert(
                "INSERT INTO batches (plan_id, step, seq, group_key, external_id, created_at) VALUES (?1, ?2, ?3, '', ?4, ?5) RETURNING id",
                args![plan_id, step, seq, found.external_id, now()],
            )?
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
        args![id],
    )?;
    for (item, o) in outcomes {
        conn.execute(
            "UPDATE items SET batch_id = ?2 WHERE id = ?1",
            args![item, id],
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
