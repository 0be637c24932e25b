//! The emulator against the reference: each endpoint's documented shape, auth, validation
//! by rule family, statuses over time, duplicates and the ledger.

use crate::sandbox_support::*;
use payrun::sandbox::Config;
use serde_json::{Value, json};
use std::time::Duration;

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

#[tokio::test]
async fn payout_methods_contract() {
    let s = start(fast()).await;
    let c = client();
    let (st, methods) = get(&c, &s, "/v2/payouts/payout_methods").await;
    assert_eq!(st, 200);
    let names: Vec<&str> = methods["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payout_method_name"].as_str().unwrap())
        .collect();
    for want in [
        "au_bank_aud",
        "ph_bank_maya_php",
        "ph_ewallet_gcash_php",
        "id_bank_idr",
    ] {
        assert!(names.contains(&want), "{want}");
    }
    let (st, rec) = get(
        &c,
        &s,
        "/v2/payouts/payout_method/params?payout_method_name=ph_bank_maya_php",
    )
    .await;
    assert_eq!(st, 200);
    assert_shape(
        &rec["record"],
        &[
            ("currency", 's'),
            ("symbol", 's'),
            ("logo", 's'),
            ("payout_method_name", 's'),
            ("description", 's'),
            ("payment_type", 's'),
            ("payout_method_params", 'o'),
            ("banks", 'a'),
            ("is_refundable", 'b'),
            ("is_cancellable", 'b'),
            ("require_contact", 'b'),
            ("require_kyc", 'b'),
            ("min_amount", 'n'),
            ("max_amount", 'n'),
        ],
    );
    assert_eq!(rec["record"]["min_amount"], 200);
    let (_, au) = get(
        &c,
        &s,
        "/v2/payouts/payout_method/params?payout_method_name=au_bank_aud",
    )
    .await;
    let params = au["record"]["payout_method_params"].as_object().unwrap();
    assert!(
        params.contains_key("bsb")
            && params.contains_key("account_number")
            && params.contains_key("account_name")
    );
    assert_eq!(
        get(
            &c,
            &s,
            "/v2/payouts/payout_method/params?payout_method_name=xx_nope_xxx"
        )
        .await
        .0,
        422
    );
}

#[tokio::test]
async fn payout_batches_progress_and_list() {
    let s = start(fast()).await;
    let c = client();
    post(&c, &s, "/v2/contacts", &contact("john@example.com")).await;
    let (st, batch) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("john@example.com", "1000", "batch-1"),
    )
    .await;
    assert_eq!(st, 200, "{batch}");
    assert_shape(&batch, BATCH_SHAPE);
    assert_eq!(
        (batch["total_amount"].as_str(), batch["status"].as_str()),
        (Some("1000.0"), Some("created"))
    );
    assert_eq!(
        batch["webhook_notification"]["authorization_header"],
        "****"
    );
    let tx = &batch["payout_transactions"][0];
    assert_shape(
        tx,
        &[
            ("uuid", 's'),
            ("external_id", 's'),
            ("email", 's'),
            ("amount", 's'),
            ("status", 's'),
        ],
    );
    let uuid = batch["uuid"].as_str().unwrap().to_string();
    let done = eventually(|| {
        let (c, s, uuid) = (c.clone(), &s, uuid.clone());
        async move {
            get(&c, s, &format!("/v2/payouts/detail?uuid={uuid}"))
                .await
                .1["status"]
                == "completed"
        }
    })
    .await;
    assert!(done, "the batch should complete after payout_delay");
    let (_, detail) = get(&c, &s, &format!("/v2/payouts/detail?uuid={uuid}")).await;
    assert_eq!(detail["payout_transactions"][0]["status"], "completed");

    let (st, list) = get(
        &c,
        &s,
        "/v2/payouts/all?from_date=2020-01-01T00:00:00&to_date=2020-06-01T00:00:00&page=1",
    )
    .await;
    assert_eq!((st, list["total_count"].as_u64()), (200, Some(0)));
    let today = chrono::Utc::now().date_naive();
    let from = (today - chrono::Duration::days(1)).format("%d/%m/%y");
    let to = (today + chrono::Duration::days(1)).format("%Y-%m-%dT00:00:00");
    let (st, list) = get(
        &c,
        &s,
        &format!("/v2/payouts/all?from_date={from}&to_date={to}&page=1"),
    )
    .await;
    assert_eq!(st, 200);
    assert_shape(
        &list,
        &[
            ("from_date", 's'),
            ("to_date", 's'),
            ("page", 'n'),
            ("size", 'n'),
            ("next_page", 'S'),
            ("total_page", 'n'),
            ("total_count", 'n'),
            ("records", 'a'),
        ],
    );
    assert_eq!(list["records"][0]["uuid"], uuid.as_str());
    assert_eq!(
        get(
            &c,
            &s,
            "/v2/payouts/all?from_date=2020-01-01T00:00:00&to_date=2021-06-01T00:00:00&page=1"
        )
        .await
        .0,
        400,
        "over a year"
    );
    assert_eq!(
        get(
            &c,
            &s,
            "/v2/payouts/all?from_date=2020-01-01T00:00:00&page=1"
        )
        .await
        .0,
        400,
        "to_date required"
    );
    assert_eq!(get(&c, &s, "/v2/payouts/detail?uuid=NOPE").await.0, 422);
}

