//! Payout batches: each batch is sent once, with all its ready rows, under its stored
//! external id. In doubt, payrun lists the provider's payouts since the first attempt and
//! looks for that external id before sending again — the provider does not deduplicate.

use super::contact::{failed, idempotent, unreadable};
use super::{Ctx, Next, RowSource, RunError, ready};
use crate::job::{Job, Step};
use crate::provider::error::CallError;
use crate::provider::helloclever::wire::PayoutBatch;
use crate::state::StateError;
use crate::state::work::{self, Outcome, WorkBatch, WorkItem};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub async fn run(
    job: &Job,
    si: usize,
    step: &Step,
    ctx: &Arc<Ctx>,
    rows: &mut RowSource<'_, '_>,
) -> Result<(), RunError> {
    let (plan_id, step_id, size) = (ctx.plan_id, step.id.clone(), step.batch_size);
    let (name, scope) = (job.name.clone(), job.scope.clone());
    ctx.db
        .write(move |c| work::rebatch(c, plan_id, &step_id, size, &name, &scope))
        .await?;
    let step_id = step.id.clone();
    let batches = ctx
        .db
        .read(move |c| work::batches_in(c, plan_id, &step_id, &["open", "in_flight"]))
        .await?;
    let states = ctx.db.read(move |c| work::row_states(c, plan_id)).await?;
    // Each method's mandatory parameters, asked once per run (O2).
    let mut required: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
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
            if batch.state == "open"
                && let Err(why) = ready(job, si, &item.row_key, &states)
            {
                let id = item.id;
                ctx.db.write(move |c| work::detach(c, id, &why)).await?;
                continue;
            }
            match rows.fields(si, &mut item) {
                Ok(p) => members.push((item, p)),
                Err(e) if batch.state == "open" => {
                    let id = item.id;
                    ctx.db
                        .write(move |c| work::detach(c, id, "the row changed since it was planned"))
                        .await?;
                    unreadable(ctx, &item, e)?;
                }
                // A batch that may have been sent keeps its rows as they were sent.
                Err(_) => members.push((item, Map::new())),
            }
        }
        if members.is_empty() {
            continue;
        }
        if batch.state == "open"
            && let Some(method) = members[0]
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
        while tasks.len() >= 64 {
            if let Some(r) = tasks.join_next().await {
                r.map_err(|e| RunError::Fatal(e.to_string()))??;
            }
        }
        tasks.spawn(send(ctx.clone(), batch, members));
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| RunError::Fatal(e.to_string()))??;
    }
    if let Some(wait) = &step.wait
        && !ctx.stopping()
    {
        await_completion(step, ctx, wait.timeout, ctx.poll_every(wait.poll)).await?;
    }
    Ok(())
}

