//! Sending a batch under the protocol, and recording what the provider answered.

use super::*;

/// The request body: batch fields from the first row (rows of a batch agree on them).
pub(super) fn body(batch: &WorkBatch, members: &Members) -> Value {
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
        "external_id": batch.external_id,
    });
    if let Some(at) = first.get("scheduled_at") {
        b["scheduled_at"] = at.clone();
    }
    b
}

/// Sends a batch (proven absent, or never sent): answered, it is recorded; in doubt, it is
/// left to settle.
pub(super) async fn send(
    ctx: Arc<Ctx>,
    hc: Arc<HelloClever>,
    batch: WorkBatch,
    members: Members,
) -> Result<(), StateError> {
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
    let sent = protocol::send(&ctx, &target, protocol::none, || hc.create_payout(&request)).await?;
    match sent {
        Sent::Answered(created, _) => record(&ctx, &batch, &members, &created).await,
        Sent::Claimed(..) | Sent::Recorded => Ok(()),
    }
}

/// A payout batch under the protocol: its intent and outcomes are the batch's and its
/// rows', in one transaction each.
pub(super) struct Batch<'a> {
    pub(super) batch: &'a WorkBatch,
    pub(super) members: &'a Members,
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
pub(super) async fn requeue(
    ctx: &Ctx,
    batch: &WorkBatch,
    members: &Members,
) -> Result<(), StateError> {
    let (id, ids): (i64, Vec<i64>) = (batch.id, members.iter().map(|(i, _)| i.id).collect());
    ctx.db
        .record(move |c| {
            work::set_batch(c, id, BatchState::Open, None, None, None)?;
            let pending = Outcome {
                state: ItemState::Pending,
                ..Outcome::default()
            };
            let all: Vec<(i64, &Outcome)> = ids.iter().map(|i| (*i, &pending)).collect();
            work::set_outcomes(c, &all)
        })
        .await
}

/// Records what the provider holds for a batch — its uuid, its status and funding answer,
/// and each row's transaction, matched by external id — in one transaction.
pub(super) async fn record(
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
            let all: Vec<(i64, &Outcome)> = updates.iter().map(|(i, o)| (*i, o)).collect();
            work::set_outcomes(c, &all)
        })
        .await
}

/// Fails a batch that never reached the provider, and all its rows, in one transaction.
pub(super) async fn fail_all(
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
            let failed = Outcome {
                state: ItemState::Failed,
                error_code: Some(code.clone()),
                error_message: Some(message.clone()),
                ..Outcome::default()
            };
            let all: Vec<(i64, &Outcome)> = ids.iter().map(|i| (*i, &failed)).collect();
            work::set_outcomes(c, &all)
        })
        .await
}
