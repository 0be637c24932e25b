//! Tests of the executor's state functions.

use super::*;

/// Each store, with plans 1 and 2 (one job, two scopes) and no item yet.
fn two_plans() -> Vec<crate::state::testing::Store> {
    let stores = crate::state::testing::stores();
    for store in &stores {
        let c = store.state().connection();
        c.batch("INSERT INTO plans (id, job, scope, created_at) VALUES (1, 'j', 's', 't'), (2, 'j', 'other', 't')")
            .unwrap();
        c.after_explicit_ids("plans").unwrap();
    }
    stores
}

/// An item of plan 1 with the given id, pending.
fn item(c: &Conn, id: i64) {
    c.execute(
        "INSERT INTO items (id, plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at)
         VALUES (?1, 1, 'pay', 0, ?2, ?1, 'pending', 'h', '{}', 't', 't')",
        args![id, format!("k{id}")],
    )
    .unwrap();
}

fn text(c: &Conn, sql: &str) -> Option<String> {
    c.one(sql, args![], |r| r.get(0)).unwrap()
}

#[test]
fn a_tally_counts_by_step_in_job_order_and_earns_the_exit_code() {
    for store in two_plans() {
        tally_of(store.state().connection(), store.name);
    }
}

fn tally_of(c: &Conn, store: &str) {
    let earns = |t: &Tally| crate::exit::of_run(crate::exit::Ended::Done, t.needs_a_look(), false);
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'h', '{}', 't', 't')",
            args![plan, step, si, i.to_string(), i as i64, st],
        )
        .unwrap();
    }
    let tally = Tally::of(c, 1).unwrap();
    assert_eq!(
        tally.json(),
        r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"skipped":1},"pay":{"succeeded":2}}"#,
        "{store}"
    );
    assert_eq!(earns(&tally), crate::exit::SUCCESS);
    // Another plan's failure is not this plan's.
    assert_eq!(earns(&Tally::of(c, 2).unwrap()), crate::exit::ROWS_FAILED);
    // A paid row that changed since: done as sent, but its change is not.
    c.batch("UPDATE items SET conflict_hash = 'h2' WHERE plan_id = 1 AND step = 'pay'")
        .unwrap();
    let tally = Tally::of(c, 1).unwrap();
    assert_eq!(
        tally.json(),
        r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"skipped":1},"pay":{"conflict":2}}"#
    );
    assert_eq!(earns(&tally), crate::exit::ROWS_FAILED);
    c.batch("UPDATE items SET conflict_hash = NULL").unwrap();
    c.batch("UPDATE items SET state = 'in_flight' WHERE plan_id = 1 AND step = 'kyc'")
        .unwrap();
    assert_eq!(
        Tally::of(c, 1).unwrap().json(),
        r#"{"contact":{"skipped":1,"succeeded":2},"kyc":{"in_doubt":1},"pay":{"succeeded":2}}"#
    );
    assert_eq!(earns(&Tally::of(c, 1).unwrap()), crate::exit::ROWS_FAILED);
}

#[test]
fn a_providers_words_are_stored_scrubbed() {
    for store in two_plans() {
        let c = store.state().connection();
        item(c, 1);
        let o = Outcome {
            state: ItemState::Failed,
            error_code: Some("HTTP_422".into()),
            error_message: Some("acct 987654321 (bsb 062000) rejected; limit 250000 AUD".into()),
            ..Outcome::default()
        };
        set_outcome(c, 1, &o).unwrap();
        assert_eq!(
            text(c, "SELECT error_message FROM items WHERE id = 1").as_deref(),
            Some("acct ******321 (bsb ***000) rejected; limit 250000 AUD"),
            "{}",
            store.name
        );
    }
}

