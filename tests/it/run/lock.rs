//! The lock, signals and crashes, the dry run, and checks before sending.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_starts_with_the_number_of_its_items_to_send() {
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(100, ""), &people(5));
    let started = |setup: &Setup| {
        let out = command(setup, &s)
            .args(["--log-format", "json"])
            .output()
            .unwrap();
        assert_exit(&out, 0);
        steps_started(&out.stderr)
    };
    let step = |name: &str, n: u64| (name.to_string(), n);
    // A first plan: its counts.
    assert_eq!(started(&setup), [step("contact", 5), step("pay", 5)]);
    // Two rows more: counted in state, the others being done.
    std::fs::write(setup.path("people.csv"), people(7)).unwrap();
    assert_eq!(started(&setup), [step("contact", 2), step("pay", 2)]);
    assert_eq!(started(&setup), [step("contact", 0), step("pay", 0)]);
    assert_exactly_once(&ledger(&s).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_is_refused_while_one_holds_the_lock() {
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(100, ""), &people(3));
    // Plan, then stand in for a live run holding the lock: this test process holds the
    // OS lock and is recorded as the holder.
    assert_eq!(setup.run(&s, false).await.exit_code, 0);
    let lock = payrun::state::lock::try_take(&setup.path("state.db"), "soak", "2026-11")
        .unwrap()
        .expect("no run holds it");
    let conn = rusqlite::Connection::open(setup.path("state.db")).unwrap();
    conn.execute(
        "INSERT INTO locks (plan_id, run_id, pid, host, started_at) VALUES (1, 99, ?1, ?2, '2026-11-21T00:00:00Z')",
        rusqlite::params![std::process::id(), payrun::state::work::host_name()],
    )
    .unwrap();
    let api = |l: Value| crate::sandbox_support::api_requests(&l);
    let before = api(ledger(&s).await);
    let out = binary(&setup, &s, &[]).wait_with_output().unwrap();
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert_eq!(api(ledger(&s).await), before, "nothing was sent");
    // `plan` waits for the run too: it would change the items being sent.
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["plan", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    assert_exit(&plan, 3);
    // So does `unlock`: the holder is alive.
    let unlock = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["unlock", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    assert_exit(&unlock, 3);
    assert!(
        String::from_utf8_lossy(&unlock.stderr).contains("held by a live process: run 99"),
        "{}",
        String::from_utf8_lossy(&unlock.stderr)
    );
    // The holder dies (its OS lock goes with it): its record is taken over by the next run,
    // and its run is ended as interrupted.
    drop(lock);
    let out = binary(&setup, &s, &[]).wait_with_output().unwrap();
    assert_exit(&out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_resume_and_pay_every_row_exactly_once() {
    let faults = Faults {
        lost_response_rate: 0.05,
        latency: Some((Duration::from_millis(1), Duration::from_millis(3))),
        ..Faults::default()
    };
    let s = start(fast(faults)).await;
    let n = 500;
    let setup = Setup::new(&job_text(25, ""), &people(n));
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..10 {
        let mut child = binary(&setup, &s, &[]);
        tokio::time::sleep(Duration::from_millis(rng.u64(20..400))).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let mut code = None;
    for _ in 0..4 {
        let out = binary(&setup, &s, &[]).wait_with_output().unwrap();
        code = out.status.code();
        if code == Some(0) {
            break;
        }
    }
    assert_eq!(code, Some(0));
    assert_exactly_once(&ledger(&s).await, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_while_planning_exits_4_with_nothing_planned_or_sent() {
    use std::io::{BufRead, Read};
    let s = start(fast(Faults::default())).await;
    // Enough rows that writing the plan takes seconds in a debug build.
    let setup = Setup::new(&job_text(20, ""), &people(60_000));
    let mut child = binary(&setup, &s, &[]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("run started") {
        assert!(stderr.read_line(&mut log).unwrap() > 0, "{log}");
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(
        log.contains("stopped while planning: nothing was planned or sent"),
        "{log}"
    );
    let (items, code): (i64, i64) = setup.state_row(
        "SELECT (SELECT COUNT(*) FROM items), exit_code FROM runs ORDER BY id DESC LIMIT 1",
    );
    assert_eq!((items, code), (0, 4));
    let requests = &ledger(&s).await["requests"];
    assert_eq!(requests.as_object().map(|r| r.len()), Some(0), "{requests}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_exit_4_and_the_next_run_finishes() {
    let faults = Faults {
        latency: Some((Duration::from_millis(20), Duration::from_millis(30))),
        ..Faults::default()
    };
    let s = start(fast(faults)).await;
    let n = 120;
    let setup = Setup::new(
        &job_text(20, "").replace("concurrency: 8", "concurrency: 2"),
        &people(n),
    );
    let child = binary(&setup, &s, &[]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 4);
    let (code, in_flight): (i64, i64) = setup.state_row("SELECT exit_code, (SELECT COUNT(*) FROM items WHERE state = 'in_flight') FROM runs ORDER BY id DESC LIMIT 1");
    assert_eq!(
        (code, in_flight),
        (4, 0),
        "the run is recorded and requests in flight finished"
    );
    let done = binary(&setup, &s, &[]).wait_with_output().unwrap();
    assert_exit(&done, 0);
    assert_exactly_once(&ledger(&s).await, n);
}

#[test]
fn dry_run_lists_what_would_be_sent_and_changes_nothing() {
    let setup = Setup::new(&job_text(2, ""), &people(3));
    // No credentials and no provider: a dry run needs neither.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["run", "job.yaml", "--dry-run"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("POST /v2/contacts {").count(), 3, "{stdout}");
    assert!(
        stdout
            .contains("pay batch soak-2026-11-pay-b0001: POST /v2/payouts, 2 row(s), total 201.01"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("pay batch soak-2026-11-pay-b0002: POST /v2/payouts, 1 row(s), total 102.02"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"account_number\":\"*****000\""),
        "account numbers are masked: {stdout}"
    );
    assert!(!stdout.contains("10000000"), "{stdout}");
    assert!(
        !setup.path(".payrun").exists() && !setup.path("state.db").exists(),
        "no state is written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_method_parameters_are_caught_before_sending() {
    // th_bank_thb is unknown to payrun's own catalogue: only the provider's required-fields
    // endpoint can tell that bank_code is mandatory.
    let job = job_text(10, "")
        .replace("currency: AUD", "currency: THB")
        .replace(
            "payout_method_name: au_bank_aud",
            "payout_method_name: th_bank_thb",
        )
        .replace(
            r#"payout_method_params: { bsb: "062000", "#,
            "payout_method_params: { ",
        );
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job, &people(2));
    let report = setup.run(&s, false).await;
    assert_eq!(report.exit_code, 1);
    let (code, msg): (String, String) =
        setup.state_row("SELECT error_code, error_message FROM items WHERE step = 'pay' LIMIT 1");
    assert_eq!(code, "MISSING_PARAMS");
    assert!(
        msg.contains("th_bank_thb needs parameter(s) bank_code"),
        "{msg}"
    );
    assert!(
        ledger(&s).await["requests"]
            .get("POST /api/v2/payouts")
            .is_none(),
        "no payout or refund was sent"
    );
}
