//! The emulator's books: contacts, KYC submissions, payouts, payins, PayTo agreements and
//! card payments, with request counters. Statuses that move over time are derived from the
//! clock when read (and from simulations), so nothing needs a background task.

use super::App;
use super::api::{money, timestamp};
use super::faults::SplitMix64;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub struct Contact {
    /// The fields as sent (C1 shape), email included.
    pub fields: Map<String, Value>,
    pub created_at: DateTime<Utc>,
}

pub struct Kyc {
    pub email: String,
    pub document_type: String,
    pub document_number: String,
    pub issue_date: Option<String>,
    pub expiry_date: String,
    pub issue_country: String,
    pub by_token: bool,
    /// The notification object as sent (the ledger shows it whole, for tests).
    pub webhook: Value,
    /// What the review concludes once `kyc_delay` has passed.
    pub outcome: &'static str,
    pub submitted_at: DateTime<Utc>,
}

pub struct PayoutTx {
    pub uuid: String,
    pub external_id: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub amount: Decimal,
    pub params: Value,
    /// Set by simulation: `completed` or `failed`.
    pub forced: Option<&'static str>,
}

pub struct PayoutBatch {
    pub uuid: String,
    pub external_id: Option<String>,
    pub currency: String,
    pub method: String,
    pub description: String,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub webhook: Value,
    pub total: Decimal,
    /// How the batch was funded when the balance fell short: `HC_PAYOUT1` (it waits for a
    /// top-up) or `HC_PAYOUT2` (the merchant's PayTo agreement pays). The code stays on
    /// the batch once funded, as the reference's own completed example shows.
    pub funding: Option<&'static str>,
    /// When its funds were taken; `None` while it waits for a top-up (`HC_PAYOUT1`).
    pub funded_at: Option<DateTime<Utc>>,
    /// When a batch still waiting for funds expires (`--unfunded-expiry`).
    pub unfunded_until: Option<DateTime<Utc>>,
    pub cancelled: bool,
    pub forced: Option<&'static str>,
    pub transactions: Vec<PayoutTx>,
}

pub struct Payin {
    pub uuid: String,
    pub fields: Map<String, Value>,
    pub currency: String,
    pub method: String,
    pub amount: Decimal,
    pub gst_amount: Decimal,
    pub paid_amount: Decimal,
    pub refunded: Decimal,
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub expired_at: DateTime<Utc>,
}

pub struct Agreement {
    pub record: Value,
    pub created_at: DateTime<Utc>,
}

pub struct CardPayment {
    pub record: Value,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

pub struct Ledger {
    pub contacts: BTreeMap<String, Contact>,
    pub kyc: Vec<Kyc>,
    pub payouts: Vec<PayoutBatch>,
    pub payins: Vec<Payin>,
    pub agreements: Vec<Agreement>,
    pub cards: Vec<CardPayment>,
    pub finhub: super::finhub::Book,
    /// Configured balances; a currency not here is unlimited.
    pub balances: BTreeMap<String, Decimal>,
    counters: BTreeMap<(String, u16), u64>,
    uuids: HashSet<String>,
    ids: SplitMix64,
    seed: u64,
    initial_balances: BTreeMap<String, Decimal>,
}

impl Ledger {
    pub fn new(seed: u64, balances: BTreeMap<String, Decimal>) -> Ledger {
        Ledger {
            contacts: BTreeMap::new(),
            kyc: Vec::new(),
            payouts: Vec::new(),
            payins: Vec::new(),
            agreements: Vec::new(),
            cards: Vec::new(),
            finhub: super::finhub::Book::default(),
            initial_balances: balances.clone(),
            balances,
            counters: BTreeMap::new(),
            uuids: HashSet::new(),
            // Ids draw from their own stream, so they do not shift the fault sequence.
            ids: SplitMix64(seed ^ 0x05EE_D1D5),
            seed,
        }
    }