/// The request body: batch fields from the first row (rows of a batch agree on them).
fn body(batch: &WorkBatch, members: &[(WorkItem, Map<String, Value>)]) -> Value {
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

async fn send(
    ctx: Arc<Ctx>,
    batch: WorkBatch,
    members: Vec<(WorkItem, Map<String, Value>)>,
) -> Result<(), StateError> {
    let started = Instant::now();
    let mut in_doubt = batch.state == "in_flight";
    let mut first_attempt = batch.first_attempt_at.clone();
    let mut attempt = 0u32;
    let sendable = members.iter().all(|(_, p)| !p.is_empty());
    loop {
        if in_doubt {
            match find(&ctx, &batch, first_attempt.as_deref()).await {
                Ok(Some(found)) => {
                    super::pace::Stats::add(&ctx.pacer.stats.in_doubt_resolved);
                    return record(&ctx, &batch, &members, &found).await;
                }
                Ok(None) => {
                    // Proven absent: safe to send.
                    super::pace::Stats::add(&ctx.pacer.stats.in_doubt_resolved);
                }
                Err(_) => return Ok(()),
            }
        }
        if !sendable {
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
        attempt += 1;
        let id = batch.id;
        ctx.db
            .write(move |c| work::mark_batch_in_flight(c, id))
            .await?;
        if first_attempt.is_none() {
            first_attempt = Some(work::now());
        }
        let request = body(&batch, &members);
        let slot = ctx.pacer.permit().await;
        if ctx.stopping() {
            // Stopping (a signal, or refused credentials): not sent; back to the queue.
            drop(slot);
            return requeue(&ctx, &batch, &members).await;
        }
        let result = async { ctx.hc()?.create_payout(&request).await }.await;
        drop(slot);
        let e = match result {
            Ok(created) => return record(&ctx, &batch, &members, &created).await,
            Err(e) => e,
        };
        match ctx.after_failure(&e, attempt, started).await {
            Next::Retry { in_doubt: d } => in_doubt = d,
            Next::InDoubt => return Ok(()),
            Next::Requeue => return requeue(&ctx, &batch, &members).await,
            Next::Fail => {
                let o = failed(&e);
                return fail_all(
                    &ctx,
                    &batch,
                    &members,
                    &o.error_code.unwrap_or_default(),
                    &o.error_message.unwrap_or_default(),
                )
                .await;
            }
        }
    }
}

/// Surely not sent: the batch waits, unchanged, for the next run.
async fn requeue(
    ctx: &Ctx,
    batch: &WorkBatch,
    members: &[(WorkItem, Map<String, Value>)],
) -> Result<(), StateError> {
    let (id, ids): (i64, Vec<i64>) = (batch.id, members.iter().map(|(i, _)| i.id).collect());
    ctx.db
        .record(move |c| {
            work::set_batch(c, id, "open", None, None, None)?;
            for item in &ids {
                work::set_outcome(
                    c,
                    *item,
                    &Outcome {
                        state: "pending",
                        ..Outcome::default()
                    },
                )?;
            }
            Ok(())
        })
        .await
}

/// Lists the provider's payouts around the first attempt, looking for our external id.
async fn find(
    ctx: &Ctx,
    batch: &WorkBatch,
    first_attempt: Option<&str>,
) -> Result<Option<PayoutBatch>, CallError> {
    let since = first_attempt
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc));
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let from = fmt(since - chrono::Duration::minutes(10));
    let to = fmt(chrono::Utc::now() + chrono::Duration::minutes(10));
    let mut page = 1;
    loop {
        let p = idempotent(ctx, || async { ctx.hc()?.payouts(&from, &to, page).await }).await?;
        if let Some(found) = p
            .records
            .iter()
            .find(|b| b.external_id.as_deref() == Some(batch.external_id.as_str()))
        {
            return Ok(Some(found.clone()));
        }
        // Stop on an empty page, a missing or non-advancing next_page, or the last page.
        let next = p.next_page.filter(|n| *n > page);
        let last = p.total_page.is_some_and(|t| page >= t);
        match next {
            Some(n) if !p.records.is_empty() && !last && n < 10_000 => page = n,
            _ => return Ok(None),
        }
    }
}

/// Records what the provider holds for a batch: its uuid and each transaction's.
async fn record(
    ctx: &Ctx,
    batch: &WorkBatch,
    members: &[(WorkItem, Map<String, Value>)],
    created: &PayoutBatch,
) -> Result<(), StateError> {
    if let Some(code) = created.error_code.as_deref().filter(|c| !c.is_empty()) {
        let message = created
            .error_message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| code.to_string());
        let (id, uuid, code_s, msg) = (
            batch.id,
            created.uuid.clone(),
            code.to_string(),
            message.clone(),
        );
        ctx.db
            .write(move |c| {
                work::set_batch(c, id, "failed", Some(&uuid), None, Some((&code_s, &msg)))
            })
            .await?;
        for (item, _) in members {
            let o = Outcome {
                state: "failed",
                provider_ref: None,
                provider_status: None,
                error_code: Some(code.to_string()),
                error_message: Some(message.clone()),
            };
            ctx.outcome(item.id, o)?;
        }
        return Ok(());
    }
    let (id, uuid, status) = (batch.id, created.uuid.clone(), created.status.clone());
    let updates: Vec<(i64, Outcome)> = members
        .iter()
        .enumerate()
        .map(|(i, (item, _))| {
            let tx = created
                .payout_transactions
                .iter()
                .find(|t| t.external_id.is_some() && t.external_id == item.external_id)
                .or_else(|| created.payout_transactions.get(i));
            (
                item.id,
                Outcome {
                    state: "succeeded",
                    provider_ref: tx.map(|t| t.uuid.clone()),
                    provider_status: tx.and_then(|t| t.status.clone()),
                    ..Outcome::default()
                },
            )
        })
        .collect();
    ctx.tick(updates.len() as u64);
    // The batch and all its rows in one transaction.
    ctx.db
        .record(move |c| {
            work::set_batch(c, id, "sent", Some(&uuid), status.as_deref(), None)?;
            for (item, o) in &updates {
                work::set_outcome(c, *item, o)?;
            }
            Ok(())
        })
        .await
}

