//! A step's queue: the items it sends now, read a page at a time in file order; their
//! payloads; and the bound on tasks under way.

use super::doubt::{self, Resolve};
use super::{Ctx, RowSource, RunError, earlier_states, keep_ready};
use crate::job::{Job, Step};
use crate::state::work::{self, Outcome, WorkItem};
use crate::state::{ItemState, StateError};
use std::sync::Arc;
use tokio::task::JoinSet;

/// The step's items to send now (pending), of rows whose earlier steps are done, in file
/// order. They are read a page at a time, between the requests: the first request leaves
/// without waiting for the step's whole list, and a step of a
/// million rows does not hold them all. Items in doubt are passed over: they settle after
/// the step's other work ([`ToSend::settle`]).
pub(super) struct ToSend {
    si: usize,
    step: String,
    /// The last row read (its line and key).
    after: Option<(i64, String)>,
    earlier: Option<work::RowStates>,
    done: bool,
    /// Items in doubt were passed over (left by an earlier run).
    doubtful: bool,
    /// How many units had gone in doubt in the run when the step started.
    doubts_before: u64,
}

impl ToSend {
    /// The step's queue. Its rows that waited and were never sent (for an earlier step,
    /// or a refund for its payer) go back in it first: they are read again, and sent once
    /// what they waited for is done.
    pub(super) async fn open(si: usize, step: &Step, ctx: &Ctx) -> Result<ToSend, StateError> {
        let (plan_id, id) = (ctx.plan_id, step.id.clone());
        ctx.db
            .write(move |c| work::unblock_unsent(c, plan_id, &id))
            .await?;
        Ok(ToSend {
            si,
            step: step.id.clone(),
            after: None,
            earlier: earlier_states(ctx, si).await?,
            done: false,
            doubtful: false,
            doubts_before: ctx.entered_doubt.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Settles the step's items in doubt (see [`doubt::settle_items`]), when there are
    /// any: an earlier run's, or this step's.
    pub(super) async fn settle<R: Resolve>(
        &self,
        ctx: &Arc<Ctx>,
        rows: &mut RowSource<'_, '_>,
        op: &Arc<R>,
    ) -> Result<(), RunError> {
        let now = ctx.entered_doubt.load(std::sync::atomic::Ordering::Relaxed);
        if !self.doubtful && now == self.doubts_before {
            return Ok(());
        }
        doubt::settle_items(ctx, self.si, &self.step, rows, op).await
    }

    /// The next items ready to send: `n` of them, fewer only at the end; `None` after it.
    pub(super) async fn next(
        &mut self,
        job: &Job,
        ctx: &Ctx,
        n: usize,
    ) -> Result<Option<Vec<WorkItem>>, StateError> {
        let n = n.max(1);
        let mut ready = Vec::new();
        while !self.done && ready.len() < n {
            let want = n - ready.len();
            let (plan_id, step, after) = (ctx.plan_id, self.step.clone(), self.after.clone());
            let page = ctx
                .db
                .read(move |c| {
                    let states = [ItemState::Pending, ItemState::InFlight];
                    work::items_page(c, plan_id, &step, &states, after.as_ref(), want)
                })
                .await?;
            self.done = page.len() < want;
            if let Some(last) = page.last() {
                self.after = Some((last.row_line as i64, last.row_key.clone()));
            }
            let before = page.len();
            let page: Vec<WorkItem> = page
                .into_iter()
                .filter(|i| i.state != ItemState::InFlight)
                .collect();
            self.doubtful |= page.len() < before;
            ready.extend(keep_ready(job, self.si, ctx, page, self.earlier.as_ref())?);
        }
        Ok((!ready.is_empty()).then_some(ready))
    }
}

impl ToSend {
    /// Sends the step's items: a chunk at a time, the chunk's intents committed in one
    /// durable write just before its requests start, each request a task `spawn` makes.
    /// An item whose intent is written but whose request never left (a crash in between)
    /// is in doubt for the next run, which asks the provider before sending: correct, at
    /// the price of a lookup.
    pub(super) async fn send_all<T, F>(
        &mut self,
        job: &Job,
        ctx: &Ctx,
        rows: &mut RowSource<'_, '_>,
        form: fn(String) -> Result<T, String>,
        mut spawn: impl FnMut(WorkItem, Arc<T>) -> F,
    ) -> Result<(), RunError>
    where
        F: std::future::Future<Output = Result<(), StateError>> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let chunk_size = ctx.pacer.intent_chunk();
        while let Some(chunk) = self.next(job, ctx, chunk_size).await? {
            if ctx.stopping() {
                break;
            }
            let (ready, fresh) = payloads(ctx, self.si, chunk, rows, form)?;
            ctx.db
                .write(move |c| work::mark_in_flight(c, &fresh))
                .await?;
            for (item, payload) in ready {
                throttle(&mut tasks, chunk_size).await?;
                tasks.spawn(spawn(item, Arc::new(payload)));
            }
        }
        drain(&mut tasks).await
    }
}

/// A chunk's items ready to send with their payloads, and the ids whose intent is to be
/// written.
pub(super) type Ready<T> = (Vec<(WorkItem, T)>, Vec<i64>);

/// The payloads of a chunk's items, each in the form `form` makes of its fields' JSON
/// (rows that no longer render as planned are handled here), and the ids of those not in
/// flight yet, whose intent is to be written.
pub(super) fn payloads<T>(
    ctx: &Ctx,
    si: usize,
    chunk: Vec<WorkItem>,
    rows: &mut RowSource<'_, '_>,
    form: fn(String) -> Result<T, String>,
) -> Result<Ready<T>, StateError> {
    let mut ready = Vec::with_capacity(chunk.len());
    for mut item in chunk {
        match rows.payload(si, &mut item).and_then(form) {
            Ok(p) => ready.push((item, p)),
            Err(e) => unreadable(ctx, &item, e)?,
        }
    }
    let fresh = ready
        .iter()
        .filter(|(i, _)| i.state != ItemState::InFlight)
        .map(|(i, _)| i.id)
        .collect();
    Ok((ready, fresh))
}

/// A row that cannot be rendered as planned is not sent. An item already in flight stays
/// in doubt (it may have been applied); a pending one fails with the reason.
pub(super) fn unreadable(ctx: &Ctx, item: &WorkItem, why: String) -> Result<(), StateError> {
    if item.state == ItemState::InFlight {
        return Ok(());
    }
    ctx.outcome(item.id, row_changed(why))
}

/// A row that no longer renders as planned: failed, with why.
pub(super) fn row_changed(why: String) -> Outcome {
    Outcome {
        state: ItemState::Failed,
        error_code: Some("ROW_CHANGED".into()),
        error_message: Some(why),
        ..Outcome::default()
    }
}

/// Tasks queued at most where each may take long (a KYC waiting for its decision, a bulk
/// batch): a bound on memory, not on how many are under way.
pub(super) const LONG_TASKS: usize = 256;

/// Keeps at most `max` tasks queued, so memory stays bounded. With `max` a chunk, one
/// chunk waits its turn while the next one's intents are committed.
pub(super) async fn throttle(
    tasks: &mut JoinSet<Result<(), StateError>>,
    max: usize,
) -> Result<(), RunError> {
    while tasks.len() >= max.max(1) {
        join_one(tasks).await?;
    }
    Ok(())
}

pub(super) async fn drain(tasks: &mut JoinSet<Result<(), StateError>>) -> Result<(), RunError> {
    while !tasks.is_empty() {
        join_one(tasks).await?;
    }
    Ok(())
}

async fn join_one(tasks: &mut JoinSet<Result<(), StateError>>) -> Result<(), RunError> {
    match tasks.join_next().await {
        Some(Ok(r)) => r.map_err(RunError::from),
        Some(Err(e)) => Err(RunError::Worker(e)),
        None => Ok(()),
    }
}