    /// A new 8-character upper-case id, like `OHXTEF9M`.
    pub fn new_uuid(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        loop {
            let mut x = self.ids.next_u64();
            let id: String = (0..8)
                .map(|_| {
                    let c = ALPHABET[(x % 36) as usize] as char;
                    x /= 36;
                    c
                })
                .collect();
            if self.uuids.insert(id.clone()) {
                return id;
            }
        }
    }

    pub fn count(&mut self, endpoint: String, status: u16) {
        *self.counters.entry((endpoint, status)).or_default() += 1;
    }

    /// The statuses of a contact's KYC submissions, newest first (our reading: the
    /// reference does not say which way the list runs).
    pub fn kyc_statuses(
        &self,
        email: &str,
        delay: Duration,
        now: DateTime<Utc>,
    ) -> Vec<(&'static str, &Kyc)> {
        self.kyc
            .iter()
            .rev()
            .filter(|k| k.email == email)
            .map(|k| (kyc_status(k, delay, now), k))
            .collect()
    }

    /// The contact in the C2 shape, with `identity` and `kyc_statuses`.
    pub fn contact_json(&self, c: &Contact, delay: Duration, now: DateTime<Utc>) -> Value {
        let mut v = Value::Object(c.fields.clone());
        let email = c
            .fields
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let statuses = self.kyc_statuses(email, delay, now);
        let identity = match statuses.iter().find(|(_, k)| !k.by_token) {
            Some((_, k)) => json!({
                "issue_country": k.issue_country, "id_doc_type": k.document_type,
                "document_number": k.document_number, "issue_date": k.issue_date.clone().unwrap_or_default(),
                "expiry_date": k.expiry_date,
            }),
            None => json!({}),
        };
        v["identity"] = identity;
        v["kyc_statuses"] = statuses
            .iter()
            .map(|(s, _)| {
                let message = match *s {
                    "rejected" => "KYC is rejected.",
                    "manual_review" => "KYC is under manual review.",
                    _ => "null",
                };
                json!({"kyc_status": s, "message": message})
            })
            .collect();
        v
    }

    pub fn payout_status(
        &self,
        b: &PayoutBatch,
        delay: Duration,
        now: DateTime<Utc>,
    ) -> &'static str {
        payout_status(b, delay, now)
    }

    /// The payout batch object (O3 shape), transactions in full.
    pub fn payout_json(&self, b: &PayoutBatch, delay: Duration, now: DateTime<Utc>) -> Value {
        let status = payout_status(b, delay, now);
        let txs: Vec<Value> = b
            .transactions
            .iter()
            .map(|t| {
                let tx_status = t.forced.unwrap_or(match status {
                    "completed" => "completed",
                    "expired" => "cancelled",
                    _ => "pending",
                });
                json!({
                    "uuid": t.uuid, "external_id": t.external_id, "first_name": t.first_name,
                    "last_name": t.last_name, "email": t.email, "amount": money(t.amount),
                    "payout_method_params": t.params, "status": tx_status,
                })
            })
            .collect();
        let (code, message) = match b.funding {
            Some(code @ "HC_PAYOUT1") => {
                (code, "Insufficient available funds. Top up your balance.")
            }
            Some(code) => (
                code,
                "Insufficient Balance. Hello Clever will charge your PayTo agreement to pay out.",
            ),
            None => ("", ""),
        };
        json!({
            "uuid": b.uuid, "currency": b.currency, "payout_method_name": b.method,
            "description": b.description, "total_amount": money(b.total), "status": status,
            "webhook_notification": mask_webhook(&b.webhook),
            "scheduled_at": b.scheduled_at.map_or(Value::Null, timestamp),
            "payout_transactions": txs,
            "error_code": if code.is_empty() { Value::Null } else { json!(code) },
            "error_message": message,
            "external_id": b.external_id,
            "created_at": timestamp(b.created_at),
        })
    }

    /// Debits `amount` if the balance allows; currencies without a balance are unlimited.
    pub fn debit(&mut self, currency: &str, amount: Decimal) -> bool {
        match self.balances.get_mut(currency) {
            None => true,
            Some(b) if *b >= amount => {
                *b -= amount;
                true
            }
            Some(_) => false,
        }
    }

