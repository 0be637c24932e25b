//! FinHub steps, under the same protocol as Hello Clever's: the intent is committed before a
//! request leaves; a request that may have been applied settles (see [`super::doubt`]) and
//! is resolved by asking FinHub before anything is sent again.
//!
//! FinHub has no lookup by email: a customer is found by paging
//! `getByCustomerStatus/{status}` — the status the row asked for first, then the others.
//! Those pages are cached per status, and a cache is trusted for a question only when it was
//! loaded after the request in doubt started.

use super::doubt::Resolve;
use super::protocol::{self, Sent, failed, idempotent};
use super::queue::{LONG_TASKS, ToSend, drain, payloads, throttle};
use super::{Ctx, RowSource, RunError, parse_fields};
use crate::job::steps::{CUSTOMER_ID, StepKind};
use crate::job::{Job, Step};
use crate::provider::error::CallError;
use crate::provider::finhub::client::FinHub;
use crate::provider::finhub::{CUSTOMER_STATUSES, nest};
use crate::state::work::{self, Outcome, WorkItem};
use crate::state::{ItemState, StateError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Customers by email, per status, as last read from FinHub.
#[derive(Default)]
pub struct Directory {
    by_status: tokio::sync::Mutex<HashMap<String, Snapshot>>,
}

/// One status's customers, email → id, and when they were read.
type Snapshot = (Instant, HashMap<String, String>);

impl Directory {
    /// The id of the customer with `email`, reading pages loaded after `since`.
    async fn find(
        &self,
        ctx: &Ctx,
        fh: &FinHub,
        email: &str,
        first_status: &str,
        since: Instant,
    ) -> Result<Option<String>, CallError> {
        let email = email.to_ascii_lowercase();
        let order = std::iter::once(first_status).chain(
            CUSTOMER_STATUSES
                .iter()
                .copied()
                .filter(|s| *s != first_status),
        );
        let mut cache = self.by_status.lock().await;
        for status in order {
            let fresh = cache.get(status).is_some_and(|(at, _)| *at >= since);
            if !fresh {
                let loaded_at = Instant::now();
                let emails = load_status(ctx, fh, status).await?;
                cache.insert(status.to_string(), (loaded_at, emails));
            }
            if let Some(id) = cache.get(status).and_then(|(_, m)| m.get(&email)) {
                return Ok(Some(id.clone()));
            }
        }
        Ok(None)
    }
}

/// Every customer of one status, by email → id.
async fn load_status(
    ctx: &Ctx,
    fh: &FinHub,
    status: &str,
) -> Result<HashMap<String, String>, CallError> {
    const SIZE: u64 = 100;
    let mut out = HashMap::new();
    let mut page = 1;
    loop {
        let v = idempotent(ctx, || fh.by_status(status, page, SIZE)).await?;
        let customers = v["customers"].as_array().cloned().unwrap_or_default();
        for c in &customers {
            if let (Some(e), Some(id)) = (c["person"]["email"].as_str(), id_of(c)) {
                out.insert(e.to_ascii_lowercase(), id);
            }
        }
        let pages = v["pagination"]["numberOfPage"].as_u64();
        let more = pages.map_or(customers.len() as u64 >= SIZE, |p| page < p)
            || customers.len() as u64 >= SIZE;
        if customers.is_empty() || !more || page >= 100_000 {
            return Ok(out);
        }
        page += 1;
    }
}

fn id_of(c: &Value) -> Option<String> {
    match &c["id"] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn ok(provider_ref: Option<String>, status: &str) -> Outcome {
    Outcome {
        state: ItemState::Succeeded,
        provider_ref,
        provider_status: Some(status.to_string()),
        ..Outcome::default()
    }
}

fn email_of(payload: &Map<String, Value>) -> String {
    payload
        .get("person.email")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The customer a row's step acts on: the one its row names (`customerId`, when no step
/// of the job creates customers), else the one an earlier step created for the row.
fn customer_of(
    ids: &HashMap<String, String>,
    item: &WorkItem,
    payload: &Map<String, Value>,
) -> Option<String> {
    match payload.get(CUSTOMER_ID) {
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        _ => ids.get(&item.row_key).cloned(),
    }
}

fn status_of(payload: &Map<String, Value>) -> String {
    payload
        .get("customerStatus")
        .and_then(Value::as_str)
        .unwrap_or("new")
        .to_string()
}

/// Runs one FinHub step.
pub async fn run(
    job: &Job,
    si: usize,
    step: &Step,
    ctx: &Arc<Ctx>,
    fh: &Arc<FinHub>,
    rows: &mut RowSource<'_, '_>,
) -> Result<(), RunError> {
    let fh = fh.clone();
    let plan_id = ctx.plan_id;
    let mut items = ToSend::open(si, step, ctx).await?;
    // Later steps act on the customer an earlier step of the row created.
    let creators: Vec<String> = job.steps[..si]
        .iter()
        .filter(|s| s.kind.creates_customer())
        .map(|s| s.id.clone())
        .collect();
    let ids = Arc::new(
        ctx.db
            .read(move |c| work::refs_of(c, plan_id, &creators))
            .await?,
    );
    let mut tasks = JoinSet::new();
    let chunk_size = if step.kind == StepKind::CustomersBulk {
        step.batch_size.max(1) as usize
    } else {
        ctx.pacer.intent_chunk()
    };
    while let Some(chunk) = items.next(job, ctx, chunk_size).await? {
        if ctx.stopping() {
            break;
        }
        let (ready, fresh) = payloads(ctx, si, chunk, rows, |json| parse_fields(&json))?;
        if step.kind == StepKind::CustomersBulk {
            // `bulk` writes the intents of its request itself.
            throttle(&mut tasks, LONG_TASKS).await?;
            tasks.spawn(bulk(ctx.clone(), fh.clone(), ready));
            continue;
        }
        ctx.db
            .write(move |c| work::mark_in_flight(c, &fresh))
            .await?;
        for (item, payload) in ready {
            throttle(&mut tasks, chunk_size).await?;
            let (ctx, fh, ids) = (ctx.clone(), fh.clone(), ids.clone());
            let customer = customer_of(&ids, &item, &payload);
            match step.kind {
                StepKind::Customer => tasks.spawn(customer_one(ctx, fh, item, payload)),
                StepKind::Documents => tasks.spawn(document(ctx, fh, item, payload, customer)),
                _ => tasks.spawn(set_value(ctx, fh, step.kind, item, payload, customer)),
            };
        }
    }
    drain(&mut tasks).await?;
    let op = Arc::new(Settle {
        fh,
        kind: step.kind,
        ids,
    });
    items.settle(ctx, rows, &op).await
}

/// A FinHub step's items in doubt: customers found by email in the status listings,
/// documents among the customer's documents, a status or confirmation in the customer's
/// details. Found, they are recorded; proven absent, sent again (a bulk step's one by one).
struct Settle {
    fh: Arc<FinHub>,
    kind: StepKind,
    /// The customer of each row, from the steps that create them.
    ids: Arc<HashMap<String, String>>,
}

impl Settle {
    /// The field a status or confirmation step sets.
    fn key(&self) -> &'static str {
        if self.kind == StepKind::CustomerStatus {
            "status"
        } else {
            "kycConfirmation"
        }
    }
}

impl Resolve for Settle {
    type Body = Map<String, Value>;
    /// The provider's id of what was created (the customer's, for a value set on it).
    type Found = Option<String>;

    fn body(&self, json: String) -> Result<Self::Body, String> {
        parse_fields(&json)
    }

    fn lookup(
        &self,
        ctx: &Arc<Ctx>,
        item: &WorkItem,
        body: &Arc<Self::Body>,
        not_before: Instant,
    ) -> impl Future<Output = Result<Option<Option<String>>, CallError>> + Send + 'static {
        let (ctx, fh, body, kind, key) = (
            ctx.clone(),
            self.fh.clone(),
            body.clone(),
            self.kind,
            self.key(),
        );
        let customer = customer_of(&self.ids, item, body.as_ref());
        async move {
            if kind.creates_customer() {
                let (email, status) = (email_of(&body), status_of(&body));
                let found = ctx
                    .directory
                    .find(&ctx, &fh, &email, &status, not_before)
                    .await?;
                return Ok(found.map(Some));
            }
            // Sent, so it had a customer; without one now, it cannot be looked up.
            let customer = customer.ok_or_else(|| {
                CallError::Transport("the row's customer is not known any more".into())
            })?;
            if kind == StepKind::Documents {
                let docs = idempotent(&ctx, || fh.documents(&customer)).await?;
                let same = |d: &&Value| {
                    ["name", "documentType", "location"]
                        .iter()
                        .all(|k| d.get(*k) == body.get(*k))
                };
                return Ok(docs
                    .iter()
                    .find(same)
                    .map(|d| d["documentId"].as_str().map(str::to_string)));
            }
            let details = idempotent(&ctx, || fh.details(&customer)).await?;
            let field = if key == "status" {
                "customerStatus"
            } else {
                key
            };
            let set = details["customer"][field].as_str().is_some()
                && details["customer"][field].as_str() == body.get(key).and_then(Value::as_str);
            Ok(set.then_some(Some(customer)))
        }
    }

    fn found(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Self::Body>,
        found: Option<String>,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        let label = match self.kind {
            StepKind::CustomerStatus | StepKind::KycConfirmation => body
                .get(self.key())
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => "created".to_string(),
        };
        let ctx = ctx.clone();
        async move { ctx.outcome(item.id, ok(found, &label)) }
    }

    fn send(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Self::Body>,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        let (ctx, fh, kind) = (ctx.clone(), self.fh.clone(), self.kind);
        let customer = customer_of(&self.ids, &item, &body);
        let payload = Map::clone(&body);
        async move {
            match kind {
                StepKind::Customer | StepKind::CustomersBulk => {
                    customer_one(ctx, fh, item, payload).await
                }
                StepKind::Documents => document(ctx, fh, item, payload, customer).await,
                _ => set_value(ctx, fh, kind, item, payload, customer).await,
            }
        }
    }
}

/// Brings an existing customer to the row's values, but for its status: `customerStatus`
/// is what a new customer starts as, and an upsert never demotes a verified customer
/// (a `customer_status` step sets an existing customer's status).
async fn update_existing(
    ctx: &Ctx,
    fh: &FinHub,
    item_id: i64,
    id: String,
    body: &Value,
) -> Result<(), StateError> {
    let mut body = body.clone();
    if let Value::Object(fields) = &mut body {
        fields.remove("customerStatus");
    }
    let body = &body;
    match idempotent(ctx, || fh.update(&id, body)).await {
        Ok(_) => ctx.outcome(item_id, ok(Some(id), "updated")),
        Err(e) => ctx.outcome(item_id, failed(&e)),
    }
}

fn duplicate(e: &CallError) -> bool {
    matches!(e, CallError::Status { status: 409, .. })
}

/// `customer`: create; on a duplicate email, find and update. In doubt, look first.
async fn customer_one(
    ctx: Arc<Ctx>,
    fh: Arc<FinHub>,
    item: WorkItem,
    payload: Map<String, Value>,
) -> Result<(), StateError> {
    let (email, status) = (email_of(&payload), status_of(&payload));
    let body = nest(&payload);
    let target = protocol::Item {
        id: item.id,
        intent_written: true,
    };
    let sent = protocol::send(&ctx, &target, duplicate, || fh.create(&body)).await?;
    match sent {
        Sent::Answered(v, _) => {
            let id = id_of(&v["customer"]);
            ctx.outcome(item.id, ok(id, "created"))
        }
        Sent::Claimed(e, at) => {
            match ctx
                .directory
                .find(&ctx, &fh, &email, &status, at.mono)
                .await
            {
                Ok(Some(id)) => update_existing(&ctx, &fh, item.id, id, &body).await,
                Ok(None) => ctx.outcome(item.id, failed(&e)),
                Err(lookup) => ctx.outcome(item.id, failed(&lookup)),
            }
        }
        Sent::Recorded => Ok(()),
    }
}

/// `customers_bulk`: one `createBulk` per chunk; each customer's outcome is matched to its
/// row by email. What the reply does not account for, and whatever a lost reply leaves
/// open, is in doubt: it settles, and is looked up before it is sent again.
async fn bulk(
    ctx: Arc<Ctx>,
    fh: Arc<FinHub>,
    todo: Vec<(WorkItem, Map<String, Value>)>,
) -> Result<(), StateError> {
    if todo.is_empty() {
        return Ok(());
    }
    let target = protocol::Items(todo.iter().map(|(i, _)| i.id).collect());
    let bodies: Vec<Value> = todo.iter().map(|(_, p)| nest(p)).collect();
    let sent = protocol::send(&ctx, &target, protocol::none, || fh.create_bulk(&bodies)).await?;
    let (reply, at) = match sent {
        Sent::Answered(reply, at) => (reply, at),
        Sent::Claimed(..) | Sent::Recorded => return Ok(()),
    };
    {
        let mut created: HashMap<String, String> = HashMap::new();
        for c in reply["customers"].as_array().into_iter().flatten() {
            if let (Some(e), Some(id)) = (c["person"]["email"].as_str(), id_of(c)) {
                created.insert(e.to_ascii_lowercase(), id);
            }
        }
        let mut refused: HashMap<String, (u16, String)> = HashMap::new();
        for e in reply["errors"].as_array().into_iter().flatten() {
            let email = e["email"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .or_else(|| {
                    e["index"]
                        .as_u64()
                        .and_then(|i| todo.get(i as usize))
                        .map(|(_, p)| email_of(p))
                });
            if let Some(email) = email {
                let status = e["status"].as_u64().unwrap_or(400) as u16;
                let message = e["message"].as_str().unwrap_or("refused").to_string();
                refused.insert(email, (status, message));
            }
        }
        for (item, payload) in todo {
            let email = email_of(&payload);
            if let Some(id) = created.get(&email) {
                ctx.outcome(item.id, ok(Some(id.clone()), "created"))?;
            } else if let Some((status, message)) = refused.get(&email) {
                let e = CallError::Status {
                    status: *status,
                    code: None,
                    message: message.clone(),
                    retry_after: None,
                };
                if duplicate(&e) {
                    let found = ctx
                        .directory
                        .find(&ctx, &fh, &email, &status_of(&payload), at.mono)
                        .await;
                    match found {
                        Ok(Some(id)) => {
                            update_existing(&ctx, &fh, item.id, id, &nest(&payload)).await?
                        }
                        Ok(None) => ctx.outcome(item.id, failed(&e))?,
                        Err(lookup) => ctx.outcome(item.id, failed(&lookup))?,
                    }
                } else {
                    ctx.outcome(item.id, failed(&e))?;
                }
            } else {
                // The reply does not say what became of it: in doubt.
                ctx.in_doubt(work::Unit::Item(item.id), at.wall, false)?;
            }
        }
        Ok(())
    }
}

fn no_customer(ctx: &Ctx, item: &WorkItem) -> Result<(), StateError> {
    ctx.outcome(
        item.id,
        Outcome {
            state: ItemState::Blocked,
            error_code: Some("WAITING".into()),
            error_message: Some("the row has no FinHub customer id from an earlier step".into()),
            ..Outcome::default()
        },
    )
}

/// `documents`: one document descriptor per row. In doubt, the customer's documents are
/// read (once it settled) and a document with the same name, type and location counts as
/// sent.
async fn document(
    ctx: Arc<Ctx>,
    fh: Arc<FinHub>,
    item: WorkItem,
    payload: Map<String, Value>,
    customer: Option<String>,
) -> Result<(), StateError> {
    let Some(customer) = customer else {
        return no_customer(&ctx, &item);
    };
    let mut payload = payload;
    payload.remove(CUSTOMER_ID);
    let doc = Value::Object(payload);
    let target = protocol::Item {
        id: item.id,
        intent_written: true,
    };
    let sent = protocol::send(&ctx, &target, protocol::none, || {
        fh.create_documents(&customer, std::slice::from_ref(&doc))
    })
    .await?;
    match sent {
        Sent::Answered(v, _) => {
            let id = v["documentIds"][0]["documentId"]
                .as_str()
                .map(str::to_string);
            ctx.outcome(item.id, ok(id, "created"))
        }
        Sent::Claimed(..) | Sent::Recorded => Ok(()),
    }
}

/// `customer_status` and `kyc_confirmation`. A request that may have been applied settles
/// like any other; the customer's details then say whether the value is set.
async fn set_value(
    ctx: Arc<Ctx>,
    fh: Arc<FinHub>,
    kind: StepKind,
    item: WorkItem,
    payload: Map<String, Value>,
    customer: Option<String>,
) -> Result<(), StateError> {
    let Some(customer) = customer else {
        return no_customer(&ctx, &item);
    };
    let key = if kind == StepKind::CustomerStatus {
        "status"
    } else {
        "kycConfirmation"
    };
    let value = payload
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let target = protocol::Item {
        id: item.id,
        intent_written: true,
    };
    let sent = protocol::send(&ctx, &target, protocol::none, || async {
        if kind == StepKind::CustomerStatus {
            fh.update_status(&customer, &value).await
        } else {
            fh.kyc_confirmation(&customer, &value).await
        }
    })
    .await?;
    match sent {
        Sent::Answered(..) => ctx.outcome(item.id, ok(Some(customer), &value)),
        Sent::Claimed(..) | Sent::Recorded => Ok(()),
    }
}
