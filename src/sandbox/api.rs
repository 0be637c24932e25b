//! The emulator's wire conventions: error bodies, JSON and query parsing, money and time
//! formats, pagination. Its own, on purpose (see the module docs of `sandbox`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::str::FromStr;

/// An error reply in the API's shapes.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: &str) -> ApiError {
        ApiError {
            status,
            body: json!({"errors": {"code": code, "message": message}}),
        }
    }

    pub fn unauthorised() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "REQUIRE_LOGIN", "Not Authorised")
    }

    /// 422 in the message form: `{"errors": {"message": "Email can't be blank"}}`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({"errors": {"message": message.into()}}),
        }
    }

    /// 422 in the field-keyed form: `{"errors": {"refund_amount": "can't be blank"}}`.
    pub fn invalid_field(field: &str, message: &str) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({"errors": {field: message}}),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", &message.into())
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", &message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

pub type ApiResult = Result<Json<Value>, ApiError>;

pub async fn not_found() -> ApiError {
    ApiError::not_found("No route")
}

/// Parses a JSON object body, answering 400 for anything else.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("Request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "Request body is not valid JSON: {e}"
        ))),
    }
}

/// A required string field: present, a string, not blank ("Email can't be blank").
pub fn required_str<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(ApiError::invalid(format!(
            "{} can't be blank",
            human(field)
        ))),
        Some(_) => Err(ApiError::invalid(format!(
            "{} must be a string",
            human(field)
        ))),
    }
}

/// An optional string field (absent, null and "" all mean absent).
pub fn optional_str<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(format!(
            "{} must be a string",
            human(field)
        ))),
    }
}

/// An amount field: a JSON number (as the API's requests use), parsed exactly.
pub fn amount(body: &Map<String, Value>, field: &str) -> Result<Option<Decimal>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("{} is not a valid amount", human(field)))),
        Some(_) => Err(ApiError::invalid(format!(
            "{} must be a number",
            human(field)
        ))),
    }
}

/// `first_name` → `First name`, as Rails renders attribute names in messages.
pub fn human(field: &str) -> String {
    let spaced = field.replace('_', " ");
    let mut c = spaced.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => spaced,
    }
}

/// Money as v2 payouts and payins render it: a decimal string with at least one decimal.
pub fn money(d: Decimal) -> Value {
    let s = d.normalize().to_string();
    Value::String(if s.contains('.') { s } else { format!("{s}.0") })
}

/// Money as the card API renders it: a JSON number, exact (serde_json keeps its digits).
pub fn number(d: Decimal) -> Value {
    serde_json::from_str(&d.to_string()).unwrap_or(Value::Null)
}

/// Response timestamps: `2021-12-23T06:00:00.000+0000`.
pub fn timestamp(t: DateTime<Utc>) -> Value {
    Value::String(t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string())
}

/// List filters: `DD/MM/YY` or `YYYY-MM-DDThh:mm:ss` (UTC); also accepts a trailing `Z`.
pub fn parse_filter_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%d/%m/%y") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    let s = s.trim_end_matches('Z');
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .map(|t| t.and_utc())
}

/// A required, non-empty query parameter (400 when missing).
pub fn query_param<'q>(
    q: &'q std::collections::HashMap<String, String>,
    name: &str,
) -> Result<&'q str, ApiError> {
    q.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
}

/// Parses a page-number query value (default 1).
pub fn page_number(v: Option<&String>, name: &str) -> Result<usize, ApiError> {
    match v {
        None => Ok(1),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{name} must be a positive whole number"
            ))),
        },
    }
}

/// With `--inconsistent-pages`: takes away shape A's totals, and makes shape B's last
/// page point at a next page that is empty.
pub fn quirk(v: &mut Value, on: bool) {
    if !on {
        return;
    }
    if let Some(map) = v.as_object_mut() {
        if map.contains_key("per_page") {
            map.remove("total");
            map.remove("total_page");
        } else if map.get("next_page").is_some_and(Value::is_null) {
            let page = map.get("page").and_then(Value::as_u64).unwrap_or(1);
            map.insert("next_page".into(), json!(page + 1));
        }
    }
}

/// Pagination shape A: `{total, total_page, page, per_page, records}`.
pub fn page_a(records: Vec<Value>, page: usize, per_page: usize) -> Value {
    let total = records.len();
    let slice: Vec<Value> = records
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    page_a_of(slice, total, page, per_page)
}

/// The items of page `page` (from 1) of `items`, `per` to a page.
pub fn page_slice<T>(items: &[T], page: usize, per: usize) -> &[T] {
    let start = (page - 1).saturating_mul(per).min(items.len());
    &items[start..(start + per).min(items.len())]
}

/// Shape A around one page's records, out of `total`.
pub fn page_a_of(slice: Vec<Value>, total: usize, page: usize, per_page: usize) -> Value {
    let total_page = total.div_ceil(per_page).max(1);
    json!({"total": total, "total_page": total_page, "page": page, "per_page": per_page, "records": slice})
}

/// Pagination shape B: `{from_date, to_date, page, size, next_page, total_page, total_count,
/// records}`. On the last page `next_page` is null (our reading; the reference leaves it open).
pub fn page_b(
    records: Vec<Value>,
    page: usize,
    size: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Value {
    let total = records.len();
    let total_page = total.div_ceil(size).max(1);
    let slice: Vec<Value> = records
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    let next = if page < total_page {
        json!(page + 1)
    } else {
        Value::Null
    };
    json!({
        "from_date": timestamp(from), "to_date": timestamp(to), "page": page, "size": size,
        "next_page": next, "total_page": total_page, "total_count": total, "records": slice
    })
}

/// A request's `webhook_notification`: an object (empty, or with an https `endpoint_url`
/// and a text `authorization_header`), as the API requires.
pub fn webhook(value: Option<&Value>) -> Result<Value, ApiError> {
    let Some(Value::Object(w)) = value else {
        return Err(ApiError::invalid("Webhook notification can't be blank"));
    };
    if let Some(url) = w.get("endpoint_url") {
        let ok = url.as_str().is_some_and(crate::validate::https_url);
        if !ok {
            return Err(ApiError::invalid(
                "Webhook notification endpoint url must be an https URL",
            ));
        }
    }
    if w.get("authorization_header")
        .is_some_and(|h| !h.is_string())
    {
        return Err(ApiError::invalid(
            "Webhook notification authorization header must be a string",
        ));
    }
    Ok(Value::Object(w.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(money(Decimal::from_str("1000").unwrap()), json!("1000.0"));
        assert_eq!(money(Decimal::from_str("12.50").unwrap()), json!("12.5"));
        assert_eq!(human("first_name"), "First name");
        assert!(parse_filter_date("01/11/26").is_some());
        assert!(parse_filter_date("2026-11-01T00:00:00").is_some());
        assert!(parse_filter_date("2026-11-01T00:00:00Z").is_some());
        assert!(parse_filter_date("yesterday").is_none());
    }

    #[test]
    fn pages() {
        let recs: Vec<Value> = (0..45).map(|i| json!(i)).collect();
        let p = page_a(recs.clone(), 3, 20);
        assert_eq!(
            (
                p["total"].as_u64(),
                p["total_page"].as_u64(),
                p["records"].as_array().unwrap().len()
            ),
            (Some(45), Some(3), 5)
        );
        let t = Utc::now();
        let b = page_b(recs, 3, 20, t, t);
        assert!(b["next_page"].is_null());
    }
}
