//! After sending: duplicates at the provider, the wait for completion, and refreshing a batch from the provider.

use super::*;

/// Checks that each of the step's external ids is carried by one batch that can still pay
/// (expired batches and cancelled transactions cannot), records what is not so — replacing
/// what an earlier check found — and says it loudly.
pub(in crate::exec) async fn check_duplicates(
    ctx: &Ctx,
    hc: &Arc<HelloClever>,
    step: &str,
) -> Result<(), RunError> {
    let (ours, found) = listed(ctx, hc, step).await?;
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
pub(super) fn duplicates_in(found: &[PayoutBatch], ours: impl Fn(&str) -> bool) -> Vec<Duplicate> {
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
pub(super) async fn await_completion(
    step: &Step,
    ctx: &Arc<Ctx>,
    hc: &Arc<HelloClever>,
    timeout: std::time::Duration,
    every: std::time::Duration,
) -> Result<(), RunError> {
    ctx.poll_until(timeout, every, |_| async move {
        let sent: Vec<WorkBatch> = ctx.batches_in(&step.id, &[BatchState::Sent]).await?;
        let mut open = 0;
        for batch in sent {
            let Some(uuid) = batch.provider_ref.clone() else {
                continue;
            };
            match refresh_batch(ctx, hc, &batch, &uuid).await? {
                Some((true, _)) => {}
                _ => open += 1,
            }
        }
        Ok((open > 0).then(|| format!("waiting for {open} payout batch(es) to complete")))
    })
    .await
}

/// Asks the provider for a sent batch and records its status and each row's transaction
/// (matched by external id): a transaction that completes pays its row whatever it was,
/// a batch that ends fails the rows it did not pay. Returns whether the batch is over
/// (completed or ended), and what changed; `None` when the provider could not be asked.
pub(in crate::exec) async fn refresh_batch(
    ctx: &Ctx,
    hc: &Arc<HelloClever>,
    batch: &WorkBatch,
    uuid: &str,
) -> Result<Option<(bool, Vec<crate::exec::Change>)>, StateError> {
    let Ok(b) = idempotent(ctx, || hc.payout(uuid)).await else {
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
            changes.push(crate::exec::Change {
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
pub(super) fn members_with_tx(
    members: Members,
    by_id: &HashMap<&str, &PayoutTransaction>,
) -> Members {
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
pub(super) fn shown(state: ItemState, provider_status: Option<&str>) -> String {
    match state {
        ItemState::AwaitingFunds => "awaiting funds".into(),
        ItemState::Failed => format!("failed ({})", provider_status.unwrap_or("unknown")),
        _ => provider_status.unwrap_or("unknown").to_string(),
    }
}
