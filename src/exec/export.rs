//! Export steps: pull every record of a resource created in a window, page by page, into a
//! file — under the same pacer and retries as a run.
//!
//! - The window is cut into pieces no longer than the endpoint allows (payouts: a year);
//!   neighbouring pieces share their boundary instant, so nothing falls between them.
//! - A page loop stops on an empty page, or on a short page that the metadata does not
//!   contradict. Metadata that says "more" is followed (an extra empty page costs one
//!   request); a full page is followed even when the metadata says it was the last one.
//! - Records are de-duplicated by id (new records arriving mid-export shift pages).
//! - The file is written as `<path>.partial`, synced, then renamed over `<path>`; only then
//!   is the export recorded complete, which moves the step's `last_run` watermark.

use super::{Ctx, RunError};
use crate::job::Job;
use crate::job::export::{Export, Format, Resource};
use crate::provider::error::CallError;
use crate::state::ExportState;
use crate::state::exports::{self, ExportRecord};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Runs the job's exports in order; returns whether every one completed.
pub async fn run_all(job: &Job, ctx: &Ctx, run_id: i64) -> Result<bool, RunError> {
    // One `now` for the whole run: exports of one run share their window's end.
    let now = whole_second(Utc::now());
    let mut all_ok = true;
    for export in &job.exports {
        if ctx.stopping() {
            break;
        }
        all_ok &= run_one(export, ctx, run_id, now).await?;
    }
    Ok(all_ok)
}

/// How an export of one resource talks to its endpoint.
struct Endpoint {
    path: &'static str,
    from_key: &'static str,
    to_key: &'static str,
    /// The window format: `YYYY-MM-DDThh:mm:ss`, with a `Z` for the card list.
    zulu: bool,
    /// The query parameter that sets the page size, if the endpoint has one.
    size_key: Option<&'static str>,
    id_key: &'static str,
    /// The longest window the endpoint accepts.
    max_window: Option<Duration>,
    columns: &'static [Column],
}

const PAGE_SIZE: u64 = 100;

fn endpoint(r: Resource) -> Endpoint {
    match r {
        Resource::Contacts => Endpoint {
            path: "/v2/contacts/",
            from_key: "from_date",
            to_key: "to_date",
            zulu: false,
            size_key: Some("per_page"),
            id_key: "email",
            max_window: None,
            columns: CONTACT_COLUMNS,
        },
        Resource::Payouts => Endpoint {
            path: "/v2/payouts/all",
            from_key: "from_date",
            to_key: "to_date",
            zulu: false,
            size_key: None,
            id_key: "uuid",
            // The reference: "window ≤ 1 year"; 365 days is within any reading of it.
            max_window: Some(Duration::days(365)),
            columns: PAYOUT_COLUMNS,
        },
        Resource::Payins => Endpoint {
            path: "/v2/payins/all",
            from_key: "from_date",
            to_key: "to_date",
            zulu: false,
            size_key: Some("per_page"),
            id_key: "uuid",
            max_window: None,
            columns: PAYIN_COLUMNS,
        },
        Resource::PaymentAgreements => Endpoint {
            path: "/v1/pay_to/payment_agreement/search",
            from_key: "from_date",
            to_key: "to_date",
            zulu: false,
            size_key: Some("size"),
            id_key: "id",
            max_window: None,
            columns: AGREEMENT_COLUMNS,
        },
        Resource::CardPayments => Endpoint {
            path: "/v2/cards/payments",
            from_key: "start_date",
            to_key: "end_date",
            zulu: true,
            size_key: Some("per_page"),
            id_key: "uuid",
            max_window: None,
            columns: CARD_COLUMNS,
        },
        // FinHub: `POST /getByCustomerStatus/{status}`, paged by the body.
        Resource::CustomersByStatus => Endpoint {
            path: "/getByCustomerStatus",
            from_key: "",
            to_key: "",
            zulu: false,
            size_key: Some("pageSize"),
            id_key: "id",
            max_window: None,
            columns: CUSTOMER_COLUMNS,
        },
    }
}

/// How a CSV column's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// An exact decimal, with at least the currency's minor units.
    Money,
    /// ISO-8601 UTC: `2026-11-21T10:30:00.000Z`.
    Time,
    /// `DD/MM/YY` → `YYYY-MM-DD`.
    Date,
    /// The value as JSON text.
    Json,
    /// The newest entry of `kyc_statuses` (the list runs newest first).
    LatestKyc,
}