    pub fn credit(&mut self, currency: &str, amount: Decimal) {
        if let Some(b) = self.balances.get_mut(currency) {
            *b += amount;
        }
    }

    pub fn find_payout(&self, uuid: &str) -> Option<usize> {
        self.payouts.iter().position(|b| b.uuid == uuid)
    }

    /// Adds funds, then funds the batches waiting for them (`HC_PAYOUT1`), oldest first,
    /// while the balance allows: from then on they move as any other batch.
    pub fn top_up(&mut self, currency: &str, amount: Decimal, now: DateTime<Utc>) {
        self.credit(currency, amount);
        for i in 0..self.payouts.len() {
            let b = &self.payouts[i];
            let waiting = b.funded_at.is_none()
                && b.currency == currency
                && payout_status(b, Duration::ZERO, now) != "expired";
            let total = b.total;
            if waiting && self.debit(currency, total) {
                self.payouts[i].funded_at = Some(now);
            }
        }
    }
}

fn kyc_status(k: &Kyc, delay: Duration, now: DateTime<Utc>) -> &'static str {
    if elapsed(k.submitted_at, now) < delay {
        "pending"
    } else {
        k.outcome
    }
}

/// Whether a record created at `created_at` shows in listings at `now`, given the
/// listing lag (`--listing-lag`).
pub fn listed(created_at: DateTime<Utc>, lag: Duration, now: DateTime<Utc>) -> bool {
    lag.is_zero() || elapsed(created_at, now) >= lag
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

fn payout_status(b: &PayoutBatch, delay: Duration, now: DateTime<Utc>) -> &'static str {
    if b.cancelled {
        return "expired";
    }
    if let Some(forced) = b.forced {
        return if forced == "completed" || forced == "failed" {
            "completed"
        } else {
            forced
        };
    }
    let Some(funded_at) = b.funded_at else {
        // Waiting for a top-up: "processing" beside HC_PAYOUT1, as the reference shows.
        return match b.unfunded_until {
            Some(until) if now >= until => "expired",
            _ => "processing",
        };
    };
    let start = match b.scheduled_at {
        Some(at) if at > now => return "scheduled",
        Some(at) => at.max(funded_at),
        None => funded_at,
    };
    let t = elapsed(start, now);
    if t >= delay {
        "completed"
    } else if t >= delay / 2 {
        "processing"
    } else {
        "created"
    }
}

/// Webhook objects are echoed with the authorization header masked, as the API does.
pub fn mask_webhook(w: &Value) -> Value {
    let mut w = w.clone();
    if let Some(h) = w.get_mut("authorization_header")
        && h.is_string()
    {
        *h = json!("****");
    }
    w
}

