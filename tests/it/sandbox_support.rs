//! Helpers for sandbox tests: an emulator on 127.0.0.1:0 in this process and a client
//! with the default credentials.

use payrun::sandbox::{self, Config, Sandbox};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::time::Duration;

pub async fn start(config: Config) -> Sandbox {
    payrun::provider::http::install_tls_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sandbox::start(listener, config).await.unwrap()
}

pub fn client() -> reqwest::Client {
    client_with(Duration::from_secs(10))
}

pub fn client_with(timeout: Duration) -> reqwest::Client {
    payrun::provider::http::install_tls_provider();
    let mut h = HeaderMap::new();
    h.insert("app-id", HeaderValue::from_static("sandbox-app"));
    h.insert("secret-key", HeaderValue::from_static("sandbox-secret"));
    h.insert("accept", HeaderValue::from_static("application/json"));
    reqwest::Client::builder()
        .default_headers(h)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// The reference's contact example, with another email.
pub fn contact(email: &str) -> Value {
    json!({"email": email, "first_name": "Luxy", "last_name": "Tran", "type": "individual",
           "dob": "1991-12-24", "reg_no": "123456789", "phone": "+6123224242", "gender": "male",
           "street": "338 George Street", "city": "Sydney", "postal_code": "2000",
           "state": "New South Wales", "country": "AU"})
}

/// A one-transaction au_bank_aud payout to `email`.
pub fn payout(email: &str, amount: &str, external_id: &str) -> Value {
    let amount: Value = serde_json::from_str(amount).unwrap();
    json!({"payout_transaction_details": [{"first_name": "John", "last_name": "Scarlet", "email": email,
             "amount": amount, "external_id": format!("{external_id}-1"),
             "payout_method_params": {"bsb": "062000", "account_number": "12345678", "account_name": "John Scarlet"}}],
           "currency": "AUD", "payout_method_name": "au_bank_aud", "description": "Test payout",
           "webhook_notification": {"endpoint_url": "https://example.org", "authorization_header": "SECRET"},
           "external_id": external_id})
}

pub async fn post(c: &reqwest::Client, s: &Sandbox, path: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(format!("{}{path}", s.base_url()))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// [`post`] against a sandbox that drops connections: `None` when it dropped this one
/// (the request may have been applied all the same).
pub async fn try_post(
    c: &reqwest::Client,
    s: &Sandbox,
    path: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let r = c
        .post(format!("{}{path}", s.base_url()))
        .json(body)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

pub async fn get(c: &reqwest::Client, s: &Sandbox, path_and_query: &str) -> (u16, Value) {
    let r = c
        .get(format!("{}{path_and_query}", s.base_url()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The ledger's request counts of the provider's API (`/api/…`), leaving out the
/// sandbox's own endpoints (the ledger itself).
pub fn api_requests(ledger: &Value) -> serde_json::Map<String, Value> {
    ledger["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.contains("/api/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub async fn ledger(s: &Sandbox) -> Value {
    reqwest::get(format!("http://{}/__sandbox/ledger", s.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1,
];
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01";

/// A KYC multipart form; `number` steers the outcome (REJECT…, REVIEW…).
pub fn kyc_form(
    email: &str,
    number: &str,
    selfie: &[u8],
    front: &[u8],
    back: &[u8],
) -> reqwest::multipart::Form {
    use reqwest::multipart::{Form, Part};
    let img = |b: &[u8], name: &str| Part::bytes(b.to_vec()).file_name(name.to_string());
    Form::new()
        .text("email", email.to_string())
        .text("document_type", "passport")
        .text("document_number", number.to_string())
        .text("document_username", "Luxy Tran")
        .text("issue_date", "2020-01-01")
        .text("expiry_date", "2031-01-01")
        .text("issue_country", "AU")
        .text("nationality", "AU")
        .text(
            "webhook_notification",
            r#"{"endpoint_url": "https://example.org", "authorization_header": "token"}"#,
        )
        .part("selfie", img(selfie, "selfie.jpg"))
        .part("id_doc_front_side", img(front, "front.png"))
        .part("id_doc_back_side", img(back, "back.jpg"))
}

/// Polls `f` until it returns true (the emulator's clock moves statuses), for up to 5 s.
pub async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Asserts each key exists with the JSON type named: s(tring), n(umber), b(ool), o(bject),
/// a(rray), S (string or null).
pub fn assert_shape(v: &Value, spec: &[(&str, char)]) {
    for (key, kind) in spec {
        let f = v
            .get(*key)
            .unwrap_or_else(|| panic!("missing '{key}' in {v}"));
        let ok = match kind {
            's' => f.is_string(),
            'n' => f.is_number(),
            'b' => f.is_boolean(),
            'o' => f.is_object(),
            'a' => f.is_array(),
            'S' => f.is_string() || f.is_null(),
            _ => unreachable!(),
        };
        assert!(ok, "'{key}' should be {kind}: {f} in {v}");
    }
}