/// A CSV column: its name and where its value is (dotted; `tx.` is a payout transaction).
struct Column {
    name: &'static str,
    path: &'static str,
    kind: Kind,
}

const fn col(name: &'static str, path: &'static str, kind: Kind) -> Column {
    Column { name, path, kind }
}

const fn text(name: &'static str) -> Column {
    col(name, name, Kind::Text)
}

/// The documented CSV columns of each resource (docs/exports.md, "Export columns").
const CONTACT_COLUMNS: &[Column] = &[
    text("email"),
    text("first_name"),
    text("last_name"),
    text("type"),
    text("dob"),
    text("reg_no"),
    text("phone"),
    text("gender"),
    text("street"),
    text("city"),
    text("postal_code"),
    text("state"),
    text("country"),
    text("identity.issue_country"),
    text("identity.id_doc_type"),
    text("identity.document_number"),
    text("identity.issue_date"),
    text("identity.expiry_date"),
    col("kyc_status", "kyc_statuses", Kind::LatestKyc),
    col("kyc_statuses", "kyc_statuses", Kind::Json),
];

const PAYOUT_COLUMNS: &[Column] = &[
    col("batch_uuid", "uuid", Kind::Text),
    col("batch_external_id", "external_id", Kind::Text),
    col("batch_status", "status", Kind::Text),
    text("currency"),
    text("payout_method_name"),
    text("description"),
    col("total_amount", "total_amount", Kind::Money),
    col("scheduled_at", "scheduled_at", Kind::Time),
    col("created_at", "created_at", Kind::Time),
    text("error_code"),
    text("error_message"),
    col("transaction_uuid", "tx.uuid", Kind::Text),
    col("transaction_external_id", "tx.external_id", Kind::Text),
    col("first_name", "tx.first_name", Kind::Text),
    col("last_name", "tx.last_name", Kind::Text),
    col("email", "tx.email", Kind::Text),
    col("amount", "tx.amount", Kind::Money),
    col("transaction_status", "tx.status", Kind::Text),
    col(
        "payout_method_params",
        "tx.payout_method_params",
        Kind::Json,
    ),
];

const PAYIN_COLUMNS: &[Column] = &[
    text("uuid"),
    text("external_id"),
    text("name"),
    text("email"),
    text("status"),
    text("stage"),
    text("currency"),
    col("amount", "amount", Kind::Money),
    text("gst"),
    col("gst_amount", "gst_amount", Kind::Money),
    col("total", "total", Kind::Money),
    col("paid_amount", "paid_amount", Kind::Money),
    text("payment_method"),
    text("description"),
    text("is_refundable"),
    text("pay_code.pay_url"),
    col("expired_at", "expired_at", Kind::Time),
    col("pay_by", "pay_by", Kind::Time),
    col("created_at", "created_at", Kind::Time),
    text("webhook_notification.endpoint_url"),
];

const AGREEMENT_COLUMNS: &[Column] = &[
    text("id"),
    text("payment_agreement_id"),
    text("client_transaction_id"),
    text("external_id"),
    text("status"),
    text("payment_agreement_type"),
    col("limit_amount", "limit_amount", Kind::Money),
    text("description"),
    col("created_at", "created_at", Kind::Time),
    col(
        "agreement_details.variable_agreement_details_obj.start_date",
        "agreement_details.variable_agreement_details_obj.start_date",
        Kind::Date,
    ),
    text("agreement_details.variable_agreement_details_obj.frequency"),
    text("payer_details.name"),
    text("payer_details.bank_account_details.bsb"),
    text("payer_details.bank_account_details.account_number"),
    text("payer_details.pay_id_details.pay_id"),
    text("payer_details.pay_id_details.pay_id_type"),
    text("payment_agreement_notification.endpoint_url"),
];

