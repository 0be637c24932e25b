//! The idempotency protocol, once for every mutating request of every step and provider:
//! the intent is committed, a rate-limit permit taken, the request sent; a failure is
//! decided here and only here ([`decide`]): retried after a backoff, left in doubt (it may
//! have been applied: it settles and is looked up, never sent again first), put back in
//! the queue (stopping), or failed. A step supplies what it sends ([`send`]'s call), what
//! it records the protocol's decisions on ([`Target`]: an item, a chunk of items, a payout
//! batch), and which error answers it handles itself (e.g. "already exists" → update).
//! Idempotent calls (lookups, updates) retry by [`idempotent`].

use super::{Ctx, Halt, SAME_ANSWER};
use crate::provider::error::{CallError, Verdict};
use crate::state::work::{self, Outcome};
use crate::state::{ItemState, StateError};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// What to do after a failed attempt.
pub(crate) enum Next {
    /// Surely not applied; the wait is done: send again.
    Retry,
    /// It may have been applied (`applied`: it was — a 2xx that could not be read): it is
    /// left in flight, and settles at the end of its step (see [`super::doubt`]).
    InDoubt { applied: bool },
    /// Refused, or out of attempts and surely not applied.
    Fail,
    /// Stopping (a signal) and surely not applied: back to the queue for the next run.
    Requeue,
}

/// What the protocol records its decisions on.
pub(super) trait Target: Sync {
    /// Commits the intent of attempt `attempt` (1-based) before its request leaves.
    fn intent(
        &self,
        ctx: &Ctx,
        attempt: u32,
    ) -> impl Future<Output = Result<(), StateError>> + Send;

    /// The request, sent at `sent`, may have been applied (`applied`: it was).
    fn in_doubt(&self, ctx: &Ctx, sent: DateTime<Utc>, applied: bool) -> Result<(), StateError>;

    /// Surely not sent: back to the queue for the next run.
    fn requeue(&self, ctx: &Ctx) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Given up: fails with `outcome`.
    fn fail(
        &self,
        ctx: &Ctx,
        outcome: Outcome,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
}

/// One item. Its first intent may have been committed with its chunk already.
pub(super) struct Item {
    pub id: i64,
    pub intent_written: bool,
}

impl Target for Item {
    async fn intent(&self, ctx: &Ctx, attempt: u32) -> Result<(), StateError> {
        if attempt > 1 || !self.intent_written {
            let id = self.id;
            ctx.db
                .write(move |c| work::mark_in_flight(c, &[id]))
                .await?;
        }
        Ok(())
    }

    fn in_doubt(&self, ctx: &Ctx, sent: DateTime<Utc>, applied: bool) -> Result<(), StateError> {
        ctx.in_doubt(work::Unit::Item(self.id), sent, applied)
    }

    async fn requeue(&self, ctx: &Ctx) -> Result<(), StateError> {
        ctx.requeue(self.id)
    }

    async fn fail(&self, ctx: &Ctx, outcome: Outcome) -> Result<(), StateError> {
        ctx.outcome(self.id, outcome)
    }
}

/// Items sent in one request (a bulk create): every attempt commits their intents.
pub(super) struct Items(pub Vec<i64>);

impl Target for Items {
    async fn intent(&self, ctx: &Ctx, _attempt: u32) -> Result<(), StateError> {
        let ids = self.0.clone();
        ctx.db.write(move |c| work::mark_in_flight(c, &ids)).await
    }

    fn in_doubt(&self, ctx: &Ctx, sent: DateTime<Utc>, applied: bool) -> Result<(), StateError> {
        for id in &self.0 {
            ctx.in_doubt(work::Unit::Item(*id), sent, applied)?;
        }
        Ok(())
    }

    async fn requeue(&self, ctx: &Ctx) -> Result<(), StateError> {
        for id in &self.0 {
            ctx.requeue(*id)?;
        }
        Ok(())
    }

    async fn fail(&self, ctx: &Ctx, outcome: Outcome) -> Result<(), StateError> {
        for id in &self.0 {
            ctx.outcome(*id, outcome.clone())?;
        }
        Ok(())
    }
}

/// When a request left: the wall-clock time recorded for the settle rule, and the
/// monotonic one a lookup counts from.
#[derive(Debug, Clone, Copy)]
pub(super) struct SentAt {
    pub wall: DateTime<Utc>,
    pub mono: Instant,
}

/// How a request sent under the protocol ended.
pub(super) enum Sent<T> {
    /// The provider answered it.
    Answered(T, SentAt),
    /// The provider refused it with an answer the step handles itself.
    Claimed(CallError, SentAt),
    /// In doubt, back in the queue, or failed: the protocol recorded it.
    Recorded,
}

/// Sends one mutating request under the protocol (see the module's documentation): `call`
/// makes the request, once per attempt; an error `claim` accepts is the step's to handle.
pub(super) async fn send<T, F, Fut>(
    ctx: &Ctx,
    target: &impl Target,
    claim: impl Fn(&CallError) -> bool,
    mut call: F,
) -> Result<Sent<T>, StateError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        target.intent(ctx, attempt).await?;
        let slot = ctx.pacer.permit().await;
        if ctx.stopping() {
            // Stopping (a signal, or refused credentials): not sent.
            drop(slot);
            target.requeue(ctx).await?;
            return Ok(Sent::Recorded);
        }
        let at = SentAt {
            wall: Utc::now(),
            mono: Instant::now(),
        };
        let result = call().await;
        drop(slot);
        let e = match result {
            Ok(v) => return Ok(Sent::Answered(v, at)),
            Err(e) if claim(&e) => return Ok(Sent::Claimed(e, at)),
            Err(e) => e,
        };
        match decide(ctx, &e, attempt, started).await {
            Next::Retry => {}
            Next::InDoubt { applied } => {
                target.in_doubt(ctx, at.wall, applied)?;
                return Ok(Sent::Recorded);
            }
            Next::Requeue => {
                target.requeue(ctx).await?;
                return Ok(Sent::Recorded);
            }
            Next::Fail => {
                target.fail(ctx, gave_up(&e, attempt)).await?;
                return Ok(Sent::Recorded);
            }
        }
    }
}

