//! The rows behind items: re-read and rendered when sent, and whether a row may enter a
//! step (its earlier steps done).

use super::*;

/// A row's fields (the JSON text [`RowSource::payload`] gives) in the form a step needs.
pub(crate) fn parse_fields<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("the row's fields are not JSON: {e}"))
}

/// The bodies of items to send: the planned payload kept in state when nothing in it is
/// masked; otherwise the row read back from the CSV and rendered again, checked against
/// what was planned.
pub(crate) struct RowSource<'a, 'r> {
    pub(super) renderer: &'a Renderer<'a>,
    pub(super) reader: &'r mut RecordReader,
}

impl RowSource<'_, '_> {
    /// The full fields of `item` in step `si`, if the row still renders to what was planned.
    pub fn fields(&mut self, si: usize, item: &mut WorkItem) -> Result<Map<String, Value>, String> {
        parse_fields(&self.payload(si, item)?)
    }

    /// [`RowSource::fields`] as the canonical JSON text they were rendered to. When the
    /// state holds that text already (nothing in it masked), it is what is sent: exactly
    /// what was planned, with no need to read the row again (it is taken out of `item`).
    pub fn payload(&mut self, si: usize, item: &mut WorkItem) -> Result<String, String> {
        match item.take_planned_body(self.renderer.key()) {
            Some(body) => Ok(body),
            None => self.rendered(si, item),
        }
    }

    /// The row of `item` read from the file and rendered again, checked to be what was
    /// planned.
    fn rendered(&mut self, si: usize, item: &WorkItem) -> Result<String, String> {
        let record = self
            .reader
            .read_at(item.row_offset, item.row_line)
            .map_err(|e| e.to_string())?;
        let planned = self
            .renderer
            .render(&record, item.row_line, &item.row_key, si)
            .map_err(|errs| {
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?
            .ok_or("the row no longer renders this step")?;
        if planned.hash != item.content_hash {
            return Err(
                "the row changed since it was planned; run again to plan the change".into(),
            );
        }
        planned
            .send
            .ok_or_else(|| "the row does not take part in this step any more".into())
    }
}

/// Whether a row may enter step `si`: every earlier step's item succeeded (KYC with a wait
/// also approved, a payin also paid) or was skipped. Otherwise, why not.
pub(crate) fn ready(
    job: &Job,
    si: usize,
    row_key: &str,
    states: &work::RowStates,
) -> Result<(), String> {
    for earlier in &job.steps[..si] {
        let Some((state, provider_status)) = states.get(&(row_key.to_string(), earlier.id.clone()))
        else {
            continue;
        };
        // KYC with a wait is done once approved; a payin, once its payer paid.
        let done = match earlier.kind {
            StepKind::Kyc if earlier.wait.is_some() => {
                provider_status.as_deref() == Some("approved")
            }
            StepKind::Payin => crate::report::payin_paid(provider_status.as_deref()),
            _ => true,
        };
        match state {
            ItemState::Skipped => {}
            ItemState::Succeeded if done => {}
            ItemState::Failed => return Err(format!("step '{}' failed for this row", earlier.id)),
            _ => return Err(format!("waiting for step '{}'", earlier.id)),
        }
    }
    Ok(())
}

/// Marks items whose row is not ready as blocked, and returns the ready ones.
pub(crate) async fn split_ready(
    job: &Job,
    si: usize,
    ctx: &Ctx,
    items: Vec<WorkItem>,
) -> Result<Vec<WorkItem>, StateError> {
    let earlier = earlier_states(ctx, si).await?;
    keep_ready(job, si, ctx, items, earlier.as_ref())
}

/// What [`keep_ready`] needs to know of the rows' earlier steps (nothing for the first).
pub(crate) async fn earlier_states(
    ctx: &Ctx,
    si: usize,
) -> Result<Option<work::RowStates>, StateError> {
    if si == 0 {
        return Ok(None);
    }
    let plan_id = ctx.plan_id;
    Ok(Some(
        ctx.db.read(move |c| work::row_states(c, plan_id)).await?,
    ))
}

/// [`split_ready`] with the earlier steps' states read already.
pub(crate) fn keep_ready(
    job: &Job,
    si: usize,
    ctx: &Ctx,
    items: Vec<WorkItem>,
    earlier: Option<&work::RowStates>,
) -> Result<Vec<WorkItem>, StateError> {
    let Some(states) = earlier else {
        return Ok(items);
    };
    let mut go = Vec::with_capacity(items.len());
    for item in items {
        match ready(job, si, &item.row_key, states) {
            Ok(()) => go.push(item),
            // In-flight items were sent: they are resolved whatever their row does now.
            Err(_) if item.state == ItemState::InFlight => go.push(item),
            Err(why) => {
                let o = Outcome {
                    state: ItemState::Blocked,
                    error_code: Some("WAITING".into()),
                    error_message: Some(why),
                    ..Outcome::default()
                };
                ctx.outcome(item.id, o)?;
            }
        }
    }
    Ok(go)
}
