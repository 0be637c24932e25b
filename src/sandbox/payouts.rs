//! Payouts v2 (O1–O7): methods, batches, details, listing, simulation, cancellation.
//! Duplicate `external_id`s are accepted, as the real API documents no deduplication:
//! payrun must never rely on the server to stop a double payment.

use super::App;
use super::api::{
    ApiError, ApiResult, amount, object, optional_str, page_b, page_number, parse_filter_date,
    query_param, required_str,
};
use super::contacts::email_ok;
use super::ledger::{PayoutBatch, PayoutTx};
use super::methods::{self, Method};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// `GET /v2/payouts/payout_methods` (path is our choice).
pub async fn methods() -> Json<Value> {
    Json(json!({"records": methods::PAYOUT.iter().map(|m| m.record("payout")).collect::<Vec<_>>()}))
}

/// `GET /v2/payouts/payout_method/params?payout_method_name=`.
pub async fn method_params(Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let name = query_param(&q, "payout_method_name")?;
    let m =
        methods::payout(name).ok_or_else(|| ApiError::invalid("Payout method name is invalid"))?;
    Ok(Json(json!({"record": m.record("payout")})))
}

/// The payee-name rule: the sandbox accepts the names payrun accepts (names as people
/// write them: letters of any script, apostrophes, hyphens, full stops).
fn payee_name_ok(s: &str) -> bool {
    crate::validate::payee_name(s).is_ok()
}

/// `scheduled_at`: `YYYY-MM-DDTHH:mm:ss`, or with milliseconds and `+0000`, UTC.
fn parse_scheduled(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
        .or_else(|| {
            DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
}

fn param_present(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Number(_)) => true,
        _ => false,
    }
}

fn check_transaction(
    i: usize,
    tx: &Map<String, Value>,
    m: &Method,
    ledger: &super::ledger::Ledger,
    app: &App,
) -> Result<PayoutTx, ApiError> {
    let at = |msg: &str| ApiError::invalid(format!("Payout transaction details[{i}] {msg}"));
    let name = |f: &str| -> Result<String, ApiError> {
        let v = required_str(tx, f)
            .map_err(|_| at(&format!("{} can't be blank", f.replace('_', " "))))?;
        if payee_name_ok(v) {
            Ok(v.to_string())
        } else {
            Err(at(&format!("{} is invalid", f.replace('_', " "))))
        }
    };
    let (first_name, last_name) = (name("first_name")?, name("last_name")?);
    let email = required_str(tx, "email")
        .map_err(|_| at("email can't be blank"))?
        .to_string();
    if !email_ok(&email) {
        return Err(at("email is invalid"));
    }
    let value = amount(tx, "amount")
        .map_err(|_| at("amount must be a number"))?
        .ok_or_else(|| at("amount can't be blank"))?;
    let minor = crate::validate::iso::currency_minor_units(m.currency).unwrap_or(2);
    if value <= Decimal::ZERO || value.normalize().scale() > minor {
        return Err(at("amount is invalid"));
    }
    if value < Decimal::from(m.min_amount) || value > Decimal::from(m.max_amount) {
        return Err(at(&format!(
            "amount must be between {} and {} {}",
            m.min_amount, m.max_amount, m.currency
        )));
    }
    let params = match tx.get("payout_method_params") {
        Some(Value::Object(p)) => p,
        _ => return Err(at("payout method params can't be blank")),
    };
    for p in m.mandatory() {
        if !param_present(params.get(p)) {
            return Err(at(&format!("payout method params {p} can't be blank")));
        }
    }
    if m.require_contact && !ledger.contacts.contains_key(&email) {
        return Err(at(&format!(
            "contact {email} not found; create the contact first"
        )));
    }
    if m.require_kyc {
        let statuses = ledger.kyc_statuses(&email, app.config.kyc_delay, Utc::now());
        if statuses.first().map(|(s, _)| *s) != Some("approved") {
            return Err(at(&format!("contact {email} has no approved KYC")));
        }
    }
    Ok(PayoutTx {
        uuid: String::new(),
        external_id: optional_str(tx, "external_id")
            .map_err(|_| at("external id must be a string"))?
            .map(str::to_string),
        first_name,
        last_name,
        email,
        amount: value,
        params: Value::Object(params.clone()),
        forced: None,
    })
}

