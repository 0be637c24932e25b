//! Payout batches: each batch is sent once, with all its ready rows, under its stored
//! external id — the provider does not deduplicate, so payrun must:
//!
//! - before a batch's first send, read the provider's listing for this plan's external ids
//!   (the state may be new, or restored without its journal): a batch found there is
//!   adopted — its uuid and its transactions recorded — not sent;
//! - settle a batch in doubt (see [`super::doubt`]) and look it up by its external id
//!   before anything is sent again;
//! - keep a batch the provider answered with a funding code alive: `HC_PAYOUT2` (paid
//!   through the PayTo agreement) is sent like any other; `HC_PAYOUT1` leaves its rows
//!   `awaiting_funds` while the wait and `reconcile` follow it; only `expired` (or a
//!   cancelled transaction) ends it;
//! - after sending, check that each external id is carried by one batch that can still
//!   pay, and say loudly when not.
//!
//! Transactions are matched to rows by external id, never by position.

use super::doubt::{self, Doubt, Settled};
use super::listing::{self, Ours, Window};
use super::protocol::{self, Sent, idempotent};
use super::queue::unreadable;
use super::{Ctx, RowSource, RunError, ready};
use crate::job::{Job, Step};
use crate::provider::error::CallError;
use crate::provider::helloclever::wire::{PayoutBatch, PayoutTransaction};
use crate::state::work::{self, Duplicate, Outcome, WorkBatch, WorkItem};
use crate::state::{BatchState, ItemState, StateError};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A batch's rows with their fields (empty when the row no longer renders as it was sent).
type Members = Vec<(WorkItem, Map<String, Value>)>;

pub async fn run(
    job: &Job,
    si: usize,
    step: &Step,
    ctx: &Arc<Ctx>,
    rows: &mut RowSource<'_, '_>,
) -> Result<(), RunError> {
    let (plan_id, step_id, size) = (ctx.plan_id, step.id.clone(), step.batch_size);
    let names = (job.name.clone(), job.scope.clone());
    let batch = move |taken: HashSet<String>| {
        let (step_id, names) = (step_id.clone(), names.clone());
        move |c: &rusqlite::Connection| {
            work::rebatch(c, plan_id, &step_id, size, (&names.0, &names.1), &taken)
        }
    };
    ctx.db.write(batch(HashSet::new())).await?;
    let step_id = step.id.clone();
    let unsent = ctx
        .db
        .read(move |c| work::batches_in(c, plan_id, &step_id, &[BatchState::Open]))
        .await?;
    // Whether this run changed what the provider holds (or learnt of it): then it checks
    // for duplicates at the end.
    let mut touched = false;
    if !unsent.is_empty() && !ctx.stopping() {
        match adopt_existing(ctx, &step.id).await? {
            Some(taken) => {
                touched = true;
                ctx.db.write(batch(taken)).await?;
            }
            None => {
                // Without the listing, a new state could pay every row again: nothing
                // is sent; the rows wait for the next run.
                return Ok(());
            }
        }
    }
    let step_id = step.id.clone();
    let batches = ctx
        .db
        .read(move |c| work::batches_in(c, plan_id, &step_id, &[BatchState::Open]))
        .await?;
    let states = ctx.db.read(move |c| work::row_states(c, plan_id)).await?;
    // Each method's mandatory parameters, asked once per run (O2).
    let mut required: HashMap<String, Vec<String>> = HashMap::new();
    let mut tasks: JoinSet<Result<(), StateError>> = JoinSet::new();
    for batch in batches {
        if ctx.stopping() {
            break;
        }
        let id = batch.id;
        let items = ctx.db.read(move |c| work::batch_items(c, id)).await?;
        let mut members = Vec::with_capacity(items.len());
        for mut item in items {
            // An unsent batch takes only rows whose earlier steps are done; the others wait.
            if let Err(why) = ready(job, si, &item.row_key, &states) {
                let id = item.id;
                ctx.db.write(move |c| work::detach(c, id, &why)).await?;
                continue;
            }
            match rows.fields(si, &mut item) {
                Ok(p) => members.push((item, p)),
                Err(e) => {
                    let id = item.id;
                    ctx.db
                        .write(move |c| work::detach(c, id, "the row changed since it was planned"))
                        .await?;
                    unreadable(ctx, &item, e)?;
                }
            }
        }
        if members.is_empty() {
            continue;
        }
        if let Some(method) = members[0]
            .1
            .get("payout_method_name")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            if !required.contains_key(&method) {
                // Unknown to this provider, or unreachable: the send itself will say.
                let params = idempotent(ctx, || async {
                    ctx.hc()?.payout_required_params(&method).await
                })
                .await
                .unwrap_or_default();
                required.insert(method.clone(), params);
            }
            let missing: Vec<&String> = required[&method]
                .iter()
                .filter(|p| {
                    members.iter().any(|(_, m)| {
                        m.get("payout_method_params")
                            .and_then(|v| v.get(p.as_str()))
                            .is_none()
                    })
                })
                .collect();
            if !missing.is_empty() {
                let msg = format!(
                    "payout method {method} needs parameter(s) {}; add them to payout_method_params",
                    missing
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                fail_all(ctx, &batch, &members, "MISSING_PARAMS", &msg).await?;
                continue;
            }
        }
        super::queue::throttle(&mut tasks, 64).await?;
        tasks.spawn(send(ctx.clone(), batch, members));
    }
    super::queue::drain(&mut tasks).await?;
    touched |= settle(ctx, si, step, rows).await?;
    if touched && !ctx.stopping() {
        check_duplicates(ctx, &step.id).await?;
    }
    if let Some(wait) = &step.wait
        && !ctx.stopping()
    {
        await_completion(step, ctx, wait.timeout, ctx.poll_every(wait.poll)).await?;
    }
    Ok(())
}

