//! Before a step's first send: the provider's payouts over the plan's window, and the batches this state did not know adopted (rows matched by external id).

use super::*;

/// Before the step's first sends: reads the provider's payouts over the plan's window for
/// this plan's external ids, and adopts what it holds — batches sent under a state that is
/// gone — so nothing of it is sent again. Returns the external ids the provider holds
/// (no new batch may take one), or `None` when the listing could not be read to its end.
pub(super) async fn adopt_existing(
    ctx: &Ctx,
    hc: &Arc<HelloClever>,
    step: &str,
) -> Result<Option<HashSet<String>>, RunError> {
    let (_, found) = listed(ctx, hc, step).await?;
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
pub(super) async fn listed(
    ctx: &Ctx,
    hc: &Arc<HelloClever>,
    step: &str,
) -> Result<(Ours, Result<Vec<PayoutBatch>, CallError>), StateError> {
    let ours = Ours::load(ctx, step).await?;
    let window = listing::plan_window(ctx, step).await?;
    let found = listing::scan(ctx, hc, window, |b| ours.carried_by(b))
        .await
        .map(|mut found| {
            found.sort_by(|a, b| a.created_at.cmp(&b.created_at));
            found
        });
    Ok((ours, found))
}

/// What payrun records of a provider's batch.
pub(super) fn facts(b: &PayoutBatch) -> work::FoundBatch<'_> {
    work::FoundBatch {
        uuid: &b.uuid,
        external_id: b.external_id.as_deref().unwrap_or(&b.uuid),
        state: batch_state(b),
        status: b.status.as_deref(),
        error: funding(b),
    }
}

/// The provider's funding answer on a batch, if any: its code and message.
pub(super) fn funding(b: &PayoutBatch) -> Option<(&str, &str)> {
    let code = b.error_code.as_deref().filter(|c| !c.is_empty())?;
    let message = b
        .error_message
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(code);
    Some((code, message))
}

/// A provider batch's state in payrun's terms.
pub(super) fn batch_state(b: &PayoutBatch) -> BatchState {
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
pub(super) fn row_outcome(b: &PayoutBatch, tx: Option<&PayoutTransaction>) -> Outcome {
    let failed = |code: &str, message: String| Outcome {
        state: ItemState::Failed,
        provider_ref: tx.map(|t| t.uuid.clone()),
        provider_status: tx.and_then(|t| t.status.clone()),
        error_code: Some(code.into()),
        error_message: Some(message),
        details: None,
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
                    ..Outcome::default()
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
