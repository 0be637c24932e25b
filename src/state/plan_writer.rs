//! Writing a plan: upsert one item per (row, step) and assign payout items to batches.
//!
//! Re-planning is idempotent: an unchanged row touches nothing. A changed row gets a new
//! version while its item has not been sent (pending, skipped, failed); once it may have
//! reached the provider (in flight, succeeded, blocked) the change is recorded as a
//! conflict and the item is never re-sent.

use super::sql::{Arg, Kind, args, placeholders};
use super::{Conn, State, StateError};
use crate::job::Job;
use crate::job::steps::StepKind;
use crate::plan::RowPlan;
use std::collections::HashMap;

/// Counts for one step.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepCounts {
    pub new: u64,
    pub unchanged: u64,
    pub changed: u64,
    pub conflict: u64,
    pub done: u64,
    pub skipped: u64,
    pub batches: u64,
    pub new_batches: u64,
}

/// What a plan did, per step, plus the conflicting rows.
#[derive(Debug, Default, Clone)]
pub struct PlanCounts {
    pub steps: Vec<StepCounts>,
    /// The plan had no items before: each step's items are exactly its `new` (pending)
    /// and `skipped` ones.
    pub fresh: bool,
    /// (line, key, step id) of rows that changed after being sent.
    pub conflicts: Vec<(u64, String, String)>,
    /// The plan's digest (`sha256:…`), what approvals are bound to.
    pub digest: String,
}

struct OpenBatch {
    id: i64,
    group: String,
    count: u64,
}

/// Writes one plan inside one transaction.
pub struct PlanWriter<'s> {
    state: &'s State,
    /// The plan had no items before: nothing to look up.
    fresh: bool,
    conn: &'s Conn,
    /// Rows of a re-plan kept until [`LOOKUP_ROWS`] of them are looked up together.
    rows: Vec<RowPlan>,
    /// New items not inserted yet: written [`INSERT_ROWS`] to a statement.
    new_items: Vec<NewItem>,
    /// New items inserted so far.
    inserted: usize,
    plan_id: i64,
    job_name: String,
    scope: String,
    steps: Vec<(String, StepKind, u64)>,
    /// Open batches per step, oldest first.
    open: Vec<Vec<OpenBatch>>,
    next_seq: Vec<i64>,
    counts: PlanCounts,
    now: String,
    committed: bool,
    /// The plan's digest, fed each payout item with its batch.
    digester: Option<crate::plan::digest::Digester>,
    /// The external id of each of the plan's batches.
    batch_ids: HashMap<i64, String>,
}

impl Drop for PlanWriter<'_> {
    fn drop(&mut self) {
        if !self.committed {
            // An error part-way: leave the database exactly as it was.
            let _ = self.conn.batch("ROLLBACK");
        }
    }
}

/// New items are kept until this many are written together ([`Conn::insert_rows`]): a
/// PostgreSQL state pays a round trip a write, and takes many rows at once for less.
const INSERT_ROWS: usize = 1024;

/// A re-plan looks its rows' items up this many rows at a time (a statement per step): a
/// PostgreSQL state pays a round trip a statement.
const LOOKUP_ROWS: usize = 128;

/// A plan that inserted this many items tells the store's planner (see
/// [`Conn::after_bulk_write`]).
const ANALYZE_AFTER: usize = 1000;

/// An item to insert, kept until its statement is full.
struct NewItem {
    step: usize,
    row_key: String,
    line: i64,
    state: &'static str,
    hash: String,
    payload: String,
    amount: Option<String>,
    currency: Option<String>,
    batch: Option<i64>,
    external_id: Option<String>,
    offset: i64,
    group: Option<String>,
    payee: Option<String>,
}