#[test]
fn outcomes_written_together_are_each_items_own() {
    for store in two_plans() {
        let c = store.state().connection();
        // More than a statement holds, and a last statement of a size not a power of two.
        let n = OUTCOMES_PER_STATEMENT as i64 * 2 + 3;
        for id in 1..=n {
            item(c, id);
        }
        c.batch("UPDATE items SET provider_ref = 'kept' WHERE id = 2")
            .unwrap();
        let outcomes: Vec<(i64, Outcome)> = (1..=n)
            .map(|id| {
                let o = match id % 3 {
                    0 => Outcome {
                        state: ItemState::Succeeded,
                        provider_ref: Some(format!("ref-{id}")),
                        provider_status: Some("completed".into()),
                        ..Outcome::default()
                    },
                    1 => Outcome {
                        state: ItemState::Failed,
                        error_code: Some(format!("E{id}")),
                        error_message: Some(format!("row {id} refused")),
                        ..Outcome::default()
                    },
                    _ => Outcome {
                        state: ItemState::Blocked,
                        ..Outcome::default()
                    },
                };
                (id, o)
            })
            .collect();
        let all: Vec<(i64, &Outcome)> = outcomes.iter().map(|(id, o)| (*id, o)).collect();
        set_outcomes(c, &all).unwrap();
        type Stored = (i64, String, Option<String>, Option<String>, Option<String>);
        let rows: Vec<Stored> = c
            .all(
                "SELECT id, state, provider_ref, provider_status, error_code FROM items ORDER BY id",
                args![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(rows.len() as i64, n, "{}", store.name);
        for (id, state, reference, status, code) in rows {
            let (want_state, want_ref, want_code) = match id % 3 {
                0 => ("succeeded", Some(format!("ref-{id}")), None),
                1 => ("failed", None, Some(format!("E{id}"))),
                // A reference known before stays when the outcome brings none.
                _ => ("blocked", (id == 2).then(|| "kept".to_string()), None),
            };
            assert_eq!(state, want_state, "{} item {id}", store.name);
            assert_eq!(reference, want_ref, "{} item {id}", store.name);
            assert_eq!(code, want_code, "{} item {id}", store.name);
            assert_eq!(status.is_some(), id % 3 == 0, "{} item {id}", store.name);
        }
    }
}

#[test]
fn pages_of_a_step_are_its_items_in_file_order_each_once() {
    for store in two_plans() {
        pages_of(store.state().connection(), store.name);
    }
}

fn pages_of(c: &Conn, store: &str) {
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
        assert_eq!(paged, whole, "{store}: pages of {size}");
    }
}

#[test]
fn a_transaction_left_idle_past_the_lease_is_a_lost_lease() {
    for store in crate::state::testing::stores() {
        let c = store.state().connection();
        if !c.failure_spoils_transaction() {
            continue; // PostgreSQL's server ends such sessions; SQLite has no server
        }
        // As `pg_begin` sets it, with a lease of a fifth of a second.
        c.batch("BEGIN; SET LOCAL idle_in_transaction_session_timeout = 200")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(600));
        let e = c.batch("SELECT 1").unwrap_err();
        assert!(matches!(e, crate::state::sql::SqlError::Fenced), "{e}");
        assert!(e.to_string().contains("lost its lease"), "{e}");
    }
}

#[test]
fn a_long_listing_comes_whole_and_in_order_and_a_stop_leaves_the_connection_usable() {
    for store in two_plans() {
        let c = store.state().connection();
        // More rows than PostgreSQL passes over at a time, and a last page part-full.
        let n = 1300;
        for id in 1..=n {
            item(c, id);
        }
        let ids: Vec<i64> = c
            .all("SELECT id FROM items ORDER BY id", args![], |r| r.get(0))
            .unwrap();
        assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "{}", store.name);
        // A reader that fails part-way stops the listing; the next statement goes ahead.
        let mut seen = 0;
        let e = c.each("SELECT id FROM items ORDER BY id", args![], |_| {
            seen += 1;
            if seen == 600 {
                return Err(crate::state::sql::SqlError::NoRow);
            }
            Ok(())
        });
        assert!(e.is_err(), "{}", store.name);
        assert_eq!(seen, 600, "{}", store.name);
        let count: i64 = c
            .one("SELECT COUNT(*) FROM items", args![], |r| r.get(0))
            .unwrap();
        assert_eq!(count, n, "{}", store.name);
    }
}

/// A payout item of `plan`: row `key`, `state`, its payee hash, first sent at `sent`.
fn payout(c: &Conn, plan: i64, key: &str, state: &str, payee: &str, sent: Option<&str>) {
    c.execute(
        "INSERT INTO items (plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at, payee_hash, first_attempt_at)
         VALUES (?1, 'pay', 0, ?2, 1, ?3, 'h', '{}', 't', 't', ?4, ?5)",
        args![plan, key, state, format!("{payee:0>32}"), sent],
    )
    .unwrap();
}