/// Before the step's first sends: reads the provider's payouts over the plan's window for
/// this plan's external ids, and adopts what it holds — batches sent under a state that is
/// gone — so nothing of it is sent again. Returns the external ids the provider holds
/// (no new batch may take one), or `None` when the listing could not be read to its end.
async fn adopt_existing(ctx: &Ctx, step: &str) -> Result<Option<HashSet<String>>, RunError> {
    let (_, found) = listed(ctx, step).await?;
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                step,
                "cannot read the provider's payouts before the first send ({}); nothing is sent, the rows wait for the next run",
                crate::redact::scrub(&e.to_string())
            );
            return Ok(None);
        }
    };
    let taken: HashSet<String> = found.iter().filter_map(|b| b.external_id.clone()).collect();
    if found.is_empty() {
        return Ok(Some(taken));
    }
    // The rows the provider's batches pay, by their transactions' external ids.
    let wanted: HashSet<String> = found
        .iter()
        .flat_map(|b| &b.payout_transactions)
        .filter_map(|t| t.external_id.clone())
        .collect();
    let (plan_id, step_id) = (ctx.plan_id, step.to_string());
    let items = ctx
        .db
        .read(move |c| work::items_by_external_id(c, plan_id, &step_id, &wanted))
        .await?;
    let mut unsent: HashMap<String, WorkItem> = items
        .into_iter()
        .filter(|i| matches!(i.state, ItemState::Pending | ItemState::Blocked))
        .filter_map(|i| Some((i.external_id.clone()?, i)))
        .collect();
    let mut adopted = 0;
    // A batch that can no longer pay (expired) pays none of the rows it carries: they go
    // out again (under an external id of their own).
    for b in found
        .iter()
        .filter(|b| batch_state(b) != BatchState::Expired)
    {
        let outcomes: Vec<(i64, Outcome)> = b
            .payout_transactions
            .iter()
            .filter(|t| t.status.as_deref() != Some("cancelled"))
            .filter_map(|t| {
                let item = unsent.remove(t.external_id.as_deref()?)?;
                Some((item.id, row_outcome(b, Some(t))))
            })
            .collect();
        if outcomes.is_empty() {
            continue;
        }
        adopted += outcomes.len();
        tracing::warn!(
            step,
            uuid = %b.uuid,
            external_id = b.external_id.as_deref().unwrap_or(""),
            rows = outcomes.len(),
            "the provider already holds this batch (sent under a state payrun no longer has): adopted, not sent again"
        );
        let (plan_id, step_id, b) = (ctx.plan_id, step.to_string(), b.clone());
        ctx.db
            .write(move |c| {
                let facts = facts(&b);
                work::adopt_batch(c, plan_id, &step_id, &facts, &outcomes).map(|_| ())
            })
            .await?;
    }
    if adopted > 0 {
        tracing::warn!(
            step,
            rows = adopted,
            "rows found paid at the provider were adopted"
        );
    }
    Ok(Some(taken))
}

