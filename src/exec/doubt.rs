//! Requests in doubt, and the one rule that decides when "not found" is proof of absence.
//!
//! A request that may have been applied — no reply within the timeout, a connection broken
//! after the body left, a 5xx from a gateway, a 2xx whose body could not be read — is in
//! doubt, and is never sent again until the provider is proven not to hold it:
//!
//! - no lookup counts before `limits.settle` has passed since the attempt was sent: until
//!   then the provider, or a gateway in front of it, may still apply it;
//! - absence is proven by two lookups at least `limits.settle_recheck` apart that both
//!   found nothing (a listing may not show yet what exists);
//! - a 2xx whose body could not be read was applied: it is looked up to record it, and
//!   never sent again.
//!
//! Every step's units in doubt (items, or payout batches) settle here, at the end of the
//! step, after its other work: the run says how many wait and when it will look.

use super::{Ctx, RowSource, RunError};
use crate::provider::error::CallError;
use crate::state::work::{self, WorkItem};
use crate::state::{ItemState, StateError};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// A unit (an item, a batch) whose last request may have been applied.
pub(crate) struct Doubt<U> {
    pub unit: U,
    /// When the request in doubt was sent.
    pub since: DateTime<Utc>,
    /// A 2xx that could not be read: it was applied; it is never sent again.
    pub applied: bool,
}

/// What settling concluded.
pub(crate) enum Settled<T> {
    /// The provider holds it.
    Found(T),
    /// Proven absent: it may be sent again.
    Absent,
    /// Not known yet (a lookup failed, the run is stopping, or an applied request is not
    /// listed yet): it stays in doubt.
    Open,
    /// Not looked at in this round (more were due than a round holds, or they are due
    /// later): the caller comes back for it.
    Later,
}

/// Units settled together at most: what one round holds in memory.
const ROUND: usize = 1024;

/// Units due this soon after the first of a round are looked up with it.
const GATHER: chrono::Duration = chrono::Duration::seconds(1);

/// When a unit in doubt was sent, from its stored time. A unit with none (its run ended
/// before it could record it) counts from `now`: the latest it can have been sent.
pub(crate) fn since(stored: Option<&str>, now: DateTime<Utc>) -> DateTime<Utc> {
    stored
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc))
}

