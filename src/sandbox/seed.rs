//! `--seed-data N`: N of each exportable record (contacts, payouts, payins, PayTo agreements,
//! card payments), spread evenly over the last 400 days, deterministic for a given seed.

use super::api::{number, timestamp};
use super::ledger::{Agreement, CardPayment, Contact, Ledger, Payin, PayoutBatch, PayoutTx};
use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

const NAMES: [(&str, &str); 8] = [
    ("Olivia", "Smith"),
    ("Jack", "Nguyen"),
    ("Charlotte", "Williams"),
    ("William", "Brown"),
    ("Amelia", "Jones"),
    ("Noah", "Taylor"),
    ("Isla", "Wilson"),
    ("Oliver", "Martin"),
];

pub fn populate(ledger: &mut Ledger, n: usize) {
    ledger.finhub.seed(n);
    // Whole seconds, as the list filters are: tests can hit a record's time exactly.
    let now = Utc::now();
    let now = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let span = Duration::days(400).num_seconds();
    for i in 0..n {
        // Oldest first, evenly spaced, never in the future.
        let created_at =
            now - Duration::seconds(span - span * i as i64 / n as i64) + Duration::seconds(1);
        let (first, last) = NAMES[i % NAMES.len()];
        let email = format!(
            "{}.{}{i}@seed.example.com",
            first.to_lowercase(),
            last.to_lowercase()
        );
        let amount = Decimal::new(1000 + (i as i64 * 37) % 90_000, 2);

        let mut fields = Map::new();
        for (k, v) in [
            ("email", email.as_str()),
            ("first_name", first),
            ("last_name", last),
            ("type", "individual"),
            ("dob", "1990-01-01"),
            ("reg_no", ""),
            ("phone", "+61412345678"),
            ("gender", "female"),
            ("street", "1 George Street"),
            ("city", "Sydney"),
            ("postal_code", "2000"),
            ("state", "NSW"),
            ("country", "AU"),
        ] {
            fields.insert(k.into(), json!(v));
        }
        ledger
            .contacts
            .insert(email.clone(), Contact { fields, created_at });

        let tx_uuid = ledger.new_uuid();
        let batch_uuid = ledger.new_uuid();
        ledger.payouts.push(PayoutBatch {
            uuid: batch_uuid,
            external_id: Some(format!("seed-payout-{i}")),
            currency: "AUD".into(),
            method: "au_bank_aud".into(),
            description: "Seeded payout".into(),
            scheduled_at: None,
            created_at,
            webhook: json!({}),
            total: amount,
            funding: None,
            funded_at: Some(created_at),
            unfunded_until: None,
            cancelled: false,
            forced: None,
            transactions: vec![PayoutTx {
                uuid: tx_uuid,
                external_id: Some(format!("seed-payout-{i}-1")),
                first_name: first.into(),
                last_name: last.into(),
                email: email.clone(),
                amount,
                params: json!({"bsb": "062000", "account_number": "12345678", "account_name": format!("{first} {last}")}),
                forced: None,
            }],
        });

        let payin_uuid = ledger.new_uuid();
        let mut pf = Map::new();
        pf.insert("name".into(), json!(format!("{first} {last}")));
        pf.insert("email".into(), json!(email));
        pf.insert("description".into(), json!("Seeded payin"));
        pf.insert("external_id".into(), json!(format!("seed-payin-{i}")));
        pf.insert("webhook_notification".into(), json!({}));
        pf.insert("gst".into(), json!(false));
        pf.insert(
            "pay_code".into(),
            json!({"pay_url": format!("https://sandbox.local/pay/{payin_uuid}")}),
        );
        let received = i % 3 != 0;
        ledger.payins.push(Payin {
            uuid: payin_uuid,
            fields: pf,
            currency: "PHP".into(),
            method: "ph_bank_maya_php".into(),
            amount: amount + Decimal::from(200),
            gst_amount: Decimal::ZERO,
            paid_amount: if received {
                amount + Decimal::from(200)
            } else {
                Decimal::ZERO
            },
            refunded: Decimal::ZERO,
            status: if received { "received" } else { "expired" },
            created_at,
            expired_at: created_at + Duration::days(1),
        });

        let statuses = ["created", "active", "suspended", "cancelled", "failed"];
        let record = json!({
            "id": i + 1, "payment_agreement_id": format!("agreement-{}", i + 1),
            "client_transaction_id": format!("client-trans-{i:05}"), "limit_amount": 5000,
            "description": "Monthly utility bill payment agreement.", "external_id": format!("seed-agreement-{i}"),
            "status": statuses[i % statuses.len()],
            "created_at": created_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "payment_agreement_type": "UTILITY",
            "agreement_details": {"variable_agreement_details_obj": {"start_date": created_at.format("%d/%m/%y").to_string(), "frequency": "MONTHLY"}},
            "payer_details": {"name": format!("{first} {last}"),
                "bank_account_details": {"bsb": "123456", "account_number": "987654321"},
                "pay_id_details": {"pay_id": email, "pay_id_type": "EMAIL"}},
            "payment_agreement_notification": {"endpoint_url": "https://merchant.example/callback", "authorization_header": "****"},
        });
        ledger.agreements.push(Agreement { record, created_at });

        let card_statuses = [
            "received",
            "waiting",
            "pending",
            "failed",
            "return_received",
        ];
        let status = card_statuses[i % card_statuses.len()];
        let card_uuid = ledger.new_uuid();
        let brand = ["visa", "mastercard", "amex"][i % 3];
        let record = json!({
            "uuid": card_uuid, "name": format!("{first} {last}"), "email": format!("card{i}@seed.example.com"),
            "external_id": format!("wc_order_{i}"), "status": status,
            "pay_code": {"3ds_url": "https://3ds-auth.example.com/verify"}, "currency": "USD",
            "amount": number(amount), "total": number(amount),
            "paid_amount": number(if status == "received" { amount } else { Decimal::ZERO }),
            "is_refundable": status == "received" || status == "waiting", "payment_method": "card", "expired_at": "",
            "webhook_notification": {"endpoint_url": "https://merchant.example/card", "authorization_header": "****"},
            "refund_information": Value::Null,
            "sender_details": {"card": {"card_type": "card", "card_brand": brand, "card_last_4": format!("{:04}", 4242 + i % 1000)}},
            "created_at": timestamp(created_at),
        });
        ledger.cards.push(CardPayment {
            record,
            status: status.into(),
            created_at,
        });
    }
}
