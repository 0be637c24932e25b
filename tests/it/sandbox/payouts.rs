//! Payout methods, batches, funding answers, simulation and scheduled cancellation.

use super::*;

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
            "name rule",
            Box::new(|b| b["payout_transaction_details"][0]["first_name"] = json!("Jo{hn")),
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
