//! Payins v2 (P1–P8): methods, create, list, details, simulation, refund, cancel.

use super::App;
use super::api::{
    ApiError, ApiResult, amount, money, object, optional_str, page_a, page_number,
    parse_filter_date, query_param, required_str, timestamp,
};
use super::contacts::email_ok;
use super::ledger::{Payin, mask_webhook};
use super::methods;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// `GET /v2/payins/payin_methods` (path is our choice).
pub async fn methods() -> Json<Value> {
    Json(json!({"records": methods::PAYIN.iter().map(|m| m.record("payin")).collect::<Vec<_>>()}))
}

/// `GET /v2/payins/payin_method/params?payin_method_name=`.
pub async fn method_params(Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let name = query_param(&q, "payin_method_name")?;
    let m = methods::payin(name)
        .ok_or_else(|| ApiError::bad_request("Payin method name is invalid"))?;
    Ok(Json(json!({"record": m.record("payin")})))
}

/// When the sandbox's payer pays a pending payin (`payin_delay` after its creation, in
/// full), if before it expires.
fn paid_at(p: &Payin, delay: Option<std::time::Duration>) -> Option<DateTime<Utc>> {
    let at = p.created_at + Duration::from_std(delay?).ok()?;
    (p.status == "pending" && at <= p.expired_at).then_some(at)
}

fn status(p: &Payin, delay: Option<std::time::Duration>, now: DateTime<Utc>) -> &'static str {
    match paid_at(p, delay) {
        Some(at) if now >= at => "received",
        _ if p.status == "pending" && now > p.expired_at => "expired",
        _ => p.status,
    }
}

/// Writes down what time has done to a payin (its payer paid; it expired) before a change.
fn settle(p: &mut Payin, delay: Option<std::time::Duration>, now: DateTime<Utc>) {
    let s = status(p, delay, now);
    if s == "received" && p.status == "pending" {
        p.paid_amount = p.amount + p.gst_amount;
    }
    p.status = s;
}

pub fn payin_json(p: &Payin, delay: Option<std::time::Duration>, now: DateTime<Utc>) -> Value {
    let status = status(p, delay, now);
    let paid = if status == "received" && p.status == "pending" {
        p.amount + p.gst_amount
    } else {
        p.paid_amount
    };
    let f = |k: &str| p.fields.get(k).cloned().unwrap_or(Value::Null);
    let refundable = methods::payin(&p.method).is_some_and(|m| m.refundable);
    json!({
        "uuid": p.uuid, "name": f("name"), "description": f("description"), "email": f("email"),
        "external_id": f("external_id"), "status": status, "stage": "normal_stage",
        "pay_code": f("pay_code"), "currency": p.currency, "gst": f("gst"),
        "amount": money(p.amount), "gst_amount": money(p.gst_amount), "total": money(p.amount + p.gst_amount),
        "paid_amount": money(paid), "payment_method": p.method, "is_refundable": refundable,
        "expired_at": timestamp(p.expired_at), "pay_by": timestamp(p.expired_at),
        "webhook_notification": mask_webhook(&f("webhook_notification")),
        "created_at": timestamp(p.created_at),
    })
}