/// `POST /v2/payouts`: one batch of transactions in one currency and method.
pub async fn create(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let details = match body.get("payout_transaction_details") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(ApiError::invalid(
                "Payout transaction details can't be blank",
            ));
        }
    };
    let currency = required_str(&body, "currency")?.to_string();
    let method_name = required_str(&body, "payout_method_name")?;
    let m = methods::payout(method_name)
        .ok_or_else(|| ApiError::invalid("Payout method name is invalid"))?;
    if m.currency != currency {
        return Err(ApiError::invalid(format!(
            "Currency {currency} does not match payout method {method_name} ({})",
            m.currency
        )));
    }
    let description = required_str(&body, "description")?;
    let n = description.chars().count();
    if !(5..=90).contains(&n) {
        return Err(ApiError::invalid("Description must be 5 to 90 characters"));
    }
    let webhook = super::api::webhook(body.get("webhook_notification"))?;
    let scheduled_at = match optional_str(&body, "scheduled_at")? {
        None => None,
        Some(s) => {
            Some(parse_scheduled(s).ok_or_else(|| ApiError::invalid("Scheduled at is invalid"))?)
        }
    };
    let external_id = optional_str(&body, "external_id")?.map(str::to_string);

    let mut ledger = app.ledger();
    let mut transactions = Vec::with_capacity(details.len());
    for (i, d) in details.iter().enumerate() {
        let Value::Object(tx) = d else {
            return Err(ApiError::invalid(format!(
                "Payout transaction details[{i}] must be an object"
            )));
        };
        transactions.push(check_transaction(i, tx, m, &ledger, &app)?);
    }
    for t in &mut transactions {
        t.uuid = ledger.new_uuid();
    }
    let total: Decimal = transactions.iter().map(|t| t.amount).sum();
    let now = Utc::now();
    // Short of funds: the batch exists all the same. It waits for a top-up (HC_PAYOUT1),
    // or the PayTo agreement pays it (HC_PAYOUT2, `--payto-funding`).
    let (funding, funded_at) = if ledger.debit(&currency, total) {
        (None, Some(now))
    } else if app.config.payto_funding {
        (Some("HC_PAYOUT2"), Some(now))
    } else {
        (Some("HC_PAYOUT1"), None)
    };
    let unfunded_until = match (funded_at, app.config.unfunded_expiry) {
        (None, Some(after)) => chrono::Duration::from_std(after).ok().map(|d| now + d),
        _ => None,
    };
    let batch = PayoutBatch {
        uuid: ledger.new_uuid(),
        external_id,
        currency,
        method: m.name.to_string(),
        description: description.to_string(),
        scheduled_at,
        created_at: now,
        webhook,
        total,
        funding,
        funded_at,
        unfunded_until,
        cancelled: false,
        forced: None,
        transactions,
    };
    let reply = ledger.payout_json(&batch, app.config.payout_delay, now);
    ledger.payouts.push(batch);
    Ok(Json(reply))
}

/// `GET /v2/payouts/detail?uuid=`.
pub async fn detail(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let uuid = query_param(&q, "uuid")?;
    let ledger = app.ledger();
    let i = ledger
        .find_payout(uuid)
        .ok_or_else(|| ApiError::invalid("Payout not found"))?;
    Ok(Json(ledger.payout_json(
        &ledger.payouts[i],
        app.config.payout_delay,
        Utc::now(),
    )))
}