/// This plan's external ids, and the provider's batches over the plan's window that carry
/// one, oldest first (or why the listing could not be read to its end).
async fn listed(
    ctx: &Ctx,
    step: &str,
) -> Result<(Ours, Result<Vec<PayoutBatch>, CallError>), StateError> {
    let ours = Ours::load(ctx, step).await?;
    let window = listing::plan_window(ctx, step).await?;
    let found = listing::scan(ctx, window, |b| ours.carried_by(b))
        .await
        .map(|mut found| {
            found.sort_by(|a, b| a.created_at.cmp(&b.created_at));
            found
        });
    Ok((ours, found))
}

/// What payrun records of a provider's batch.
fn facts(b: &PayoutBatch) -> work::FoundBatch<'_> {
    work::FoundBatch {
        uuid: &b.uuid,
        external_id: b.external_id.as_deref().unwrap_or(&b.uuid),
        state: batch_state(b),
        status: b.status.as_deref(),
        error: funding(b),
    }
}

/// The provider's funding answer on a batch, if any: its code and message.
fn funding(b: &PayoutBatch) -> Option<(&str, &str)> {
    let code = b.error_code.as_deref().filter(|c| !c.is_empty())?;
    let message = b
        .error_message
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(code);
    Some((code, message))
}

/// A provider batch's state in payrun's terms.
fn batch_state(b: &PayoutBatch) -> BatchState {
    match b.status.as_deref() {
        Some("completed") => BatchState::Completed,
        Some("expired") => BatchState::Expired,
        _ => BatchState::Sent,
    }
}

/// What a row is, given its batch at the provider and its transaction there (matched by
/// external id). A transaction that completes is paid, whatever it was before; one whose
/// batch can no longer pay (expired, cancelled) fails, and only then may `--retry-failed`
/// send it in a new batch; a batch short of funds (`HC_PAYOUT1`) keeps its rows waiting.
fn row_outcome(b: &PayoutBatch, tx: Option<&PayoutTransaction>) -> Outcome {
    let failed = |code: &str, message: String| Outcome {
        state: ItemState::Failed,
        provider_ref: tx.map(|t| t.uuid.clone()),
        provider_status: tx.and_then(|t| t.status.clone()),
        error_code: Some(code.into()),
        error_message: Some(message),
    };
    let Some(tx) = tx else {
        return failed(
            "TX_MISSING",
            format!(
                "the provider's batch {} does not list this row's transaction; it is not sent again while the batch exists — ask the provider",
                b.uuid
            ),
        );
    };
    let tx_status = tx.status.as_deref();
    let batch = b.status.as_deref();
    match (batch, tx_status) {
        (_, Some("completed")) => {}
        (Some("expired"), _) | (_, Some("cancelled")) => {
            return failed(
                "PAYOUT_EXPIRED",
                format!(
                    "the provider ended batch {} ({}) before it paid: it can no longer pay; `--retry-failed` sends the row in a new batch",
                    b.uuid,
                    batch.unwrap_or("expired")
                ),
            );
        }
        (_, Some("failed")) => {
            return failed(
                "PAYOUT_FAILED",
                format!(
                    "the provider reports this transaction failed; it is not sent again while batch {} may still pay it",
                    b.uuid
                ),
            );
        }
        _ => {
            if let Some(("HC_PAYOUT1", message)) = funding(b)
                && batch != Some("completed")
            {
                return Outcome {
                    state: ItemState::AwaitingFunds,
                    provider_ref: Some(tx.uuid.clone()),
                    provider_status: tx.status.clone(),
                    error_code: Some("HC_PAYOUT1".into()),
                    error_message: Some(message.to_string()),
                };
            }
        }
    }
    Outcome {
        state: ItemState::Succeeded,
        provider_ref: Some(tx.uuid.clone()),
        provider_status: tx.status.clone(),
        ..Outcome::default()
    }
}

