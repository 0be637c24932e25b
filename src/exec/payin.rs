//! Payins: one payment request per row (`POST /v2/payins`), with its external id; the pay
//! details the provider gives (a PayID, a pay URL) recorded for the row. A request in
//! doubt is looked up by its external id in the payins listing, under the settle rule of
//! [`super::doubt`], before it is ever sent again. With `wait: {until: received}`, the
//! step follows its payins `pending → received | expired`: one still pending at the
//! timeout is `blocked` (the payer may still pay; the next run looks again), never failed.
//!
//! Refunds: one per row, of the row's received payin (the job's payin step's, or the one
//! the row names). A refund carries no reference of ours, so payrun refunds a payin once:
//! one refunded already is not refunded again, and a refund in doubt is found by the
//! payin's status having moved to `return_…`.

use super::doubt::Resolve;
use super::listing::{Window, scan_records};
use super::protocol::{self, Sent, idempotent};
use super::queue::{ToSend, drain, payloads, throttle};
use super::{Change, Ctx, RowSource, RunError, parse_fields};
use crate::job::{Job, Step};
use crate::provider::error::CallError;
use crate::provider::helloclever::client::HelloClever;
use crate::provider::helloclever::wire::Payin;
use crate::report::payin_paid;
use crate::state::work::{self, Outcome, WorkItem};
use crate::state::{ItemState, StateError};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Sends a payin step's rows, settles those in doubt, then (with a wait) follows them.
pub async fn run(
    job: &Job,
    si: usize,
    step: &Step,
    ctx: &Arc<Ctx>,
    hc: &Arc<HelloClever>,
    rows: &mut RowSource<'_, '_>,
) -> Result<(), RunError> {
    let mut items = ToSend::open(si, step, ctx).await?;
    items
        .send_all(job, ctx, rows, Body::new, |item, body| {
            send(ctx.clone(), hc.clone(), item, body, true)
        })
        .await?;
    let op = Arc::new(Payins {
        hc: hc.clone(),
        since: first_sent(ctx, &step.id).await?,
        listed: Arc::new(tokio::sync::Mutex::new(None)),
    });
    items.settle(ctx, rows, &op).await?;
    if let Some(wait) = &step.wait
        && !ctx.stopping()
    {
        let every = ctx.poll_every(wait.poll);
        ctx.poll_until(wait.timeout, every, |expired| async move {
            let n = follow(ctx, hc, &step.id, Some((expired, wait.timeout))).await?;
            Ok((n > 0).then(|| format!("waiting for {n} payer(s) to pay")))
        })
        .await?;
    }
    Ok(())
}

/// A payin's request body: the row's fields as the provider takes them (the amount a JSON
/// number of its exact digits, `gst` a boolean, the item's external id).
pub(super) struct Body {
    fields: Map<String, Value>,
}

impl Body {
    fn new(json: String) -> Result<Body, String> {
        let mut fields: Map<String, Value> = parse_fields(&json)?;
        if let Some(Value::String(a)) = fields.get("amount") {
            let exact: Value = serde_json::from_str(a).map_err(|e| format!("amount {a}: {e}"))?;
            fields.insert("amount".into(), exact);
        }
        let gst = fields.get("gst").and_then(Value::as_str) == Some("true");
        fields.insert("gst".into(), Value::Bool(gst));
        fields
            .entry("payin_method_params")
            .or_insert_with(|| Value::Object(Map::new()));
        Ok(Body { fields })
    }

    fn json(&self, external_id: Option<&str>) -> Value {
        let mut body = self.fields.clone();
        if let Some(ext) = external_id {
            body.insert("external_id".into(), Value::String(ext.into()));
        }
        Value::Object(body)
    }
}