/// The columns a new item is written with.
const ITEM_COLUMNS: [(&str, Kind); 17] = [
    ("plan_id", Kind::Int),
    ("step", Kind::Text),
    ("step_index", Kind::Int),
    ("row_key", Kind::Text),
    ("row_line", Kind::Int),
    ("state", Kind::Text),
    ("content_hash", Kind::Text),
    ("payload", Kind::Text),
    ("amount", Kind::Text),
    ("currency", Kind::Text),
    ("batch_id", Kind::Int),
    ("external_id", Kind::Text),
    ("created_at", Kind::Text),
    ("updated_at", Kind::Text),
    ("row_offset", Kind::Int),
    ("group_key", Kind::Text),
    ("payee_hash", Kind::Text),
];

struct Existing {
    id: i64,
    state: String,
    hash: String,
    row_line: u64,
    batch_id: Option<i64>,
    conflict_hash: Option<String>,
    row_offset: u64,
}

impl<'s> PlanWriter<'s> {
    /// Starts a plan for `job` (creating its plan record on first use).
    pub fn begin(state: &'s State, job: &Job) -> Result<PlanWriter<'s>, StateError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // Planning writes each page about once: a run's large page cache would only hold
        // memory.
        let conn = state.connection();
        conn.begin_plan().map_err(|e| state.err(e))?;
        conn.execute(
            "INSERT INTO plans (job, scope, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (job, scope) DO NOTHING",
            args![job.name, job.scope, now],
        )
        .map_err(|e| state.err(e))?;
        let plan_id: i64 = conn
            .one(
                "SELECT id FROM plans WHERE job = ?1 AND scope = ?2",
                args![job.name, job.scope],
                |r| r.get(0),
            )
            .map_err(|e| state.err(e))?;
        let mut open = Vec::new();
        let mut next_seq = Vec::new();
        for step in &job.steps {
            let batches = conn
                .all(
                    "SELECT b.id, b.group_key, (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id)
                     FROM batches b WHERE b.plan_id = ?1 AND b.step = ?2 AND b.state = 'open' ORDER BY b.seq",
                    args![plan_id, step.id],
                    |r| {
                        Ok(OpenBatch {
                            id: r.get(0)?,
                            group: r.get(1)?,
                            count: r.get(2)?,
                        })
                    },
                )
                .map_err(|e| state.err(e))?;
            let seq: i64 = conn
                .one(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE plan_id = ?1 AND step = ?2",
                    args![plan_id, step.id],
                    |r| r.get(0),
                )
                .map_err(|e| state.err(e))?;
            open.push(batches);
            next_seq.push(seq);
        }
        let fresh: bool = conn
            .one(
                "SELECT NOT EXISTS (SELECT 1 FROM items WHERE plan_id = ?1)",
                args![plan_id],
                |r| r.get(0),
            )
            .map_err(|e| state.err(e))?;
        let batch_ids = conn
            .all(
                "SELECT id, external_id FROM batches WHERE plan_id = ?1",
                args![plan_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| state.err(e))?
            .into_iter()
            .collect();
        Ok(PlanWriter {
            digester: Some(crate::plan::digest::Digester::new(
                job,
                job.approval.is_some(),
            )),
            batch_ids,
            fresh,
            conn,
            rows: Vec::new(),
            new_items: Vec::with_capacity(INSERT_ROWS),
            inserted: 0,
            plan_id,
            job_name: job.name.clone(),
            scope: job.scope.clone(),
            steps: job
                .steps
                .iter()
                .map(|s| (s.id.clone(), s.kind, u64::from(s.batch_size)))
                .collect(),
            open,
            next_seq,
            counts: PlanCounts {
                steps: vec![StepCounts::default(); job.steps.len()],
                conflicts: Vec::new(),
                fresh,
                digest: String::new(),
            },
            now,
            committed: false,
            state,
        })
    }

    /// Upserts the items of one row. A re-plan looks rows up [`LOOKUP_ROWS`] at a time:
    /// their items are written when those rows are in.
    pub fn add_row(&mut self, row: RowPlan) -> Result<(), StateError> {
        if self.fresh {
            return self.write_row(row, &mut HashMap::new());
        }
        self.rows.push(row);
        if self.rows.len() == LOOKUP_ROWS {
            self.write_rows()?;
        }
        Ok(())
    }

    /// Writes the rows kept for a re-plan, their items looked up a statement per step.
    fn write_rows(&mut self) -> Result<(), StateError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        // A later row may not repeat an earlier one's key, but a lookup must see every
        // item written before it all the same.
        self.insert_new_items()?;
        let rows = std::mem::take(&mut self.rows);
        let mut keys: Vec<Vec<&str>> = vec![Vec::new(); self.steps.len()];
        for row in &rows {
            for item in &row.items {
                keys[item.step].push(&row.key);
            }
        }
        let mut existing = HashMap::new();
        for (si, keys) in keys.iter().enumerate().filter(|(_, k)| !k.is_empty()) {
            // Padded to a power of two with the first key again: few statement texts.
            let n = keys.len().next_power_of_two();
            let sql = format!(
                "SELECT id, state, content_hash, row_line, batch_id, conflict_hash, row_offset, row_key FROM items
                 WHERE plan_id = ?1 AND step = ?2 AND row_key IN ({})",
                placeholders(3, n)
            );
            let mut all: Vec<&dyn Arg> = vec![&self.plan_id, &self.steps[si].0];
            all.extend((0..n).map(|i| keys.get(i).unwrap_or(&keys[0]) as &dyn Arg));
            self.conn
                .each(&sql, &all, |r| {
                    let key: String = r.get(7)?;
                    existing.insert(
                        (si, key),
                        Existing {
                            id: r.get(0)?,
                            state: r.get(1)?,
                            hash: r.get(2)?,
                            row_line: r.get(3)?,
                            batch_id: r.get(4)?,
                            conflict_hash: r.get(5)?,
                            row_offset: r.get(6)?,
                        },
                    );
                    Ok(())
                })
                .map_err(|e| self.state.err(e))?;
        }
        for row in rows {
            self.write_row(row, &mut existing)?;
        }
        Ok(())
    }

