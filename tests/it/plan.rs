//! `payrun plan`: items and batches in the state database, idempotent re-plans, changed
//! rows as new versions or conflicts, guardrails before anything is written.

use crate::support::{Fixture, JOB, rows};
use rusqlite::Connection;

/// Every item and batch, as text, for whole-state comparisons.
fn dump(f: &Fixture) -> String {
    let conn = Connection::open(f.state_db()).unwrap();
    let mut out = String::new();
    for sql in [
        "SELECT * FROM plans ORDER BY id",
        "SELECT * FROM batches ORDER BY id",
        "SELECT * FROM items ORDER BY id",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        for r in rows {
            out.push_str(&r.unwrap());
            out.push('\n');
        }
    }
    out
}

fn item(f: &Fixture, step: &str, key: &str) -> (String, i64, Option<i64>, Option<String>) {
    let conn = Connection::open(f.state_db()).unwrap();
    conn.query_row(
        "SELECT state, version, batch_id, conflict_hash FROM items WHERE step = ?1 AND row_key = ?2",
        [step, key],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

fn plan(f: &Fixture) -> crate::support::Output {
    let out = f.payrun(&["plan", "job.yaml"]);
    assert_eq!(out.code, 0, "plan failed:\n{}{}", out.stdout, out.stderr);
    out
}

#[test]
fn plan_writes_items_and_batches() {
    let f = Fixture::standard();
    let out = plan(&f);
    assert!(
        out.stdout.contains("contact      contact         3"),
        "{}",
        out.stdout
    );
    // batch.size is 2: three payouts make two batches.
    assert!(out.stdout.contains("2 (+2)"), "{}", out.stdout);
    let conn = Connection::open(f.state_db()).unwrap();
    let (items, batches): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM items), (SELECT COUNT(*) FROM batches)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((items, batches), (6, 2));
    let ext: Vec<String> = conn
        .prepare("SELECT external_id FROM batches ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        ext,
        ["testpay-2026-11-pay-b0001", "testpay-2026-11-pay-b0002"]
    );
    let (ext, payload): (String, String) = conn
        .query_row(
            "SELECT external_id, payload FROM items WHERE step = 'pay' AND row_key = 'E1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(ext, "testpay-2026-11-pay-E1");
    // Account numbers are stored masked; only their hash covers the full value.
    assert!(
        payload.contains("\"account_number\":\"*****678\""),
        "{payload}"
    );
    assert!(!payload.contains("12345678"), "{payload}");
}

/// The executor sends a contact's stored payload as it is, and renders a payout's row
/// again: a masked copy must never be taken for the body.
#[test]
fn only_payloads_with_nothing_masked_are_bodies_to_send() {
    let f = Fixture::standard();
    plan(&f);
    // The state's own key (kept beside it) tells a stored body from a masked copy.
    let st = payrun::state::State::open(&f.state_db()).unwrap();
    let (conn, key) = (st.connection(), st.key());
    let items = |step: &str| {
        payrun::state::work::items_in(conn, 1, step, &[payrun::state::ItemState::Pending]).unwrap()
    };
    let contacts = items("contact");
    assert_eq!(contacts.len(), 3);
    for c in &contacts {
        let body = c
            .planned_body(key)
            .expect("a contact's payload is its body");
        let fields: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(fields["email"].as_str().unwrap().contains('@'), "{body}");
    }
    let pays = items("pay");
    assert_eq!(pays.len(), 3);
    for p in &pays {
        assert!(
            p.payload.contains("\"account_number\":\"*****"),
            "{}",
            p.payload
        );
        assert_eq!(p.planned_body(key), None, "a masked payload is not a body");
    }
}

#[test]
fn planning_twice_changes_nothing() {
    let f = Fixture::standard();
    plan(&f);
    let before = dump(&f);
    let out = plan(&f);
    assert_eq!(dump(&f), before);
    assert!(
        out.stdout
            .contains("contact      contact         0          3"),
        "{}",
        out.stdout
    );
}

#[test]
fn new_rows_join_open_batches() {
    let f = Fixture::standard();
    plan(&f);
    let mut r = rows();
    r.push("E4,Dan,Oh,dan@example.com,AU,1979-12-31,100.00,033000,55667788".into());
    f.write_csv(&r);
    let out = plan(&f);
    assert!(
        out.stdout.contains("2 (+0)"),
        "E4 fills batch 2: {}",
        out.stdout
    );
    assert_eq!(item(&f, "pay", "E4").2, item(&f, "pay", "E3").2);
}

#[test]
fn changed_pending_row_gets_a_new_version() {
    let f = Fixture::standard();
    plan(&f);
    let mut r = rows();
    r[0] = r[0].replace("1500.00", "1600.00");
    f.write_csv(&r);
    let out = plan(&f);
    assert!(
        out.stdout
            .contains("pay          payout          0          2        1"),
        "{}",
        out.stdout
    );
    let (state, version, _, conflict) = item(&f, "pay", "E1");
    assert_eq!((state.as_str(), version, conflict), ("pending", 2, None));
}

#[test]
fn changed_paid_row_is_a_conflict_and_never_requeued() {
    let f = Fixture::standard();
    plan(&f);
    // The executor marks sent payouts; here we stand in for it.
    Connection::open(f.state_db())
        .unwrap()
        .execute(
            "UPDATE items SET state = 'succeeded' WHERE step = 'pay' AND row_key = 'E2'",
            [],
        )
        .unwrap();
    let mut r = rows();
    r[1] = r[1].replace("2500.50", "2600.00");
    f.write_csv(&r);
    let out = plan(&f);
    assert!(out.stdout.contains("1 conflict:"), "{}", out.stdout);
    assert!(
        out.stdout.contains("payroll.csv:3: key 'E2', step 'pay'"),
        "{}",
        out.stdout
    );
    let (state, version, _, conflict) = item(&f, "pay", "E2");
    assert_eq!((state.as_str(), version), ("succeeded", 1));
    assert!(conflict.is_some());
    // Reverting the row ends the conflict.
    f.write_csv(&rows());
    let out = plan(&f);
    assert!(
        !out.stdout.contains("will not be re-sent"),
        "{}",
        out.stdout
    );
    assert!(item(&f, "pay", "E2").3.is_none());
}

#[test]
fn guardrail_failure_writes_nothing() {
    let mut r = rows();
    r.push("E4,Dan,Oh,dan@example.com,AU,1979-12-31,4999.00,033000,11223344".into());
    r.push("E5,Eve,Li,eve@example.com,AU,1979-12-31,4999.00,033000,11223344".into());
    let f = Fixture::new(JOB, &r);
    let out = f.payrun(&["plan", "job.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("limits.max_total for AUD is 10000.00"),
        "{}",
        out.stderr
    );
    assert!(
        !f.state_db().exists(),
        "no state may be written when the plan is refused"
    );
}

#[test]
fn scopes_are_separate_plans() {
    let f = Fixture::standard();
    plan(&f);
    let out = f.payrun(&[
        "plan",
        "job.yaml",
        "--var",
        "period=2026-12",
        "--state",
        "other.db",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("scope '2026-12'"), "{}", out.stdout);
    assert!(f.path("other.db").exists());
    let out = f.payrun(&["plan", "job.yaml", "--var", "period=2026-12"]);
    assert!(
        out.stdout.contains("contact      contact         3"),
        "a new scope plans afresh: {}",
        out.stdout
    );
}

#[test]
fn the_state_is_where_payrun_state_says_and_a_url_never_shows_its_password() {
    let f = Fixture::new(JOB, &rows());
    let run = |state: Option<&str>, env: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
        cmd.arg("plan").arg("job.yaml").current_dir(f.dir.path());
        cmd.env_remove("PAYRUN_STATE");
        if let Some(s) = state {
            cmd.args(["--state", s]);
        }
        if let Some(e) = env {
            cmd.env("PAYRUN_STATE", e);
        }
        cmd.output().unwrap()
    };
    // PAYRUN_STATE names the file when --state does not.
    let out = run(None, Some("elsewhere/pay.db"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(f.path("elsewhere/pay.db").exists());
    assert!(!f.path(".payrun").exists());
    // --state wins over it.
    let out = run(Some("mine.db"), Some("elsewhere/pay.db"));
    assert_eq!(out.status.code(), Some(0));
    assert!(f.path("mine.db").exists());
    // A URL is not a folder to create. A PostgreSQL one is a database (here one that is
    // not there: the run stops, its password never shown); any other is refused.
    for (state, env) in [
        (Some("postgresql://ann:s3cret@127.0.0.1:9/payrun"), None),
        (None, Some("postgres://ann:s3cret@127.0.0.1:9/payrun")),
    ] {
        let out = run(state, env);
        assert_eq!(out.status.code(), Some(5));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot connect"), "{err}");
        assert!(
            err.contains("ann:****@127.0.0.1:9") && !err.contains("s3cret"),
            "{err}"
        );
        assert!(!f.path("postgresql:").exists() && !f.path("postgres:").exists());
    }
    let out = run(Some("mysql://ann:s3cret@db.example/payrun"), None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a SQLite file or a PostgreSQL database") && !err.contains("s3cret"),
        "{err}"
    );
    assert!(!f.path("mysql:").exists());
}

/// The digest `plan` printed, planning into the state `state`.
fn digest_in(f: &Fixture, state: &str) -> String {
    let out = f.payrun(&["plan", "job.yaml", "--state", state]);
    assert_eq!(out.code, 0, "plan failed:\n{}{}", out.stdout, out.stderr);
    let d = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap_or_else(|| panic!("no digest:\n{}", out.stdout))
        .to_string();
    assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
    d
}

#[test]
fn the_digest_is_the_same_for_the_same_inputs_and_changes_with_a_payee_an_amount_or_a_batch() {
    let f = Fixture::standard();
    let first = digest_in(&f, "a.db");
    // Another state (another machine's, with its own key): the same digest.
    assert_eq!(digest_in(&f, "b.db"), first);
    assert_eq!(digest_in(&f, "a.db"), first, "a re-plan keeps it");
    // Nothing personal is printed with it.
    let out = f.payrun(&["plan", "job.yaml", "--state", "a.db"]);
    assert!(!out.stdout.contains("12345678"), "{}", out.stdout);

    let changed = |row: usize, from: &str, to: &str| {
        let mut r = rows();
        r[row] = r[row].replace(from, to);
        f.write_csv(&r);
        let d = digest_in(&f, &format!("{from}-{to}.db"));
        f.write_csv(&rows());
        d
    };
    let amount = changed(0, "1500.00", "1500.01");
    let account = changed(1, "87654321", "87654322");
    let name = changed(2, "Cat", "Kat");
    for d in [&amount, &account, &name] {
        assert_ne!(d, &first);
    }
    assert_eq!(digest_in(&f, "a.db"), first, "back as it was");

    // Batches of 1 instead of 2: every payout goes out in another batch.
    f.write("job.yaml", JOB.replace("size: 2", "size: 1").as_bytes());
    assert_ne!(digest_in(&f, "c.db"), first);
}
