//! Batches in doubt: looked up by external id in the provider's listing once they settle; found, recorded; proven absent, sent again.

use super::*;

/// Settles the step's batches in doubt — an earlier run's, and this run's — looking them up
/// by external id in the provider's listing (one listing for all that are due); found, they
/// are recorded; proven absent, sent again. Returns whether there were any.
pub(super) async fn settle(
    ctx: &Arc<Ctx>,
    hc: &Arc<HelloClever>,
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
        let mut doubtful = ctx.batches_in(&step.id, &[BatchState::InFlight]).await?;
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
            |batches: Vec<WorkBatch>| look_up(ctx, hc, batches, latest),
        )
        .await;
        let mut tasks: JoinSet<Result<(), StateError>> = JoinSet::new();
        for (d, verdict) in settled {
            let b = d.unit;
            match verdict {
                Settled::Found(found) => {
                    crate::exec::pace::Stats::add(&ctx.pacer.stats.in_doubt_resolved);
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
                    tasks.spawn(send(ctx.clone(), hc.clone(), b, members));
                }
                Settled::Open => rounds.leave(b.id),
                Settled::Later => {}
            }
        }
        crate::exec::queue::drain(&mut tasks).await?;
        ctx.db.settled().await?;
    }
    Ok(any)
}

/// Looks batches up by external id in one read of the provider's listing, over a window
/// from the first one's first attempt to past the latest scheduled payout; the oldest
/// batch carrying an external id is its batch (a second one is a duplicate, said by the
/// duplicate check).
pub(super) async fn look_up(
    ctx: &Ctx,
    hc: &Arc<HelloClever>,
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
    match listing::scan(ctx, hc, window, keep).await {
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
