//! The FinHub customer API (shared/api/finhub.md), served under `/finhub`: a token endpoint
//! (`POST /finhub/oauth/token`, client credentials as JSON or form), and the customer API
//! under `/finhub/customer/2.0.0` and `/finhub/customer`, with bearer and `tenantId`
//! checks, the reference's enums (misspellings included), pagination, and the same faults
//! and ledger as the Hello Clever side. Its wire types are its own.
//!
//! Readings where the reference is silent (docs/finhub.md lists them): create answers
//! `{"customer"}`; a second customer with the same email is 409 `DUPLICATE_EMAIL`;
//! createBulk creates what it can and answers `{"customers": [...], "errors": [{"index",
//! "email", "message"}]}`; `pageNumber` counts from 1; kycConfirmation is
//! `POST /update/kycConfirmation/{customerId}` with `{"kycConfirmation"}`; a missing
//! `tenantId` is 400, a different one 403; errors have the mirror's shape.

use super::App;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// FinHub's settings in the emulator.
#[derive(Debug, Clone)]
pub struct FinhubConfig {
    pub client_id: String,
    pub client_secret: String,
    pub tenant: String,
    /// How long an issued token is accepted.
    pub token_ttl: Duration,
    /// What the token reply claims as `expires_in` (default: the truth). A longer claim
    /// makes clients meet a 401 mid-run.
    pub claimed_expires_in: Option<u64>,
}

impl Default for FinhubConfig {
    fn default() -> Self {
        FinhubConfig {
            client_id: "sandbox-client".into(),
            client_secret: "sandbox-secret".into(),
            tenant: "sandbox-tenant".into(),
            token_ttl: Duration::from_secs(3600),
            claimed_expires_in: None,
        }
    }
}

// The reference's enums, as the client knows them: one list each.
use crate::provider::finhub::{
    CATEGORIES, CUSTOMER_STATUSES as STATUSES, CUSTOMER_TYPES as TYPES,
    DOCUMENT_PURPOSES as PURPOSES, DOCUMENT_STATUSES as DOC_STATUSES, DOCUMENT_TYPES as DOC_TYPES,
};

/// A FinHub customer in the emulator's books.
pub struct Customer {
    pub id: String,
    pub email: String,
    pub record: Map<String, Value>,
    pub documents: Vec<Value>,
    pub created_at: DateTime<Utc>,
}

/// The FinHub side of the ledger.
#[derive(Default)]
pub struct Book {
    pub customers: Vec<Customer>,
    tokens: HashMap<String, Instant>,
    next_customer: u64,
    next_document: u64,
}

impl Book {
    fn find(&mut self, id: &str) -> Result<&mut Customer, FhError> {
        self.customers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| FhError::new(StatusCode::NOT_FOUND, format!("Customer {id} not found")))
    }

    /// `--seed-data N`: N customers, their statuses cycling through all eight.
    pub fn seed(&mut self, n: usize) {
        for i in 0..n {
            let record = json!({
                "customerType": "Person", "customerName": format!("Seed Customer {i}"),
                "customerStatus": STATUSES[i % STATUSES.len()], "categorization": CATEGORIES[i % 3],
                "person": {"email": format!("fh{i}@seed.example.com"), "firstName": {"name": "Seed"},
                    "lastName": {"name": format!("Customer{i}")}, "password": "s3cret!", "pinCode": "1234"},
            });
            if let Value::Object(record) = record {
                let _ = insert(self, record);
            }
        }
    }

    /// The ledger's view: every customer with id, email, status and documents.
    pub fn show(&self) -> Value {
        Value::Array(
            self.customers
                .iter()
                .map(|c| {
                    json!({"id": c.id, "email": c.email, "status": c.record.get("customerStatus"),
                        "kycConfirmation": c.record.get("kycConfirmation"), "documents": c.documents,
                        "created_at": super::api::timestamp(c.created_at)})
                })
                .collect(),
        )
    }
}