/// Settles `units` (the first [`ROUND`] due; the caller comes back for the rest): waits
/// for their settle points, then looks them up with `look` — called with the units due,
/// so one listing can serve many — twice, `settle_recheck` apart, until each is found or
/// proven absent. `what` names them in the log, where the first wait of a step is said
/// (`said` then holds).
pub(crate) async fn settle<U, T, F, Fut>(
    ctx: &Ctx,
    (what, said): (&str, &mut bool),
    mut units: Vec<Doubt<U>>,
    mut look: F,
) -> Vec<(Doubt<U>, Settled<T>)>
where
    U: Clone,
    F: FnMut(Vec<U>) -> Fut,
    Fut: Future<Output = Vec<Result<Option<T>, CallError>>>,
{
    units.sort_by_key(|d| d.since);
    let mut out = Vec::with_capacity(units.len());
    let settle = chrono::Duration::from_std(ctx.settle).unwrap_or(chrono::Duration::MAX);
    let Some(first) = units.first() else {
        return out;
    };
    // The round: the units due by the first one's settle point, or within a second of it
    // (up to ROUND): they are looked up together, once the last of them is due.
    let now = Utc::now();
    let horizon = (first.since + settle).max(now) + GATHER;
    let round = units
        .iter()
        .take(ROUND)
        .take_while(|d| d.since + settle <= horizon)
        .count()
        .max(1);
    let rest = units.split_off(round);
    out.extend(rest.into_iter().map(|d| (d, Settled::Later)));
    let due = units.iter().map(|d| d.since + settle).max().unwrap_or(now);
    let wait = (due - now).to_std().unwrap_or(Duration::ZERO);
    if !wait.is_zero() {
        if !std::mem::replace(said, true) {
            tracing::info!(
                "{} {what} in doubt: the provider may still apply them; looking them up at {} (limits.settle: {:.1} s after each was sent)",
                units.len() + out.len(),
                due.with_timezone(&chrono::Local).format("%H:%M:%S"),
                ctx.settle.as_secs_f64()
            );
        }
        ctx.waiting(Some(format!(
            "waiting for {} {what} in doubt to settle (looking them up at {})",
            units.len() + out.len(),
            due.with_timezone(&chrono::Local).format("%H:%M:%S")
        )));
        let settled = ctx.settle_pause(wait).await;
        ctx.waiting(None);
        if !settled {
            out.extend(units.into_iter().map(|d| (d, Settled::Open)));
            return out;
        }
    }
    let mut misses = Vec::new();
    let found = look(units.iter().map(|d| d.unit.clone()).collect()).await;
    for (d, r) in units.into_iter().zip(found) {
        match r {
            Ok(Some(t)) => out.push((d, Settled::Found(t))),
            Ok(None) => misses.push(d),
            Err(_) => out.push((d, Settled::Open)),
        }
    }
    if misses.is_empty() {
        return out;
    }
    // Listings lag: absent only when a second look, a while later, agrees.
    if !ctx.settle_pause(ctx.settle_recheck).await {
        out.extend(misses.into_iter().map(|d| (d, Settled::Open)));
        return out;
    }
    let again = look(misses.iter().map(|d| d.unit.clone()).collect()).await;
    for (d, r) in misses.into_iter().zip(again) {
        let verdict = match r {
            Ok(Some(t)) => Settled::Found(t),
            Ok(None) if d.applied => Settled::Open,
            Ok(None) => Settled::Absent,
            Err(_) => Settled::Open,
        };
        out.push((d, verdict));
    }
    out
}

/// What one step's settling knows across its rounds: the units it leaves in doubt for the
/// next run, how often each was sent again, and whether it has said that it waits.
#[derive(Default)]
pub(crate) struct Rounds {
    left: HashSet<i64>,
    resent: HashMap<i64, u32>,
    pub said: bool,
}

impl Rounds {
    /// Whether unit `id` is still this run's to settle.
    pub fn open(&self, id: i64) -> bool {
        !self.left.contains(&id)
    }

    /// Leaves unit `id` in doubt for the next run.
    pub fn leave(&mut self, id: i64) {
        self.left.insert(id);
    }

    /// Counts a settled verdict in the run's figures and, for one proven absent, whether it
    /// may be sent again (it has attempts left; otherwise it is left in doubt).
    pub fn resend(&mut self, ctx: &Ctx, id: i64) -> bool {
        super::pace::Stats::add(&ctx.pacer.stats.in_doubt_resolved);
        let n = self.resent.entry(id).or_default();
        if *n >= ctx.pacer.attempts() {
            self.left.insert(id);
            return false;
        }
        *n += 1;
        true
    }
}