#[test]
fn a_plan_repeating_most_of_a_recent_scope_s_payouts_is_found() {
    for store in two_plans() {
        let c = store.state().connection();
        let name = store.name;
        c.execute(
            "INSERT INTO runs (id, plan_id, started_at, pid, host) VALUES (7, 2, '2026-12-01T00:00:00.000Z', 1, 'h')",
            args![],
        )
        .unwrap();
        // Scope 'other' paid a, b, c (d failed: not paid); an old payout of e is outside
        // the window.
        for (k, st, p, at) in [
            ("1", "succeeded", "a", "2026-12-01T01:00:00.000Z"),
            ("2", "in_flight", "b", "2026-12-01T01:00:00.000Z"),
            ("3", "succeeded", "c", "2026-12-01T02:00:00.000Z"),
            ("4", "failed", "d", "2026-12-01T01:00:00.000Z"),
            ("5", "succeeded", "e", "2026-11-01T01:00:00.000Z"),
        ] {
            payout(c, 2, k, st, p, Some(at));
        }
        let since = "2026-11-28T00:00:00.000Z";
        // Plan 1 pays a, b, d, e: two of four repeat (not more than half).
        for (k, p) in [("1", "a"), ("2", "b"), ("3", "d"), ("4", "e")] {
            payout(c, 1, k, "pending", p, None);
        }
        assert_eq!(repeated_payroll(c, 1, "j", since).unwrap(), None, "{name}");
        // Three of five.
        payout(c, 1, "5", "pending", "c", None);
        let r = repeated_payroll(c, 1, "j", since).unwrap().expect(name);
        assert_eq!(
            r,
            Repeat {
                scope: "other".into(),
                run_id: Some(7),
                paid_at: "2026-12-01T02:00:00.000Z".into(),
                matching: 3,
                planned: 5,
            },
            "{name}"
        );
        // Another job's payouts are not this job's payroll.
        assert_eq!(
            repeated_payroll(c, 1, "another", since).unwrap(),
            None,
            "{name}"
        );
        // Once this plan has begun paying, whoever ran it decided.
        c.execute(
            "UPDATE items SET first_attempt_at = 't' WHERE plan_id = 1 AND row_key = '1'",
            args![],
        )
        .unwrap();
        assert_eq!(repeated_payroll(c, 1, "j", since).unwrap(), None, "{name}");
    }
}

#[test]
fn digests_are_recorded_once_with_their_rows_and_approvals_are_bound_to_one() {
    use crate::plan::digest::{DigestRow, PlanDigest};
    use crate::state::approvals;
    for store in two_plans() {
        let c = store.state().connection();
        let name = store.name;
        let row = |key: &str, hash: &str| DigestRow {
            step: "pay".into(),
            key: key.into(),
            hash: hash.into(),
            amount: Some("1.00".into()),
            currency: Some("AUD".into()),
            batch: "b1".into(),
        };
        let plan = |digest: &str, items: Vec<DigestRow>| PlanDigest {
            digest: digest.into(),
            rows: items.len() as u64,
            totals: vec![("AUD".into(), rust_decimal::Decimal::new(300, 2), 3)],
            items,
        };
        let first = plan(
            "sha256:aa",
            vec![row("a", "1"), row("b", "1"), row("c", "1")],
        );
        approvals::record_plan(c, 1, &first, "carol", "2026-12-01T00:00:00.000Z").unwrap();
        let d1 = approvals::current(c, 1).unwrap().expect(name);
        assert_eq!(
            (d1.digest.as_str(), d1.planned_by.as_str()),
            ("sha256:aa", "carol")
        );
        assert_eq!(d1.totals, first.totals, "{name}");
        assert!(
            approvals::approve(c, d1.id, "alice", Some("ok"), "2026-12-01T01:00:00.000Z").unwrap()
        );
        assert!(
            !approvals::approve(c, d1.id, "alice", None, "2026-12-01T02:00:00.000Z").unwrap(),
            "{name}: once"
        );
        // b changed, c removed, d added.
        let second = plan(
            "sha256:bb",
            vec![row("a", "1"), row("b", "2"), row("d", "1")],
        );
        approvals::record_plan(c, 1, &second, "dave", "2026-12-02T00:00:00.000Z").unwrap();
        let d2 = approvals::current(c, 1).unwrap().expect(name);
        assert_eq!(d2.digest, "sha256:bb", "{name}");
        assert!(
            approvals::of_digest(c, d2.id).unwrap().is_empty(),
            "{name}: approvals stay with their digest"
        );
        let last = approvals::last_approved(c, 1, d2.id).unwrap().expect(name);
        assert_eq!(last.id, d1.id, "{name}");
        assert_eq!(
            approvals::changes(c, d1.id, d2.id).unwrap(),
            approvals::Changes {
                added: 1,
                removed: 1,
                changed: 1
            },
            "{name}"
        );
        // Back to the first plan: its digest, maker and approval again.
        approvals::record_plan(c, 1, &first, "erin", "2026-12-03T00:00:00.000Z").unwrap();
        let again = approvals::current(c, 1).unwrap().expect(name);
        assert_eq!(
            (again.id, again.planned_by.as_str()),
            (d1.id, "carol"),
            "{name}"
        );
        let given = approvals::of_digest(c, again.id).unwrap();
        assert_eq!(given.len(), 1, "{name}");
        assert_eq!(given[0].note.as_deref(), Some("ok"), "{name}");
        // The other scope's plan has no digest.
        assert_eq!(approvals::current(c, 2).unwrap(), None, "{name}");
    }
}