async fn fail_all(
    ctx: &Ctx,
    batch: &WorkBatch,
    members: &[(WorkItem, Map<String, Value>)],
    code: &str,
    message: &str,
) -> Result<(), StateError> {
    let (id, code, message) = (batch.id, code.to_string(), message.to_string());
    let ids: Vec<i64> = members.iter().map(|(i, _)| i.id).collect();
    ctx.db
        .write(move |c| {
            work::set_batch(c, id, "failed", None, None, Some((&code, &message)))?;
            for item in &ids {
                let o = Outcome {
                    state: "failed",
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

/// Polls sent batches until completed (or the timeout), recording each transaction's status.
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
            .read(move |c| work::batches_in(c, plan_id, &step_id, &["sent"]))
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
            return Ok(());
        }
        ctx.next_poll(every, deadline).await;
    }
}

/// Asks the provider for a sent batch and records its status and each transaction's (a
/// failed transaction fails its row). Returns whether it is completed, and what changed;
/// `None` when the provider could not be asked.
pub(super) async fn refresh_batch(
    ctx: &Ctx,
    batch: &WorkBatch,
    uuid: &str,
) -> Result<Option<(bool, Vec<super::Change>)>, StateError> {
    let Ok(b) = idempotent(ctx, || async { ctx.hc()?.payout(uuid).await }).await else {
        return Ok(None);
    };
    let done = b.status.as_deref() == Some("completed");
    let id = batch.id;
    let before = ctx.db.read(move |c| work::batch_items(c, id)).await?;
    let mut changes = Vec::new();
    for tx in &b.payout_transactions {
        if let Some(item) = before
            .iter()
            .find(|i| i.provider_ref.as_deref() == Some(tx.uuid.as_str()))
            && item.provider_status != tx.status
        {
            changes.push(super::Change {
                step: String::new(),
                row_key: item.row_key.clone(),
                what: format!(
                    "transaction {} → {}",
                    item.provider_status.as_deref().unwrap_or("unknown"),
                    tx.status.as_deref().unwrap_or("unknown")
                ),
            });
        }
    }
    let txs = b.payout_transactions.clone();
    let status = b.status.clone();
    ctx.db
        .write(move |c| {
            c.execute("UPDATE batches SET provider_status = ?2, state = CASE WHEN ?3 THEN 'completed' ELSE state END WHERE id = ?1", rusqlite::params![id, status, done])?;
            for tx in &txs {
                let failed = tx.status.as_deref() == Some("failed");
                c.execute(
                    "UPDATE items SET provider_status = ?2,
                            state = CASE WHEN ?3 THEN 'failed' ELSE state END,
                            error_code = CASE WHEN ?3 THEN 'PAYOUT_FAILED' ELSE error_code END,
                            error_message = CASE WHEN ?3 THEN 'the provider reports this transaction failed' ELSE error_message END
                     WHERE batch_id = ?1 AND provider_ref = ?4",
                    rusqlite::params![id, tx.status, failed, tx.uuid],
                )?;
            }
            Ok(())
        })
        .await?;
    Ok(Some((done, changes)))
}