/// The request body: batch fields from the first row (rows of a batch agree on them).
fn body(batch: &WorkBatch, members: &Members) -> Value {
    let first = &members[0].1;
    let get = |k: &str| first.get(k).cloned().unwrap_or(Value::Null);
    let details: Vec<Value> = members
        .iter()
        .map(|(item, p)| {
            let amount = p.get("amount").and_then(Value::as_str).unwrap_or("0");
            // Amounts go out as JSON numbers with their exact digits (no float on the way).
            let amount: Value = serde_json::from_str(amount).unwrap_or(Value::Null);
            json!({
                "first_name": p.get("first_name"), "last_name": p.get("last_name"), "email": p.get("email"),
                "amount": amount, "external_id": item.external_id,
                "payout_method_params": p.get("payout_method_params").cloned().unwrap_or(json!({})),
            })
        })
        .collect();
    let mut b = json!({
        "payout_transaction_details": details, "currency": get("currency"),
        "payout_method_name": get("payout_method_name"), "description": get("description"),
        "webhook_notification": {}, "external_id": batch.external_id,
    });
    if let Some(at) = first.get("scheduled_at") {
        b["scheduled_at"] = at.clone();
    }
    b
}

/// Sends a batch (proven absent, or never sent): answered, it is recorded; in doubt, it is
/// left to settle.
async fn send(ctx: Arc<Ctx>, batch: WorkBatch, members: Members) -> Result<(), StateError> {
    if members.iter().any(|(_, p)| p.is_empty()) {
        // Proven absent, but its rows changed since: they are planned again next run.
        return fail_all(
            &ctx,
            &batch,
            &members,
            "ROW_CHANGED",
            "the rows of this batch changed since it was sent; run again",
        )
        .await;
    }
    let request = body(&batch, &members);
    let target = Batch {
        batch: &batch,
        members: &members,
    };
    let sent = protocol::send(&ctx, &target, protocol::none, || async {
        ctx.hc()?.create_payout(&request).await
    })
    .await?;
    match sent {
        Sent::Answered(created, _) => record(&ctx, &batch, &members, &created).await,
        Sent::Claimed(..) | Sent::Recorded => Ok(()),
    }
}

/// A payout batch under the protocol: its intent and outcomes are the batch's and its
/// rows', in one transaction each.
struct Batch<'a> {
    batch: &'a WorkBatch,
    members: &'a Members,
}

impl protocol::Target for Batch<'_> {
    async fn intent(&self, ctx: &Ctx, _attempt: u32) -> Result<(), StateError> {
        let id = self.batch.id;
        ctx.db
            .write(move |c| work::mark_batch_in_flight(c, id))
            .await
    }

    fn in_doubt(
        &self,
        ctx: &Ctx,
        sent: chrono::DateTime<chrono::Utc>,
        applied: bool,
    ) -> Result<(), StateError> {
        ctx.in_doubt(work::Unit::Batch(self.batch.id), sent, applied)
    }

    async fn requeue(&self, ctx: &Ctx) -> Result<(), StateError> {
        requeue(ctx, self.batch, self.members).await
    }

    async fn fail(&self, ctx: &Ctx, o: Outcome) -> Result<(), StateError> {
        let (code, message) = (o.error_code.unwrap_or_default(), o.error_message);
        fail_all(
            ctx,
            self.batch,
            self.members,
            &code,
            &message.unwrap_or_default(),
        )
        .await
    }
}

/// Surely not sent: the batch waits, unchanged, for the next run.
async fn requeue(ctx: &Ctx, batch: &WorkBatch, members: &Members) -> Result<(), StateError> {
    let (id, ids): (i64, Vec<i64>) = (batch.id, members.iter().map(|(i, _)| i.id).collect());
    ctx.db
        .record(move |c| {
            work::set_batch(c, id, BatchState::Open, None, None, None)?;
            for item in &ids {
                work::set_outcome(
                    c,
                    *item,
                    &Outcome {
                        state: ItemState::Pending,
                        ..Outcome::default()
                    },
                )?;
            }
            Ok(())
        })
        .await
}