/// What a step does with its items in doubt: look one up, record it found, send it again.
pub(crate) trait Resolve: Send + Sync + 'static {
    /// An item's body, in the form the step sends it.
    type Body: Send + Sync + 'static;
    /// What a lookup finds of a request the provider holds.
    type Found: Send + 'static;

    fn body(&self, json: String) -> Result<Self::Body, String>;

    /// Asks the provider whether the item's request was applied; a listing read before
    /// `not_before` must not answer (see [`super::finhub`]'s cache).
    fn lookup(
        &self,
        ctx: &Arc<Ctx>,
        item: &WorkItem,
        body: &Arc<Self::Body>,
        not_before: tokio::time::Instant,
    ) -> impl Future<Output = Result<Option<Self::Found>, CallError>> + Send + 'static;

    /// Records an item the provider holds.
    fn found(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Self::Body>,
        found: Self::Found,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static;

    /// Sends a proven-absent item again (its new intent is written).
    fn send(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Self::Body>,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static;
}

/// Settles a step's items in doubt — those its run left, and those this run's requests
/// left — until each is found, sent again and answered, or left in doubt for the next run
/// (its lookups failed, the run is stopping, or it has had its attempts).
pub(crate) async fn settle_items<R: Resolve>(
    ctx: &Arc<Ctx>,
    si: usize,
    step: &str,
    rows: &mut RowSource<'_, '_>,
    op: &Arc<R>,
) -> Result<(), RunError> {
    let mut rounds = Rounds::default();
    loop {
        if ctx.stopping() {
            break;
        }
        let mut doubtful = ctx.items_in(step, &[ItemState::InFlight]).await?;
        doubtful.retain(|i| rounds.open(i.id));
        doubtful.truncate(ROUND);
        if doubtful.is_empty() {
            break;
        }
        let now = Utc::now();
        let mut units = Vec::with_capacity(doubtful.len());
        for mut item in doubtful {
            if item.doubt_since.is_none() {
                item.doubt_since = Some(record_since(ctx, item.id, now)?);
            }
            match rows.payload(si, &mut item).and_then(|j| op.body(j)) {
                Ok(body) => units.push(Doubt {
                    since: since(item.doubt_since.as_deref(), now),
                    applied: item.doubt_applied,
                    unit: (item, Arc::new(body)),
                }),
                // Its row no longer renders as sent: nothing to look it up by.
                Err(_) => rounds.leave(item.id),
            }
        }
        let settled = settle(
            ctx,
            ("request(s)", &mut rounds.said),
            units,
            |batch: Vec<(WorkItem, Arc<R::Body>)>| {
                let (ctx, op) = (ctx.clone(), op.clone());
                async move {
                    let not_before = tokio::time::Instant::now();
                    let mut looks = JoinSet::new();
                    for (i, (item, body)) in batch.iter().enumerate() {
                        let lookup = op.lookup(&ctx, item, body, not_before);
                        looks.spawn(async move { (i, lookup.await) });
                    }
                    let mut out: Vec<Option<Result<Option<R::Found>, CallError>>> =
                        (0..batch.len()).map(|_| None).collect();
                    while let Some(done) = looks.join_next().await {
                        if let Ok((i, r)) = done {
                            out[i] = Some(r);
                        }
                    }
                    out.into_iter()
                        .map(|r| {
                            r.unwrap_or_else(|| {
                                Err(CallError::Transport("lookup task failed".into()))
                            })
                        })
                        .collect()
                }
            },
        )
        .await;
        let mut tasks = JoinSet::new();
        let mut fresh = Vec::new();
        for (d, verdict) in settled {
            let (item, body) = d.unit;
            match verdict {
                Settled::Found(found) => {
                    super::pace::Stats::add(&ctx.pacer.stats.in_doubt_resolved);
                    tasks.spawn(op.found(ctx, item, body, found));
                }
                Settled::Absent => {
                    if rounds.resend(ctx, item.id) {
                        fresh.push((item, body));
                    }
                }
                Settled::Open => rounds.leave(item.id),
                Settled::Later => {}
            }
        }
        if !fresh.is_empty() {
            let ids: Vec<i64> = fresh.iter().map(|(i, _)| i.id).collect();
            ctx.db.write(move |c| work::mark_in_flight(c, &ids)).await?;
            for (item, body) in fresh {
                tasks.spawn(op.send(ctx, item, body));
            }
        }
        super::queue::drain(&mut tasks).await?;
        ctx.db.settled().await?;
    }
    Ok(())
}

/// Records `now` as the time an item in doubt was sent, when its run could not (it ended
/// first): the latest it can have been sent, so the whole settle window is waited.
fn record_since(ctx: &Ctx, id: i64, now: DateTime<Utc>) -> Result<String, StateError> {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let stored = at.clone();
    ctx.db
        .record_later(move |c| work::set_doubt(c, work::Unit::Item(id), &stored, false))?;
    Ok(at)
}
