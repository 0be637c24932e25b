//! The client's view of Hello Clever's replies: only the fields payrun reads, lenient where
//! the reference shows the API is loose (money as string or number, optional lists). These
//! types are the client's own; the sandbox has its own on purpose.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::str::FromStr;

/// Money written as `"1000.0"` or `1000`.
fn money<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(serde_json::Number),
        Null,
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Text(s) if s.is_empty() => None,
        Raw::Text(s) => Some(Decimal::from_str(&s).map_err(serde::de::Error::custom)?),
        Raw::Number(n) => {
            let s = n.to_string();
            Some(
                Decimal::from_str(&s)
                    .or_else(|_| Decimal::from_scientific(&s))
                    .map_err(serde::de::Error::custom)?,
            )
        }
        Raw::Null => None,
    })
}

#[derive(Debug, Clone, Deserialize)]
pub struct KycStatus {
    pub kyc_status: String,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Identity {
    #[serde(default)]
    pub document_number: Option<String>,
}

/// A contact as the details endpoint returns it; the plain fields stay as JSON so they can
/// be compared with what a row would send.
#[derive(Debug, Clone, Deserialize)]
pub struct Contact {
    pub email: String,
    #[serde(default)]
    pub identity: Option<Identity>,
    #[serde(default)]
    pub kyc_statuses: Vec<KycStatus>,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PayoutTransaction {
    pub uuid: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "money")]
    pub amount: Option<Decimal>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PayoutBatch {
    pub uuid: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "money")]
    pub total_amount: Option<Decimal>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub payout_transactions: Vec<PayoutTransaction>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A payin request as Hello Clever answers it (create, detail, each record of the list).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Payin {
    pub uuid: String,
    /// `pending`, `received`, `expired`, `return_pending`, `return_received`…
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "money")]
    pub amount: Option<Decimal>,
    #[serde(default, deserialize_with = "money")]
    pub paid_amount: Option<Decimal>,
    /// The payin method (`au_payid_npp_aud`).
    #[serde(default)]
    pub payment_method: Option<String>,
    /// How the payer pays (a PayID, a bank reference, a pay URL), as the provider gives it.
    #[serde(default)]
    pub pay_code: Option<serde_json::Value>,
    /// A bool in the schemas, `"false"` in several examples.
    #[serde(default, deserialize_with = "flag")]
    pub is_refundable: Option<bool>,
    #[serde(default)]
    pub expired_at: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A refund's answer: what was refunded, and the payin as it is now.
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    #[serde(default, deserialize_with = "money")]
    pub refund_amount: Option<Decimal>,
    pub payin_request: Payin,
}

/// A flag given as a bool or as the text `"true"`/`"false"`.
/// [`flag`], absent or null as `false`.
fn strict_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(flag(d)?.unwrap_or(false))
}

pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        Some(Raw::Bool(b)) => Some(b),
        Some(Raw::Text(t)) => match t.trim() {
            "true" | "True" => Some(true),
            "false" | "False" => Some(false),
            _ => None,
        },
        None => None,
    })
}

/// Pagination shape B, as the payouts list uses it.
#[derive(Debug, Clone, Deserialize)]
pub struct PayoutPage {
    #[serde(default)]
    pub records: Vec<PayoutBatch>,
    #[serde(default)]
    pub page: Option<u64>,
    #[serde(default)]
    pub next_page: Option<u64>,
    #[serde(default)]
    pub total_page: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payin_reads_money_and_flags_either_way() {
        let p: Payin = serde_json::from_str(
            r#"{"uuid":"P1","status":"pending","amount":"100.0","paid_amount":0,"is_refundable":"false","pay_code":{"pay_id":"p1@payid"}}"#,
        )
        .unwrap();
        assert_eq!(p.amount, Some(Decimal::from_str("100.0").unwrap()));
        assert_eq!(p.paid_amount, Some(Decimal::ZERO));
        assert_eq!(p.is_refundable, Some(false));
        assert_eq!(p.pay_code.unwrap()["pay_id"], "p1@payid");
        let p: Payin = serde_json::from_str(r#"{"uuid":"P2","is_refundable":true}"#).unwrap();
        assert_eq!(p.is_refundable, Some(true));
        assert_eq!(p.status, None);
    }

    #[test]
    fn money_as_string_or_number() {
        let b: PayoutBatch = serde_json::from_str(r#"{"uuid":"A","total_amount":"1000.0","payout_transactions":[{"uuid":"T","amount":12.50}]}"#).unwrap();
        assert_eq!(b.total_amount, Some(Decimal::from_str("1000.0").unwrap()));
        assert_eq!(
            b.payout_transactions[0].amount,
            Some(Decimal::from_str("12.50").unwrap())
        );
        let c: Contact = serde_json::from_str(r#"{"email":"a@b.co","city":"Sydney","kyc_statuses":[{"kyc_status":"approved","message":"null"}]}"#).unwrap();
        assert_eq!(c.fields["city"], "Sydney");
        assert_eq!(c.kyc_statuses[0].kyc_status, "approved");
    }
}

/// A payout method as the provider describes it (`GET /v2/payouts/payout_method/params`,
/// and the records of the methods listing): kept whole in state's cache, so a later
/// payrun reads what an earlier one stored.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct MethodRecord {
    /// The method's name (`payin_method_name` in a payin method's record).
    #[serde(alias = "payin_method_name")]
    pub payout_method_name: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub description: String,
    /// Parameter name → descriptor (`"string:Mandatory Bank Account Number"`).
    #[serde(default, alias = "payin_method_params")]
    pub payout_method_params: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default, deserialize_with = "money")]
    pub min_amount: Option<Decimal>,
    #[serde(default, deserialize_with = "money")]
    pub max_amount: Option<Decimal>,
    #[serde(default, deserialize_with = "strict_flag")]
    pub is_cancellable: bool,
    #[serde(default)]
    pub require_contact: bool,
    #[serde(default)]
    pub require_kyc: bool,
}

impl MethodRecord {
    /// The parameters the provider marks Mandatory, and the others.
    pub fn params(&self) -> (Vec<&str>, Vec<&str>) {
        let mut mandatory = Vec::new();
        let mut optional = Vec::new();
        for (name, descriptor) in &self.payout_method_params {
            if descriptor
                .as_str()
                .unwrap_or_default()
                .contains("Mandatory")
            {
                mandatory.push(name.as_str());
            } else {
                optional.push(name.as_str());
            }
        }
        (mandatory, optional)
    }
}