#[test]
fn a_payins_details_are_kept_its_pending_ones_listed_and_a_cancel_recorded() {
    for store in two_plans() {
        let c = store.state().connection();
        let name = store.name;
        for id in 1..=4 {
            item(c, id);
        }
        c.batch("UPDATE items SET step = 'collect', currency = 'AUD', amount = '20.00'")
            .unwrap();
        let paid = |uuid: &str, status: &str, details: Option<&str>| Outcome {
            state: ItemState::Succeeded,
            provider_ref: Some(uuid.into()),
            provider_status: Some(status.into()),
            details: details.map(str::to_string),
            ..Outcome::default()
        };
        let pay_id = r#"{"pay_id":"p1@payid.example"}"#;
        set_outcomes(
            c,
            &[
                (1, &paid("P1", "pending", Some(pay_id))),
                (2, &paid("P2", "received", None)),
                (3, &paid("P3", "pending", None)),
            ],
        )
        .unwrap();
        // A later outcome without details keeps them.
        set_outcome(c, 1, &paid("P1", "pending", None)).unwrap();
        assert_eq!(
            text(c, "SELECT details FROM items WHERE id = 1").as_deref(),
            Some(pay_id),
            "{name}"
        );
        let pending = pending_payins(c, 1, &["collect".to_string()]).unwrap();
        let uuids: Vec<&str> = pending.iter().map(|p| p.uuid.as_str()).collect();
        assert_eq!(uuids, ["P1", "P3"], "{name}");
        assert!(pending_payins(c, 1, &[]).unwrap().is_empty());
        mark_payin_cancelled(c, 3).unwrap();
        assert_eq!(
            text(c, "SELECT state || ' ' || provider_status || ' ' || error_code FROM items WHERE id = 3")
                .as_deref(),
            Some("cancelled expired CANCELLED"),
            "{name}"
        );
        assert_eq!(
            pending_payins(c, 1, &["collect".to_string()])
                .unwrap()
                .len(),
            1
        );
        // A row that waited and was never sent goes back in the queue; one sent does not.
        c.batch("UPDATE items SET state = 'blocked', error_code = 'WAITING' WHERE id = 4")
            .unwrap();
        c.batch("UPDATE items SET state = 'blocked', error_code = 'PAYIN_PENDING' WHERE id = 1")
            .unwrap();
        unblock_unsent(c, 1, "collect").unwrap();
        assert_eq!(
            text(c, "SELECT state FROM items WHERE id = 4").as_deref(),
            Some("pending"),
            "{name}"
        );
        assert_eq!(
            text(c, "SELECT state FROM items WHERE id = 1").as_deref(),
            Some("blocked"),
            "{name}"
        );
    }
}
