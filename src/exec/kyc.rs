//! KYC: submit documents (multipart) or a share token for rows whose contact exists, then,
//! with `wait: {until: approved}`, poll the contact's KYC status. A row still pending at the
//! timeout is `blocked`; the next run polls it again (it is never submitted twice).

use super::doubt::{self, Resolve};
use super::protocol::{self, Sent, idempotent};
use super::queue::{LONG_TASKS, drain, throttle, unreadable};
use super::{Ctx, RowSource, RunError, parse_fields, split_ready};
use crate::job::{Job, Step};
use crate::provider::error::CallError;
use crate::provider::helloclever::client::{HelloClever, Upload};
use crate::provider::helloclever::wire::Contact;
use crate::state::work::{self, Outcome, WorkItem};
use crate::state::{ItemState, StateError};
use serde_json::{Map, Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinSet;

const FILES: [(&str, &str); 3] = [
    ("selfie", "selfie"),
    ("id_doc_front_side", "id_doc_front_side"),
    ("id_doc_back_side", "id_doc_back_side"),
];

pub async fn run(
    job: &Job,
    si: usize,
    step: &Step,
    ctx: &Arc<Ctx>,
    hc: &Arc<HelloClever>,
    rows: &mut RowSource<'_, '_>,
) -> Result<(), RunError> {
    let doubts_before = ctx.entered_doubt.load(std::sync::atomic::Ordering::Relaxed);
    let items = ctx
        .items_in(&step.id, &[ItemState::Pending, ItemState::InFlight])
        .await?;
    // Items in doubt settle after the others are sent.
    let (doubtful, items): (Vec<WorkItem>, Vec<WorkItem>) = items
        .into_iter()
        .partition(|i| i.state == ItemState::InFlight);
    // A blocked item that was submitted is only waiting for review: not sent again.
    let waiting = ctx.items_in(&step.id, &[ItemState::Blocked]).await?;
    let resubmit: Vec<WorkItem> = waiting
        .into_iter()
        .filter(|i| i.provider_status.is_none())
        .collect();
    let mut items = items;
    for mut i in resubmit {
        i.state = ItemState::Pending;
        items.push(i);
    }
    let items = split_ready(job, si, ctx, items).await?;
    let csv_dir = job.files_root();
    let mut tasks = JoinSet::new();
    for mut item in items {
        if ctx.stopping() {
            break;
        }
        let payload = match rows.fields(si, &mut item) {
            Ok(p) => p,
            Err(e) => {
                unreadable(ctx, &item, e)?;
                continue;
            }
        };
        throttle(&mut tasks, LONG_TASKS).await?;
        tasks.spawn(process(
            ctx.clone(),
            hc.clone(),
            item,
            Arc::new(payload),
            csv_dir.clone(),
            false,
        ));
    }
    drain(&mut tasks).await?;
    if !doubtful.is_empty()
        || ctx.entered_doubt.load(std::sync::atomic::Ordering::Relaxed) != doubts_before
    {
        let op = Arc::new(Submissions {
            csv_dir,
            hc: hc.clone(),
        });
        doubt::settle_items(ctx, si, &step.id, rows, &op).await?;
    }
    if let Some(wait) = &step.wait
        && !ctx.stopping()
    {
        poll(step, ctx, hc, wait.timeout, ctx.poll_every(wait.poll)).await?;
    }
    Ok(())
}

/// The newest KYC status of a contact (the list runs newest first; see docs/helloclever.md).
fn latest(c: &Contact) -> Option<&str> {
    c.kyc_statuses.first().map(|s| s.kyc_status.as_str())
}

/// Whether this submission reached the provider: the contact's identity carries our
/// document number (by token: the contact has a KYC status at all).
fn present(c: &Contact, payload: &Map<String, Value>) -> bool {
    match payload.get("document_number").and_then(Value::as_str) {
        Some(number) => {
            c.identity
                .as_ref()
                .and_then(|i| i.document_number.as_deref())
                == Some(number)
        }
        None => !c.kyc_statuses.is_empty(),
    }
}

fn submitted(status: &str) -> Outcome {
    Outcome {
        state: ItemState::Succeeded,
        provider_status: Some(status.to_string()),
        ..Outcome::default()
    }
}

/// KYC submissions in doubt: the contact's identity is looked up for the submission's
/// document number (by token: any KYC status at all).
struct Submissions {
    hc: Arc<HelloClever>,
    csv_dir: PathBuf,
}

impl Resolve for Submissions {
    type Body = Map<String, Value>;
    /// The contact's newest KYC status.
    type Found = String;

    fn body(&self, json: String) -> Result<Self::Body, String> {
        parse_fields(&json)
    }

    fn lookup(
        &self,
        ctx: &Arc<Ctx>,
        _item: &WorkItem,
        body: &Arc<Self::Body>,
        _not_before: tokio::time::Instant,
    ) -> impl Future<Output = Result<Option<String>, CallError>> + Send + 'static {
        let (ctx, hc, body) = (ctx.clone(), self.hc.clone(), body.clone());
        async move {
            let email = email_of(&body);
            let found = idempotent(&ctx, || hc.contact(&email)).await?;
            Ok(found
                .filter(|c| present(c, &body))
                .map(|c| latest(&c).unwrap_or("pending").to_string()))
        }
    }

    fn found(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        _body: Arc<Self::Body>,
        status: String,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        let ctx = ctx.clone();
        async move { ctx.outcome(item.id, submitted(&status)) }
    }

    fn send(
        &self,
        ctx: &Arc<Ctx>,
        item: WorkItem,
        body: Arc<Self::Body>,
    ) -> impl Future<Output = Result<(), StateError>> + Send + 'static {
        process(
            ctx.clone(),
            self.hc.clone(),
            item,
            body,
            self.csv_dir.clone(),
            true,
        )
    }
}

