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
use super::{Ctx, RowSource, RunError, ready};
use crate::exec::queue::unreadable;
use crate::job::{Job, Step};
use crate::provider::error::CallError;
use crate::provider::helloclever::client::HelloClever;
use crate::provider::helloclever::wire::{PayoutBatch, PayoutTransaction};
use crate::state::work::{self, Duplicate, Outcome, WorkBatch, WorkItem};
use crate::state::{BatchState, ItemState, StateError};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::task::JoinSet;

mod adopt;
mod send;
mod settle;
#[cfg(test)]
mod tests;
mod watch;

use adopt::*;
use send::*;
use settle::*;
use watch::*;
pub(super) use watch::{check_duplicates, refresh_batch};

/// A batch's rows with their fields (empty when the row no longer renders as it was sent).
type Members = Vec<(WorkItem, Map<String, Value>)>;

pub async fn run(
    job: &Job,
    si: usize,
    step: &Step,
    ctx: &Arc<Ctx>,
    hc: &Arc<HelloClever>,
    rows: &mut RowSource<'_, '_>,
) -> Result<(), RunError> {
    let (plan_id, step_id, size) = (ctx.plan_id, step.id.clone(), step.batch_size);
    let names = (job.name.clone(), job.scope.clone());
    let batch = move |taken: HashSet<String>| {
        let (step_id, names) = (step_id.clone(), names.clone());
        move |c: &crate::state::Conn| {
            work::rebatch(c, plan_id, &step_id, size, (&names.0, &names.1), &taken)
        }
    };
    ctx.db.write(batch(HashSet::new())).await?;
    let unsent = ctx.batches_in(&step.id, &[BatchState::Open]).await?;
    // Whether this run changed what the provider holds (or learnt of it): then it checks
    // for duplicates at the end.
    let mut touched = false;
    if !unsent.is_empty() && !ctx.stopping() {
        match adopt_existing(ctx, hc, &step.id).await? {
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
    let batches = ctx.batches_in(&step.id, &[BatchState::Open]).await?;
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
                let params = match idempotent(ctx, || hc.payout_method(&method)).await {
                    Ok(record) => record.params().0.into_iter().map(String::from).collect(),
                    Err(e) => {
                        // The provider checks the parameters of what it is sent, too.
                        tracing::warn!(
                            method = %method,
                            "the provider's required fields for this payout method could not \
                             be read ({e}); its batches go with the parameters the job gives"
                        );
                        Vec::new()
                    }
                };
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
        crate::exec::queue::throttle(&mut tasks, 64).await?;
        tasks.spawn(send(ctx.clone(), hc.clone(), batch, members));
    }
    crate::exec::queue::drain(&mut tasks).await?;
    touched |= settle(ctx, hc, si, step, rows).await?;
    if touched && !ctx.stopping() {
        check_duplicates(ctx, hc, &step.id).await?;
    }
    if let Some(wait) = &step.wait
        && !ctx.stopping()
    {
        await_completion(step, ctx, hc, wait.timeout, ctx.poll_every(wait.poll)).await?;
    }
    Ok(())
}
