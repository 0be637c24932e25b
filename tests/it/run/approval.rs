//! Payouts that go out only as they were approved: digests, four eyes, control totals,
//! duplicate payrolls. The real binary against the sandbox.

use super::*;

/// The contact + payout job of [`job_text`] over `n` people, its scope the `period`
/// variable, with `extra` (an `approval:` or `guards:` section) at its end.
fn setup(n: usize, extra: &str) -> Setup {
    let job = job_text(10, "").replace(
        "scope: \"2026-11\"",
        "scope: \"{{ vars.period }}\"\nvars: { period: \"2026-11\" }",
    );
    Setup::new(&format!("{job}{extra}"), &people(n))
}

const TWO_OF_THREE: &str =
    "approval: { required: 2, approvers: [alice, bob, carol], expires: 72h }\n";

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `payrun ARGS` in the setup's folder against the sandbox, the state in state.db.
fn payrun(setup: &Setup, s: &Sandbox, args: &[&str]) -> Ran {
    payrun_at(setup, s, "state.db", args)
}

/// [`payrun`] with the state at `state` (a file, or a PostgreSQL URL).
fn payrun_at(setup: &Setup, s: &Sandbox, state: &str, args: &[&str]) -> Ran {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(args)
        .current_dir(setup.dir.path())
        .env_remove("PAYRUN_STATE")
        .env_remove("PAYRUN_STATE_KEY_FILE")
        .env("PAYRUN_STATE_KEY", super::postgres::KEY)
        .env("USER", "cron");
    for (k, v) in setup.env(s) {
        cmd.env(k, v);
    }
    if args[0] != "validate" {
        cmd.args(["--state", state]);
    }
    let out = cmd.output().unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The digest `plan` printed.
fn digest(plan: &Ran) -> String {
    plan.stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap_or_else(|| panic!("no digest in:\n{}", plan.stdout))
        .to_string()
}

async fn payouts(s: &Sandbox) -> usize {
    transactions(&ledger(s).await).values().map(Vec::len).sum()
}

async fn contacts(s: &Sandbox) -> usize {
    ledger(s).await["contacts"].as_array().map_or(0, Vec::len)
}

fn approve(setup: &Setup, s: &Sandbox, digest: &str, name: &str) -> Ran {
    payrun(
        setup,
        s,
        &["approve", "job.yaml", "--digest", digest, "--as", name],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_are_needed_before_a_payout_goes_and_then_exactly_the_approved_plan_is_paid()
{
    let s = start(fast(Faults::default())).await;
    let setup = setup(6, TWO_OF_THREE);
    let plan = payrun(&setup, &s, &["plan", "job.yaml", "--as", "carol"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let d = digest(&plan);
    assert!(plan.stdout.contains("approvals: 0 of 2"), "{}", plan.stdout);

    // No approval: the contacts go ahead, no payout does.
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("awaiting approval; no payout or refund was sent"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("digest {d}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("needs 2 more from: alice, bob"),
        "{}",
        run.stdout
    );
    assert_eq!(payouts(&s).await, 0);
    assert_eq!(contacts(&s).await, 6);

    // An approver not listed, and the plan's preparer, are refused; nothing is recorded.
    let dave = approve(&setup, &s, &d, "dave");
    assert_eq!(dave.code, 2);
    assert!(
        dave.stderr.contains("'dave' is not an approver"),
        "{}",
        dave.stderr
    );
    let carol = approve(&setup, &s, &d, "carol");
    assert_eq!(carol.code, 2);
    assert!(
        carol.stderr.contains("carol made this plan"),
        "{}",
        carol.stderr
    );
    // A digest that is not the current plan's is refused.
    let other = approve(&setup, &s, &format!("sha256:{}", "0".repeat(64)), "alice");
    assert_eq!(other.code, 2);
    assert!(
        other.stderr.contains(&format!("which is {d}")),
        "{}",
        other.stderr
    );

    // One approval is not enough.
    assert_eq!(approve(&setup, &s, &d, "alice").code, 0);
    let twice = approve(&setup, &s, &d, "alice");
    assert_eq!(twice.code, 2);
    assert!(twice.stderr.contains("already"), "{}", twice.stderr);
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("approvals: 1 of 2 (alice at "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("needs 1 more from: bob"),
        "{}",
        run.stdout
    );
    assert_eq!(payouts(&s).await, 0);

    // Two: the approved plan is paid, each row once.
    let bob = approve(&setup, &s, &d, "bob");
    assert_eq!(bob.code, 0, "{}", bob.stderr);
    assert!(bob.stdout.contains("approvals: 2 of 2"), "{}", bob.stdout);
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_exactly_once(&ledger(&s).await, 6);
    let status = payrun(&setup, &s, &["status", "job.yaml"]);
    assert!(
        status.stdout.contains("approval: approved"),
        "{}",
        status.stdout
    );
    // The run's summary.json says who approved what.
    let summary = latest_summary(&setup);
    assert_eq!(summary["approval"]["digest"], d.as_str());
    assert_eq!(summary["approval"]["approved"], true);
    assert_eq!(summary["approval"]["planned_by"], "carol");
    let who: Vec<&str> = summary["approval"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approver"].as_str().unwrap())
        .collect();
    assert_eq!(who, ["alice", "bob"]);
    let html = latest(&setup, "report.html");
    assert!(html.contains("Approval: 2 of 2 — approved"), "{html}");
    assert!(html.contains(&d), "the digest is in the report");
    assert!(html.contains("<td>alice</td>"), "{html}");
}

/// The summary.json of the latest run.
fn latest_summary(setup: &Setup) -> Value {
    let text = latest(setup, "summary.json");
    crate::support::assert_summary_schema(&text);
    serde_json::from_str(&text).unwrap()
}

/// The latest run's report file `name`.
fn latest(setup: &Setup, name: &str) -> String {
    let mut found = Vec::new();
    let mut dirs = vec![setup.dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.ends_with(format!("latest/{name}")) {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    std::fs::read_to_string(&found[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_approval_needs_approving_again_and_says_what_changed() {
    let s = start(fast(Faults::default())).await;
    let setup = setup(5, TWO_OF_THREE);
    let d = digest(&payrun(&setup, &s, &["plan", "job.yaml", "--as", "carol"]));
    assert_eq!(approve(&setup, &s, &d, "alice").code, 0);
    assert_eq!(approve(&setup, &s, &d, "bob").code, 0);

    // One amount raised, one row added, one removed.
    let csv = people(6)
        .replace(
            "P0001,Ann1,Lee,ann1@example.com,101.01",
            "P0001,Ann1,Lee,ann1@example.com,901.01",
        )
        .replace("P0002,Ann2,Lee,ann2@example.com,102.02,10000002\n", "");
    std::fs::write(setup.path("people.csv"), csv).unwrap();
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "since {d} (approved last): 1 row added, 1 row removed, 1 row changed; totals AUD 510.10 (5) → AUD 1313.13 (5)"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(payouts(&s).await, 0, "nothing of the changed plan is sent");
    // The old digest cannot be approved now; the new one can.
    let old = approve(&setup, &s, &d, "carol");
    assert_eq!(old.code, 2);
    assert!(
        old.stderr.contains("is not the digest of the current plan"),
        "{}",
        old.stderr
    );
    let new = digest(&payrun(&setup, &s, &["plan", "job.yaml", "--as", "carol"]));
    assert_ne!(new, d);
    assert_eq!(approve(&setup, &s, &new, "alice").code, 0);
    assert_eq!(approve(&setup, &s, &new, "bob").code, 0);
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    // The removed row's payout is not paid: its row is no longer in the file.
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let paid = transactions(&ledger(&s).await);
    assert_eq!(paid.len(), 5);
    assert_eq!(paid["ann1@example.com"], ["901.01"]);
    assert!(!paid.contains_key("ann2@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_steps_wait_too_when_the_job_says_so() {
    let s = start(fast(Faults::default())).await;
    let setup = setup(
        3,
        "approval: { required: 1, approvers: [alice], other_steps: wait }\n",
    );
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert_eq!(contacts(&s).await, 0);
    assert_eq!(payouts(&s).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_totals_that_differ_from_the_file_send_nothing_and_show_both_figures() {
    let s = start(fast(Faults::default())).await;
    let setup = setup(4, "");
    // 100.00 + 101.01 + 102.02 + 103.03
    let plan = payrun(
        &setup,
        &s,
        &[
            "plan",
            "job.yaml",
            "--expect-total",
            "AUD=406.00",
            "--expect-rows",
            "4",
        ],
    );
    assert_eq!(plan.code, 2, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stderr.contains(
            "--expect-total AUD=406.00, but the file's payouts come to AUD 406.06 (4 payouts)"
        ),
        "{}",
        plan.stderr
    );
    if setup.path("state.db").exists() {
        let (items,): (i64,) = setup.state_row("SELECT COUNT(*) FROM items");
        assert_eq!(items, 0, "nothing was planned");
    }
    let run = payrun(&setup, &s, &["run", "job.yaml", "--expect-rows", "5"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("--expect-rows 5, but the file has 4 rows"),
        "{}",
        run.stderr
    );
    // A currency of the file without its control total is a mismatch too.
    let run = payrun(
        &setup,
        &s,
        &["run", "job.yaml", "--expect-total", "USD=406.06"],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("the file pays AUD 406.06 (4 payouts) but no --expect-total AUD=… was given"),
        "{}",
        run.stderr
    );
    assert_eq!(contacts(&s).await, 0);
    assert_eq!(payouts(&s).await, 0);
    let run = payrun(
        &setup,
        &s,
        &[
            "run",
            "job.yaml",
            "--expect-total",
            "AUD=406.06",
            "--expect-rows",
            "4",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(payouts(&s).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_payroll_under_another_period_is_refused_unless_allowed() {
    let s = start(fast(Faults::default())).await;
    let setup = setup(4, "");
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let (contacts_before, paid_before) = (contacts(&s).await, payouts(&s).await);

    // A typo in the period: the same payroll again. Its plan says so; its run refuses it.
    let plan = payrun(&setup, &s, &["plan", "job.yaml", "--var", "period=2026-21"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stderr.contains("warning: 4 of the 4 payouts of scope '2026-21' pay the same accounts the same amounts as scope '2026-11' did in run 1")
            && plan.stderr.contains("unless --allow-duplicates"),
        "{}",
        plan.stderr
    );
    let again = payrun(&setup, &s, &["run", "job.yaml", "--var", "period=2026-21"]);
    assert_eq!(again.code, 2, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stderr.contains(
            "refused as a duplicate payroll: 4 of the 4 payouts of scope '2026-21' pay the same accounts the same amounts as scope '2026-11' did in run 1"
        ),
        "{}",
        again.stderr
    );
    assert_eq!(payouts(&s).await, paid_before, "nothing was paid");
    assert_eq!(contacts(&s).await, contacts_before);

    // Another month's payroll (other amounts) is no duplicate.
    let next = people(4).replace(",10", ",2").replace(".0", ".5");
    std::fs::write(setup.path("people.csv"), next).unwrap();
    let dec = payrun(&setup, &s, &["run", "job.yaml", "--var", "period=2026-12"]);
    assert_eq!(dec.code, 0, "{}{}", dec.stdout, dec.stderr);
    assert_eq!(payouts(&s).await, paid_before + 4);

    // Meant: allowed with the flag, and paid once more.
    let meant = payrun(
        &setup,
        &s,
        &[
            "run",
            "job.yaml",
            "--var",
            "period=2026-12-bonus",
            "--allow-duplicates",
        ],
    );
    assert_eq!(meant.code, 0, "{}{}", meant.stdout, meant.stderr);
    assert_eq!(payouts(&s).await, paid_before + 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_paying_one_account_are_flagged_at_validate() {
    let s = start(fast(Faults::default())).await;
    // P0003 pays P0001's account.
    let csv = people(4).replace(",103.03,10000003", ",103.03,10000001");
    let setup = setup(0, "");
    std::fs::write(setup.path("people.csv"), &csv).unwrap();
    let v = payrun(&setup, &s, &["validate", "job.yaml"]);
    assert_eq!(v.code, 2, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stderr
            .contains("people.csv:5: row 'P0003' pays the same account as row 'P0001' (line 3)"),
        "{}",
        v.stderr
    );
    assert!(!v.stderr.contains("10000001"), "no account number is shown");
    let allowed = setup_with_csv("guards: { shared_accounts: allow }\n", &csv);
    let v = payrun(&allowed, &s, &["validate", "job.yaml"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
}

fn setup_with_csv(extra: &str, csv: &str) -> Setup {
    let setup = setup(0, extra);
    std::fs::write(setup.path("people.csv"), csv).unwrap();
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_and_the_duplicate_guard_hold_with_the_state_in_postgresql() {
    let Some(db) = super::postgres::fresh_database() else {
        return;
    };
    let s = start(fast(Faults::default())).await;
    let setup = setup(4, TWO_OF_THREE);
    let pg = |args: &[&str]| payrun_at(&setup, &s, &db, args);
    let plan = pg(&["plan", "job.yaml", "--as", "carol"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let d = digest(&plan);
    let run = pg(&["run", "job.yaml"]);
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    assert_eq!(payouts(&s).await, 0);
    for name in ["alice", "bob"] {
        let a = pg(&["approve", "job.yaml", "--digest", &d, "--as", name]);
        assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    }
    assert_eq!(
        pg(&["approve", "job.yaml", "--digest", &d, "--as", "bob"]).code,
        2
    );
    let run = pg(&["run", "job.yaml"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_exactly_once(&ledger(&s).await, 4);
    // The same payroll under another period, approved as such, is still refused.
    let next = pg(&[
        "plan",
        "job.yaml",
        "--as",
        "carol",
        "--var",
        "period=2026-12",
    ]);
    let d2 = digest(&next);
    assert_ne!(d2, d, "another scope, another digest");
    for name in ["alice", "bob"] {
        let a = pg(&[
            "approve",
            "job.yaml",
            "--var",
            "period=2026-12",
            "--digest",
            &d2,
            "--as",
            name,
        ]);
        assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    }
    let again = pg(&["run", "job.yaml", "--var", "period=2026-12"]);
    assert_eq!(again.code, 2, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stderr.contains("as scope '2026-11' did in run"),
        "{}",
        again.stderr
    );
    assert_eq!(payouts(&s).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_made_without_as_is_the_os_user_s_who_cannot_approve_it() {
    let s = start(fast(Faults::default())).await;
    let setup = setup(2, "approval: { required: 1, approvers: [cron, alice] }\n");
    // `payrun` runs every command here as the OS user "cron" (USER=cron).
    let d = digest(&payrun(&setup, &s, &["plan", "job.yaml"]));
    let own = approve(&setup, &s, &d, "cron");
    assert_eq!(own.code, 2, "{}{}", own.stdout, own.stderr);
    assert!(own.stderr.contains("cron made this plan"), "{}", own.stderr);
    let status = payrun(&setup, &s, &["status", "job.yaml"]);
    assert!(
        status.stdout.contains("(planned by cron at "),
        "{}",
        status.stdout
    );
    assert_eq!(approve(&setup, &s, &d, "alice").code, 0);
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(payouts(&s).await, 2);
}

/// Refunds are money out too: a job with `approval:` holds them with the payouts until the
/// plan is approved, and its digest covers them, so a refund changed after planning needs
/// approving again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_wait_for_the_approval_and_a_changed_refund_changes_the_digest() {
    let s = start(Config {
        payin_delay: Some(Duration::from_millis(100)),
        ..fast(Faults::default())
    })
    .await;
    let refund = "  - id: refund\n    type: refund\n    fields:\n      amount: \"{{ row.refund }}\"\n      description: Credit note {{ row.id }}\n";
    let job = super::payins::payin_job("timeout: 20s", refund)
        + "approval: { required: 1, approvers: [alice] }\n";
    let csv_with = |second: &str| -> String {
        super::payins::payers(3)
            .lines()
            .enumerate()
            .map(|(i, l)| match i {
                0 => format!("{l},refund\n"),
                2 => format!("{l},{second}\n"),
                _ => format!("{l},10.00\n"),
            })
            .collect()
    };
    let setup = Setup::new(&job, &csv_with("10.00"));
    // (payer, amount refunded), by payer.
    let refunds = |l: &Value| -> Vec<(String, rust_decimal::Decimal)> {
        let mut r: Vec<_> = l["payin_requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["email"].as_str().unwrap().to_string(),
                    p["refunded"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        r.sort();
        r
    };
    let plan = payrun(&setup, &s, &["plan", "job.yaml"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let first = digest(&plan);
    // Not approved: the payers are asked to pay, and nobody is refunded.
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 6, "{}{}", run.stdout, run.stderr);
    let l = ledger(&s).await;
    assert_eq!(l["payin_requests"].as_array().unwrap().len(), 3, "{l}");
    assert!(
        l["requests"]["POST /api/v2/payins/refund"].is_null(),
        "no refund is asked for: {}",
        l["requests"]
    );
    // One refund changed: another digest, and the first one's approval would not count.
    std::fs::write(setup.path("people.csv"), csv_with("12.50")).unwrap();
    let second = digest(&payrun(&setup, &s, &["plan", "job.yaml"]));
    assert_ne!(
        second, first,
        "a refund's amount is part of what is approved"
    );
    let refused = approve(&setup, &s, &first, "alice");
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert_eq!(approve(&setup, &s, &second, "alice").code, 0);
    // Approved: each payer is refunded once, as the approved plan says.
    let run = payrun(&setup, &s, &["run", "job.yaml"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let cents = |c: i64| rust_decimal::Decimal::new(c, 2);
    assert_eq!(
        refunds(&ledger(&s).await),
        [
            ("ann0@example.com".to_string(), cents(1000)),
            ("ann1@example.com".to_string(), cents(1250)),
            ("ann2@example.com".to_string(), cents(1000)),
        ]
    );
}