/// An error in the shape the reference's mirror documents; the middleware adds the path
/// and method.
#[derive(Debug)]
pub struct FhError {
    status: StatusCode,
    message: String,
}

impl FhError {
    fn new(status: StatusCode, message: impl Into<String>) -> FhError {
        FhError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> FhError {
        FhError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for FhError {
    fn into_response(self) -> Response {
        let body = json!({
            "reason": self.status.canonical_reason().unwrap_or(""),
            "message": self.message,
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "status": self.status.as_u16(),
        });
        (self.status, Json(body)).into_response()
    }
}

type FhResult = Result<Json<Value>, FhError>;

/// Adds `path` and `method` to error bodies, as the mirror's error object has them.
pub async fn error_shape(req: Request, next: Next) -> Response {
    let (path, method) = (req.uri().path().to_string(), req.method().to_string());
    let response = next.run(req).await;
    if response.status().is_success() {
        return response;
    }
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let mut body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    if let Some(map) = body.as_object_mut() {
        map.insert("path".into(), json!(path));
        map.insert("method".into(), json!(method));
        map.entry("status").or_insert(json!(status.as_u16()));
        map.entry("message")
            .or_insert(json!(status.canonical_reason().unwrap_or("")));
    }
    (status, Json(body)).into_response()
}

/// Bearer token issued here and still valid, and the configured `tenantId`.
pub async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let verdict = {
        let headers = req.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let token = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        let valid = token.is_some_and(|t| {
            app.ledger()
                .finhub
                .tokens
                .get(t)
                .is_some_and(|expiry| Instant::now() < *expiry)
        });
        match header("tenantid") {
            _ if !valid => Err(FhError::new(
                StatusCode::UNAUTHORIZED,
                "Invalid or expired access token",
            )),
            None | Some("") => Err(FhError::bad("tenantId header is required")),
            Some(t) if t != app.config.finhub.tenant => Err(FhError::new(
                StatusCode::FORBIDDEN,
                "Access to this tenant is denied",
            )),
            Some(_) => Ok(()),
        }
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /finhub/oauth/token`: client credentials, as JSON or as a form.
pub async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let fields: HashMap<String, String> = if form {
        String::from_utf8_lossy(&body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace('+', " ")))
            .collect()
    } else {
        serde_json::from_slice::<Map<String, Value>>(&body)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect()
    };
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let cfg = &app.config.finhub;
    if get("grant_type") != "client_credentials" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if get("client_id") != cfg.client_id || get("client_secret") != cfg.client_secret {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let token = {
        let mut l = app.ledger();
        let t = format!("fh-{}{}", l.new_uuid(), l.new_uuid());
        l.finhub
            .tokens
            .insert(t.clone(), Instant::now() + cfg.token_ttl);
        t
    };
    let expires_in = cfg.claimed_expires_in.unwrap_or(cfg.token_ttl.as_secs());
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in, "scope": "api"}))
        .into_response()
}

fn one_of(v: Option<&Value>, field: &str, allowed: &[&str]) -> Result<(), FhError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(other) => Err(FhError::bad(format!(
            "{field} must be one of {} (got {other})",
            allowed.join(", ")
        ))),
    }
}

/// Checks a customer body; returns its email (the reading: a Person needs one).
fn check_customer(c: &Map<String, Value>) -> Result<String, FhError> {
    one_of(c.get("customerType"), "customerType", &TYPES)?;
    one_of(c.get("customerStatus"), "customerStatus", &STATUSES)?;
    one_of(c.get("categorization"), "categorization", &CATEGORIES)?;
    let email = c
        .get("person")
        .and_then(|p| p.get("email"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if email.is_empty() && c.get("customerType").and_then(Value::as_str) != Some("Organization") {
        return Err(FhError::bad("person.email is required"));
    }
    if !email.is_empty() && (!email.contains('@') || email.starts_with('@') || email.ends_with('@'))
    {
        return Err(FhError::bad(format!(
            "person.email is not an email address (got {email})"
        )));
    }
    // Screening, so that partial failures can be exercised: this domain is always refused.
    if email.ends_with("@blocked.example") {
        return Err(FhError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VERIFICATION_FAILED: the customer did not pass screening",
        ));
    }
    Ok(email.to_ascii_lowercase())
}

fn object(body: &[u8]) -> Result<Map<String, Value>, FhError> {
    serde_json::from_slice(body).map_err(|_| FhError::bad("the body must be a JSON object"))
}

fn array(body: &[u8]) -> Result<Vec<Value>, FhError> {
    serde_json::from_slice(body).map_err(|_| FhError::bad("the body must be a JSON array"))
}

/// Adds a customer to the book; 409 when its email is taken.
fn insert(book: &mut Book, mut record: Map<String, Value>) -> Result<Value, FhError> {
    let email = check_customer(&record)?;
    if !email.is_empty() && book.customers.iter().any(|c| c.email == email) {
        return Err(FhError::new(
            StatusCode::CONFLICT,
            format!("DUPLICATE_EMAIL: a customer with email {email} exists"),
        ));
    }
    book.next_customer += 1;
    let id = format!("c-{:06}", book.next_customer);
    record.insert("id".into(), json!(id));
    record.entry("customerStatus").or_insert(json!("new"));
    book.customers.push(Customer {
        id,
        email,
        record: record.clone(),
        documents: Vec::new(),
        created_at: Utc::now(),
    });
    Ok(Value::Object(record))
}

/// `POST /create`.
pub async fn create(State(app): State<Arc<App>>, body: Bytes) -> FhResult {
    let record = object(&body)?;
    let mut l = app.ledger();
    let customer = insert(&mut l.finhub, record)?;
    Ok(Json(json!({"customer": customer})))
}

/// `POST /createBulk`: a top-level array; creates what it can.
pub async fn create_bulk(State(app): State<Arc<App>>, body: Bytes) -> FhResult {
    let items = array(&body)?;
    let mut l = app.ledger();
    let (mut created, mut errors) = (Vec::new(), Vec::new());
    for (index, item) in items.into_iter().enumerate() {
        let email = item
            .get("person")
            .and_then(|p| p.get("email"))
            .cloned()
            .unwrap_or(Value::Null);
        let result = match item {
            Value::Object(record) => insert(&mut l.finhub, record),
            _ => Err(FhError::bad("each customer must be a JSON object")),
        };
        match result {
            Ok(c) => created.push(c),
            Err(e) => errors.push(json!({"index": index, "email": email, "status": e.status.as_u16(), "message": e.message})),
        }
    }
    Ok(Json(json!({"customers": created, "errors": errors})))
}

/// `GET /getDetailsById/{customerId}`.
pub async fn details(State(app): State<Arc<App>>, Path(id): Path<String>) -> FhResult {
    let mut l = app.ledger();
    let c = l.finhub.find(&id)?;
    Ok(Json(json!({"customer": c.record})))
}

/// `PUT /update/{customerId}`: merges the body's fields (nested objects merged).
pub async fn update(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> FhResult {
    let patch = object(&body)?;
    check_customer_partial(&patch)?;
    let mut l = app.ledger();
    let c = l.finhub.find(&id)?;
    merge(&mut c.record, patch);
    c.record.insert("id".into(), json!(id));
    Ok(Json(json!({"customer": c.record})))
}

fn check_customer_partial(c: &Map<String, Value>) -> Result<(), FhError> {
    one_of(c.get("customerType"), "customerType", &TYPES)?;
    one_of(c.get("customerStatus"), "customerStatus", &STATUSES)?;
    one_of(c.get("categorization"), "categorization", &CATEGORIES)
}

fn merge(into: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// `POST /update/{customerId}/status/{status}`.
pub async fn update_status(
    State(app): State<Arc<App>>,
    Path((id, status)): Path<(String, String)>,
) -> FhResult {
    if !STATUSES.contains(&status.as_str()) {
        return Err(FhError::bad(format!(
            "status must be one of {} (got {status})",
            STATUSES.join(", ")
        )));
    }
    let mut l = app.ledger();
    let c = l.finhub.find(&id)?;
    c.record.insert("customerStatus".into(), json!(status));
    Ok(Json(json!({"customer": c.record})))
}

/// `POST /update/kycConfirmation/{customerId}` (our reading of "Post update
/// kycConfirmation").
pub async fn kyc_confirmation(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> FhResult {
    let body = object(&body)?;
    let value = body
        .get("kycConfirmation")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| FhError::bad("kycConfirmation is required"))?
        .to_string();
    let mut l = app.ledger();
    let c = l.finhub.find(&id)?;
    c.record.insert("kycConfirmation".into(), json!(value));
    Ok(Json(json!({"customer": c.record})))
}

/// `POST /createDocuments/{customerId}`: a top-level array of document descriptors.
pub async fn create_documents(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> FhResult {
    let docs = array(&body)?;
    for d in &docs {
        one_of(d.get("purpose"), "purpose", &PURPOSES)?;
        one_of(d.get("documentType"), "documentType", &DOC_TYPES)?;
        one_of(d.get("status"), "status", &DOC_STATUSES)?;
        if d.get("location")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(FhError::bad("location is required"));
        }
    }
    let tenant = app.config.finhub.tenant.clone();
    let mut l = app.ledger();
    let book = &mut l.finhub;
    book.find(&id)?;
    let mut ids = Vec::new();
    let mut stored = Vec::new();
    for mut d in docs {
        book.next_document += 1;
        let doc_id = format!("d-{:06}", book.next_document);
        d["documentId"] = json!(doc_id);
        ids.push(json!({"documentId": doc_id}));
        stored.push(d);
    }
    book.find(&id)?.documents.extend(stored);
    Ok(Json(
        json!({"tenantId": tenant, "customerId": id, "documentIds": ids}),
    ))
}

/// `GET /getDocuments/{customerId}`.
pub async fn documents(State(app): State<Arc<App>>, Path(id): Path<String>) -> FhResult {
    let tenant = app.config.finhub.tenant.clone();
    let mut l = app.ledger();
    let c = l.finhub.find(&id)?;
    Ok(Json(json!({"tenantId": tenant, "documents": c.documents})))
}

/// `POST /getByCustomerStatus/{customerStatus}`: `pageNumber` from 1, `pageSize` default
/// 20, at most 100; oldest first.
pub async fn by_status(
    State(app): State<Arc<App>>,
    Path(status): Path<String>,
    body: Bytes,
) -> FhResult {
    if !STATUSES.contains(&status.as_str()) {
        return Err(FhError::bad(format!(
            "customerStatus must be one of {} (got {status})",
            STATUSES.join(", ")
        )));
    }
    let body = if body.is_empty() {
        Map::new()
    } else {
        object(&body)?
    };
    let number = |k: &str, default: u64| match body.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| FhError::bad(format!("{k} must be a whole number from 1"))),
    };
    let (page, size) = (number("pageNumber", 1)?, number("pageSize", 20)?.min(100));
    let (lag, now) = (app.config.faults.listing_lag, Utc::now());
    let l = app.ledger();
    let found: Vec<&Customer> = l
        .finhub
        .customers
        .iter()
        .filter(|c| c.record.get("customerStatus").and_then(Value::as_str) == Some(status.as_str()))
        .filter(|c| super::ledger::listed(c.created_at, lag, now))
        .collect();
    let total = found.len() as u64;
    let pages = total.div_ceil(size).max(1);
    let customers: Vec<Value> = super::api::page_slice(&found, page as usize, size as usize)
        .iter()
        .map(|c| Value::Object(c.record.clone()))
        .collect();
    let mut pagination = json!({"numberOfPage": pages, "totalSize": total, "currentPage": page});
    if app.config.faults.inconsistent_pages {
        pagination = json!({"currentPage": page});
    }
    Ok(Json(
        json!({"customers": customers, "pagination": pagination}),
    ))
}