fn parse_expiry(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z")
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// `POST /v2/payins`.
pub async fn create(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let currency = required_str(&body, "currency")?.to_string();
    let gst = match body.get("gst") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(ApiError::invalid("Gst can't be blank")),
    };
    let value =
        amount(&body, "amount")?.ok_or_else(|| ApiError::invalid("Amount can't be blank"))?;
    for f in ["name", "email", "description"] {
        required_str(&body, f)?;
    }
    let email = required_str(&body, "email")?.to_string();
    if !email_ok(&email) {
        return Err(ApiError::invalid("Email is invalid"));
    }
    let m = methods::payin(required_str(&body, "payin_method_name")?)
        .ok_or_else(|| ApiError::invalid("Payin method name is invalid"))?;
    if m.currency != currency {
        return Err(ApiError::invalid(format!(
            "Currency {currency} does not match payin method {}",
            m.name
        )));
    }
    if value <= Decimal::ZERO
        || value < Decimal::from(m.min_amount)
        || value > Decimal::from(m.max_amount)
    {
        return Err(ApiError::invalid(format!(
            "Amount must be between {} and {} {}",
            m.min_amount, m.max_amount, m.currency
        )));
    }
    let Some(Value::Object(params)) = body.get("payin_method_params") else {
        return Err(ApiError::invalid("Payin method params can't be blank"));
    };
    for p in m.mandatory() {
        if params
            .get(p)
            .and_then(Value::as_str)
            .is_none_or(|v| v.trim().is_empty())
        {
            return Err(ApiError::invalid(format!(
                "Payin method params {p} can't be blank"
            )));
        }
    }
    super::api::webhook(body.get("webhook_notification"))?;
    let now = Utc::now();
    let expired_at = match optional_str(&body, "expired_at")? {
        None => now + Duration::days(1),
        Some(s) => {
            let t = parse_expiry(s).ok_or_else(|| ApiError::invalid("Expired at is invalid"))?;
            if t <= now + Duration::minutes(15) {
                return Err(ApiError::invalid(
                    "Expired at must be more than 15 minutes from now",
                ));
            }
            t
        }
    };
    let mut ledger = app.ledger();
    if m.require_contact && !ledger.contacts.contains_key(&email) {
        return Err(ApiError::invalid(format!(
            "Contact {email} not found; create the contact first"
        )));
    }
    let uuid = ledger.new_uuid();
    let pay_code = match m.name {
        "au_payid_npp_aud" => {
            json!({"pay_id": format!("{}@payid.sandbox.local", uuid.to_lowercase())})
        }
        _ => json!({"pay_url": format!("https://sandbox.local/pay/{uuid}")}),
    };
    let mut fields = serde_json::Map::new();
    for k in [
        "name",
        "email",
        "description",
        "external_id",
        "webhook_notification",
    ] {
        fields.insert(k.into(), body.get(k).cloned().unwrap_or(Value::Null));
    }
    fields.insert("gst".into(), json!(gst));
    fields.insert("pay_code".into(), pay_code);
    let payin = Payin {
        uuid,
        fields,
        currency,
        method: m.name.to_string(),
        amount: value,
        gst_amount: if gst {
            (value / Decimal::from(10)).round_dp(2)
        } else {
            Decimal::ZERO
        },
        paid_amount: Decimal::ZERO,
        refunded: Decimal::ZERO,
        status: "pending",
        created_at: now,
        expired_at,
    };
    let reply = payin_json(&payin, app.config.payin_delay, now);
    ledger.payins.push(payin);
    Ok(Json(reply))
}

/// `GET /v2/payins/all`: shape A.
pub async fn list(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let page = page_number(q.get("page"), "page")?;
    let per_page = if q.contains_key("per_page") {
        page_number(q.get("per_page"), "per_page")?
    } else {
        20
    };
    let bound = |k: &str| match q.get(k) {
        None => Ok(None),
        Some(s) => parse_filter_date(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{k} must be DD/MM/YY or YYYY-MM-DDThh:mm:ss"))
        }),
    };
    let (from, to) = (bound("from_date")?, bound("to_date")?);
    let now = Utc::now();
    let ledger = app.ledger();
    let mut payins: Vec<&Payin> = ledger
        .payins
        .iter()
        .filter(|p| from.is_none_or(|f| p.created_at >= f) && to.is_none_or(|t| p.created_at <= t))
        .filter(|p| super::ledger::listed(p.created_at, app.config.faults.listing_lag, now))
        .collect();
    payins.sort_by_key(|p| p.created_at);
    let mut v = page_a(
        payins
            .iter()
            .map(|p| payin_json(p, app.config.payin_delay, now))
            .collect(),
        page,
        per_page.min(100),
    );
    super::api::quirk(&mut v, app.config.faults.inconsistent_pages);
    Ok(Json(v))
}

