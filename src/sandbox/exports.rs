//! The read-only exports: PayTo agreements search (T1, shape B) and card payments (D1,
//! shape A).

use super::App;
use super::api::{
    ApiError, ApiResult, page_a_of, page_b, page_number, page_slice, parse_filter_date, quirk,
};
use super::ledger::{Agreement, CardPayment};
use crate::provider::helloclever::CARD_STATUSES;
use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

fn date(
    q: &HashMap<String, String>,
    k: &str,
    required: bool,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match q.get(k) {
        None if required => Err(ApiError::bad_request(format!("{k} is required"))),
        None => Ok(None),
        Some(s) => parse_filter_date(s)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{k} is not a valid date"))),
    }
}

/// `GET /v1/pay_to/payment_agreement/search?from_date&to_date&page&size`.
pub async fn payto_search(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (from, to) = (
        date(&q, "from_date", true)?.unwrap_or_default(),
        date(&q, "to_date", true)?.unwrap_or_default(),
    );
    let page = page_number(q.get("page"), "page")?;
    let size = if q.contains_key("size") {
        page_number(q.get("size"), "size")?.min(100)
    } else {
        20
    };
    let mut ledger = app.ledger();
    if page > 1 {
        for _ in 0..app.config.faults.arrivals {
            let id = ledger.agreements.len() + 1;
            let Some(first) = ledger.agreements.first() else {
                break;
            };
            let mut record = first.record.clone();
            record["id"] = json!(id);
            record["payment_agreement_id"] = json!(format!("agreement-{id}"));
            record["created_at"] = json!(from.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            ledger.agreements.push(Agreement {
                record,
                created_at: from,
            });
        }
    }
    let mut found: Vec<_> = ledger
        .agreements
        .iter()
        .filter(|a| a.created_at >= from && a.created_at <= to)
        .collect();
    found.sort_by_key(|a| a.created_at);
    let mut v = page_b(
        found.iter().map(|a| a.record.clone()).collect(),
        page,
        size,
        from,
        to,
    );
    quirk(&mut v, app.config.faults.inconsistent_pages);
    Ok(Json(v))
}

/// `GET /v2/cards/payments?start_date&end_date&page&per_page&status`.
pub async fn card_payments(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (from, to) = (date(&q, "start_date", false)?, date(&q, "end_date", false)?);
    let page = page_number(q.get("page"), "page")?;
    let per_page = if q.contains_key("per_page") {
        page_number(q.get("per_page"), "per_page")?.min(100)
    } else {
        20
    };
    let status = q.get("status").filter(|s| !s.is_empty());
    if let Some(s) = status
        && !CARD_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "status must be one of {}",
            CARD_STATUSES.join(", ")
        )));
    }
    let mut ledger = app.ledger();
    if page > 1 {
        for _ in 0..app.config.faults.arrivals {
            let Some(first) = ledger
                .cards
                .iter()
                .filter(|c| status.is_none_or(|s| *s == c.status))
                .min_by_key(|c| c.created_at)
            else {
                break;
            };
            let at = from.unwrap_or(first.created_at);
            let (mut record, card_status) = (first.record.clone(), first.status.clone());
            record["uuid"] = json!(ledger.new_uuid());
            record["created_at"] = super::api::timestamp(at);
            ledger.cards.push(CardPayment {
                record,
                status: card_status,
                created_at: at,
            });
        }
    }
    let mut found: Vec<_> = ledger
        .cards
        .iter()
        .filter(|c| {
            from.is_none_or(|f| c.created_at >= f)
                && to.is_none_or(|t| c.created_at <= t)
                && status.is_none_or(|s| *s == c.status)
        })
        .collect();
    found.sort_by_key(|c| c.created_at);
    // Only the page's records are cloned: a seeded ledger may hold 100,000 of them.
    let records = page_slice(&found, page, per_page)
        .iter()
        .map(|c| c.record.clone())
        .collect();
    let mut v = page_a_of(records, found.len(), page, per_page);
    quirk(&mut v, app.config.faults.inconsistent_pages);
    Ok(Json(v))
}