/// Sends one payin (`intent_written`: its first intent is): answered, it is recorded
/// with its pay details; in doubt, it is left to settle.
async fn send(
    ctx: Arc<Ctx>,
    hc: Arc<HelloClever>,
    item: WorkItem,
    body: Arc<Body>,
    intent_written: bool,
) -> Result<(), StateError> {
    let target = protocol::Item {
        id: item.id,
        intent_written,
    };
    let json = body.json(item.external_id.as_deref());
    let sent = protocol::send(&ctx, &target, protocol::none, || hc.create_payin(&json)).await?;
    match sent {
        Sent::Answered(p, _) => ctx.outcome(item.id, of_payin(&p, None)),
        Sent::Claimed(..) | Sent::Recorded => Ok(()),
    }
}

/// A payin's row as the provider's payin says: paid; expired (failed: the payer did not
/// pay in time); pending — `blocked` once `waited` has run out (`(true, timeout)`), as the
/// payer may still pay.
fn of_payin(p: &Payin, waited: Option<(bool, std::time::Duration)>) -> Outcome {
    let status = p.status.clone().unwrap_or_else(|| "pending".into());
    let details = p.pay_code.as_ref().map(Value::to_string);
    let base = Outcome {
        state: ItemState::Succeeded,
        provider_ref: Some(p.uuid.clone()),
        provider_status: Some(status.clone()),
        details,
        ..Outcome::default()
    };
    if payin_paid(Some(&status)) {
        return base;
    }
    match (status.as_str(), waited) {
        ("expired", _) => Outcome {
            state: ItemState::Failed,
            error_code: Some("PAYIN_EXPIRED".into()),
            error_message: Some(format!(
                "payin {} expired before the payer paid; a new row (key) asks again",
                p.uuid
            )),
            ..base
        },
        (_, Some((true, timeout))) => Outcome {
            state: ItemState::Blocked,
            error_code: Some("PAYIN_PENDING".into()),
            error_message: Some(format!(
                "payin {} still {status} after {}; the payer may still pay, and the next run (or `payrun reconcile`) looks again",
                p.uuid,
                crate::job::show_duration(timeout)
            )),
            ..base
        },
        _ => base,
    }
}

/// The payins listing, read in pages of [`PAYINS_PAGE`] (the provider's default is 20; its
/// reference takes `per_page`).
const PAYINS: &str = "/v2/payins/all";
const PAYINS_PAGE: u64 = 100;

/// The payins listing as last read, by external id, with when the read began.
type Listed = tokio::sync::Mutex<Option<(tokio::time::Instant, Arc<ByExternalId>)>>;

/// Listed payins by external id (a row asked again after `--retry-failed` has the same).
type ByExternalId = HashMap<String, Vec<Payin>>;

/// A payin step's payins in doubt: found by external id in the provider's listing. One
/// listing read serves every lookup of a settle round (a read made before the round's
/// start does not answer it).
struct Payins {
    hc: Arc<HelloClever>,
    /// When the first of the step's payins in doubt was first sent: the listing is read
    /// from a day before it (see [`Window::around`]).
    since: chrono::DateTime<chrono::Utc>,
    listed: Arc<Listed>,
}

impl Payins {
    async fn by_external_id(
        ctx: &Ctx,
        hc: &HelloClever,
        (listed, since): (&Listed, chrono::DateTime<chrono::Utc>),
        not_before: tokio::time::Instant,
    ) -> Result<Arc<ByExternalId>, CallError> {
        let mut cached = listed.lock().await;
        if let Some((at, map)) = cached.as_ref()
            && *at >= not_before
        {
            return Ok(map.clone());
        }
        let at = tokio::time::Instant::now();
        let window = Window::around(since, None);
        let found = scan_records(
            ctx,
            hc,
            (PAYINS, Some(PAYINS_PAGE)),
            window,
            |p: &Payin| p.uuid.clone(),
            |p| p.external_id.is_some(),
        )
        .await?;
        let mut map: ByExternalId = HashMap::with_capacity(found.len());
        for p in found {
            if let Some(ext) = p.external_id.clone() {
                map.entry(ext).or_default().push(p);
            }
        }
        let map = Arc::new(map);
        *cached = Some((at, map.clone()));
        Ok(map)
    }
}

