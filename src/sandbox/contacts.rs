//! Contacts (C1–C5) and KYC (K1, K2).

use super::App;
use super::api::{
    ApiError, ApiResult, object, optional_str, page_a, page_number, parse_filter_date, query_param,
    required_str,
};
use super::ledger::{Contact, Kyc};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Multipart, Query, State};
use chrono::{NaiveDate, Utc};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The emulator's KYC image limit, the same as payrun's (10 MiB each).
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

const CONTACT_FIELDS: [&str; 13] = [
    "email",
    "first_name",
    "last_name",
    "type",
    "dob",
    "reg_no",
    "phone",
    "gender",
    "street",
    "city",
    "postal_code",
    "state",
    "country",
];

/// Email as the API checks it: one `@`, a local part, a dotted domain, no spaces.
pub fn email_ok(e: &str) -> bool {
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !e.contains(char::is_whitespace)
                && !domain.contains('@')
                && domain.split('.').count() >= 2
                && domain.split('.').all(|l| !l.is_empty())
        }
        None => false,
    }
}

fn date_ok(s: &str) -> Option<NaiveDate> {
    (s.len() == 10)
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
}

fn phone_ok(p: &str) -> bool {
    let body = p.strip_prefix('+').unwrap_or(p);
    let digits = body.chars().filter(char::is_ascii_digit).count();
    body.chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
        && (6..=20).contains(&digits)
}

/// Checks contact fields; `all` for create (every field required), else only those present.
fn check_contact(body: &Map<String, Value>, all: bool) -> Result<(), ApiError> {
    let present = |f: &str| body.get(f).is_some_and(|v| !v.is_null());
    for f in CONTACT_FIELDS {
        if f == "reg_no" || (!all && !present(f)) {
            continue;
        }
        required_str(body, f)?;
    }
    let get = |f: &str| body.get(f).and_then(Value::as_str);
    if let Some(e) = get("email")
        && !email_ok(e)
    {
        return Err(ApiError::invalid("Email is invalid"));
    }
    if let Some(t) = get("type") {
        if !["individual", "organization"].contains(&t) {
            return Err(ApiError::invalid("Type is not included in the list"));
        }
        if t == "organization" && optional_str(body, "reg_no")?.is_none() {
            return Err(ApiError::invalid("Reg no can't be blank"));
        }
    }
    if let Some(d) = get("dob")
        && date_ok(d).is_none_or(|d| d >= Utc::now().date_naive())
    {
        return Err(ApiError::invalid("Dob is invalid"));
    }
    if let Some(g) = get("gender")
        && !["male", "female"].contains(&g)
    {
        return Err(ApiError::invalid("Gender is not included in the list"));
    }
    if let Some(p) = get("phone")
        && !phone_ok(p)
    {
        return Err(ApiError::invalid("Phone is invalid"));
    }
    if let Some(c) = get("country")
        && !crate::validate::iso::is_country(c)
    {
        return Err(ApiError::invalid("Country is invalid"));
    }
    Ok(())
}

/// `POST /v2/contacts`. An email that exists already is a 422 (our documented choice).
pub async fn create(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    check_contact(&body, true)?;
    let email = required_str(&body, "email")?.to_string();
    let mut ledger = app.ledger();
    if ledger.contacts.contains_key(&email) {
        return Err(ApiError::invalid("Email has already been taken"));
    }
    let fields: Map<String, Value> = CONTACT_FIELDS
        .iter()
        .map(|f| {
            (
                f.to_string(),
                body.get(*f)
                    .cloned()
                    .unwrap_or(Value::String(String::new())),
            )
        })
        .collect();
    ledger.contacts.insert(
        email.clone(),
        Contact {
            fields,
            created_at: Utc::now(),
        },
    );
    Ok(Json(json!({"email": email})))
}

