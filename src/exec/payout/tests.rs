use super::*;

fn batch(uuid: &str, status: &str, code: Option<&str>, txs: &[(&str, &str)]) -> PayoutBatch {
    serde_json::from_value(json!({
        "uuid": uuid, "status": status, "external_id": format!("b-{uuid}"),
        "error_code": code, "error_message": "",
        "payout_transactions": txs.iter().map(|(e, s)| json!({"uuid": format!("T{e}"), "external_id": e, "status": s})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[test]
fn funding_answers_keep_rows_alive_and_only_an_ended_batch_fails_them() {
    let state = |b: &PayoutBatch| row_outcome(b, b.payout_transactions.first()).state.as_str();
    let short = batch("A", "processing", Some("HC_PAYOUT1"), &[("r1", "pending")]);
    assert_eq!(state(&short), "awaiting_funds");
    let o = row_outcome(&short, short.payout_transactions.first());
    // The reference's example gives HC_PAYOUT1 with an empty message.
    assert_eq!(
        (o.error_code.as_deref(), o.error_message.as_deref()),
        (Some("HC_PAYOUT1"), Some("HC_PAYOUT1"))
    );
    let payto = batch("B", "processing", Some("HC_PAYOUT2"), &[("r1", "pending")]);
    assert_eq!(state(&payto), "succeeded");
    // Funded later: the code stays on a completed batch; the row is paid.
    let paid = batch("C", "completed", Some("HC_PAYOUT1"), &[("r1", "completed")]);
    assert_eq!(state(&paid), "succeeded");
    let expired = batch("D", "expired", Some("HC_PAYOUT1"), &[("r1", "cancelled")]);
    assert_eq!(state(&expired), "failed");
    // Reported failed, then completed: paid.
    let late = batch("E", "completed", None, &[("r1", "completed")]);
    assert_eq!(state(&late), "succeeded");
    let failed_tx = batch("F", "completed", None, &[("r1", "failed")]);
    assert_eq!(
        row_outcome(&failed_tx, failed_tx.payout_transactions.first())
            .error_code
            .as_deref(),
        Some("PAYOUT_FAILED")
    );
    assert_eq!(
        row_outcome(&paid, None).error_code.as_deref(),
        Some("TX_MISSING")
    );
}

#[test]
fn an_external_id_carried_twice_by_batches_that_can_pay_is_a_duplicate() {
    let ours = |e: &str| e.starts_with('r') || e.starts_with("b-");
    let a = batch(
        "A",
        "completed",
        None,
        &[("r1", "completed"), ("r2", "completed")],
    );
    let mut b = batch(
        "B",
        "processing",
        None,
        &[("r2", "pending"), ("x9", "pending")],
    );
    let c = batch("C", "expired", None, &[("r1", "cancelled")]);
    assert!(
        duplicates_in(&[a.clone(), c.clone()], ours).is_empty(),
        "an expired batch cannot pay"
    );
    let d = duplicates_in(&[a.clone(), b.clone(), c], ours);
    assert_eq!(
        d,
        [Duplicate {
            external_id: "r2".into(),
            row_key: None,
            uuids: vec!["A".into(), "B".into()]
        }]
    );
    // A second batch under one of this plan's batch ids.
    b.external_id = Some("b-A".into());
    b.payout_transactions.clear();
    let d = duplicates_in(&[a, b], ours);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].external_id.as_str(), d[0].uuids.len()), ("b-A", 2));
}
