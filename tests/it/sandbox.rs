//! The emulator against the reference: each endpoint's documented shape, auth, validation
//! by rule family, statuses over time, duplicates and the ledger.

use crate::sandbox_support::*;
use payrun::sandbox::Config;
use serde_json::{Value, json};
use std::time::Duration;

mod payouts;

mod payins;

fn fast() -> Config {
    Config {
        kyc_delay: Duration::from_millis(150),
        payout_delay: Duration::from_millis(300),
        ..Config::default()
    }
}

const CONTACT_SHAPE: &[(&str, char)] = &[
    ("email", 's'),
    ("first_name", 's'),
    ("last_name", 's'),
    ("type", 's'),
    ("dob", 's'),
    ("phone", 's'),
    ("reg_no", 's'),
    ("gender", 's'),
    ("street", 's'),
    ("city", 's'),
    ("postal_code", 's'),
    ("state", 's'),
    ("country", 's'),
    ("identity", 'o'),
    ("kyc_statuses", 'a'),
];

const BATCH_SHAPE: &[(&str, char)] = &[
    ("uuid", 's'),
    ("currency", 's'),
    ("payout_method_name", 's'),
    ("description", 's'),
    ("total_amount", 's'),
    ("status", 's'),
    ("webhook_notification", 'o'),
    ("scheduled_at", 'S'),
    ("payout_transactions", 'a'),
    ("error_code", 'S'),
    ("error_message", 's'),
    ("external_id", 'S'),
];

#[tokio::test]
async fn auth_is_required_and_checked() {
    let s = start(Config::default()).await;
    let anonymous = reqwest::Client::new();
    let r = anonymous
        .get(format!("{}/v2/payouts/payout_methods", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"errors": {"code": "REQUIRE_LOGIN", "message": "Not Authorised"}})
    );
    let wrong = reqwest::Client::new()
        .get(format!("{}/v2/payouts/payout_methods", s.base_url()))
        .header("app-id", "sandbox-app")
        .header("secret-key", "sandbox-secreT")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let custom = start(Config {
        app_id: "a".into(),
        secret_key: "b".into(),
        ..Config::default()
    })
    .await;
    let ok = reqwest::Client::new()
        .get(format!("{}/v2/payouts/payout_methods", custom.base_url()))
        .header("app-id", "a")
        .header("secret-key", "b")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn contacts_contract_and_lifecycle() {
    let s = start(fast()).await;
    let c = client();
    let (st, body) = post(&c, &s, "/v2/contacts", &contact("test@helloclever.co")).await;
    assert_eq!((st, body), (200, json!({"email": "test@helloclever.co"})));
    let (st, body) = get(&c, &s, "/v2/contacts/detail?email=test@helloclever.co").await;
    assert_eq!(st, 200);
    assert_shape(&body, CONTACT_SHAPE);
    // An email that exists already: 422 (our documented choice).
    let (st, body) = post(&c, &s, "/v2/contacts", &contact("test@helloclever.co")).await;
    assert_eq!(
        (st, body["errors"]["message"].as_str()),
        (422, Some("Email has already been taken"))
    );
    let r = c
        .put(format!("{}/v2/contact/update_info", s.base_url()))
        .json(&json!({"email": "test@helloclever.co", "city": "Perth"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "Ok"}));
    assert_eq!(
        get(&c, &s, "/v2/contacts/detail?email=test@helloclever.co")
            .await
            .1["city"],
        "Perth"
    );
    for i in 0..25 {
        post(
            &c,
            &s,
            "/v2/contacts",
            &contact(&format!("c{i}@example.com")),
        )
        .await;
    }
    let (st, page) = get(&c, &s, "/v2/contacts/?page=2").await;
    assert_eq!(st, 200);
    assert_shape(
        &page,
        &[
            ("total", 'n'),
            ("total_page", 'n'),
            ("page", 'n'),
            ("per_page", 'n'),
            ("records", 'a'),
        ],
    );
    assert_eq!(
        (
            page["total"].as_u64(),
            page["total_page"].as_u64(),
            page["records"].as_array().unwrap().len()
        ),
        (Some(26), Some(2), 6)
    );
    let (_, future) = get(&c, &s, "/v2/contacts/?from_date=2099-01-01T00:00:00").await;
    assert_eq!(future["total"], 0);
    let r = c
        .delete(format!("{}/v2/contacts?email=c0@example.com", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "Ok"}));
    assert_eq!(
        get(&c, &s, "/v2/contacts/detail?email=c0@example.com")
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn contact_validation_rules() {
    let s = start(fast()).await;
    let c = client();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("required", json!(""), "First name can't be blank"),
        ("enum", json!("company"), "Type is not included in the list"),
        ("date", json!("2999-01-01"), "Dob is invalid"),
        ("email", json!("no-at-sign"), "Email is invalid"),
        ("country", json!("Australia"), "Country is invalid"),
        ("phone", json!("call me"), "Phone is invalid"),
    ];
    for (family, value, message) in cases {
        let mut body = contact("v@example.com");
        let field = match family {
            "required" => "first_name",
            "enum" => "type",
            "date" => "dob",
            "email" => "email",
            "country" => "country",
            _ => "phone",
        };
        body[field] = value;
        let (st, reply) = post(&c, &s, "/v2/contacts", &body).await;
        assert_eq!(
            (st, reply["errors"]["message"].as_str()),
            (422, Some(message)),
            "{family}"
        );
    }
    let mut org = contact("org@example.com");
    org["type"] = json!("organization");
    org["reg_no"] = json!("");
    assert_eq!(
        post(&c, &s, "/v2/contacts", &org).await.1["errors"]["message"],
        "Reg no can't be blank"
    );
}