#[tokio::test]
async fn duplicate_external_ids_make_two_payouts() {
    let s = start(fast()).await;
    let c = client();
    post(&c, &s, "/v2/contacts", &contact("john@example.com")).await;
    let (a, _) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("john@example.com", "10", "same"),
    )
    .await;
    let (b, _) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("john@example.com", "10", "same"),
    )
    .await;
    assert_eq!((a, b), (200, 200));
    let l = ledger(&s).await;
    let same: Vec<&Value> = l["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["external_id"] == "same")
        .collect();
    assert_eq!(
        same.len(),
        2,
        "the API does not deduplicate; payrun must not rely on it"
    );
    assert_eq!(l["requests"]["POST /api/v2/payouts"]["200"], 2);
}

#[tokio::test]
async fn payout_validation_rules() {
    let s = start(fast()).await;
    let c = client();
    post(&c, &s, "/v2/contacts", &contact("john@example.com")).await;
    let base = payout("john@example.com", "10", "v");
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "required",
            Box::new(|b| b["payout_transaction_details"] = json!([])),
            "Payout transaction details can't be blank",
        ),
        (
            "regex",
            Box::new(|b| b["payout_transaction_details"][0]["first_name"] = json!("Jo-hn")),
            "Payout transaction details[0] first name is invalid",
        ),
        (
            "length",
            Box::new(|b| b["description"] = json!("Pay")),
            "Description must be 5 to 90 characters",
        ),
        (
            "enum",
            Box::new(|b| b["payout_method_name"] = json!("au_bank_xyz")),
            "Payout method name is invalid",
        ),
        (
            "currency",
            Box::new(|b| b["currency"] = json!("PHP")),
            "Currency PHP does not match payout method au_bank_aud (AUD)",
        ),
        (
            "limits",
            Box::new(|b| b["payout_transaction_details"][0]["amount"] = json!(100001)),
            "Payout transaction details[0] amount must be between 1 and 100000 AUD",
        ),
        (
            "decimals",
            Box::new(|b| b["payout_transaction_details"][0]["amount"] = json!(10.005)),
            "Payout transaction details[0] amount is invalid",
        ),
        (
            "params",
            Box::new(|b| {
                b["payout_transaction_details"][0]["payout_method_params"] =
                    json!({"bsb": "062000"})
            }),
            "Payout transaction details[0] payout method params account_number can't be blank",
        ),
        (
            "contact",
            Box::new(|b| b["payout_transaction_details"][0]["email"] = json!("ghost@example.com")),
            "Payout transaction details[0] contact ghost@example.com not found; create the contact first",
        ),
        (
            "date",
            Box::new(|b| b["scheduled_at"] = json!("next tuesday")),
            "Scheduled at is invalid",
        ),
    ];
    for (family, edit, message) in cases {
        let mut body = base.clone();
        edit(&mut body);
        let (st, reply) = post(&c, &s, "/v2/payouts", &body).await;
        assert_eq!(
            (st, reply["errors"]["message"].as_str()),
            (422, Some(message)),
            "{family}"
        );
    }
}

#[tokio::test]
async fn kyc_required_methods_wait_for_approval() {
    let s = start(fast()).await;
    let c = client();
    post(&c, &s, "/v2/contacts", &contact("g@example.com")).await;
    let gcash = json!({"payout_transaction_details": [{"first_name": "G", "last_name": "Cash", "email": "g@example.com", "amount": 500,
                         "payout_method_params": {"account_number": "09171234567", "account_name": "G Cash"}}],
                       "currency": "PHP", "payout_method_name": "ph_ewallet_gcash_php", "description": "Wallet payout", "webhook_notification": {}});
    let (st, reply) = post(&c, &s, "/v2/payouts", &gcash).await;
    assert_eq!(
        (st, reply["errors"]["message"].as_str()),
        (
            422,
            Some("Payout transaction details[0] contact g@example.com has no approved KYC")
        )
    );
    c.post(format!("{}/v2/contacts/submit_kyc", s.base_url()))
        .multipart(kyc_form("g@example.com", "P9", JPEG, PNG, JPEG))
        .send()
        .await
        .unwrap();
    let approved = eventually(|| {
        let (c, s, body) = (c.clone(), &s, gcash.clone());
        async move { post(&c, s, "/v2/payouts", &body).await.0 == 200 }
    })
    .await;
    assert!(approved);
}

