//! Contacts, by the step's mode. `upsert`: create; when the contact exists already, bring
//! it to the row's values (or leave it when equal). `create`: create; one that exists is
//! left as it is. `update`: look the contact up, and bring it to the configured values;
//! one that does not exist fails its row. In doubt, a create is looked up by email, under
//! the settle rule of [`super::doubt`], before any resend.

use super::doubt::Resolve;
use super::protocol::{self, Sent, failed, idempotent};
use super::queue::{ToSend, row_changed};
use super::{Ctx, RowSource, RunError, parse_fields};
use crate::job::steps::ContactMode;
use crate::job::{Job, Step};
use crate::provider::error::CallError;
use crate::provider::helloclever::client::HelloClever;
use crate::provider::helloclever::wire::Contact;
use crate::state::work::{Outcome, WorkItem};
use crate::state::{ItemState, StateError};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;

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
            Contacts(hc.clone(), step.mode).process(ctx.clone(), item, body)
        })
        .await?;
    items
        .settle(ctx, rows, &Arc::new(Contacts(hc.clone(), step.mode)))
        .await
}

/// A step's contacts: its client and mode. In doubt, a contact is looked up by email;
/// found, it is brought to the row's values (`create`: left as it is).
#[derive(Clone)]
struct Contacts(Arc<HelloClever>, ContactMode);

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
        let (ctx, hc, body) = (ctx.clone(), self.0.clone(), body.clone());
        async move { idempotent(&ctx, || hc.contact(&body.email)).await }
    }

    fn found(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Body>,
        found: Contact,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        let (ctx, contacts) = (ctx.clone(), self.clone());
        async move { contacts.found(&ctx, item.id, found, &body).await }
    }

    fn send(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Body>,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        self.clone().process(ctx.clone(), item, body)
    }
}

impl Contacts {
    /// The row's contact exists at the provider: `create` leaves it, the other modes
    /// bring it to the row's values.
    async fn found(
        &self,
        ctx: &Ctx,
        id: i64,
        existing: Contact,
        body: &Body,
    ) -> Result<(), StateError> {
        match self.1 {
            ContactMode::Create => ctx.outcome(id, succeeded(&existing.email, "exists")),
            ContactMode::Upsert | ContactMode::Update => {
                reconcile(ctx, &self.0, id, existing, body).await
            }
        }
    }

    /// Sends one contact (its first intent is written): answered, it is recorded; in
    /// doubt, it is left to settle; "already exists", it is handled as the mode says.
    /// `update` creates nothing: it looks the contact up, and updates it.
    async fn process(
        self,
        ctx: Arc<Ctx>,
        item: WorkItem,
        payload: Arc<Body>,
    ) -> Result<(), StateError> {
        let hc = &self.0;
        let email = &payload.email;
        if self.1 == ContactMode::Update {
            return match idempotent(&ctx, || hc.contact(email)).await {
                Ok(Some(existing)) => self.found(&ctx, item.id, existing, &payload).await,
                Ok(None) => ctx.outcome(item.id, not_found()),
                Err(e) => ctx.outcome(item.id, failed(&e)),
            };
        }
        let target = protocol::Item {
            id: item.id,
            intent_written: true,
        };
        let sent = protocol::send(&ctx, &target, already_exists, || async {
            hc.create_contact(payload.json.clone()).await
        })
        .await?;
        match sent {
            Sent::Answered(..) => ctx.outcome(item.id, succeeded(email, "created")),
            Sent::Claimed(e, _) => match idempotent(&ctx, || hc.contact(email)).await {
                Ok(Some(existing)) => self.found(&ctx, item.id, existing, &payload).await,
                Ok(None) => ctx.outcome(item.id, failed(&e)),
                Err(lookup) => ctx.outcome(item.id, failed(&lookup)),
            },
            Sent::Recorded => Ok(()),
        }
    }
}

/// `mode: update` and the provider has no contact with the row's email.
fn not_found() -> Outcome {
    Outcome {
        state: ItemState::Failed,
        error_code: Some("CONTACT_NOT_FOUND".into()),
        error_message: Some(
            "the provider has no contact with this email, and mode: update creates none".into(),
        ),
        ..Outcome::default()
    }
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
async fn reconcile(
    ctx: &Ctx,
    hc: &Arc<HelloClever>,
    id: i64,
    existing: Contact,
    body: &Body,
) -> Result<(), StateError> {
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
    match idempotent(ctx, || hc.update_contact(payload)).await {
        Ok(_) => ctx.outcome(id, succeeded(&email, "updated")),
        Err(e) => ctx.outcome(id, failed(&e)),
    }
}

fn already_exists(e: &CallError) -> bool {
    matches!(e, CallError::Status { status: 422, message, .. } if message.contains("already"))
}