fn email_of(payload: &Map<String, Value>) -> String {
    payload
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Submits one KYC (`intent_written`: its first intent is); in doubt, it is left to settle.
/// Its images are read and checked before the first attempt, and the bytes checked are the
/// bytes sent, on every attempt.
async fn process(
    ctx: Arc<Ctx>,
    hc: Arc<HelloClever>,
    item: WorkItem,
    payload: Arc<Map<String, Value>>,
    csv_dir: PathBuf,
    intent_written: bool,
) -> Result<(), StateError> {
    let email = email_of(&payload);
    let request = match payload.get("token") {
        Some(token) => Request::Token(json!({"email": email, "token": token})),
        None => match documents(&payload, &csv_dir).await {
            Ok((fields, uploads)) => Request::Documents(fields, uploads),
            Err(why) => {
                let o = Outcome {
                    state: ItemState::Failed,
                    error_code: Some("FILE".into()),
                    error_message: Some(why),
                    ..Outcome::default()
                };
                return ctx.outcome(item.id, o);
            }
        },
    };
    let target = protocol::Item {
        id: item.id,
        intent_written,
    };
    let sent = protocol::send(&ctx, &target, protocol::none, || async {
        match &request {
            Request::Token(body) => hc.submit_kyc_token(body).await,
            Request::Documents(fields, uploads) => hc.submit_kyc(fields, uploads.clone()).await,
        }
    })
    .await?;
    match sent {
        Sent::Answered(..) => ctx.outcome(item.id, submitted("pending")),
        Sent::Claimed(..) | Sent::Recorded => Ok(()),
    }
}

/// A KYC submission: by share token, or the row's fields with its images.
enum Request {
    Token(Value),
    Documents(Map<String, Value>, Vec<Upload>),
}

/// The fields and images of a KYC by documents; an image that cannot be read, lies
/// outside the files' folder or is not an image is the row's error.
async fn documents(
    payload: &Map<String, Value>,
    csv_dir: &std::path::Path,
) -> Result<(Map<String, Value>, Vec<Upload>), String> {
    let mut fields = Map::new();
    for (k, v) in payload.iter() {
        if !FILES.iter().any(|(f, _)| f == k) {
            fields.insert(k.clone(), v.clone());
        }
    }
    let mut uploads = Vec::new();
    for (field, part) in FILES {
        let Some(rel) = payload.get(field).and_then(Value::as_str) else {
            continue;
        };
        // The bytes that go are the bytes checked: inside the files' folder, and an image
        // by their decoded header.
        let (path, bytes) = read_checked(csv_dir, rel).await?;
        let mime = if bytes.starts_with(b"\x89PNG") {
            "image/png"
        } else {
            "image/jpeg"
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| part.into());
        uploads.push(Upload {
            part,
            file_name,
            mime,
            bytes,
        });
    }
    Ok((fields, uploads))
}

/// Reads a KYC image for upload: confined to `root`, and checked as an image from the very
/// bytes that are sent.
async fn read_checked(root: &std::path::Path, rel: &str) -> Result<(PathBuf, Vec<u8>), String> {
    use crate::validate::{ImageKind, check_image_bytes, confined};
    let path = confined(root, rel)?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_image_bytes(&path, &bytes, &[ImageKind::Jpeg, ImageKind::Png])?;
    Ok((path, bytes))
}

/// Polls submitted KYC until approved, rejected, or the timeout; still pending → blocked.
async fn poll(
    step: &Step,
    ctx: &Arc<Ctx>,
    hc: &Arc<HelloClever>,
    timeout: std::time::Duration,
    every: std::time::Duration,
) -> Result<(), RunError> {
    ctx.poll_until(timeout, every, |expired| async move {
        let waiting: Vec<WorkItem> = ctx
            .items_in(&step.id, &[ItemState::Succeeded, ItemState::Blocked])
            .await?
            .into_iter()
            .filter(|i| {
                i.provider_status
                    .as_deref()
                    .is_some_and(|s| s != "approved")
            })
            .collect();
        if waiting.is_empty() {
            return Ok(None);
        }
        let n = waiting.len();
        for item in waiting {
            refresh(ctx, hc, &item, expired, timeout).await?;
        }
        Ok(Some(format!("waiting for {n} KYC decision(s)")))
    })
    .await
}

/// Asks the provider for one submitted KYC and records what it says: approved; rejected,
/// failed or blocked (the row fails); still under review (blocked once `expired`). Returns
/// the change, if the status moved.
pub(super) async fn refresh(
    ctx: &Ctx,
    hc: &Arc<HelloClever>,
    item: &WorkItem,
    expired: bool,
    timeout: std::time::Duration,
) -> Result<Option<super::Change>, StateError> {
    // The row key is the contact's email only through the payload; the stored
    // provider reference is not kept for KYC, so look the email up from state.
    let id = item.id;
    let email = ctx.db.read(move |c| work::item_email(c, id)).await?;
    let Some(email) = email else { return Ok(None) };
    let status = match idempotent(ctx, || hc.contact(&email)).await {
        Ok(Some(c)) => latest(&c).map(str::to_string),
        _ => None,
    };
    let o = match status.as_deref() {
        Some("approved") => Outcome {
            state: ItemState::Succeeded,
            provider_status: Some("approved".into()),
            ..Outcome::default()
        },
        Some(s @ ("rejected" | "failed" | "blocked")) => Outcome {
            state: ItemState::Failed,
            provider_status: Some(s.into()),
            error_code: Some(format!("KYC_{}", s.to_uppercase())),
            error_message: Some(format!("KYC {s}")),
            ..Outcome::default()
        },
        Some(s) if expired => Outcome {
            state: ItemState::Blocked,
            provider_status: Some(s.into()),
            error_code: Some("KYC_PENDING".into()),
            error_message: Some(format!(
                "KYC still {s} after {}s; the next run checks again",
                timeout.as_secs()
            )),
            ..Outcome::default()
        },
        Some(s) => Outcome {
            state: ItemState::Succeeded,
            provider_status: Some(s.into()),
            ..Outcome::default()
        },
        None => return Ok(None),
    };
    let change = (o.provider_status != item.provider_status).then(|| super::Change {
        step: String::new(),
        row_key: item.row_key.clone(),
        what: format!(
            "KYC {} → {}",
            item.provider_status.as_deref().unwrap_or("unknown"),
            o.provider_status.as_deref().unwrap_or("unknown")
        ),
    });
    ctx.update(item.id, o)?;
    Ok(change)
}