#[tokio::test]
async fn short_balance_gives_hc_payout1_and_the_batch_pays_after_a_top_up() {
    let s = start(Config {
        balances: [("AUD".to_string(), "100.00".parse().unwrap())].into(),
        ..fast()
    })
    .await;
    let c = client();
    post(&c, &s, "/v2/contacts", &contact("john@example.com")).await;
    let (st, ok) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("john@example.com", "60", "b1"),
    )
    .await;
    assert_eq!((st, &ok["error_code"]), (200, &Value::Null));
    let (st, short) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("john@example.com", "60", "b2"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(short["error_code"], "HC_PAYOUT1");
    assert_eq!(
        short["error_message"],
        "Insufficient available funds. Top up your balance."
    );
    // Not a failure: the batch exists and waits for funds, as the reference's example
    // (HC_PAYOUT1 beside `processing`) shows.
    assert_eq!(short["status"], "processing");
    assert_eq!(short["payout_transactions"][0]["status"], "pending");
    assert_eq!(ledger(&s).await["balances"]["AUD"], "40.0");
    let uuid = short["uuid"].as_str().unwrap().to_string();
    // Waiting for funds it stays, however long.
    tokio::time::sleep(fast().payout_delay * 2).await;
    let b = payout_detail(&c, &s, &uuid).await;
    assert_eq!(
        (
            b["status"].as_str(),
            b["payout_transactions"][0]["status"].as_str()
        ),
        (Some("processing"), Some("pending"))
    );
    // A top-up pays it; the code stays on the batch, as in the reference's completed example.
    let r = reqwest::Client::new()
        .post(format!("http://{}/__sandbox/top_up", s.addr))
        .json(&serde_json::json!({"currency": "AUD", "amount": "30.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        ledger(&s).await["balances"]["AUD"],
        "10.0",
        "70 in, 60 paid out"
    );
    let completed = eventually(|| {
        let (c, s, uuid) = (c.clone(), &s, uuid.clone());
        async move {
            let b = payout_detail(&c, s, &uuid).await;
            b["status"] == "completed" && b["payout_transactions"][0]["status"] == "completed"
        }
    })
    .await;
    assert!(completed);
    assert_eq!(
        payout_detail(&c, &s, &uuid).await["error_code"],
        "HC_PAYOUT1"
    );
}

async fn payout_detail(c: &reqwest::Client, s: &payrun::sandbox::Sandbox, uuid: &str) -> Value {
    get(c, s, &format!("/v2/payouts/detail?uuid={uuid}"))
        .await
        .1
}

#[tokio::test]
async fn payto_funding_answers_hc_payout2_and_an_unfunded_batch_can_expire() {
    let poor = |payto: bool| Config {
        balances: [("AUD".to_string(), "10.00".parse().unwrap())].into(),
        payto_funding: payto,
        unfunded_expiry: Some(Duration::from_millis(200)),
        ..fast()
    };
    let c = client();
    let s = start(poor(true)).await;
    post(&c, &s, "/v2/contacts", &contact("john@example.com")).await;
    let (_, b) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("john@example.com", "60", "p2"),
    )
    .await;
    assert_eq!(b["error_code"], "HC_PAYOUT2");
    assert_eq!(
        b["error_message"],
        "Insufficient Balance. Hello Clever will charge your PayTo agreement to pay out."
    );
    let uuid = b["uuid"].as_str().unwrap().to_string();
    let url = format!("/v2/payouts/detail?uuid={uuid}");
    assert!(
        eventually(|| {
            let (c, s, url) = (c.clone(), &s, url.clone());
            async move { get(&c, s, &url).await.1["status"] == "completed" }
        })
        .await
    );

    let s = start(poor(false)).await;
    post(&c, &s, "/v2/contacts", &contact("john@example.com")).await;
    let (_, b) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("john@example.com", "60", "p1"),
    )
    .await;
    assert_eq!(b["error_code"], "HC_PAYOUT1");
    let url = format!("/v2/payouts/detail?uuid={}", b["uuid"].as_str().unwrap());
    assert!(
        eventually(|| {
            let (c, s, url) = (c.clone(), &s, url.clone());
            async move {
                let b = get(&c, s, &url).await.1;
                b["status"] == "expired" && b["payout_transactions"][0]["status"] == "cancelled"
            }
        })
        .await
    );
}

