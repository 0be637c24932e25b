//! Tests of the executor's state functions.

use super::*;

/// A state database with plans 1 and 2 (one job, two scopes) and no item yet.
fn two_plans() -> crate::state::State {
    let state = crate::state::State::open_in_memory().unwrap();
    state
        .connection()
        .lite()
        .unwrap()
        .execute_batch("INSERT INTO plans (id, job, scope, created_at) VALUES (1, 'j', 's', 't'), (2, 'j', 'other', 't')")
        .unwrap();
    state
}

#[test]
fn a_tally_counts_by_step_in_job_order_and_earns_the_exit_code() {
    let earns = |t: &Tally| crate::exit::of_run(crate::exit::Ended::Done, t.needs_a_look(), false);
    let state = two_plans();
    let c = state.connection();
    let items = [
        (1, "pay", 2, "succeeded"),
        (1, "contact", 0, "succeeded"),
        (1, "kyc", 1, "skipped"),
        (1, "contact", 0, "succeeded"),
        (1, "pay", 2, "succeeded"),
        (1, "contact", 0, "skipped"),
        (2, "contact", 0, "failed"),
    ];
    for (i, (plan, step, si, st)) in items.iter().enumerate() {
        c.execute(
            "INSERT INTO items (plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, 'h', '{}', 't', 't')",
            args![plan, step, si, i as i64, st],
        )
        .unwrap();
    }
    let tally = Tally::of(c, 1).unwrap();
    assert_eq!(
        tally.json(),
        r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"skipped":1},"pay":{"succeeded":2}}"#
    );
    assert_eq!(earns(&tally), crate::exit::SUCCESS);
    // Another plan's failure is not this plan's.
    assert_eq!(earns(&Tally::of(c, 2).unwrap()), crate::exit::ROWS_FAILED);
    // A paid row that changed since: done as sent, but its change is not.
    c.lite()
        .unwrap()
        .execute(
            "UPDATE items SET conflict_hash = 'h2' WHERE plan_id = 1 AND step = 'pay'",
            [],
        )
        .unwrap();
    let tally = Tally::of(c, 1).unwrap();
    assert_eq!(
        tally.json(),
        r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"skipped":1},"pay":{"conflict":2}}"#
    );
    assert_eq!(earns(&tally), crate::exit::ROWS_FAILED);
    c.lite()
        .unwrap()
        .execute("UPDATE items SET conflict_hash = NULL", [])
        .unwrap();
    c.lite()
        .unwrap()
        .execute(
            "UPDATE items SET state = 'in_flight' WHERE plan_id = 1 AND step = 'kyc'",
            [],
        )
        .unwrap();
    assert_eq!(
        Tally::of(c, 1).unwrap().json(),
        r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"in_doubt":1},"pay":{"succeeded":2}}"#
    );
    assert_eq!(earns(&Tally::of(c, 1).unwrap()), crate::exit::ROWS_FAILED);
}

#[test]
fn a_providers_words_are_stored_scrubbed() {
    let state = two_plans();
    let c = state.connection();
    c.lite().unwrap().execute(
        "INSERT INTO items (id, plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at)
         VALUES (1, 1, 'pay', 0, 'k', 1, 'pending', 'h', '{}', 't', 't')",
        [],
    )
    .unwrap();
    let o = Outcome {
        state: ItemState::Failed,
        error_code: Some("HTTP_422".into()),
        error_message: Some("acct 987654321 (bsb 062000) rejected; limit 250000 AUD".into()),
        ..Outcome::default()
    };
    set_outcome(c, 1, &o).unwrap();
    let stored: String = c
        .lite()
        .unwrap()
        .query_row("SELECT error_message FROM items WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        stored,
        "acct ******321 (bsb ***000) rejected; limit 250000 AUD"
    );
}

#[test]
fn pages_of_a_step_are_its_items_in_file_order_each_once() {
    let state = two_plans();
    let c = state.connection();
    // Rows on one line each, except two keys on line 7 (a row's key sorts them); each
    // row has an item in two steps, and another plan has the same rows.
    let mut n = 0;
    for plan in [1, 2] {
        for i in 0..23i64 {
            let (line, key) = if i == 8 { (7, "K08") } else { (i, "") };
            let key = if key.is_empty() {
                format!("K{i:02}")
            } else {
                key.into()
            };
            let state = match i % 5 {
                0 => "succeeded",
                1 => "in_flight",
                _ => "pending",
            };
            for step in ["contact", "pay"] {
                n += 1;
                c.execute(
                    "INSERT INTO items (plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at, conflict_hash)
                     VALUES (?1, ?2, 0, ?3, ?4, ?5, 'h', '{}', 't', 't', ?6)",
                    args![plan, step, key, line, state, (i == 12).then_some("changed")],
                )
                .unwrap();
            }
        }
    }
    assert_eq!(n, 92);
    let states = [ItemState::Pending, ItemState::InFlight];
    let whole: Vec<i64> = items_in(c, 1, "contact", &states)
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    // 23 rows, less 5 succeeded and 1 conflict.
    assert_eq!(whole.len(), 17);
    for size in [1, 2, 5, 17, 100] {
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = items_page(c, 1, "contact", &states, after.as_ref(), size).unwrap();
            assert!(page.len() <= size);
            let Some(last) = page.last() else { break };
            after = Some((last.row_line as i64, last.row_key.clone()));
            paged.extend(page.iter().map(|i| i.id));
        }
        assert_eq!(paged, whole, "pages of {size}");
    }
}