impl Resolve for Payins {
    type Body = Body;
    type Found = Payin;

    fn body(&self, json: String) -> Result<Body, String> {
        Body::new(json)
    }

    fn lookup(
        &self,
        ctx: &Arc<Ctx>,
        item: &WorkItem,
        _body: &Arc<Body>,
        not_before: tokio::time::Instant,
    ) -> impl Future<Output = Result<Option<Payin>, CallError>> + Send + 'static {
        let (ctx, hc, listed, since) = (
            ctx.clone(),
            self.hc.clone(),
            self.listed.clone(),
            self.since,
        );
        let ext = item.external_id.clone().unwrap_or_default();
        // A row asked again (`--retry-failed` after it expired or was cancelled) keeps its
        // external id: the payin it had before is not this request's.
        let before = item.provider_ref.clone();
        async move {
            let map = Payins::by_external_id(&ctx, &hc, (&listed, since), not_before).await?;
            Ok(map
                .get(&ext)
                .and_then(|all| all.iter().find(|p| Some(&p.uuid) != before.as_ref()))
                .cloned())
        }
    }

    fn found(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        _body: Arc<Body>,
        found: Payin,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        let ctx = ctx.clone();
        async move { ctx.outcome(item.id, of_payin(&found, None)) }
    }

    fn send(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Body>,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        send(ctx.clone(), self.hc.clone(), item, body, true)
    }
}

/// When the first of a step's payins in doubt was first sent (now, if none says).
async fn first_sent(ctx: &Ctx, step: &str) -> Result<chrono::DateTime<chrono::Utc>, StateError> {
    let doubtful = ctx.items_in(step, &[ItemState::InFlight]).await?;
    Ok(earliest(&doubtful))
}

/// The earliest first send of `items` (now, if none says).
fn earliest(items: &[WorkItem]) -> chrono::DateTime<chrono::Utc> {
    items
        .iter()
        .filter_map(|i| i.first_attempt_at.as_deref())
        .filter_map(super::listing::parse_time)
        .min()
        .unwrap_or_else(chrono::Utc::now)
}

/// Asks the provider where a step's unpaid payins stand (one listing read, matched by
/// uuid; a payin not listed yet is left as it is) and records what moved. `waited`: the
/// wait's end (`(expired, timeout)`: still pending at its end is blocked); `None`
/// (reconcile): only what moved. Returns how many are still unpaid and pending.
pub(super) async fn follow(
    ctx: &Ctx,
    hc: &HelloClever,
    step: &str,
    waited: Option<(bool, std::time::Duration)>,
) -> Result<u64, RunError> {
    Ok(follow_changes(ctx, hc, step, waited, |_| true).await?.0)
}