/// Settles the step's batches in doubt — an earlier run's, and this run's — looking them up
/// by external id in the provider's listing (one listing for all that are due); found, they
/// are recorded; proven absent, sent again. Returns whether there were any.
async fn settle(
    ctx: &Arc<Ctx>,
    si: usize,
    step: &Step,
    rows: &mut RowSource<'_, '_>,
) -> Result<bool, RunError> {
    let mut any = false;
    let mut rounds = doubt::Rounds::default();
    loop {
        if ctx.stopping() {
            break;
        }
        let (plan_id, step_id) = (ctx.plan_id, step.id.clone());
        let mut doubtful = ctx
            .db
            .read(move |c| work::batches_in(c, plan_id, &step_id, &[BatchState::InFlight]))
            .await?;
        doubtful.retain(|b| rounds.open(b.id));
        if doubtful.is_empty() {
            break;
        }
        any = true;
        let now = chrono::Utc::now();
        let mut units = Vec::with_capacity(doubtful.len());
        for mut b in doubtful {
            if b.doubt_since.is_none() {
                // Its run ended before it could record when it was sent: from now.
                let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let stored = at.clone();
                ctx.db.record_later(move |c| {
                    work::set_doubt(c, work::Unit::Batch(b.id), &stored, false)
                })?;
                b.doubt_since = Some(at);
            }
            units.push(Doubt {
                since: doubt::since(b.doubt_since.as_deref(), now),
                applied: b.doubt_applied,
                unit: b,
            });
        }
        let (plan_id, step_id) = (ctx.plan_id, step.id.clone());
        let (_, latest) = ctx
            .db
            .read(move |c| work::payout_span(c, plan_id, &step_id))
            .await?;
        let latest = latest.as_deref().and_then(listing::parse_time);
        let settled = doubt::settle(
            ctx,
            ("payout batch(es)", &mut rounds.said),
            units,
            |batches: Vec<WorkBatch>| look_up(ctx, batches, latest),
        )
        .await;
        let mut tasks: JoinSet<Result<(), StateError>> = JoinSet::new();
        for (d, verdict) in settled {
            let b = d.unit;
            match verdict {
                Settled::Found(found) => {
                    super::pace::Stats::add(&ctx.pacer.stats.in_doubt_resolved);
                    let id = b.id;
                    let items = ctx.db.read(move |c| work::batch_items(c, id)).await?;
                    let members = items.into_iter().map(|i| (i, Map::new())).collect();
                    record(ctx, &b, &members, &found).await?;
                }
                Settled::Absent => {
                    if !rounds.resend(ctx, b.id) {
                        continue;
                    }
                    let id = b.id;
                    let items = ctx.db.read(move |c| work::batch_items(c, id)).await?;
                    let mut members = Vec::with_capacity(items.len());
                    for mut item in items {
                        // Rows that no longer render as they were sent cannot be sent again.
                        let fields = rows.fields(si, &mut item).unwrap_or_default();
                        members.push((item, fields));
                    }
                    tasks.spawn(send(ctx.clone(), b, members));
                }
                Settled::Open => rounds.leave(b.id),
                Settled::Later => {}
            }
        }
        super::queue::drain(&mut tasks).await?;
        ctx.db.settled().await?;
    }
    Ok(any)
}

