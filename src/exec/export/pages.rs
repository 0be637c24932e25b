//! Each resource's endpoint, the time windows of a pull, and its pages as the provider answers them.

use super::*;

/// How an export of one resource talks to its endpoint.
pub(super) struct Endpoint {
    pub(super) path: &'static str,
    pub(super) from_key: &'static str,
    pub(super) to_key: &'static str,
    /// The window format: `YYYY-MM-DDThh:mm:ss`, with a `Z` for the card list.
    pub(super) zulu: bool,
    /// The query parameter that sets the page size, if the endpoint has one.
    pub(super) size_key: Option<&'static str>,
    pub(super) id_key: &'static str,
    /// The longest window the endpoint accepts.
    pub(super) max_window: Option<Duration>,
    pub(super) columns: &'static [Column],
}

pub(super) const PAGE_SIZE: u64 = 100;

pub(super) fn endpoint(r: Resource) -> Endpoint {
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

pub(super) fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Cuts `[from, to]` into windows of at most `max`; neighbours share their boundary.
pub(crate) fn windows(
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
pub(crate) enum More {
    Yes,
    No,
    Unknown,
}

pub(crate) struct Page {
    pub records: Vec<Value>,
    /// The page size the provider says it used (`per_page` or `size`).
    pub size: Option<u64>,
    pub more: More,
    pub(super) total: Option<u64>,
    /// The page count the provider says there is.
    pub(super) pages: Option<u64>,
}

pub(super) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads one page of either shape: `{page, per_page, total_page, total, records}` or
/// `{page, size, next_page, total_page, total_count, records}`; every field but `records`
/// may be missing.
pub(crate) fn parse_page(mut v: Value, page: u64) -> Result<Page, String> {
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
    let pages = v.get("total_page").and_then(as_u64);
    if let Some(pages) = pages {
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
        pages,
    })
}

/// What the metadata says, all signals together: any "more" wins (a page too many costs
/// one request; a page too few loses records).
pub(super) fn verdict(says: &[bool]) -> More {
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
pub(super) fn parse_customers_page(mut v: Value, page: u64) -> Result<Page, String> {
    let records = match v.get_mut("customers").map(Value::take) {
        Some(Value::Array(r)) => r,
        Some(Value::Null) => Vec::new(),
        _ => return Err("the provider's answer has no 'customers' list".into()),
    };
    let p = &v["pagination"];
    let total = p.get("totalSize").and_then(as_u64);
    let mut says = Vec::new();
    let pages = p.get("numberOfPage").and_then(as_u64);
    if let Some(pages) = pages {
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
        pages,
    })
}