/// `GET /__sandbox/ledger`: everything, for tests to prove "exactly once".
pub async fn show(State(app): State<Arc<App>>) -> Json<Value> {
    let now = Utc::now();
    let l = app.ledger();
    let (kyc_delay, payout_delay) = (app.config.kyc_delay, app.config.payout_delay);
    let contacts: Vec<Value> = l
        .contacts
        .values()
        .map(|c| l.contact_json(c, kyc_delay, now))
        .collect();
    let kyc: Vec<Value> = l
        .kyc
        .iter()
        .map(|k| {
            json!({
                "email": k.email, "document_type": k.document_type, "document_number": k.document_number,
                "by_token": k.by_token, "status": kyc_status(k, kyc_delay, now),
                "webhook_as_sent": k.webhook,
                "submitted_at": timestamp(k.submitted_at),
            })
        })
        .collect();
    let payouts: Vec<Value> = l
        .payouts
        .iter()
        .map(|b| {
            let mut v = l.payout_json(b, payout_delay, now);
            v["total"] = money(b.total);
            // The API masks the header; the ledger shows what arrived, for tests.
            v["webhook_as_sent"] = b.webhook.clone();
            v
        })
        .collect();
    let mut requests: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((endpoint, status), n) in &l.counters {
        let status = if *status == 0 {
            "dropped".to_string()
        } else {
            status.to_string()
        };
        requests
            .entry(endpoint.clone())
            .or_default()
            .insert(status, *n);
    }
    let balances: HashMap<&String, Value> =
        l.balances.iter().map(|(c, b)| (c, money(*b))).collect();
    // Every exportable record by id and creation time: what an export must find.
    let index = |items: Vec<(String, DateTime<Utc>)>| -> Vec<Value> {
        items
            .into_iter()
            .map(|(id, at)| json!({"id": id, "created_at": timestamp(at)}))
            .collect()
    };
    let exportable = json!({
        "contacts": index(l.contacts.iter().map(|(email, c)| (email.clone(), c.created_at)).collect()),
        "payouts": index(l.payouts.iter().map(|b| (b.uuid.clone(), b.created_at)).collect()),
        "payins": index(l.payins.iter().map(|p| (p.uuid.clone(), p.created_at)).collect()),
        "payment_agreements": index(l.agreements.iter().map(|a| (a.record["id"].to_string(), a.created_at)).collect()),
        "card_payments": index(l.cards.iter().map(|c| (c.record["uuid"].as_str().unwrap_or_default().to_string(), c.created_at)).collect()),
    });
    let finhub_requests: BTreeMap<&String, &BTreeMap<String, u64>> = requests
        .iter()
        .filter(|(endpoint, _)| endpoint.contains(" /finhub/"))
        .collect();
    let finhub = json!({"customers": l.finhub.show(), "requests": finhub_requests});
    Json(json!({
        "finhub": finhub,
        "exportable": exportable,
        "contacts": contacts, "kyc_submissions": kyc, "payouts": payouts,
        "payins": l.payins.len(),
        // Each payin as the API shows it, with what was refunded of it (for tests).
        "payin_requests": l.payins.iter().map(|p| {
            let mut v = super::payins::payin_json(p, app.config.payin_delay, now);
            v["refunded"] = money(p.refunded);
            v
        }).collect::<Vec<_>>(),
        "payment_agreements": l.agreements.len(), "card_payments": l.cards.len(),
        "balances": balances, "requests": requests,
        // The most API requests answered at once (the ledger's own request among them).
        "peak_in_flight": app.peak_in_flight.load(std::sync::atomic::Ordering::SeqCst),
    }))
}

/// `POST /__sandbox/top_up` `{"currency", "amount"}`: a top-up of the balance, which funds
/// the batches waiting for it (`HC_PAYOUT1`).
pub async fn top_up(State(app): State<Arc<App>>, body: axum::body::Bytes) -> super::api::ApiResult {
    let body = super::api::object(&body)?;
    let currency = super::api::required_str(&body, "currency")?.to_string();
    let amount = match body.get("amount") {
        Some(Value::String(s)) => s.parse::<Decimal>().ok(),
        _ => super::api::amount(&body, "amount").ok().flatten(),
    }
    .filter(|a| *a > Decimal::ZERO)
    .ok_or_else(|| super::api::ApiError::invalid("amount must be above zero"))?;
    let mut l = app.ledger();
    if !l.balances.contains_key(&currency) {
        return Err(super::api::ApiError::invalid(format!(
            "{currency} has no balance to top up (it is unlimited)"
        )));
    }
    l.top_up(&currency, amount, Utc::now());
    let balance = l.balances.get(&currency).copied().unwrap_or_default();
    Ok(Json(json!({"status": "ok", "balance": money(balance)})))
}

/// `POST /__sandbox/reset`: back to the state at start (seed data included).
pub async fn reset(State(app): State<Arc<App>>) -> Json<Value> {
    let mut l = app.ledger();
    let mut fresh = Ledger::new(l.seed, l.initial_balances.clone());
    if app.config.seed_data > 0 {
        super::seed::populate(&mut fresh, app.config.seed_data);
    }
    *l = fresh;
    Json(json!({"status": "ok"}))
}