/// Looks batches up by external id in one read of the provider's listing, over a window
/// from the first one's first attempt to past the latest scheduled payout; the oldest
/// batch carrying an external id is its batch (a second one is a duplicate, said by the
/// duplicate check).
async fn look_up(
    ctx: &Ctx,
    batches: Vec<WorkBatch>,
    latest: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<Result<Option<PayoutBatch>, CallError>> {
    let earliest = batches
        .iter()
        .filter_map(|b| b.first_attempt_at.as_deref().and_then(listing::parse_time))
        .min()
        .unwrap_or_else(chrono::Utc::now);
    let wanted: HashSet<&str> = batches.iter().map(|b| b.external_id.as_str()).collect();
    let window = Window::around(earliest, latest);
    let keep = |b: &PayoutBatch| b.external_id.as_deref().is_some_and(|e| wanted.contains(e));
    match listing::scan(ctx, window, keep).await {
        Ok(mut found) => {
            found.sort_by(|a, b| a.created_at.cmp(&b.created_at));
            batches
                .iter()
                .map(|b| {
                    Ok(found
                        .iter()
                        .find(|f| f.external_id.as_deref() == Some(b.external_id.as_str()))
                        .cloned())
                })
                .collect()
        }
        Err(e) => batches.iter().map(|_| Err(e.clone())).collect(),
    }
}

/// Records what the provider holds for a batch — its uuid, its status and funding answer,
/// and each row's transaction, matched by external id — in one transaction.
async fn record(
    ctx: &Ctx,
    batch: &WorkBatch,
    members: &Members,
    created: &PayoutBatch,
) -> Result<(), StateError> {
    let by_id: HashMap<&str, &PayoutTransaction> = created
        .payout_transactions
        .iter()
        .filter_map(|t| Some((t.external_id.as_deref()?, t)))
        .collect();
    let updates: Vec<(i64, Outcome)> = members
        .iter()
        .map(|(item, _)| {
            let tx = item
                .external_id
                .as_deref()
                .and_then(|e| by_id.get(e).copied());
            (item.id, row_outcome(created, tx))
        })
        .collect();
    let id = batch.id;
    let (uuid, status, state) = (
        created.uuid.clone(),
        created.status.clone(),
        batch_state(created),
    );
    let error = funding(created).map(|(c, m)| (c.to_string(), m.to_string()));
    // Counted and said once, when the batch is first recorded (refreshes record it again).
    if batch.provider_ref.is_none() {
        ctx.tick(members.len() as u64);
    }
    if batch.provider_ref.is_none()
        && let Some((code, message)) = &error
    {
        tracing::warn!(batch = %batch.external_id, uuid = %uuid, code = %code, "{message}");
    }
    ctx.db
        .record(move |c| {
            let error = error.as_ref().map(|(c, m)| (c.as_str(), m.as_str()));
            work::set_batch(c, id, state, Some(&uuid), status.as_deref(), error)?;
            for (item, o) in &updates {
                work::set_outcome(c, *item, o)?;
            }
            Ok(())
        })
        .await
}

/// Fails a batch that never reached the provider, and all its rows, in one transaction.
async fn fail_all(
    ctx: &Ctx,
    batch: &WorkBatch,
    members: &Members,
    code: &str,
    message: &str,
) -> Result<(), StateError> {
    let (id, code, message) = (batch.id, code.to_string(), message.to_string());
    let ids: Vec<i64> = members.iter().map(|(i, _)| i.id).collect();
    ctx.tick(ids.len() as u64);
    ctx.db
        .write(move |c| {
            work::set_batch(
                c,
                id,
                BatchState::Failed,
                None,
                None,
                Some((&code, &message)),
            )?;
            for item in &ids {
                let o = Outcome {
                    state: ItemState::Failed,
                    error_code: Some(code.clone()),
                    error_message: Some(message.clone()),
                    ..Outcome::default()
                };
                work::set_outcome(c, *item, &o)?;
            }
            Ok(())
        })
        .await
}

/// Checks that each of the step's external ids is carried by one batch that can still pay
/// (expired batches and cancelled transactions cannot), records what is not so — replacing
/// what an earlier check found — and says it loudly.
pub(super) async fn check_duplicates(ctx: &Ctx, step: &str) -> Result<(), RunError> {
    let (ours, found) = listed(ctx, step).await?;
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                step,
                "cannot check the provider's payouts for duplicates ({}); `payrun reconcile` checks again",
                crate::redact::scrub(&e.to_string())
            );
            return Ok(());
        }
    };
    let mut dups = duplicates_in(&found, |e| ours.has(e));
    if !dups.is_empty() {
        // Name the rows whose transactions are paid twice.
        let wanted: HashSet<String> = dups.iter().map(|d| d.external_id.clone()).collect();
        let (plan_id, step_id) = (ctx.plan_id, step.to_string());
        let items = ctx
            .db
            .read(move |c| work::items_by_external_id(c, plan_id, &step_id, &wanted))
            .await?;
        for d in &mut dups {
            d.row_key = items
                .iter()
                .find(|i| i.external_id.as_deref() == Some(d.external_id.as_str()))
                .map(|i| i.row_key.clone());
        }
    }
    for d in &dups {
        tracing::error!(
            step,
            external_id = %d.external_id,
            row = d.row_key.as_deref().unwrap_or(""),
            uuids = %d.uuids.join(", "),
            "DUPLICATE PAYOUT: the provider holds {} batches that can pay external id {} ({}); keep the first, cancel the others if still scheduled (`POST /v2/payouts/cancel_scheduled`), else recover the money",
            d.uuids.len(),
            d.external_id,
            d.uuids.join(", ")
        );
    }
    let (plan_id, step_id, run_id) = (ctx.plan_id, step.to_string(), ctx.run_id);
    ctx.db
        .write(move |c| work::record_duplicates(c, plan_id, &step_id, run_id, &dups))
        .await?;
    Ok(())
}