/// [`follow`], for the items `keep` wants, with what changed.
pub(super) async fn follow_changes(
    ctx: &Ctx,
    hc: &HelloClever,
    step: &str,
    waited: Option<(bool, std::time::Duration)>,
    keep: impl Fn(&WorkItem) -> bool,
) -> Result<(u64, Vec<Change>), RunError> {
    let open: Vec<WorkItem> = ctx
        .items_in(step, &[ItemState::Succeeded, ItemState::Blocked])
        .await?
        .into_iter()
        .filter(|i| i.provider_ref.is_some() && unsettled(i.provider_status.as_deref(), waited))
        .filter(|i| keep(i))
        .collect();
    if open.is_empty() {
        return Ok((0, Vec::new()));
    }
    let window = Window::around(earliest(&open), None);
    let listed = match scan_records(
        ctx,
        hc,
        (PAYINS, Some(PAYINS_PAGE)),
        window,
        |p: &Payin| p.uuid.clone(),
        |_| true,
    )
    .await
    {
        Ok(l) => l,
        // Not known this round: nothing concluded; the next round (or run) asks again.
        Err(e) => {
            tracing::warn!(step, "the payins listing could not be read: {e}");
            for item in &open {
                still_unpaid(ctx, item, waited)?;
            }
            return Ok((open.len() as u64, Vec::new()));
        }
    };
    let by_uuid: HashMap<&str, &Payin> = listed.iter().map(|p| (p.uuid.as_str(), p)).collect();
    let (mut waiting, mut changes) = (0, Vec::new());
    for item in &open {
        // Not listed yet (a listing lags): still waited for, and at the wait's end as
        // unpaid as a pending one (blocked: the payer may still pay).
        let Some(p) = item.provider_ref.as_deref().and_then(|u| by_uuid.get(u)) else {
            waiting += 1;
            still_unpaid(ctx, item, waited)?;
            continue;
        };
        // Reconcile records what moved; a payin still pending stays as it is (blocked,
        // if a wait ran out on it).
        if waited.is_none() && p.status.as_deref() == item.provider_status.as_deref() {
            continue;
        }
        let o = of_payin(p, waited);
        if o.provider_status != item.provider_status || o.state != item.state {
            changes.push(Change {
                step: step.to_string(),
                row_key: item.row_key.clone(),
                what: format!(
                    "payin {} → {}",
                    item.provider_status.as_deref().unwrap_or("unknown"),
                    o.provider_status.as_deref().unwrap_or("unknown")
                ),
            });
        }
        if o.provider_status.as_deref() == Some("pending") {
            waiting += 1;
        }
        ctx.update(item.id, o)?;
    }
    Ok((waiting, changes))
}

/// A payin whose status could not be read (a lagging listing, a listing that could not be
/// read): at the wait's end it counts as unpaid — blocked, the payer may still pay —, never
/// as done.
fn still_unpaid(
    ctx: &Ctx,
    item: &WorkItem,
    waited: Option<(bool, std::time::Duration)>,
) -> Result<(), StateError> {
    let (Some((true, _)), Some(uuid)) = (waited, &item.provider_ref) else {
        return Ok(());
    };
    if item.state != ItemState::Succeeded {
        return Ok(());
    }
    let unread = Payin {
        uuid: uuid.clone(),
        status: item.provider_status.clone(),
        ..Payin::default()
    };
    ctx.update(item.id, of_payin(&unread, waited))
}

/// Whether a payin's status is to be asked about: a wait follows the unpaid ones;
/// reconcile (`waited` none) also those paid, whose refund may be under way.
fn unsettled(status: Option<&str>, waited: Option<(bool, std::time::Duration)>) -> bool {
    match waited {
        Some(_) => matches!(status, None | Some("pending")),
        None => matches!(
            status,
            None | Some("pending" | "received" | "return_pending")
        ),
    }
}

/// Sends a refund step's rows: each row's received payin refunded once.
pub async fn refunds(
    job: &Job,
    si: usize,
    step: &Step,
    ctx: &Arc<Ctx>,
    hc: &Arc<HelloClever>,
    rows: &mut RowSource<'_, '_>,
) -> Result<(), RunError> {
    let op = Arc::new(Refunds {
        hc: hc.clone(),
        payins: Arc::new(payins_of_rows(job, si, ctx).await?),
    });
    let mut items = ToSend::open(si, step, ctx).await?;
    let mut tasks = JoinSet::new();
    let chunk_size = ctx.pacer.intent_chunk();
    while let Some(chunk) = items.next(job, ctx, chunk_size).await? {
        if ctx.stopping() {
            break;
        }
        let (ready, _) = payloads(ctx, si, chunk, rows, RefundBody::new)?;
        for (item, body) in ready {
            throttle(&mut tasks, chunk_size).await?;
            let op = op.clone();
            let ctx = ctx.clone();
            tasks.spawn(async move { op.first(&ctx, item, Arc::new(body)).await });
        }
    }
    drain(&mut tasks).await?;
    items.settle(ctx, rows, &op).await
}