/// `GET /v2/contacts/detail?email=`.
pub async fn detail(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let email = query_param(&q, "email")?;
    let ledger = app.ledger();
    let contact = ledger.contacts.get(email).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "CONTACT_NOT_FOUND",
            "Contact not found",
        )
    })?;
    Ok(Json(ledger.contact_json(
        contact,
        app.config.kyc_delay,
        Utc::now(),
    )))
}

/// `GET /v2/contacts/`: shape A, optional creation-date window.
pub async fn list(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let page = page_number(q.get("page"), "page")?;
    let per_page = page_number(q.get("per_page"), "per_page")
        .map(|p| if q.contains_key("per_page") { p } else { 20 })?;
    let window = |k: &str| match q.get(k) {
        None => Ok(None),
        Some(s) => parse_filter_date(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{k} must be DD/MM/YY or YYYY-MM-DDThh:mm:ss"))
        }),
    };
    let (from, to) = (window("from_date")?, window("to_date")?);
    let now = Utc::now();
    let ledger = app.ledger();
    let mut contacts: Vec<&Contact> = ledger
        .contacts
        .values()
        .filter(|c| from.is_none_or(|f| c.created_at >= f) && to.is_none_or(|t| c.created_at <= t))
        .filter(|c| super::ledger::listed(c.created_at, app.config.faults.listing_lag, now))
        .collect();
    contacts.sort_by_key(|c| c.created_at);
    let records = contacts
        .iter()
        .map(|c| ledger.contact_json(c, app.config.kyc_delay, now))
        .collect();
    let mut v = page_a(records, page, per_page.min(100));
    super::api::quirk(&mut v, app.config.faults.inconsistent_pages);
    Ok(Json(v))
}

/// `PUT /v2/contact/update_info` (deprecated upstream, still the only update).
pub async fn update(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let email = required_str(&body, "email")?.to_string();
    check_contact(&body, false)?;
    let mut ledger = app.ledger();
    let contact = ledger
        .contacts
        .get_mut(&email)
        .ok_or_else(|| ApiError::invalid("Contact not found"))?;
    for f in CONTACT_FIELDS.iter().filter(|f| **f != "email") {
        if let Some(v) = body.get(*f).filter(|v| !v.is_null()) {
            contact.fields.insert(f.to_string(), v.clone());
        }
    }
    Ok(Json(json!({"status": "Ok"})))
}

/// `DELETE /v2/contacts?email=` (path and method are our choice).
pub async fn delete(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let email = query_param(&q, "email")?;
    let mut ledger = app.ledger();
    ledger
        .contacts
        .remove(email)
        .ok_or_else(|| ApiError::not_found("Contact not found"))?;
    Ok(Json(json!({"status": "Ok"})))
}

/// The review outcome a document number asks for: `REJECT…` is rejected, `REVIEW…` goes
/// to manual review, anything else is approved.
fn outcome(document_number: &str) -> &'static str {
    if document_number.starts_with("REJECT") {
        "rejected"
    } else if document_number.starts_with("REVIEW") {
        "manual_review"
    } else {
        "approved"
    }
}

fn is_jpeg(b: &[u8]) -> bool {
    b.starts_with(&[0xFF, 0xD8, 0xFF])
}

