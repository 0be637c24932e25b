use super::*;
use serde_json::json;

#[test]
fn pages_of_both_shapes() {
    let a = parse_page(
        json!({"total": 45, "page": 3, "per_page": 20, "records": [1, 2]}),
        3,
    )
    .unwrap();
    assert_eq!((a.more, a.size, a.total), (More::No, Some(20), Some(45)));
    let a = parse_page(
        json!({"total": 100, "page": 1, "per_page": 20, "records": []}),
        1,
    )
    .unwrap();
    assert_eq!(a.more, More::Yes);
    let b = parse_page(
        json!({"page": 1, "size": 10, "next_page": null, "total_page": 1, "records": []}),
        1,
    )
    .unwrap();
    assert_eq!(b.more, More::No);
    // The reference's own example: next_page 2 with total_page 1 — follow it (one more
    // request) rather than risk losing a page.
    let b = parse_page(json!({"page": 1, "size": 10, "next_page": 2, "total_page": 1, "total_count": 10, "records": []}), 1).unwrap();
    assert_eq!(b.more, More::Yes);
    let bare = parse_page(json!({"records": [1]}), 1).unwrap();
    assert_eq!((bare.more, bare.size), (More::Unknown, None));
    assert!(parse_page(json!({"data": []}), 1).is_err());
}

#[test]
fn windows_split_and_share_boundaries() {
    let t0 = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let w = windows(t0, t0 + Duration::days(800), Some(Duration::days(365)));
    assert_eq!(w.len(), 3);
    assert_eq!(w[0], (t0, t0 + Duration::days(365)));
    assert_eq!(w[1].0, w[0].1);
    assert_eq!(w[2].1, t0 + Duration::days(800));
    assert_eq!(windows(t0, t0, Some(Duration::days(365))), vec![(t0, t0)]);
    assert_eq!(windows(t0, t0 + Duration::days(900), None).len(), 1);
}

#[test]
fn cells_are_normalised_and_redacted() {
    let mut card = json!({"uuid": "U1", "currency": "USD", "amount": 10000, "paid_amount": "0.0",
        "created_at": "2025-05-28T04:22:21.567+0000", "expired_at": "",
        "webhook_notification": {"endpoint_url": "https://x", "authorization_header": "Bearer abc"},
        "sender_details": {"card": {"card_brand": "visa", "card_token_id": "tok_123456789"}}});
    redact(&mut card);
    assert_eq!(card["webhook_notification"]["authorization_header"], "****");
    assert_eq!(
        card["sender_details"]["card"]["card_token_id"],
        "**********789"
    );
    let c = |path: &'static str, kind| cell(&card, None, &col("x", path, kind));
    assert_eq!(c("amount", Kind::Money), "10000.00");
    assert_eq!(c("paid_amount", Kind::Money), "0.00");
    assert_eq!(c("created_at", Kind::Time), "2025-05-28T04:22:21.567Z");
    assert_eq!(c("expired_at", Kind::Time), "");
    assert_eq!(c("sender_details.card.card_brand", Kind::Text), "visa");
    // A provider's text a spreadsheet would run is not a formula in the file.
    let evil = json!({"name": "=HYPERLINK(\"http://x\",\"pay\")"});
    assert_eq!(
        cell(&evil, None, &col("n", "name", Kind::Text)),
        "'=HYPERLINK(\"http://x\",\"pay\")"
    );
    assert_eq!(c("missing.path", Kind::Text), "");
    assert_eq!(money("12.345", "AUD"), "12.345");
    assert_eq!(money("1000", "JPY"), "1000");
    assert_eq!(iso_time("2024-01-01T00:00:00Z"), "2024-01-01T00:00:00.000Z");
    let contact = json!({"kyc_statuses": [{"kyc_status": "approved"}, {"kyc_status": "rejected"}]});
    assert_eq!(
        cell(&contact, None, &col("k", "kyc_statuses", Kind::LatestKyc)),
        "approved"
    );
    let agreement = json!({"agreement_details": {"variable_agreement_details_obj": {"start_date": "15/07/24"}}});
    assert_eq!(cell(&agreement, None, &AGREEMENT_COLUMNS[9]), "2024-07-15");
}