/// The payin each row's refund is of, from the nearest payin step before refund step
/// `si` (rows that name their payin do not need it).
async fn payins_of_rows(
    job: &Job,
    si: usize,
    ctx: &Ctx,
) -> Result<HashMap<String, String>, StateError> {
    let Some(payin_step) = job.steps[..si]
        .iter()
        .rev()
        .find(|s| s.kind == crate::job::steps::StepKind::Payin)
    else {
        return Ok(HashMap::new());
    };
    let items = ctx
        .items_in(&payin_step.id, &[ItemState::Succeeded, ItemState::Blocked])
        .await?;
    Ok(items
        .into_iter()
        .filter_map(|i| Some((i.row_key, i.provider_ref?)))
        .collect())
}

/// A refund's fields: the payin the row names (if it does), the amount (none: what was
/// paid), and the reason.
pub(super) struct RefundBody {
    payin: Option<String>,
    amount: Option<Decimal>,
    description: String,
}

impl RefundBody {
    fn new(json: String) -> Result<RefundBody, String> {
        #[derive(serde::Deserialize)]
        struct Fields {
            #[serde(default)]
            payin: Option<String>,
            #[serde(default)]
            amount: Option<String>,
            #[serde(default)]
            description: String,
        }
        let f: Fields = parse_fields(&json)?;
        let amount = match f.amount.filter(|a| !a.is_empty()) {
            Some(a) => Some(a.parse().map_err(|e| format!("amount {a}: {e}"))?),
            None => None,
        };
        Ok(RefundBody {
            payin: f.payin.filter(|p| !p.is_empty()),
            amount,
            description: f.description,
        })
    }
}

/// A refund step's client and the payins of its rows (by row key).
#[derive(Clone)]
struct Refunds {
    hc: Arc<HelloClever>,
    payins: Arc<HashMap<String, String>>,
}

impl Refunds {
    fn payin_of(&self, item: &WorkItem, body: &RefundBody) -> Option<String> {
        body.payin
            .clone()
            .or_else(|| self.payins.get(&item.row_key).cloned())
    }

    /// A row's first refund: its payin is read first. Paid and not refunded, it is
    /// refunded; refunded already (by anyone), the row fails rather than refund twice;
    /// not paid yet, the row waits (`blocked`) for the next run.
    async fn first(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<RefundBody>,
    ) -> Result<(), StateError> {
        let Some(uuid) = self.payin_of(&item, &body) else {
            return ctx.outcome(
                item.id,
                refund_problem(
                    ItemState::Blocked,
                    "WAITING",
                    "the row has no payin yet".into(),
                    None,
                ),
            );
        };
        let hc = &self.hc;
        let p = match idempotent(ctx, || hc.payin(&uuid)).await {
            Ok(p) => p,
            // Refused (no such payin): the row fails. Not read (the provider out of
            // reach): nothing was sent; the row waits for the next run.
            Err(e) if e.verdict() == crate::provider::error::Verdict::Reject => {
                return ctx.outcome(item.id, protocol::failed(&e));
            }
            Err(e) => {
                let why = format!("payin {uuid} could not be read ({e}); nothing was sent");
                return ctx.outcome(
                    item.id,
                    refund_problem(ItemState::Blocked, "WAITING", why, None),
                );
            }
        };
        let status = p.status.clone().unwrap_or_default();
        if status.starts_with("return_") {
            let why = format!(
                "payin {uuid} has a refund already ({status}); payrun refunds a payin once"
            );
            return ctx.outcome(
                item.id,
                refund_problem(ItemState::Failed, "REFUND_EXISTS", why, Some(&p)),
            );
        }
        if status != "received" {
            let (state, code) = match status.as_str() {
                "pending" => (ItemState::Blocked, "PAYIN_NOT_PAID"),
                _ => (ItemState::Failed, "PAYIN_NOT_REFUNDABLE"),
            };
            let why = format!("payin {uuid} is {status}: only a received payin is refunded");
            // A row that waits keeps no payin of its own: the next run reads it again.
            let p = (state == ItemState::Failed).then_some(&p);
            return ctx.outcome(item.id, refund_problem(state, code, why, p));
        }
        let id = item.id;
        ctx.db
            .write(move |c| work::mark_in_flight(c, &[id]))
            .await?;
        self.refund(ctx, item, &body, &uuid).await
    }