#[tokio::test]
async fn kyc_by_documents_moves_over_time() {
    // Long enough that the first read surely sees `pending`, even on a loaded machine.
    let s = start(Config {
        kyc_delay: Duration::from_millis(1500),
        ..fast()
    })
    .await;
    let c = client();
    for email in ["a@example.com", "r@example.com", "m@example.com"] {
        post(&c, &s, "/v2/contacts", &contact(email)).await;
    }
    let submit = |email: &'static str, number: &'static str| {
        let c = c.clone();
        let url = format!("{}/v2/contacts/submit_kyc", s.base_url());
        async move {
            c.post(url)
                .multipart(kyc_form(email, number, JPEG, PNG, JPEG))
                .send()
                .await
                .unwrap()
        }
    };
    let r = submit("a@example.com", "PA1234567").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "Ok"}));
    submit("r@example.com", "REJECT-1").await;
    submit("m@example.com", "REVIEW-1").await;
    let (_, detail) = get(&c, &s, "/v2/contacts/detail?email=a@example.com").await;
    assert_eq!(detail["kyc_statuses"][0]["kyc_status"], "pending");
    assert_shape(
        &detail["identity"],
        &[
            ("issue_country", 's'),
            ("id_doc_type", 's'),
            ("document_number", 's'),
            ("issue_date", 's'),
            ("expiry_date", 's'),
        ],
    );
    for (email, want) in [
        ("a@example.com", "approved"),
        ("r@example.com", "rejected"),
        ("m@example.com", "manual_review"),
    ] {
        let reached = eventually(|| {
            let (c, s) = (c.clone(), &s);
            async move {
                get(&c, s, &format!("/v2/contacts/detail?email={email}"))
                    .await
                    .1["kyc_statuses"][0]["kyc_status"]
                    == want
            }
        })
        .await;
        assert!(reached, "{email} should end {want}");
    }
}

#[tokio::test]
async fn kyc_images_are_checked_by_content() {
    let s = start(fast()).await;
    let c = client();
    post(&c, &s, "/v2/contacts", &contact("k@example.com")).await;
    let url = format!("{}/v2/contacts/submit_kyc", s.base_url());
    let send = |form| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c.post(url).multipart(form).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap()["errors"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        }
    };
    assert_eq!(
        send(kyc_form("k@example.com", "P1", PNG, PNG, JPEG)).await,
        (422, "Selfie must be a JPEG image".to_string())
    );
    assert_eq!(
        send(kyc_form("k@example.com", "P1", JPEG, b"text", JPEG)).await,
        (
            422,
            "Id doc front side must be a JPEG or PNG image".to_string()
        )
    );
    assert_eq!(
        send(kyc_form("k@example.com", "P1", JPEG, PNG, b"")).await,
        (422, "Id doc back side can't be blank".to_string())
    );
    let mut big = JPEG.to_vec();
    big.resize(10 * 1024 * 1024 + 1, 0);
    assert_eq!(
        send(kyc_form("k@example.com", "P1", &big, PNG, JPEG)).await,
        (422, "Selfie is too large (maximum is 10 MB)".to_string())
    );
    assert_eq!(
        send(kyc_form("nobody@example.com", "P1", JPEG, PNG, JPEG)).await,
        (422, "Contact not found".to_string())
    );
    // KYC by share token.
    let token = json!({"email": "k@example.com", "token": "_act-sbx-jwt-abc", "webhook_notification": {"endpoint_url": "https://example.org", "authorization_header": "SECRET"}});
    assert_eq!(
        post(&c, &s, "/v2/contacts/share_token", &token).await,
        (200, json!({"status": "Ok"}))
    );
    let mut expired = token.clone();
    expired["token"] = json!("expired-token");
    assert_eq!(
        post(&c, &s, "/v2/contacts/share_token", &expired).await.0,
        422
    );
}