#[tokio::test]
async fn simulation_and_scheduled_cancellation() {
    let s = start(Config {
        payout_delay: Duration::from_secs(3600),
        ..fast()
    })
    .await;
    let c = client();
    post(&c, &s, "/v2/contacts", &contact("john@example.com")).await;
    let (_, b) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("john@example.com", "10", "sim"),
    )
    .await;
    let uuid = b["uuid"].as_str().unwrap();
    assert_eq!(
        post(
            &c,
            &s,
            "/v2/payouts/simulate",
            &json!({"uuid": uuid, "status": "failed"})
        )
        .await,
        (200, json!({"status": "ok"}))
    );
    let (_, d) = get(&c, &s, &format!("/v2/payouts/detail?uuid={uuid}")).await;
    assert_eq!(
        (
            d["status"].as_str(),
            d["payout_transactions"][0]["status"].as_str()
        ),
        (Some("completed"), Some("failed"))
    );
    assert_eq!(
        post(
            &c,
            &s,
            "/v2/payouts/simulate",
            &json!({"uuid": uuid, "status": "completed"})
        )
        .await
        .0,
        400,
        "already completed"
    );

    let mut later = payout("john@example.com", "10", "later");
    later["scheduled_at"] = json!(
        (chrono::Utc::now() + chrono::Duration::days(2))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    );
    let (_, b) = post(&c, &s, "/v2/payouts", &later).await;
    assert_eq!(b["status"], "scheduled");
    let uuid = b["uuid"].as_str().unwrap();
    assert_eq!(
        post(
            &c,
            &s,
            "/v2/payouts/cancel_scheduled",
            &json!({"uuid": uuid})
        )
        .await,
        (200, json!({"status": "OK"}))
    );
    assert_eq!(
        get(&c, &s, &format!("/v2/payouts/detail?uuid={uuid}"))
            .await
            .1["status"],
        "expired"
    );
    assert_eq!(
        post(
            &c,
            &s,
            "/v2/payouts/cancel_scheduled",
            &json!({"uuid": uuid})
        )
        .await
        .0,
        400
    );
}