    /// Writes one row's items, given what exists of them (taken out of `existing`).
    fn write_row(
        &mut self,
        row: RowPlan,
        existing_items: &mut HashMap<(usize, String), Existing>,
    ) -> Result<(), StateError> {
        for item in row.items {
            let si = item.step;
            let existing = existing_items.remove(&(si, row.key.clone()));
            let new_state = if item.skipped { "skipped" } else { "pending" };
            let amount = item.amount.map(|a| a.to_string());
            match existing {
                None => {
                    let batch = self.assign_batch(si, item.group.as_deref())?;
                    self.digest(si, &row.key, &item, batch);
                    self.new_items.push(NewItem {
                        step: si,
                        row_key: row.key.clone(),
                        line: row.line as i64,
                        state: new_state,
                        hash: item.hash,
                        payload: item.payload,
                        amount,
                        currency: item.currency,
                        batch,
                        external_id: item.external_id,
                        offset: row.offset as i64,
                        group: item.group,
                        payee: item.payee,
                    });
                    if self.new_items.len() == INSERT_ROWS {
                        self.insert_new_items()?;
                    }
                    let c = &mut self.counts.steps[si];
                    if item.skipped {
                        c.skipped += 1
                    } else {
                        c.new += 1
                    }
                }
                Some(old)
                    if old.hash == item.hash
                        || item.legacy_hash.as_deref() == Some(old.hash.as_str()) =>
                {
                    self.digest(si, &row.key, &item, old.batch_id);
                    if old.hash != item.hash {
                        // A plain hash from before keys: the same content, now keyed.
                        self.exec(
                            "UPDATE items SET content_hash = ?2 WHERE id = ?1",
                            args![old.id, item.hash],
                        )?;
                    }
                    if old.conflict_hash.is_some() {
                        // The row went back to what was sent: the conflict is over.
                        self.exec(
                            "UPDATE items SET conflict_hash = NULL, conflict_payload = NULL, updated_at = ?2 WHERE id = ?1",
                            args![old.id, self.now],
                        )?;
                    }
                    if old.row_line != row.line || old.row_offset != row.offset {
                        self.exec(
                            "UPDATE items SET row_line = ?2, row_offset = ?3 WHERE id = ?1",
                            args![old.id, row.line as i64, row.offset as i64],
                        )?;
                    }
                    let c = &mut self.counts.steps[si];
                    match old.state.as_str() {
                        "succeeded" => c.done += 1,
                        "skipped" => c.skipped += 1,
                        _ => c.unchanged += 1,
                    }
                }
                Some(old) if matches!(old.state.as_str(), "pending" | "skipped" | "failed") => {
                    // Not sent (or definitely rejected): the new content replaces the old.
                    let batch = match (old.batch_id, item.group.as_deref()) {
                        (Some(b), Some(g)) if self.batch_group(si, b) == Some(g) => Some(b),
                        (old_batch, group) => {
                            if let Some(b) = old_batch {
                                self.leave_batch(si, b);
                            }
                            self.assign_batch(si, group)?
                        }
                    };
                    self.digest(si, &row.key, &item, batch);
                    self.exec(
                        "UPDATE items SET version = version + 1, state = ?2, content_hash = ?3, payload = ?4, amount = ?5,
                                currency = ?6, batch_id = ?7, external_id = ?8, row_line = ?9, row_offset = ?11, group_key = ?12, error_code = NULL,
                                error_message = NULL, updated_at = ?10, payee_hash = ?13
                         WHERE id = ?1",
                        args![old.id, new_state, item.hash, item.payload, amount, item.currency, batch, item.external_id, row.line as i64,
                            self.now,
                            row.offset as i64,
                            item.group,
                            item.payee
                        ],
                    )?;
                    self.counts.steps[si].changed += 1;
                }
                Some(old) => {
                    self.digest(si, &row.key, &item, old.batch_id);
                    // May have reached the provider: record, never re-send.
                    // (A plain conflict hash from before keys is rewritten keyed too.)
                    if old.conflict_hash.as_deref() != Some(item.hash.as_str()) {
                        self.exec(
                            "UPDATE items SET conflict_hash = ?2, conflict_payload = ?3, updated_at = ?4 WHERE id = ?1",
                            args![old.id, item.hash, item.payload, self.now],
                        )?;
                    }
                    self.counts.steps[si].conflict += 1;
                    let step_id = self.steps[si].0.clone();
                    self.counts
                        .conflicts
                        .push((row.line, row.key.clone(), step_id));
                }
            }
        }
        Ok(())
    }

