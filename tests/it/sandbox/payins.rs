//! Payins and the seeded records exports page through.

use super::*;

#[tokio::test]
async fn payins_contract_and_lifecycle() {
    let s = start(fast()).await;
    let c = client();
    let (st, methods) = get(&c, &s, "/v2/payins/payin_methods").await;
    assert_eq!(
        (st, methods["records"].as_array().map(Vec::len)),
        (200, Some(4))
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

/// payrun's Hello Clever client for payins, against the sandbox: create (with its pay
/// details), detail, the listing by external id, cancel a pending one, refund a received one.
#[tokio::test]
async fn the_client_creates_reads_cancels_and_refunds_payins() {
    use payrun::provider::helloclever::client::{HelloClever, Secret};
    let s = start(fast()).await;
    let http = payrun::provider::http::client(Duration::from_secs(10), 2).unwrap();
    let hc = HelloClever::new(
        http,
        &s.base_url(),
        Secret::new("sandbox-app"),
        Secret::new("sandbox-secret"),
    )
    .unwrap();
    let body = |ext: &str| {
        // The amount as a JSON number with its exact digits, as payouts send it.
        let amount: Value = serde_json::from_str("120.50").unwrap();
        json!({"currency": "AUD", "amount": amount, "name": "Ann Lee", "gst": false,
               "email": "ann@example.com", "payin_method_name": "au_payid_npp_aud",
               "payin_method_params": {"callback_url": "https://example.com/paid"},
               "description": "Invoice 7", "external_id": ext})
    };
    // A PayID payin's payer must be a contact first.
    let c = client();
    let (st, _) = post(&c, &s, "/v2/contacts", &contact("ann@example.com")).await;
    assert_eq!(st, 200);
    let p = hc.create_payin(&body("inv-7")).await.unwrap();
    assert_eq!(p.status.as_deref(), Some("pending"));
    assert_eq!(p.external_id.as_deref(), Some("inv-7"));
    assert_eq!(p.amount, Some("120.5".parse().unwrap()));
    assert!(
        p.pay_code.as_ref().is_some_and(|c| c["pay_id"].is_string()),
        "the payer's PayID: {:?}",
        p.pay_code
    );
    assert_eq!(hc.payin(&p.uuid).await.unwrap().uuid, p.uuid);
    // Found in the listing by its external id.
    let now = chrono::Utc::now();
    let page = hc
        .list_page(
            "/v2/payins/all",
            &[
                (
                    "from_date",
                    (now - chrono::Duration::hours(1))
                        .format("%Y-%m-%dT%H:%M:%S")
                        .to_string(),
                ),
                (
                    "to_date",
                    (now + chrono::Duration::hours(1))
                        .format("%Y-%m-%dT%H:%M:%S")
                        .to_string(),
                ),
                ("page", "1".into()),
                ("per_page", "100".into()),
            ],
        )
        .await
        .unwrap();
    assert!(
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["external_id"] == "inv-7" && r["uuid"] == p.uuid.as_str()),
        "{page}"
    );
    // A pending payin of a cancellable method is cancelled; a second cancel is refused.
    hc.cancel_payin(&p.uuid).await.unwrap();
    assert_eq!(
        hc.payin(&p.uuid).await.unwrap().status.as_deref(),
        Some("expired")
    );
    assert!(hc.cancel_payin(&p.uuid).await.is_err());
    // A received one is refunded in part.
    let q = hc.create_payin(&body("inv-8")).await.unwrap();
    assert!(
        hc.refund_payin(&q.uuid, None, "Not received yet")
            .await
            .is_err()
    );
    let c = client();
    let (st, _) = post(
        &c,
        &s,
        "/v2/payins/simulate",
        &json!({"uuid": q.uuid, "status": "completed"}),
    )
    .await;
    assert_eq!(st, 200);
    let r = hc
        .refund_payin(
            &q.uuid,
            Some("20.50".parse().unwrap()),
            "Overcharged by the invoice",
        )
        .await
        .unwrap();
    assert_eq!(r.refund_amount, Some("20.5".parse().unwrap()));
    assert_eq!(r.payin_request.status.as_deref(), Some("return_pending"));
}