const CARD_COLUMNS: &[Column] = &[
    text("uuid"),
    text("external_id"),
    text("name"),
    text("email"),
    text("status"),
    text("currency"),
    col("amount", "amount", Kind::Money),
    col("total", "total", Kind::Money),
    col("paid_amount", "paid_amount", Kind::Money),
    text("is_refundable"),
    text("payment_method"),
    col("expired_at", "expired_at", Kind::Time),
    col("created_at", "created_at", Kind::Time),
    text("pay_code.3ds_url"),
    col(
        "refund_information.total_amount",
        "refund_information.total_amount",
        Kind::Money,
    ),
    col(
        "refund_information.refund_amount",
        "refund_information.refund_amount",
        Kind::Money,
    ),
    text("refund_information.description"),
    text("sender_details.card.card_type"),
    text("sender_details.card.card_brand"),
    text("sender_details.card.card_last_4"),
    text("webhook_notification.endpoint_url"),
];

const CUSTOMER_COLUMNS: &[Column] = &[
    text("id"),
    text("customerType"),
    text("customerName"),
    text("customerStatus"),
    text("categorization"),
    text("kycConfirmation"),
    text("person.firstName.name"),
    text("person.lastName.name"),
    text("person.fullName"),
    text("person.email"),
    text("person.gender"),
    text("person.dateOfBirth"),
    text("person.placeOfBirth"),
    text("person.nationality"),
    col(
        "person.telephoneNumbers",
        "person.telephoneNumbers",
        Kind::Json,
    ),
    col("person.addresses", "person.addresses", Kind::Json),
    col("person.documents", "person.documents", Kind::Json),
];

/// The CSV header of a resource's export.
pub fn columns(r: Resource) -> Vec<&'static str> {
    endpoint(r).columns.iter().map(|c| c.name).collect()
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Cuts `[from, to]` into windows of at most `max`; neighbours share their boundary.
pub(super) fn windows(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: Option<Duration>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let Some(max) = max else {
        return vec![(from, to)];
    };
    let mut out = Vec::new();
    let mut start = from;
    loop {
        let end = (start + max).min(to);
        out.push((start, end));
        if end >= to {
            return out;
        }
        start = end;
    }
}

/// What a page's metadata says about the pages after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum More {
    Yes,
    No,
    Unknown,
}

pub(super) struct Page {
    pub records: Vec<Value>,
    /// The page size the provider says it used (`per_page` or `size`).
    pub size: Option<u64>,
    pub more: More,
    total: Option<u64>,
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads one page of either shape: `{page, per_page, total_page, total, records}` or
/// `{page, size, next_page, total_page, total_count, records}`; every field but `records`
/// may be missing.
pub(super) fn parse_page(mut v: Value, page: u64) -> Result<Page, String> {
    let records = match v.get_mut("records").map(Value::take) {
        Some(Value::Array(r)) => r,
        Some(Value::Null) => Vec::new(),
        _ => return Err("the provider's answer has no 'records' list".into()),
    };
    let size = v
        .get("per_page")
        .or_else(|| v.get("size"))
        .and_then(as_u64)
        .filter(|s| *s > 0);
    let total = v
        .get("total_count")
        .or_else(|| v.get("total"))
        .and_then(as_u64);
    let mut says = Vec::new();
    if let Some(next) = v.get("next_page") {
        says.push(as_u64(next).is_some_and(|n| n > page));
    }
    if let Some(pages) = v.get("total_page").and_then(as_u64) {
        says.push(page < pages);
    }
    if let (Some(total), Some(size)) = (total, size) {
        says.push(page.saturating_mul(size) < total);
    }
    Ok(Page {
        records,
        size,
        more: verdict(&says),
        total,
    })
}

/// What the metadata says, all signals together: any "more" wins (a page too many costs
/// one request; a page too few loses records).
fn verdict(says: &[bool]) -> More {
    if says.is_empty() {
        More::Unknown
    } else if says.contains(&true) {
        More::Yes
    } else {
        More::No
    }
}

/// Reads one page of FinHub's `{customers, pagination: {numberOfPage, totalSize,
/// currentPage}}` (any of the three may be missing).
fn parse_customers_page(mut v: Value, page: u64) -> Result<Page, String> {
    let records = match v.get_mut("customers").map(Value::take) {
        Some(Value::Array(r)) => r,
        Some(Value::Null) => Vec::new(),
        _ => return Err("the provider's answer has no 'customers' list".into()),
    };
    let p = &v["pagination"];
    let total = p.get("totalSize").and_then(as_u64);
    let mut says = Vec::new();
    if let Some(pages) = p.get("numberOfPage").and_then(as_u64) {
        says.push(page < pages);
    }
    if let Some(total) = total {
        says.push(page.saturating_mul(PAGE_SIZE) < total);
    }
    Ok(Page {
        records,
        size: None,
        more: verdict(&says),
        total,
    })
}

/// Where the records go.
enum Sink {
    Csv(Box<csv::Writer<BufWriter<File>>>),
    Jsonl(BufWriter<File>),
    Json { out: BufWriter<File>, first: bool },
}

impl Sink {
    fn open(path: &Path, format: Format, resource: Resource) -> std::io::Result<Sink> {
        let file = BufWriter::with_capacity(256 << 10, crate::private::create(path)?);
        Ok(match format {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(file);
                w.write_record(columns(resource))?;
                Sink::Csv(Box::new(w))
            }
            Format::Jsonl => Sink::Jsonl(file),
            Format::Json => {
                let mut out = file;
                out.write_all(b"[")?;
                Sink::Json { out, first: true }
            }
        })
    }

