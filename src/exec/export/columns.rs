//! The columns of each export: where each value is in a record, and how it is written.

use super::*;

/// How a CSV column's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) struct Column {
    pub(super) name: &'static str,
    pub(super) path: &'static str,
    pub(super) kind: Kind,
}

pub(super) const fn col(name: &'static str, path: &'static str, kind: Kind) -> Column {
    Column { name, path, kind }
}

pub(super) const fn text(name: &'static str) -> Column {
    col(name, name, Kind::Text)
}

/// The documented CSV columns of each resource (docs/exports.md, "Export columns").
pub(super) const CONTACT_COLUMNS: &[Column] = &[
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

pub(super) const PAYOUT_COLUMNS: &[Column] = &[
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

pub(super) const PAYIN_COLUMNS: &[Column] = &[
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

pub(super) const AGREEMENT_COLUMNS: &[Column] = &[
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

pub(super) const CARD_COLUMNS: &[Column] = &[
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

pub(super) const CUSTOMER_COLUMNS: &[Column] = &[
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

pub(super) fn lookup<'v>(
    record: &'v Value,
    tx: Option<&'v Value>,
    path: &str,
) -> Option<&'v Value> {
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
pub(super) fn cell(record: &Value, tx: Option<&Value>, c: &Column) -> String {
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
pub(super) fn money(s: &str, currency: &str) -> String {
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
pub(super) fn iso_time(s: &str) -> String {
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
pub(super) fn redact(v: &mut Value) {
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

pub(super) fn id_of(record: &Value, key: &str) -> Option<String> {
    match record.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