    /// Sends the refund of `uuid` under the protocol (its intent is written).
    async fn refund(
        &self,
        ctx: &Ctx,
        item: WorkItem,
        body: &RefundBody,
        uuid: &str,
    ) -> Result<(), StateError> {
        let target = protocol::Item {
            id: item.id,
            intent_written: true,
        };
        let hc = &self.hc;
        let sent = protocol::send(ctx, &target, protocol::none, || {
            hc.refund_payin(uuid, body.amount, &body.description)
        })
        .await?;
        match sent {
            Sent::Answered(r, _) => ctx.outcome(
                item.id,
                refunded(&r.payin_request, r.refund_amount.or(body.amount)),
            ),
            Sent::Claimed(..) | Sent::Recorded => Ok(()),
        }
    }
}

/// A refund that was made: the payin as it is now, and what was refunded.
fn refunded(p: &Payin, amount: Option<Decimal>) -> Outcome {
    let currency = p.currency.clone().unwrap_or_default();
    let amount = amount.or(p.paid_amount).or(p.amount).map(|mut a| {
        // As the currency writes it (`300.00`, not the provider's `300.0`).
        if let Ok(units) = crate::validate::currency(&currency) {
            a.rescale(units);
        }
        a
    });
    let details = amount.map(|a| {
        serde_json::json!({ "refund_amount": a.to_string(), "currency": currency }).to_string()
    });
    Outcome {
        state: ItemState::Succeeded,
        provider_ref: Some(p.uuid.clone()),
        provider_status: p.status.clone(),
        details,
        ..Outcome::default()
    }
}

fn refund_problem(state: ItemState, code: &str, why: String, p: Option<&Payin>) -> Outcome {
    Outcome {
        state,
        provider_ref: p.map(|p| p.uuid.clone()),
        provider_status: p.and_then(|p| p.status.clone()),
        error_code: Some(code.into()),
        error_message: Some(why),
        ..Outcome::default()
    }
}

impl Resolve for Refunds {
    type Body = RefundBody;
    type Found = Payin;

    fn body(&self, json: String) -> Result<RefundBody, String> {
        RefundBody::new(json)
    }

    /// The payin was `received` when its refund was sent: a `return_…` status now is
    /// that refund.
    fn lookup(
        &self,
        ctx: &Arc<Ctx>,
        item: &WorkItem,
        body: &Arc<RefundBody>,
        _not_before: tokio::time::Instant,
    ) -> impl Future<Output = Result<Option<Payin>, CallError>> + Send + 'static {
        let (ctx, hc) = (ctx.clone(), self.hc.clone());
        let uuid = self.payin_of(item, body);
        async move {
            let Some(uuid) = uuid else {
                return Err(CallError::Decode("the row's payin is not known".into()));
            };
            let p = idempotent(&ctx, || hc.payin(&uuid)).await?;
            Ok(p.status
                .as_deref()
                .is_some_and(|s| s.starts_with("return_"))
                .then_some(p))
        }
    }

    fn found(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<RefundBody>,
        found: Payin,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        let ctx = ctx.clone();
        async move { ctx.outcome(item.id, refunded(&found, body.amount)) }
    }

    fn send(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<RefundBody>,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        let (ctx, op) = (ctx.clone(), self.clone());
        async move {
            let Some(uuid) = op.payin_of(&item, &body) else {
                return Ok(());
            };
            op.refund(&ctx, item, &body, &uuid).await
        }
    }
}