    /// Writes the new items kept so far.
    fn insert_new_items(&mut self) -> Result<(), StateError> {
        if self.new_items.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.new_items);
        let step_index: Vec<i64> = items.iter().map(|i| i.step as i64).collect();
        let rows: Vec<[&dyn Arg; 17]> = items
            .iter()
            .zip(&step_index)
            .map(|(item, si)| {
                [
                    &self.plan_id as &dyn Arg,
                    &self.steps[item.step].0,
                    si,
                    &item.row_key,
                    &item.line,
                    &item.state,
                    &item.hash,
                    &item.payload,
                    &item.amount,
                    &item.currency,
                    &item.batch,
                    &item.external_id,
                    &self.now,
                    &self.now,
                    &item.offset,
                    &item.group,
                    &item.payee,
                ]
            })
            .collect();
        let rows: Vec<&[&dyn Arg]> = rows.iter().map(|r| &r[..]).collect();
        self.conn
            .insert_rows("items", &ITEM_COLUMNS, &rows)
            .map_err(|e| self.state.err(e))?;
        self.inserted += items.len();
        self.new_items = items;
        self.new_items.clear();
        Ok(())
    }

    /// Adds a payout item going out in `batch`, or a refund item, to the plan's digest.
    fn digest(&mut self, si: usize, key: &str, item: &crate::plan::ItemPlan, batch: Option<i64>) {
        let Some(d) = self.digester.as_mut().filter(|_| !item.skipped) else {
            return;
        };
        let (step, kind, _) = &self.steps[si];
        match kind {
            StepKind::Payout => {
                let batch = batch
                    .and_then(|b| self.batch_ids.get(&b))
                    .map_or("", String::as_str);
                d.payout(step, key, item, batch);
            }
            StepKind::Refund => d.refund(step, key, item),
            _ => {}
        }
    }

    /// Commits the plan, its digest (made of `summary`'s totals too) recorded as the
    /// plan's current one by `by`, and returns its counts.
    pub fn commit(
        mut self,
        summary: &crate::plan::CheckSummary,
        by: &str,
    ) -> Result<PlanCounts, StateError> {
        self.write_rows()?;
        self.insert_new_items()?;
        if let Some(d) = self.digester.take() {
            let digest = d.finish(summary);
            super::approvals::record_plan(self.conn, self.plan_id, &digest, by, &self.now)
                .map_err(|e| self.state.err(e))?;
            self.counts.digest = digest.digest;
        }
        if self.inserted >= ANALYZE_AFTER {
            self.conn
                .after_bulk_write("items (plan_id, step, row_line, row_key, state, conflict_hash)")
                .map_err(|e| self.state.err(e))?;
        }
        self.exec(
            "DELETE FROM batches WHERE plan_id = ?1 AND state = 'open' AND NOT EXISTS (SELECT 1 FROM items WHERE batch_id = batches.id)",
            args![self.plan_id],
        )?;
        for (si, (step_id, _, _)) in self.steps.iter().enumerate() {
            let n: u64 = self
                .conn
                .one(
                    "SELECT COUNT(*) FROM batches WHERE plan_id = ?1 AND step = ?2",
                    args![self.plan_id, step_id],
                    |r| r.get(0),
                )
                .map_err(|e| self.state.err(e))?;
            self.counts.steps[si].batches = n;
        }
        self.conn.batch("COMMIT").map_err(|e| self.state.err(e))?;
        self.committed = true;
        Ok(std::mem::take(&mut self.counts))
    }

    fn exec(&self, sql: &str, args: &[&dyn Arg]) -> Result<usize, StateError> {
        self.conn.execute(sql, args).map_err(|e| self.state.err(e))
    }

    fn batch_group(&self, si: usize, batch: i64) -> Option<&str> {
        self.open[si]
            .iter()
            .find(|b| b.id == batch)
            .map(|b| b.group.as_str())
    }

    fn leave_batch(&mut self, si: usize, batch: i64) {
        if let Some(b) = self.open[si].iter_mut().find(|b| b.id == batch) {
            b.count = b.count.saturating_sub(1);
        }
    }

    /// Puts a payout item into the oldest open batch of its group with room, or a new one.
    fn assign_batch(&mut self, si: usize, group: Option<&str>) -> Result<Option<i64>, StateError> {
        let (step_id, kind, size) = self.steps[si].clone();
        let Some(group) = group.filter(|_| kind == StepKind::Payout) else {
            return Ok(None);
        };
        if let Some(b) = self.open[si]
            .iter_mut()
            .find(|b| b.group == group && b.count < size)
        {
            b.count += 1;
            return Ok(Some(b.id));
        }
        let seq = self.next_seq[si];
        self.next_seq[si] += 1;
        let ext = crate::plan::external_id(&[
            &self.job_name,
            &self.scope,
            &step_id,
            &format!("b{seq:04}"),
        ]);
        let id = self
            .conn
            .insert(
                "INSERT INTO batches (plan_id, step, seq, group_key, external_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                args![self.plan_id, step_id, seq, group, ext, self.now],
            )
            .map_err(|e| self.state.err(e))?;
        self.batch_ids.insert(id, ext.clone());
        self.open[si].push(OpenBatch {
            id,
            group: group.to_string(),
            count: 1,
        });
        self.counts.steps[si].new_batches += 1;
        Ok(Some(id))
    }
}