/// `GET /v2/payouts/all?from_date&to_date&page`: all three required, window at most a
/// year, 20 per page, shape B.
pub async fn list(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let date = |k: &str| -> Result<DateTime<Utc>, ApiError> {
        let s = q
            .get(k)
            .ok_or_else(|| ApiError::bad_request(format!("{k} is required")))?;
        parse_filter_date(s).ok_or_else(|| {
            ApiError::bad_request(format!("{k} must be DD/MM/YY or YYYY-MM-DDThh:mm:ss"))
        })
    };
    let (from, to) = (date("from_date")?, date("to_date")?);
    if !q.contains_key("page") {
        return Err(ApiError::bad_request("page is required"));
    }
    let page = page_number(q.get("page"), "page")?;
    if to < from {
        return Err(ApiError::bad_request(
            "to_date must not be before from_date",
        ));
    }
    if to - from > chrono::Duration::days(366) {
        return Err(ApiError::bad_request(
            "The date range must not exceed 1 year",
        ));
    }
    let now = Utc::now();
    let lag = app.config.faults.listing_lag;
    let ledger = app.ledger();
    let mut batches: Vec<&PayoutBatch> = ledger
        .payouts
        .iter()
        .filter(|b| b.created_at >= from && b.created_at <= to)
        .filter(|b| super::ledger::listed(b.created_at, lag, now))
        .collect();
    batches.sort_by_key(|b| b.created_at);
    let records = batches
        .iter()
        .map(|b| ledger.payout_json(b, app.config.payout_delay, now))
        .collect();
    let mut v = page_b(records, page, 20, from, to);
    super::api::quirk(&mut v, app.config.faults.inconsistent_pages);
    Ok(Json(v))
}

/// `POST /v2/payouts/simulate` (path is our choice): `{uuid, status: completed|failed}` for
/// a batch (all its transactions) or a single transaction, while not yet completed.
pub async fn simulate(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let uuid = required_str(&body, "uuid")?.to_string();
    let status: &'static str = match required_str(&body, "status")? {
        "completed" => "completed",
        "failed" => "failed",
        _ => return Err(ApiError::invalid("Status must be completed or failed")),
    };
    let now = Utc::now();
    let delay = app.config.payout_delay;
    let mut ledger = app.ledger();
    let found = ledger
        .payouts
        .iter()
        .position(|b| b.uuid == uuid || b.transactions.iter().any(|t| t.uuid == uuid));
    let i = found.ok_or_else(|| ApiError::bad_request("Payout not found"))?;
    let current = ledger.payout_status(&ledger.payouts[i], delay, now);
    if matches!(current, "completed" | "expired") {
        return Err(ApiError::bad_request(format!(
            "Payout is {current}; only pending payouts can be simulated"
        )));
    }
    let batch = &mut ledger.payouts[i];
    if batch.uuid == uuid {
        for t in &mut batch.transactions {
            t.forced = Some(status);
        }
        batch.forced = Some(status);
    } else if let Some(t) = batch.transactions.iter_mut().find(|t| t.uuid == uuid) {
        t.forced = Some(status);
    }
    Ok(Json(json!({"status": "ok"})))
}

/// `POST /v2/payouts/cancel_scheduled`: a batch still waiting for its `scheduled_at` ends
/// `expired` (our reading) and its funds are returned.
pub async fn cancel_scheduled(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let uuid = required_str(&body, "uuid")?;
    let now = Utc::now();
    let mut ledger = app.ledger();
    let i = ledger
        .find_payout(uuid)
        .ok_or_else(|| ApiError::bad_request("Payout not found"))?;
    if ledger.payout_status(&ledger.payouts[i], app.config.payout_delay, now) != "scheduled" {
        return Err(ApiError::bad_request(
            "Only scheduled payouts can be cancelled",
        ));
    }
    let (currency, total, funded) = {
        let b = &mut ledger.payouts[i];
        b.cancelled = true;
        (
            b.currency.clone(),
            b.total,
            b.funded_at.is_some() && b.funding.is_none(),
        )
    };
    if funded {
        ledger.top_up(&currency, total, now);
    }
    Ok(Json(json!({"status": "OK"})))
}