fn is_png(b: &[u8]) -> bool {
    b.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// `POST /v2/contacts/submit_kyc` (multipart): text parts and three images.
pub async fn submit_kyc(State(app): State<Arc<App>>, mut multipart: Multipart) -> ApiResult {
    let mut text: Map<String, Value> = Map::new();
    let mut files: HashMap<String, Bytes> = HashMap::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "malformed multipart body: {e}"
                )));
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some()
            || ["selfie", "id_doc_front_side", "id_doc_back_side"].contains(&name.as_str());
        let data = field
            .bytes()
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read part {name}: {e}")))?;
        if is_file {
            files.insert(name, data);
        } else {
            text.insert(
                name,
                Value::String(String::from_utf8_lossy(&data).into_owned()),
            );
        }
    }
    for f in [
        "email",
        "document_type",
        "document_number",
        "document_username",
        "expiry_date",
        "issue_country",
        "nationality",
        "webhook_notification",
    ] {
        required_str(&text, f)?;
    }
    let get = |f: &str| {
        text.get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let webhook = match serde_json::from_str::<Value>(&get("webhook_notification")) {
        Ok(w @ Value::Object(_)) => super::api::webhook(Some(&w))?,
        _ => {
            return Err(ApiError::invalid(
                "Webhook notification must be a JSON object",
            ));
        }
    };
    let document_type = get("document_type");
    if !["passport", "id_card", "driving_license"].contains(&document_type.as_str()) {
        return Err(ApiError::invalid(
            "Document type is not included in the list",
        ));
    }
    let issue_date = optional_str(&text, "issue_date")?.map(str::to_string);
    if issue_date.as_deref().is_some_and(|d| date_ok(d).is_none()) {
        return Err(ApiError::invalid("Issue date is invalid"));
    }
    let expiry =
        date_ok(&get("expiry_date")).ok_or_else(|| ApiError::invalid("Expiry date is invalid"))?;
    if issue_date
        .as_deref()
        .and_then(date_ok)
        .is_some_and(|i| expiry <= i)
    {
        return Err(ApiError::invalid("Expiry date must be after issue date"));
    }
    for f in ["issue_country", "nationality"] {
        if !crate::validate::iso::is_country(&get(f)) {
            return Err(ApiError::invalid(format!(
                "{} is invalid",
                super::api::human(f)
            )));
        }
    }
    for (part, png_ok) in [
        ("selfie", false),
        ("id_doc_front_side", true),
        ("id_doc_back_side", true),
    ] {
        let label = super::api::human(part);
        let data = files
            .get(part)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ApiError::invalid(format!("{label} can't be blank")))?;
        if data.len() > MAX_IMAGE_BYTES {
            return Err(ApiError::invalid(format!(
                "{label} is too large (maximum is 10 MB)"
            )));
        }
        if !(is_jpeg(data) || (png_ok && is_png(data))) {
            let wanted = if png_ok {
                "a JPEG or PNG image"
            } else {
                "a JPEG image"
            };
            return Err(ApiError::invalid(format!("{label} must be {wanted}")));
        }
    }
    let email = get("email");
    let mut ledger = app.ledger();
    if !ledger.contacts.contains_key(&email) {
        return Err(ApiError::invalid("Contact not found"));
    }
    let document_number = get("document_number");
    ledger.kyc.push(Kyc {
        email,
        document_type,
        outcome: outcome(&document_number),
        document_number,
        issue_date,
        expiry_date: get("expiry_date"),
        issue_country: get("issue_country"),
        by_token: false,
        webhook,
        submitted_at: Utc::now(),
    });
    Ok(Json(json!({"status": "Ok"})))
}

/// `POST /v2/contacts/share_token`: KYC with a Sumsub share token. Tokens starting with
/// `invalid` or `expired` are refused, as an expired token would be.
pub async fn submit_kyc_token(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let body = object(&body)?;
    let email = required_str(&body, "email")?.to_string();
    let token = required_str(&body, "token")?.to_string();
    let webhook = super::api::webhook(body.get("webhook_notification"))?;
    if token.starts_with("invalid") || token.starts_with("expired") {
        return Err(ApiError::invalid("Token is invalid or expired"));
    }
    let mut ledger = app.ledger();
    if !ledger.contacts.contains_key(&email) {
        return Err(ApiError::invalid("Contact not found"));
    }
    ledger.kyc.push(Kyc {
        email,
        document_type: String::new(),
        document_number: String::new(),
        issue_date: None,
        expiry_date: String::new(),
        issue_country: String::new(),
        by_token: true,
        outcome: outcome(&token),
        webhook,
        submitted_at: Utc::now(),
    });
    Ok(Json(json!({"status": "Ok"})))
}