    /// Writes one record (CSV: one line; a payout batch, one line per transaction).
    fn write(&mut self, record: &Value, ep: &Endpoint) -> std::io::Result<()> {
        match self {
            Sink::Csv(w) => {
                let txs = record
                    .get("payout_transactions")
                    .and_then(Value::as_array)
                    .filter(|t| {
                        !t.is_empty() && ep.columns.iter().any(|c| c.path.starts_with("tx."))
                    });
                match txs {
                    Some(txs) => {
                        for tx in txs {
                            w.write_record(ep.columns.iter().map(|c| cell(record, Some(tx), c)))?;
                        }
                    }
                    None => w.write_record(ep.columns.iter().map(|c| cell(record, None, c)))?,
                }
                Ok(())
            }
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, record)?;
                out.write_all(b"\n")
            }
            Sink::Json { out, first } => {
                out.write_all(if *first { b"\n" } else { b",\n" })?;
                *first = false;
                serde_json::to_writer(&mut *out, record).map_err(std::io::Error::from)
            }
        }
    }

    /// Flushes and syncs the file to disk.
    fn close(self) -> std::io::Result<()> {
        let out = match self {
            Sink::Csv(w) => (*w).into_inner().map_err(|e| e.into_error())?,
            Sink::Jsonl(out) => out,
            Sink::Json { mut out, .. } => {
                out.write_all(b"\n]\n")?;
                out
            }
        };
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }
}

fn lookup<'v>(record: &'v Value, tx: Option<&'v Value>, path: &str) -> Option<&'v Value> {
    let (mut v, path) = match path.strip_prefix("tx.") {
        Some(rest) => (tx?, rest),
        None => (record, path),
    };
    for key in path.split('.') {
        v = v.get(key)?;
    }
    Some(v)
}

/// One CSV cell.
fn cell(record: &Value, tx: Option<&Value>, c: &Column) -> String {
    let Some(v) = lookup(record, tx, c.path).filter(|v| !v.is_null()) else {
        return String::new();
    };
    let plain = || match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match c.kind {
        // Text from the provider, as a spreadsheet would read it: never a formula.
        Kind::Text => crate::report::neutralise(&plain()),
        Kind::Json => v.to_string(),
        Kind::LatestKyc => v
            .as_array()
            .and_then(|a| a.first())
            .and_then(|s| s.get("kyc_status"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        Kind::Money => {
            let currency = record
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or("AUD");
            money(&plain(), currency)
        }
        Kind::Time => iso_time(&plain()),
        Kind::Date => NaiveDate::parse_from_str(&plain(), "%d/%m/%y")
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|_| plain()),
    }
}

/// An exact decimal with at least the currency's minor units (`200.0` AUD → `200.00`); a
/// value that is not a number is kept as written.
fn money(s: &str, currency: &str) -> String {
    match Decimal::from_str(s.trim()) {
        Ok(mut d) => {
            let minor = crate::validate::iso::currency_minor_units(currency).unwrap_or(2);
            if d.scale() < minor {
                d.rescale(minor);
            }
            d.to_string()
        }
        Err(_) => s.to_string(),
    }
}

/// `2021-12-23T06:00:00.000+0000`, `2024-01-01T00:00:00Z` or `2024-01-01T00:00:00` (UTC) →
/// `2021-12-23T06:00:00.000Z`; anything else is kept as written.
fn iso_time(s: &str) -> String {
    let parsed = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        });
    match parsed {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => s.to_string(),
    }
}