/// The external ids (of this plan, as `ours` says) that more than one batch able to pay
/// carries, each with those batches' uuids in the order given: a batch's own id, and its
/// transactions' ids.
fn duplicates_in(found: &[PayoutBatch], ours: impl Fn(&str) -> bool) -> Vec<Duplicate> {
    let mut by_id: Vec<(String, bool, Vec<String>)> = Vec::new();
    let mut add = |id: &str, batch_id: bool, uuid: &str| match by_id
        .iter_mut()
        .find(|(e, b, _)| e == id && *b == batch_id)
    {
        Some((_, _, uuids)) => {
            if !uuids.iter().any(|u| u == uuid) {
                uuids.push(uuid.to_string());
            }
        }
        None => by_id.push((id.to_string(), batch_id, vec![uuid.to_string()])),
    };
    for b in found
        .iter()
        .filter(|b| batch_state(b) != BatchState::Expired)
    {
        if let Some(e) = b.external_id.as_deref().filter(|e| ours(e)) {
            add(e, true, &b.uuid);
        }
        for t in &b.payout_transactions {
            if t.status.as_deref() == Some("cancelled") {
                continue;
            }
            if let Some(e) = t.external_id.as_deref().filter(|e| ours(e)) {
                add(e, false, &b.uuid);
            }
        }
    }
    by_id
        .into_iter()
        .filter(|(_, _, uuids)| uuids.len() > 1)
        .map(|(external_id, _, uuids)| Duplicate {
            external_id,
            row_key: None,
            uuids,
        })
        .collect()
}

/// Polls sent batches until each is completed or ended (or the timeout), recording each
/// row's transaction.
async fn await_completion(
    step: &Step,
    ctx: &Arc<Ctx>,
    timeout: std::time::Duration,
    every: std::time::Duration,
) -> Result<(), RunError> {
    let deadline = Instant::now() + timeout;
    loop {
        let (plan_id, step_id) = (ctx.plan_id, step.id.clone());
        let sent: Vec<WorkBatch> = ctx
            .db
            .read(move |c| work::batches_in(c, plan_id, &step_id, &[BatchState::Sent]))
            .await?;
        let mut open = 0;
        for batch in sent {
            let Some(uuid) = batch.provider_ref.clone() else {
                continue;
            };
            match refresh_batch(ctx, &batch, &uuid).await? {
                Some((true, _)) => {}
                _ => open += 1,
            }
        }
        if open == 0 || Instant::now() >= deadline || ctx.stopping() {
            ctx.waiting(None);
            return Ok(());
        }
        ctx.waiting(Some(format!(
            "waiting for {open} payout batch(es) to complete"
        )));
        ctx.next_poll(every, deadline).await;
    }
}

/// Asks the provider for a sent batch and records its status and each row's transaction
/// (matched by external id): a transaction that completes pays its row whatever it was,
/// a batch that ends fails the rows it did not pay. Returns whether the batch is over
/// (completed or ended), and what changed; `None` when the provider could not be asked.
pub(super) async fn refresh_batch(
    ctx: &Ctx,
    batch: &WorkBatch,
    uuid: &str,
) -> Result<Option<(bool, Vec<super::Change>)>, StateError> {
    let Ok(b) = idempotent(ctx, || async { ctx.hc()?.payout(uuid).await }).await else {
        return Ok(None);
    };
    let id = batch.id;
    let before = ctx.db.read(move |c| work::batch_items(c, id)).await?;
    let members: Members = before.into_iter().map(|i| (i, Map::new())).collect();
    let by_id: HashMap<&str, &PayoutTransaction> = b
        .payout_transactions
        .iter()
        .filter_map(|t| Some((t.external_id.as_deref()?, t)))
        .collect();
    let mut changes = Vec::new();
    for (item, _) in &members {
        // A row already paid stays paid; a transaction missing from a refresh says nothing.
        let Some(tx) = item.external_id.as_deref().and_then(|e| by_id.get(e)) else {
            continue;
        };
        let o = row_outcome(&b, Some(tx));
        let was = shown(item.state, item.provider_status.as_deref());
        let now = shown(o.state, o.provider_status.as_deref());
        if was != now {
            changes.push(super::Change {
                step: String::new(),
                row_key: item.row_key.clone(),
                what: format!("transaction {was} → {now}"),
            });
        }
    }
    let over = batch_state(&b) != BatchState::Sent;
    record(ctx, batch, &members_with_tx(members, &by_id), &b).await?;
    Ok(Some((over, changes)))
}

