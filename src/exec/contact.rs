//! Contacts: create; when the contact exists already, bring it to the row's values (or
//! leave it when equal). In doubt, the contact is looked up by email, under the settle
//! rule of [`super::doubt`], before any resend.

use super::doubt::{self, Resolve};
use super::{Ctx, Next, RowSource, RunError, earlier_states, keep_ready, parse_fields};
use crate::job::{Job, Step};
use crate::provider::error::{CallError, Verdict};
use crate::provider::helloclever::wire::Contact;
use crate::state::work::{self, Outcome, WorkItem};
use crate::state::{ItemState, StateError};
use serde_json::{Map, Value};
use std::future::Future;
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
    let mut items = ToSend::open(si, step, ctx).await?;
    let mut tasks = JoinSet::new();
    // Intents are committed for a chunk of items at once. An item whose intent is written
    // but whose request never left (a crash in between) is in doubt for the next run,
    // which asks the provider before sending: correct, at the price of a lookup.
    let chunk_size = ctx.pacer.intent_chunk();
    while let Some(chunk) = items.next(job, ctx, chunk_size).await? {
        if ctx.stopping() {
            break;
        }
        let (ready, fresh) = payloads(ctx, si, chunk, rows, Body::new)?;
        // One durable commit for the intents of the chunk, just before its requests start.
        ctx.db
            .write(move |c| work::mark_in_flight(c, &fresh))
            .await?;
        for (item, payload) in ready {
            throttle(&mut tasks, chunk_size).await?;
            tasks.spawn(process(ctx.clone(), item, Arc::new(payload)));
        }
    }
    drain(&mut tasks).await?;
    items.settle(ctx, rows, &Arc::new(Contacts)).await
}

/// Contacts in doubt: looked up by email; found, brought to the row's values.
struct Contacts;

impl Resolve for Contacts {
    type Body = Body;
    type Found = Contact;

    fn body(&self, json: String) -> Result<Body, String> {
        Body::new(json)
    }

    fn lookup(
        &self,
        ctx: &Arc<Ctx>,
        _item: &WorkItem,
        body: &Arc<Body>,
        _not_before: tokio::time::Instant,
    ) -> impl Future<Output = Result<Option<Contact>, CallError>> + Send + 'static {
        let (ctx, body) = (ctx.clone(), body.clone());
        async move { idempotent(&ctx, || async { ctx.hc()?.contact(&body.email).await }).await }
    }

    fn found(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Body>,
        found: Contact,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, item.id, found, &body).await }
    }

    fn send(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Body>,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        process(ctx.clone(), item, body)
    }
}

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
    pub(super) async fn open(si: usize, step: &Step, ctx: &Ctx) -> Result<ToSend, StateError> {
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
fn row_changed(why: String) -> Outcome {
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
        Some(Err(e)) => Err(RunError::Fatal(format!("a worker task failed: {e}"))),
        None => Ok(()),
    }
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

pub(super) fn failed(e: &CallError) -> Outcome {
    let message = match e {
        CallError::Status { message, .. } => message.clone(),
        other => other.to_string(),
    };
    Outcome {
        state: ItemState::Failed,
        error_code: Some(e.code()),
        error_message: Some(message),
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

fn succeeded(email: &str, status: &str) -> Outcome {
    Outcome {
        state: ItemState::Succeeded,
        provider_ref: Some(email.to_string()),
        provider_status: Some(status.to_string()),
        ..Outcome::default()
    }
}

/// Whether the provider holds the contact with the row's values already.
fn same(existing: &Contact, payload: &Map<String, Value>) -> bool {
    payload.iter().all(|(k, v)| {
        let theirs = if k == "email" {
            Some(Value::String(existing.email.clone()))
        } else {
            existing.fields.get(k).cloned()
        };
        match (v, theirs) {
            (Value::String(a), Some(Value::String(b))) => {
                a.eq_ignore_ascii_case(&b) && (k == "email" || a == &b)
            }
            (a, Some(b)) => *a == b,
            (_, None) => false,
        }
    })
}

/// A contact's request body: the row's fields as JSON text, sent as they are, and the
/// email they hold.
pub(super) struct Body {
    json: String,
    email: String,
}

impl Body {
    pub(super) fn new(json: String) -> Result<Body, String> {
        #[derive(serde::Deserialize)]
        struct Email {
            #[serde(default)]
            email: String,
        }
        let Email { email } = parse_fields(&json)?;
        Ok(Body { json, email })
    }
}

/// The contact exists: leave it when equal, else update it to the row's values.
async fn reconcile(ctx: &Ctx, id: i64, existing: Contact, body: &Body) -> Result<(), StateError> {
    let email = existing.email.clone();
    // `Body::new` read it as a JSON object already: this does not fail, and if it did, the
    // contact is not updated to an empty one.
    let payload = &match parse_fields::<Map<String, Value>>(&body.json) {
        Ok(p) => p,
        Err(why) => return ctx.outcome(id, row_changed(why)),
    };
    if same(&existing, payload) {
        return ctx.outcome(id, succeeded(&email, "unchanged"));
    }
    match idempotent(ctx, || async { ctx.hc()?.update_contact(payload).await }).await {
        Ok(_) => ctx.outcome(id, succeeded(&email, "updated")),
        Err(e) => ctx.outcome(id, failed(&e)),
    }
}

fn already_exists(e: &CallError) -> bool {
    matches!(e, CallError::Status { status: 422, message, .. } if message.contains("already"))
}

/// Sends one contact (its first intent is written): answered, it is recorded; in doubt, it
/// is left to settle.
async fn process(ctx: Arc<Ctx>, item: WorkItem, payload: Arc<Body>) -> Result<(), StateError> {
    let email = &payload.email;
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let Some(slot) = ctx.begin_send(item.id, attempt > 1).await? else {
            return Ok(());
        };
        let sent = chrono::Utc::now();
        let result = async { ctx.hc()?.create_contact(payload.json.clone()).await }.await;
        drop(slot);
        let e = match result {
            Ok(_) => return ctx.outcome(item.id, succeeded(email, "created")),
            Err(e) => e,
        };
        if already_exists(&e) {
            return match idempotent(&ctx, || async { ctx.hc()?.contact(email).await }).await {
                Ok(Some(existing)) => reconcile(&ctx, item.id, existing, &payload).await,
                Ok(None) => ctx.outcome(item.id, failed(&e)),
                Err(lookup) => ctx.outcome(item.id, failed(&lookup)),
            };
        }
        match ctx.after_failure(&e, attempt, started).await {
            Next::Retry => {}
            Next::InDoubt { applied } => {
                return ctx.in_doubt(work::Unit::Item(item.id), sent, applied);
            }
            Next::Requeue => return ctx.requeue(item.id),
            Next::Fail => return ctx.outcome(item.id, gave_up(&e, attempt)),
        }
    }
}