/// Masks what must not leave the provider in clear: callback authorization headers and
/// tokens entirely, account and document numbers but their last 3 characters.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                match item {
                    Value::String(s)
                        if matches!(
                            k.as_str(),
                            "authorization_header"
                                | "password"
                                | "pinCode"
                                | "answer"
                                | "targetCode"
                                | "inputCode"
                        ) && !s.is_empty() =>
                    {
                        *s = "****".into();
                    }
                    Value::String(s) if crate::redact::is_sensitive_name(k) => {
                        *s = crate::redact::mask_tail(s);
                    }
                    Value::Number(n) if crate::redact::is_sensitive_name(k) => {
                        *item = Value::String(crate::redact::mask_tail(&n.to_string()));
                    }
                    other => redact(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn id_of(record: &Value, key: &str) -> Option<String> {
    match record.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The partial file beside `path`.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Why an export stopped short.
enum Stop {
    Failed(String),
    Interrupted,
}

struct Tally {
    rows: u64,
    pages: u64,
    duplicates: u64,
}

async fn run_one(
    export: &Export,
    ctx: &Ctx,
    run_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, RunError> {
    let (plan_id, step) = (ctx.plan_id, export.id.clone());
    let mark = ctx
        .db
        .read(move |c| exports::watermark(c, plan_id, &step))
        .await?
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let mut record = ExportRecord {
        step: export.id.clone(),
        resource: export.resource.as_str().to_string(),
        from_at: String::new(),
        to_at: String::new(),
        state: ExportState::Running,
        rows: 0,
        pages: 0,
        duplicates: 0,
        path: export.path.display().to_string(),
        error: None,
    };
    let window = export
        .from
        .resolve(now, mark)
        .and_then(|f| Ok((whole_second(f), whole_second(export.to.resolve(now, mark)?))))
        .and_then(|(f, t)| {
            if f > t {
                Err(format!("the window is empty: from {f} is after to {t}"))
            } else {
                Ok((f, t))
            }
        });
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if let Ok((f, t)) = &window {
        record.from_at = stamp(*f);
        record.to_at = stamp(*t);
    }
    let started = record.clone();
    ctx.db
        .write(move |c| exports::start(c, run_id, plan_id, &started))
        .await?;
    tracing::info!(step = %export.id, resource = export.resource.as_str(), from = %record.from_at, to = %record.to_at, "export started");
    ctx.progress.start(&export.id, 0);
    let result = match window {
        Err(e) => Err(Stop::Failed(e)),
        Ok((from, to)) => pull(export, ctx, from, to).await,
    };
    ctx.progress.finish();
    let ok = match result {
        Ok(t) => {
            record.state = ExportState::Completed;
            (record.rows, record.pages, record.duplicates) = (t.rows, t.pages, t.duplicates);
            tracing::info!(step = %export.id, rows = t.rows, pages = t.pages, duplicates = t.duplicates, path = %export.path.display(), "export finished");
            true
        }
        Err(Stop::Failed(e)) => {
            tracing::error!(step = %export.id, "export failed: {e}");
            record.state = ExportState::Failed;
            record.error = Some(e);
            false
        }
        Err(Stop::Interrupted) => {
            tracing::warn!(step = %export.id, "export interrupted; the next run does it again");
            record.state = ExportState::Interrupted;
            false
        }
    };
    ctx.db
        .write(move |c| exports::finish(c, run_id, &record))
        .await?;
    Ok(ok)
}

/// Pulls every page of every window into the partial file, then moves it into place.
async fn pull(
    export: &Export,
    ctx: &Ctx,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Tally, Stop> {
    let ep = endpoint(export.resource);
    let partial = partial_path(&export.path);
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Stop::Failed(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = export.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    }
    let mut sink = Sink::open(&partial, export.format, export.resource)
        .map_err(|e| io("write", &partial, e))?;
    let outcome = pull_pages(export, ctx, &ep, from, to, &mut sink).await;
    let tally = match outcome {
        Ok(t) => t,
        Err(e) => {
            drop(sink);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    sink.close().map_err(|e| io("write", &partial, e))?;
    std::fs::rename(&partial, &export.path)
        .map_err(|e| io("rename into place", &export.path, e))?;
    // The rename itself is durable once the directory is synced.
    if let Some(dir) = export.path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(tally)
}

async fn pull_pages(
    export: &Export,
    ctx: &Ctx,
    ep: &Endpoint,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sink: &mut Sink,
) -> Result<Tally, Stop> {
    let fmt = |t: DateTime<Utc>| {
        let s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
        if ep.zulu { s + "Z" } else { s }
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut tally = Tally {
        rows: 0,
        pages: 0,
        duplicates: 0,
    };
    // FinHub's customers come by status: one pass per status asked for (all by default).
    let slices: Vec<(DateTime<Utc>, DateTime<Utc>, Option<&str>)> =
        if export.resource == Resource::CustomersByStatus {
            let only = export.filter.iter().find(|(k, _)| k == "status");
            crate::provider::finhub::CUSTOMER_STATUSES
                .iter()
                .copied()
                .filter(|s| only.is_none_or(|(_, v)| v == s))
                .map(|s| (from, to, Some(s)))
                .collect()
        } else {
            windows(from, to, ep.max_window)
                .into_iter()
                .map(|(f, t)| (f, t, None))
                .collect()
        };
    for (w_from, w_to, status) in slices {
        let mut page: u64 = 1;
        let mut longest: u64 = 0;
        let mut stale_pages = 0;
        loop {
            if ctx.stopping() {
                return Err(Stop::Interrupted);
            }
            let mut query: Vec<(&str, String)> = vec![
                (ep.from_key, fmt(w_from)),
                (ep.to_key, fmt(w_to)),
                ("page", page.to_string()),
            ];
            if let Some(k) = ep.size_key {
                query.push((k, PAGE_SIZE.to_string()));
            }
            for (k, v) in &export.filter {
                query.push((k.as_str(), v.clone()));
            }
            let p = match (status, &ctx.finhub) {
                (Some(status), Some(fh)) => {
                    let reply =
                        super::protocol::idempotent(ctx, || fh.by_status(status, page, PAGE_SIZE))
                            .await
                            .map_err(|e| Stop::Failed(call_failure(&e, page)))?;
                    parse_customers_page(reply, page)
                }
                _ => {
                    let reply = super::protocol::idempotent(ctx, || async {
                        ctx.hc()?.list_page(ep.path, &query).await
                    })
                    .await
                    .map_err(|e| Stop::Failed(call_failure(&e, page)))?;
                    parse_page(reply, page)
                }
            }
            .map_err(|e| Stop::Failed(format!("page {page}: {e}")))?;
            tally.pages += 1;
            if page == 1
                && let Some(total) = p.total
            {
                ctx.progress.set_total(tally.rows + total);
            }
            let n = p.records.len() as u64;
            longest = longest.max(n);
            let mut fresh = 0;
            for mut r in p.records {
                if let Some(id) = id_of(&r, ep.id_key)
                    && !seen.insert(id)
                {
                    tally.duplicates += 1;
                    continue;
                }
                redact(&mut r);
                sink.write(&r, ep).map_err(|e| {
                    Stop::Failed(format!("cannot write {}: {e}", export.path.display()))
                })?;
                fresh += 1;
            }
            tally.rows += fresh;
            ctx.tick(fresh);
            if n == 0 {
                break;
            }
            stale_pages = if fresh == 0 { stale_pages + 1 } else { 0 };
            if stale_pages >= 3 {
                return Err(Stop::Failed(format!(
                    "the provider returned only records already seen on pages {}..={page}; \
                     it may be ignoring the page number",
                    page - 2
                )));
            }
            let full = n >= p.size.or(ep.size_key.map(|_| PAGE_SIZE)).unwrap_or(longest);
            if p.more == More::Yes || full {
                page += 1;
            } else {
                break;
            }
        }
    }
    Ok(tally)
}

fn call_failure(e: &CallError, page: u64) -> String {
    let what = match e {
        CallError::Status {
            status, message, ..
        } => format!("HTTP {status}: {message}"),
        other => other.to_string(),
    };
    crate::redact::scrub(&format!("page {page}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pages_of_both_shapes() {
        let a = parse_page(
            json!({"total": 45, "page": 3, "per_page": 20, "records": [1, 2]}),
            3,
        )
        .unwrap();
        assert_eq!((a.more, a.size, a.total), (More::No, Some(20), Some(45)));
        let a = parse_page(
            json!({"total": 100, "page": 1, "per_page": 20, "records": []}),
            1,
        )
        .unwrap();
        assert_eq!(a.more, More::Yes);
        let b = parse_page(
            json!({"page": 1, "size": 10, "next_page": null, "total_page": 1, "records": []}),
            1,
        )
        .unwrap();
        assert_eq!(b.more, More::No);
        // The reference's own example: next_page 2 with total_page 1 — follow it (one more
        // request) rather than risk losing a page.
        let b = parse_page(json!({"page": 1, "size": 10, "next_page": 2, "total_page": 1, "total_count": 10, "records": []}), 1).unwrap();
        assert_eq!(b.more, More::Yes);
        let bare = parse_page(json!({"records": [1]}), 1).unwrap();
        assert_eq!((bare.more, bare.size), (More::Unknown, None));
        assert!(parse_page(json!({"data": []}), 1).is_err());
    }

    #[test]
    fn windows_split_and_share_boundaries() {
        let t0 = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let w = windows(t0, t0 + Duration::days(800), Some(Duration::days(365)));
        assert_eq!(w.len(), 3);
        assert_eq!(w[0], (t0, t0 + Duration::days(365)));
        assert_eq!(w[1].0, w[0].1);
        assert_eq!(w[2].1, t0 + Duration::days(800));
        assert_eq!(windows(t0, t0, Some(Duration::days(365))), vec![(t0, t0)]);
        assert_eq!(windows(t0, t0 + Duration::days(900), None).len(), 1);
    }

    #[test]
    fn cells_are_normalised_and_redacted() {
        let mut card = json!({"uuid": "U1", "currency": "USD", "amount": 10000, "paid_amount": "0.0",
            "created_at": "2025-05-28T04:22:21.567+0000", "expired_at": "",
            "webhook_notification": {"endpoint_url": "https://x", "authorization_header": "Bearer abc"},
            "sender_details": {"card": {"card_brand": "visa", "card_token_id": "tok_123456789"}}});
        redact(&mut card);
        assert_eq!(card["webhook_notification"]["authorization_header"], "****");
        assert_eq!(
            card["sender_details"]["card"]["card_token_id"],
            "**********789"
        );
        let c = |path: &'static str, kind| cell(&card, None, &col("x", path, kind));
        assert_eq!(c("amount", Kind::Money), "10000.00");
        assert_eq!(c("paid_amount", Kind::Money), "0.00");
        assert_eq!(c("created_at", Kind::Time), "2025-05-28T04:22:21.567Z");
        assert_eq!(c("expired_at", Kind::Time), "");
        assert_eq!(c("sender_details.card.card_brand", Kind::Text), "visa");
        // A provider's text a spreadsheet would run is not a formula in the file.
        let evil = json!({"name": "=HYPERLINK(\"http://x\",\"pay\")"});
        assert_eq!(
            cell(&evil, None, &col("n", "name", Kind::Text)),
            "'=HYPERLINK(\"http://x\",\"pay\")"
        );
        assert_eq!(c("missing.path", Kind::Text), "");
        assert_eq!(money("12.345", "AUD"), "12.345");
        assert_eq!(money("1000", "JPY"), "1000");
        assert_eq!(iso_time("2024-01-01T00:00:00Z"), "2024-01-01T00:00:00.000Z");
        let contact =
            json!({"kyc_statuses": [{"kyc_status": "approved"}, {"kyc_status": "rejected"}]});
        assert_eq!(
            cell(&contact, None, &col("k", "kyc_statuses", Kind::LatestKyc)),
            "approved"
        );
        let agreement = json!({"agreement_details": {"variable_agreement_details_obj": {"start_date": "15/07/24"}}});
        assert_eq!(cell(&agreement, None, &AGREEMENT_COLUMNS[9]), "2024-07-15");
    }
}
