//! Items: the executor's reads of a step's work and the transitions of one item.

use super::*;

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
    pub fn planned_body(&self, key: &crate::state::key::ContentKey) -> Option<&str> {
        (key.hash(self.payload.as_bytes()) == self.content_hash).then_some(self.payload.as_str())
    }

    /// [`WorkItem::planned_body`], taken out of the item (its payload left empty).
    pub fn take_planned_body(&mut self, key: &crate::state::key::ContentKey) -> Option<String> {
        self.planned_body(key)?;
        Some(std::mem::take(&mut self.payload))
    }
}

pub(super) const ITEM_COLUMNS: &str = "id, row_key, row_line, row_offset, state, attempts, content_hash, first_attempt_at, batch_id, external_id, provider_status, provider_ref, payload, doubt_since, doubt_applied";

pub(super) fn work_item(r: &Row) -> SqlResult<WorkItem> {
    Ok(WorkItem {
        id: r.get(0)?,
        row_key: r.get(1)?,
        row_line: r.get::<i64>(2)? as u64,
        row_offset: r.get::<i64>(3)? as u64,
        state: r.get(4)?,
        attempts: r.get::<i64>(5)? as u32,
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
    conn: &Conn,
    plan_id: i64,
    step: &str,
    states: &[ItemState],
) -> SqlResult<Vec<WorkItem>> {
    items_page(conn, plan_id, step, states, None, usize::MAX)
}

/// A page of [`items_in`]: at most `limit` items, those after the row `after` (its line
/// and key) in file order.
pub fn items_page(
    conn: &Conn,
    plan_id: i64,
    step: &str,
    states: &[ItemState],
    after: Option<&(i64, String)>,
    limit: usize,
) -> SqlResult<Vec<WorkItem>> {
    let marks = placeholders(5, states.len());
    let sql = format!(
        // Through the index in file order: by the (plan, step, key) index SQLite would
        // sort the step's items, a tenth of the time before the first request. A page
        // enters the index at the row after the last page's, not at the start.
        "SELECT {ITEM_COLUMNS} FROM items {indexed}
         WHERE plan_id = ?1 AND (row_line, row_key) > (?3, ?4) AND step = ?2 AND state IN ({marks}) AND conflict_hash IS NULL
         ORDER BY row_line, row_key, id {limit}",
        indexed = conn.indexed_by("items_by_line"),
        limit = conn.fetch_limit(limit)
    );
    let (line, key) = after.map_or((-1, ""), |(l, k)| (*l, k.as_str()));
    // The page ends by stepping no further, not by `LIMIT ?`: SQLite plans a bound LIMIT
    // by its value, so binding it expired the statement and every page was prepared
    // again.
    let mut out = Vec::new();
    conn.each_while(
        &sql,
        &with_states(args![plan_id, step, line, key], states),
        |r| {
            if out.len() >= limit {
                return Ok(false);
            }
            out.push(work_item(r)?);
            Ok(true)
        },
    )?;
    Ok(out)
}

/// How many items [`items_in`] would return.
pub fn count_in(conn: &Conn, plan_id: i64, step: &str, states: &[ItemState]) -> SqlResult<u64> {
    let marks = placeholders(3, states.len());
    let sql = format!(
        "SELECT COUNT(*) FROM items WHERE plan_id = ?1 AND step = ?2 AND state IN ({marks}) AND conflict_hash IS NULL"
    );
    conn.one(&sql, &with_states(args![plan_id, step], states), |r| {
        r.get(0)
    })
}

/// Each row's step items: `(row_key, step) -> (state, provider_status)`.
pub type RowStates = std::collections::HashMap<(String, String), (ItemState, Option<String>)>;

/// The state of every step's item for these rows.
pub fn row_states(conn: &Conn, plan_id: i64) -> SqlResult<RowStates> {
    let mut out = RowStates::new();
    conn.each(
        "SELECT row_key, step, state, provider_status FROM items WHERE plan_id = ?1",
        args![plan_id],
        |r| {
            out.insert((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?));
            Ok(())
        },
    )?;
    Ok(out)
}

/// Records the intent to send: in flight, one more attempt, first attempt time kept, no
/// earlier doubt (a new attempt's doubt is its own).
/// A chunk's intents are one statement per this many items (a PostgreSQL state pays a round
/// trip a statement).
const INTENTS_PER_STATEMENT: usize = 1024;

pub fn mark_in_flight(conn: &Conn, ids: &[i64]) -> SqlResult<()> {
    let t = now();
    for part in ids.chunks(INTENTS_PER_STATEMENT) {
        // Padded to a power of two with the first id again: few statement texts, each
        // prepared once.
        let n = part.len().next_power_of_two();
        let sql = format!(
            "UPDATE items SET state = ?2, attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?1), updated_at = ?1, doubt_since = NULL, doubt_applied = 0 WHERE id IN ({})",
            placeholders(3, n)
        );
        let mut all: Vec<&dyn crate::state::sql::Arg> = vec![&t, &ItemState::InFlight];
        all.extend((0..n).map(|i| part.get(i).unwrap_or(&part[0]) as &dyn crate::state::sql::Arg));
        conn.execute(&sql, &all)?;
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
pub fn set_doubt(conn: &Conn, unit: Unit, since: &str, applied: bool) -> SqlResult<()> {
    let sql = match unit {
        Unit::Item(_) => {
            "UPDATE items SET doubt_since = ?2, doubt_applied = ?3 WHERE id = ?1 AND state = 'in_flight'"
        }
        Unit::Batch(_) => {
            "UPDATE batches SET doubt_since = ?2, doubt_applied = ?3 WHERE id = ?1 AND state = 'in_flight'"
        }
    };
    let (Unit::Item(id) | Unit::Batch(id)) = unit;
    conn.execute(sql, args![id, since, applied])?;
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
    /// What the provider gave for the row to use (a payin's pay details, a refund's
    /// amount), as JSON text; `None` keeps what is stored.
    pub details: Option<String>,
}

/// Records an item's outcome. A message (often the provider's words) is scrubbed of
/// account-like numbers before it is stored.
pub fn set_outcome(conn: &Conn, id: i64, o: &Outcome) -> SqlResult<()> {
    set_outcomes(conn, &[(id, o)])
}

/// Outcomes are written this many to a statement (at most).
pub const OUTCOMES_PER_STATEMENT: usize = 128;

/// Records items' outcomes, [`OUTCOMES_PER_STATEMENT`] to a statement. An item may appear
/// once only: which of two outcomes of one item a statement keeps is not defined.
pub fn set_outcomes(conn: &Conn, outcomes: &[(i64, &Outcome)]) -> SqlResult<()> {
    let t = now();
    for part in outcomes.chunks(OUTCOMES_PER_STATEMENT) {
        debug_assert!(
            part.iter()
                .enumerate()
                .all(|(i, (id, _))| part[..i].iter().all(|(other, _)| other != id)),
            "an item twice in one statement"
        );
        let messages: Vec<Option<String>> = part
            .iter()
            .map(|(_, o)| o.error_message.as_deref().map(crate::redact::scrub))
            .collect();
        // Rows padded to a power of two with rows of no item: few statement texts to
        // prepare and keep.
        let rows = part.len().next_power_of_two();
        let none: Option<i64> = None;
        let mut all: Vec<&dyn Arg> = Vec::with_capacity(1 + rows * 7);
        all.push(&t);
        for ((id, o), message) in part.iter().zip(&messages) {
            all.extend([
                id as &dyn Arg,
                &o.state,
                &o.provider_ref,
                &o.provider_status,
                &o.error_code,
                message,
                &o.details,
            ]);
        }
        for _ in part.len()..rows {
            all.extend([&none as &dyn Arg, &none, &none, &none, &none, &none, &none]);
        }
        conn.execute(&outcomes_sql(rows), &all)?;
    }
    Ok(())
}

/// The statement of [`set_outcomes`] for `rows` rows: `?1` the time, then 7 a row.
fn outcomes_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p = 2 + r * 7;
            format!(
                "(CAST(?{p} AS BIGINT), ?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6
            )
        })
        .collect();
    format!(
        "WITH v (id, state, provider_ref, provider_status, error_code, error_message, details) AS (VALUES {})
         UPDATE items SET state = v.state, provider_ref = COALESCE(v.provider_ref, items.provider_ref),
                provider_status = COALESCE(v.provider_status, items.provider_status),
                details = COALESCE(v.details, items.details),
                error_code = v.error_code, error_message = v.error_message, updated_at = ?1
         FROM v WHERE items.id = v.id",
        values.join(",")
    )
}

/// An item's stored display payload (sensitive values masked).
pub fn item_payload(conn: &Conn, id: i64) -> SqlResult<String> {
    conn.one("SELECT payload FROM items WHERE id = ?1", args![id], |r| {
        r.get(0)
    })
}

/// A payout item's amount, as planned.
pub fn item_amount(conn: &Conn, id: i64) -> SqlResult<Option<rust_decimal::Decimal>> {
    let text: Option<String> =
        conn.one("SELECT amount FROM items WHERE id = ?1", args![id], |r| {
            r.get(0)
        })?;
    Ok(text.and_then(|a| a.parse().ok()))
}

/// The email a KYC item's payload carries (the contact it is for).
pub fn item_email(conn: &Conn, id: i64) -> SqlResult<Option<String>> {
    conn.one(
        &format!(
            "SELECT {} FROM items WHERE id = ?1",
            conn.json_text("payload", "email")
        ),
        args![id],
        |r| r.get(0),
    )
}

/// An item in doubt, as `status` lists it.
#[derive(Debug, Clone)]
pub struct InDoubt {
    pub step: String,
    pub row_key: String,
    pub attempts: i64,
    /// When it was first sent (empty when not recorded).
    pub first_attempt_at: String,
    /// When its request in doubt was sent (its own, or its batch's).
    pub since: Option<String>,
}

/// The plan's first `limit` items in doubt, oldest first.
pub fn in_doubt(conn: &Conn, plan_id: i64, limit: usize) -> SqlResult<Vec<InDoubt>> {
    conn.all(
        "SELECT i.step, i.row_key, i.attempts, COALESCE(i.first_attempt_at, ''), COALESCE(i.doubt_since, b.doubt_since)
         FROM items i LEFT JOIN batches b ON b.id = i.batch_id
         WHERE i.plan_id = ?1 AND i.state = ?2 ORDER BY i.id LIMIT ?3",
        args![plan_id, ItemState::InFlight, limit as i64],
        |r| {
            Ok(InDoubt {
                step: r.get(0)?,
                row_key: r.get(1)?,
                attempts: r.get(2)?,
                first_attempt_at: r.get(3)?,
                since: r.get(4)?,
            })
        },
    )
}

/// An item as reports read it.
#[derive(Debug, Clone)]
pub struct ReportItem {
    pub row_key: String,
    pub row_line: u64,
    pub step_index: i64,
    pub step: String,
    pub state: ItemState,
    /// The row changed after the item was sent.
    pub conflict: bool,
    pub provider_ref: Option<String>,
    pub provider_status: Option<String>,
    /// Its batch's reference at the provider.
    pub batch_ref: Option<String>,
    pub amount: Option<rust_decimal::Decimal>,
    pub currency: Option<String>,
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub updated_at: String,
    /// What the file asks now, for an item in conflict (the amount sent is `amount`).
    pub asked: Option<rust_decimal::Decimal>,
    /// What the provider gave for the row (see [`Outcome::details`]).
    pub details: Option<String>,
}

/// Every item of the plan in file order (row line, row key, then step), one at a time.
pub fn each_report_item(conn: &Conn, plan_id: i64, f: &mut dyn FnMut(ReportItem)) -> SqlResult<()> {
    let sql = format!(
        "SELECT i.row_key, i.row_line, i.step_index, i.state, i.conflict_hash IS NOT NULL, i.provider_ref, i.provider_status,
                b.provider_ref, i.amount, i.currency, i.attempts, i.error_code, i.error_message, i.updated_at, i.step,
                {}, i.details
         FROM items i LEFT JOIN batches b ON b.id = i.batch_id WHERE i.plan_id = ?1 ORDER BY i.row_line, i.row_key, i.id",
        conn.json_text("i.conflict_payload", "amount")
    );
    let decimal = |v: Option<String>| v.and_then(|a| a.parse().ok());
    conn.each(&sql, args![plan_id], |r| {
        f(ReportItem {
            row_key: r.get(0)?,
            row_line: r.get(1)?,
            step_index: r.get(2)?,
            state: r.get(3)?,
            conflict: r.get(4)?,
            provider_ref: r.get(5)?,
            provider_status: r.get(6)?,
            batch_ref: r.get(7)?,
            amount: decimal(r.get(8)?),
            currency: r.get(9)?,
            attempts: r.get::<u64>(10)? as u32,
            error_code: r.get(11)?,
            error_message: r.get(12)?,
            updated_at: r.get(13)?,
            step: r.get(14)?,
            asked: decimal(r.get(15)?),
            details: r.get(16)?,
        });
        Ok(())
    })
}

/// Puts a step's items that waited (for their row's earlier steps, or a refund for its
/// payer) and were never sent back in the queue (a step that sends each row once reads
/// only pending items).
pub fn unblock_unsent(conn: &Conn, plan_id: i64, step: &str) -> SqlResult<()> {
    conn.execute(
        "UPDATE items SET state = 'pending', error_code = NULL, error_message = NULL
         WHERE plan_id = ?1 AND step = ?2 AND state = 'blocked' AND first_attempt_at IS NULL AND provider_ref IS NULL",
        args![plan_id, step],
    )?;
    Ok(())
}