fn find<'l>(ledger: &'l mut super::ledger::Ledger, uuid: &str) -> Result<&'l mut Payin, ApiError> {
    ledger
        .payins
        .iter_mut()
        .find(|p| p.uuid == uuid)
        .ok_or_else(|| ApiError::bad_request("Payin not found"))
}

/// `GET /v2/payins/detail?uuid=`.
pub async fn detail(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let uuid = query_param(&q, "uuid")?;
    let mut ledger = app.ledger();
    Ok(Json(payin_json(
        find(&mut ledger, uuid)?,
        app.config.payin_delay,
        Utc::now(),
    )))
}

/// `POST /v2/payins/simulate`: `completed` pays it (`received`); `failed` ends it `expired`.
pub async fn simulate(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let uuid = required_str(&body, "uuid")?.to_string();
    let wanted = required_str(&body, "status")?.to_string();
    let paid = amount(&body, "amount")?;
    let now = Utc::now();
    let mut ledger = app.ledger();
    let p = find(&mut ledger, &uuid)?;
    settle(p, app.config.payin_delay, now);
    if p.status != "pending" {
        return Err(ApiError::bad_request(
            "Only pending payins can be simulated",
        ));
    }
    match wanted.as_str() {
        "completed" => {
            p.status = "received";
            p.paid_amount = paid.unwrap_or(p.amount + p.gst_amount);
        }
        "failed" => p.status = "expired",
        _ => return Err(ApiError::bad_request("status must be completed or failed")),
    }
    Ok(Json(json!({"status": "ok"})))
}

/// `POST /v2/payins/refund`: `received` payins of refundable methods, up to what is left.
pub async fn refund(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let uuid = required_str(&body, "uuid")
        .map_err(|_| ApiError::invalid_field("payment_request_id", "can't be blank"))?
        .to_string();
    let description = optional_str(&body, "description")?
        .ok_or_else(|| ApiError::invalid_field("reason", " can't be blank"))?
        .to_string();
    if description.chars().count() < 5 {
        return Err(ApiError::invalid_field(
            "reason",
            "is too short (minimum is 5 characters)",
        ));
    }
    let requested = amount(&body, "amount")?;
    let now = Utc::now();
    let mut ledger = app.ledger();
    let p = find(&mut ledger, &uuid)?;
    settle(p, app.config.payin_delay, now);
    if p.status != "received" || !methods::payin(&p.method).is_some_and(|m| m.refundable) {
        return Err(ApiError::bad_request(
            "Only received payins of refundable methods can be refunded",
        ));
    }
    let total = p.amount + p.gst_amount;
    let value = requested.unwrap_or(total - p.refunded);
    if value <= Decimal::ZERO || p.refunded + value > total {
        return Err(ApiError::invalid_field(
            "refund_amount",
            "is more than the amount left to refund",
        ));
    }
    p.refunded += value;
    p.status = "return_pending";
    Ok(Json(json!({
        "total_amount": money(total), "refund_amount": money(value), "description": description,
        "payin_request": payin_json(p, app.config.payin_delay, now),
    })))
}

/// `POST /v2/payins/cancel` (path is our choice): a pending, cancellable payin ends `expired`.
pub async fn cancel(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let uuid = required_str(&body, "uuid")?.to_string();
    let now = Utc::now();
    let mut ledger = app.ledger();
    let p = find(&mut ledger, &uuid)?;
    settle(p, app.config.payin_delay, now);
    if p.status != "pending" || !methods::payin(&p.method).is_some_and(|m| m.cancellable) {
        return Err(ApiError::bad_request(
            "Only pending payins of cancellable methods can be cancelled",
        ));
    }
    p.status = "expired";
    Ok(Json(json!({"status": "Ok"})))
}