/// The members a refresh records: those whose transaction the provider listed (a row
/// missing from a refresh keeps what it was).
fn members_with_tx(members: Members, by_id: &HashMap<&str, &PayoutTransaction>) -> Members {
    members
        .into_iter()
        .filter(|(i, _)| {
            i.external_id
                .as_deref()
                .is_some_and(|e| by_id.contains_key(e))
        })
        .collect()
}

/// A row's state as a change shows it: the transaction's status, or the row's state where
/// that says more (waiting for funds, failed).
fn shown(state: ItemState, provider_status: Option<&str>) -> String {
    match state {
        ItemState::AwaitingFunds => "awaiting funds".into(),
        ItemState::Failed => format!("failed ({})", provider_status.unwrap_or("unknown")),
        _ => provider_status.unwrap_or("unknown").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(uuid: &str, status: &str, code: Option<&str>, txs: &[(&str, &str)]) -> PayoutBatch {
        serde_json::from_value(json!({
            "uuid": uuid, "status": status, "external_id": format!("b-{uuid}"),
            "error_code": code, "error_message": "",
            "payout_transactions": txs.iter().map(|(e, s)| json!({"uuid": format!("T{e}"), "external_id": e, "status": s})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn funding_answers_keep_rows_alive_and_only_an_ended_batch_fails_them() {
        let state = |b: &PayoutBatch| row_outcome(b, b.payout_transactions.first()).state.as_str();
        let short = batch("A", "processing", Some("HC_PAYOUT1"), &[("r1", "pending")]);
        assert_eq!(state(&short), "awaiting_funds");
        let o = row_outcome(&short, short.payout_transactions.first());
        // The reference's example gives HC_PAYOUT1 with an empty message.
        assert_eq!(
            (o.error_code.as_deref(), o.error_message.as_deref()),
            (Some("HC_PAYOUT1"), Some("HC_PAYOUT1"))
        );
        let payto = batch("B", "processing", Some("HC_PAYOUT2"), &[("r1", "pending")]);
        assert_eq!(state(&payto), "succeeded");
        // Funded later: the code stays on a completed batch; the row is paid.
        let paid = batch("C", "completed", Some("HC_PAYOUT1"), &[("r1", "completed")]);
        assert_eq!(state(&paid), "succeeded");
        let expired = batch("D", "expired", Some("HC_PAYOUT1"), &[("r1", "cancelled")]);
        assert_eq!(state(&expired), "failed");
        // Reported failed, then completed: paid.
        let late = batch("E", "completed", None, &[("r1", "completed")]);
        assert_eq!(state(&late), "succeeded");
        let failed_tx = batch("F", "completed", None, &[("r1", "failed")]);
        assert_eq!(
            row_outcome(&failed_tx, failed_tx.payout_transactions.first())
                .error_code
                .as_deref(),
            Some("PAYOUT_FAILED")
        );
        assert_eq!(
            row_outcome(&paid, None).error_code.as_deref(),
            Some("TX_MISSING")
        );
    }

    #[test]
    fn an_external_id_carried_twice_by_batches_that_can_pay_is_a_duplicate() {
        let ours = |e: &str| e.starts_with('r') || e.starts_with("b-");
        let a = batch(
            "A",
            "completed",
            None,
            &[("r1", "completed"), ("r2", "completed")],
        );
        let mut b = batch(
            "B",
            "processing",
            None,
            &[("r2", "pending"), ("x9", "pending")],
        );
        let c = batch("C", "expired", None, &[("r1", "cancelled")]);
        assert!(
            duplicates_in(&[a.clone(), c.clone()], ours).is_empty(),
            "an expired batch cannot pay"
        );
        let d = duplicates_in(&[a.clone(), b.clone(), c], ours);
        assert_eq!(
            d,
            [Duplicate {
                external_id: "r2".into(),
                row_key: None,
                uuids: vec!["A".into(), "B".into()]
            }]
        );
        // A second batch under one of this plan's batch ids.
        b.external_id = Some("b-A".into());
        b.payout_transactions.clear();
        let d = duplicates_in(&[a, b], ours);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].external_id.as_str(), d[0].uuids.len()), ("b-A", 2));
    }
}