/// No error is the step's own: every failure is the protocol's.
pub(super) fn none(_: &CallError) -> bool {
    false
}

/// Decides what a failed attempt leads to: a 429 holds every sender; a request that may
/// have been applied is in doubt at once (it is never sent again before it settles);
/// others are retried with backoff until their attempts run out, then fail.
async fn decide(ctx: &Ctx, e: &CallError, attempt: u32, started: Instant) -> Next {
    // Credentials refused: every request would be, so stop and keep the rows pending.
    // (FinHub's client has already renewed its token once before this.)
    if let CallError::Status {
        status: status @ (401 | 403),
        message,
        ..
    } = e
    {
        return halt(ctx, Halt::Refused(format!("HTTP {status}: {message}")));
    }
    match e.verdict() {
        Verdict::Reject => refused(ctx, e),
        Verdict::Retry {
            maybe_applied,
            after,
        } => {
            if e.is_rate_limited() {
                ctx.pacer.rate_limited(after);
            }
            if maybe_applied {
                return Next::InDoubt {
                    applied: matches!(e, CallError::Decode(_)),
                };
            }
            if ctx.stopping() {
                return Next::Requeue;
            }
            let exhausted =
                attempt >= ctx.pacer.attempts() || started.elapsed() > ctx.pacer.max_elapsed();
            match exhausted {
                // Not a row's fault: a connection is refused, or times out, for every row.
                true if matches!(e, CallError::Connect(_)) => halt(
                    ctx,
                    Halt::Unreachable(format!(
                        "{e}, {attempt} attempt(s) over {:.1} s",
                        started.elapsed().as_secs_f64()
                    )),
                ),
                true => Next::Fail,
                false => {
                    tokio::time::sleep(ctx.pacer.delay(attempt, after)).await;
                    Next::Retry
                }
            }
        }
    }
}

/// A refusal: the row fails, unless nothing has succeeded yet and the last
/// [`SAME_ANSWER`] refusals were this same one — then the run stops.
fn refused(ctx: &Ctx, e: &CallError) -> Next {
    if ctx.any_success.load(Ordering::Relaxed) {
        return Next::Fail;
    }
    let message = message_of(e);
    let code = e.code();
    let mut same = ctx.same_answer.lock().unwrap_or_else(|p| p.into_inner());
    let n = match &mut *same {
        Some((c, m, n)) if *c == code && *m == message => {
            *n += 1;
            *n
        }
        _ => {
            *same = Some((code.clone(), message.clone(), 1));
            1
        }
    };
    drop(same);
    if n >= SAME_ANSWER {
        return halt(ctx, Halt::SameAnswer { code, message });
    }
    Next::Fail
}

/// Stops the run for `why` (the first reason is kept); the unit at hand goes back to the
/// queue, its request surely not applied.
fn halt(ctx: &Ctx, why: Halt) -> Next {
    ctx.halt
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(why);
    ctx.stop.store(true, Ordering::Relaxed);
    Next::Requeue
}

/// Calls an idempotent operation (a lookup, an update), retrying what is retryable.
pub(super) async fn idempotent<T, F, Fut>(ctx: &Ctx, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let slot = ctx.pacer.permit().await;
        let result = call().await;
        drop(slot);
        match result {
            Ok(v) => return Ok(v),
            Err(e) => match e.verdict() {
                Verdict::Retry { after, .. } if attempt < ctx.pacer.attempts() => {
                    if e.is_rate_limited() {
                        ctx.pacer.rate_limited(after);
                    }
                    tokio::time::sleep(ctx.pacer.delay(attempt, after)).await;
                }
                _ => return Err(e),
            },
        }
    }
}

/// The provider's own words for a refusal, else the error.
fn message_of(e: &CallError) -> String {
    match e {
        CallError::Status { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A refusal as a row's outcome: failed, with the provider's code and words.
pub(super) fn failed(e: &CallError) -> Outcome {
    Outcome {
        state: ItemState::Failed,
        error_code: Some(e.code()),
        error_message: Some(message_of(e)),
        ..Outcome::default()
    }
}

/// A failure after retries: a retryable error says how many attempts were made.
pub(super) fn gave_up(e: &CallError, attempt: u32) -> Outcome {
    let mut o = failed(e);
    if e.verdict() != Verdict::Reject {
        o.error_message = Some(format!(
            "gave up after {attempt} attempts: {}",
            o.error_message.unwrap_or_default()
        ));
    }
    o
}
