//! The checks on one rendered field value, by the field's kind. Pure, apart from reading
//! the head of KYC image files.

use crate::job::steps::FieldKind;
use crate::provider::helloclever::methods;
use crate::validate;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::path::Path;

/// What a value's checks may depend on besides the value.
pub struct Facts<'a> {
    pub today: NaiveDate,
    /// The payout currency's minor units, when the currency is known and valid.
    pub minor_units: Option<u32>,
    /// The payout currency as rendered for this row.
    pub currency: Option<&'a str>,
    pub max_amount: Option<Decimal>,
    pub csv_dir: &'a Path,
}

/// How far ahead a payin's `expired_at` must be (the reference: more than 15 minutes).
pub const EXPIRY_AHEAD: chrono::Duration = chrono::Duration::minutes(15);

/// Checks one value; an amount comes back parsed.
pub fn check_value(kind: FieldKind, v: &str, facts: &Facts) -> Result<Option<Decimal>, String> {
    match kind {
        FieldKind::Text { min, max } => validate::length(v, min, max),
        FieldKind::Email => validate::email(v),
        FieldKind::PayeeName => validate::payee_name(v),
        FieldKind::Enum(allowed) => validate::one_of(v, allowed),
        FieldKind::Date => validate::date(v).map(drop),
        FieldKind::PastDate => validate::date_of_birth(v, facts.today).map(drop),
        FieldKind::Timestamp => validate::timestamp(v).map(drop),
        FieldKind::Country => validate::country(v),
        FieldKind::Currency => validate::currency(v).map(drop),
        FieldKind::Phone => validate::phone(v),
        FieldKind::Amount => {
            let d = validate::amount(v, facts.minor_units)?;
            return match facts.max_amount {
                Some(max) if d > max => Err(format!("amount is over limits.max_amount {max}")),
                _ => Ok(Some(d)),
            };
        }
        FieldKind::Image(kinds) => validate::confined(facts.csv_dir, v)
            .and_then(|path| validate::check_image(&path, kinds))
            .map(drop),
        FieldKind::PayoutMethod => {
            methods::method_currency(v).and_then(|ccy| match facts.currency {
                Some(c) if c != ccy => Err(format!(
                    "payout method {v} pays {ccy}, but the currency is {c}"
                )),
                _ => Ok(()),
            })
        }
        FieldKind::PayinMethod => methods::payin_currency(v).and_then(|ccy| match facts.currency {
            Some(c) if c != ccy => Err(format!(
                "payin method {v} collects {ccy}, but the currency is {c}"
            )),
            _ => Ok(()),
        }),
        FieldKind::Flag => match v {
            "true" | "false" => Ok(()),
            _ => Err("must be true or false".into()),
        },
        FieldKind::Expiry => validate::timestamp(v).and_then(|t| {
            if t.and_utc() > chrono::Utc::now() + EXPIRY_AHEAD {
                Ok(())
            } else {
                Err(format!(
                    "must be more than {} minutes from now (UTC), as the provider requires",
                    EXPIRY_AHEAD.num_minutes()
                ))
            }
        }),
        FieldKind::Map => Ok(()),
    }
    .map(|()| None)
}