#[tokio::test]
async fn payins_contract_and_lifecycle() {
    let s = start(fast()).await;
    let c = client();
    let (st, methods) = get(&c, &s, "/v2/payins/payin_methods").await;
    assert_eq!(
        (st, methods["records"].as_array().map(Vec::len)),
        (200, Some(3))
    );
    let (_, params) = get(
        &c,
        &s,
        "/v2/payins/payin_method/params?payin_method_name=au_payid_npp_aud",
    )
    .await;
    assert_shape(
        &params["record"],
        &[
            ("currency", 's'),
            ("payin_method_name", 's'),
            ("payin_method_params", 'o'),
            ("payment_type", 's'),
            ("is_refundable", 'b'),
            ("min_amount", 'n'),
        ],
    );
    let body = json!({"currency": "PHP", "amount": 1000, "name": "Hello Clever", "gst": true, "email": "test@helloclever.co",
                      "payin_method_name": "ph_bank_maya_php", "payin_method_params": {}, "description": "Test Payin",
                      "webhook_notification": {}, "external_id": "123456"});
    let (st, p) = post(&c, &s, "/v2/payins", &body).await;
    assert_eq!(st, 200, "{p}");
    assert_shape(
        &p,
        &[
            ("uuid", 's'),
            ("name", 's'),
            ("description", 's'),
            ("email", 's'),
            ("external_id", 's'),
            ("status", 's'),
            ("currency", 's'),
            ("gst", 'b'),
            ("amount", 's'),
            ("gst_amount", 's'),
            ("total", 's'),
            ("paid_amount", 's'),
            ("payment_method", 's'),
            ("is_refundable", 'b'),
            ("expired_at", 's'),
            ("pay_by", 's'),
            ("webhook_notification", 'o'),
            ("pay_code", 'o'),
        ],
    );
    assert_eq!(
        (
            p["amount"].as_str(),
            p["gst_amount"].as_str(),
            p["total"].as_str()
        ),
        (Some("1000.0"), Some("100.0"), Some("1100.0"))
    );
    let uuid = p["uuid"].as_str().unwrap();
    assert_eq!(
        post(
            &c,
            &s,
            "/v2/payins/simulate",
            &json!({"uuid": uuid, "status": "completed"})
        )
        .await,
        (200, json!({"status": "ok"}))
    );
    let (_, d) = get(&c, &s, &format!("/v2/payins/detail?uuid={uuid}")).await;
    assert_eq!(
        (d["status"].as_str(), d["paid_amount"].as_str()),
        (Some("received"), Some("1100.0"))
    );
    let (st, r) = post(
        &c,
        &s,
        "/v2/payins/refund",
        &json!({"uuid": uuid, "amount": 10, "description": "Partial Refund Reason"}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        (
            r["refund_amount"].as_str(),
            r["payin_request"]["status"].as_str()
        ),
        (Some("10.0"), Some("return_pending"))
    );
    let (st, e) = post(
        &c,
        &s,
        "/v2/payins/refund",
        &json!({"uuid": uuid, "amount": 10}),
    )
    .await;
    assert_eq!(
        (st, e),
        (422, json!({"errors": {"reason": " can't be blank"}}))
    );
    let (_, p2) = post(&c, &s, "/v2/payins", &body).await;
    assert_eq!(
        post(&c, &s, "/v2/payins/cancel", &json!({"uuid": p2["uuid"]})).await,
        (200, json!({"status": "Ok"}))
    );
    let (_, list) = get(&c, &s, "/v2/payins/all?per_page=1&page=2").await;
    assert_eq!(
        (
            list["total"].as_u64(),
            list["records"][0]["status"].as_str()
        ),
        (Some(2), Some("expired"))
    );
}

#[tokio::test]
async fn seeded_exports_page_through() {
    let s = start(Config {
        seed_data: 45,
        ..fast()
    })
    .await;
    let c = client();
    let (st, first) = get(&c, &s, "/v1/pay_to/payment_agreement/search?from_date=01/01/20&to_date=2099-01-01T00:00:00&page=1&size=20").await;
    assert_eq!(st, 200);
    assert_eq!(
        (
            first["total_count"].as_u64(),
            first["total_page"].as_u64(),
            first["next_page"].as_u64()
        ),
        (Some(45), Some(3), Some(2))
    );
    let rec = &first["records"][0];
    assert_shape(
        rec,
        &[
            ("id", 'n'),
            ("payment_agreement_id", 's'),
            ("status", 's'),
            ("created_at", 's'),
            ("agreement_details", 'o'),
            ("payer_details", 'o'),
        ],
    );
    let (_, last) = get(&c, &s, "/v1/pay_to/payment_agreement/search?from_date=01/01/20&to_date=2099-01-01T00:00:00&page=3&size=20").await;
    assert!(last["next_page"].is_null());
    assert_eq!(last["records"].as_array().unwrap().len(), 5);
    assert_eq!(
        get(&c, &s, "/v1/pay_to/payment_agreement/search?page=1")
            .await
            .0,
        400
    );

    let (_, cards) = get(&c, &s, "/v2/cards/payments?per_page=50").await;
    assert_eq!(cards["total"], 45);
    assert_shape(
        &cards["records"][0],
        &[
            ("uuid", 's'),
            ("status", 's'),
            ("amount", 'n'),
            ("sender_details", 'o'),
            ("created_at", 's'),
        ],
    );
    let (_, received) = get(&c, &s, "/v2/cards/payments?status=received&per_page=100").await;
    assert_eq!(received["total"], 9);
    assert_eq!(get(&c, &s, "/v2/cards/payments?status=bogus").await.0, 400);
    let (_, recent) = get(
        &c,
        &s,
        &format!(
            "/v2/cards/payments?start_date={}",
            (chrono::Utc::now() - chrono::Duration::days(40)).format("%Y-%m-%dT%H:%M:%SZ")
        ),
    )
    .await;
    assert!(
        recent["total"].as_u64().unwrap() < 45 && recent["total"].as_u64().unwrap() >= 4,
        "{}",
        recent["total"]
    );
    let l = ledger(&s).await;
    assert_eq!(
        (
            l["contacts"].as_array().unwrap().len(),
            l["payouts"].as_array().unwrap().len(),
            l["payins"].as_u64()
        ),
        (45, 45, Some(45))
    );
    // Reset returns to the seeded state.
    post(&c, &s, "/v2/contacts", &contact("extra@example.com")).await;
    reqwest::Client::new()
        .post(format!("http://{}/__sandbox/reset", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ledger(&s).await["contacts"].as_array().unwrap().len(), 45);
}
