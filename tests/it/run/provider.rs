//! What the provider answers: the webhook, reconcile, rate limits, refused credentials, an unreachable or malformed base URL.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_the_summary_of_runs_with_failures_and_never_changes_the_exit_code() {
    let s = start(fast(Faults::default())).await;
    let job = format!(
        "{}notify: {{ webhook_url: \"${{HOOK_URL}}\", when: failures }}\n",
        job_text(1, "")
    );
    // A clean run: nothing is posted.
    let (url, seen) = hook(200).await;
    let clean = Setup::new(&job, &people(2));
    assert_eq!(run_with_hook(&clean, &s, &url).status.code(), Some(0));
    assert!(seen.lock().unwrap().is_empty());
    // A run with a failing row (over the method's limit): its summary is posted. (Another
    // provider: at this one, the same job and scope's rows are paid already.)
    let s = start(fast(Faults::default())).await;
    let failing = Setup::new(&job, &people(2).replace("101.01", "150000.00"));
    let out = run_with_hook(&failing, &s, &url);
    assert_exit(&out, 1);
    // Every line the run printed (logs of the failed row included): no secret, no full
    // account number, no webhook URL.
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("WARN") && printed.contains("P0001"),
        "the failed row is logged: {printed}"
    );
    for secret in ["sandbox-secret", "10000000", "10000001", url.as_str()] {
        assert!(!printed.contains(secret), "{secret} was printed: {printed}");
    }
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    let summary: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(
        (
            summary["exit_code"].as_i64(),
            summary["counts"]["pay"]["failed"].as_u64()
        ),
        (Some(1), Some(1))
    );
    // A webhook that keeps failing is retried, then given up: the exit code stays the run's.
    let (bad, tries) = hook(500).await;
    let s = start(fast(Faults::default())).await;
    let failing = Setup::new(&job, &people(2).replace("101.01", "150000.00"));
    let out = run_with_hook(&failing, &s, &bad);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(tries.lock().unwrap().len(), 3, "three attempts");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notify: the webhook answered HTTP 500"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_records_what_the_provider_completed_since_the_run() {
    // Payouts that take an hour: the run ends with them processing.
    let s = start(Config {
        payout_delay: Duration::from_secs(3600),
        ..fast(Faults::default())
    })
    .await;
    let job = job_text(10, "").replace(
        "wait: { until: completed, timeout: 20s, poll: 100ms }",
        "wait: { until: completed, timeout: 200ms, poll: 50ms }",
    );
    let setup = Setup::new(&job, &people(3));
    assert_eq!(setup.run(&s, false).await.exit_code, 0);
    let conn = rusqlite::Connection::open(setup.path("state.db")).unwrap();
    let pending: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM items WHERE step = 'pay' AND provider_status = 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 3);
    // The provider completes the batch (the sandbox's simulation stands in for time).
    let uuid: String = conn
        .query_row("SELECT provider_ref FROM batches", [], |r| r.get(0))
        .unwrap();
    let c = crate::sandbox_support::client();
    crate::sandbox_support::post(
        &c,
        &s,
        "/v2/payouts/simulate",
        &serde_json::json!({"uuid": uuid, "status": "completed"}),
    )
    .await;
    // Reconcile, through the real binary: it lists the changes and rewrites the reports.
    let reconcile = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
        cmd.args(["reconcile", "job.yaml", "--state", "state.db"])
            .args(extra)
            .current_dir(setup.dir.path());
        for (k, v) in setup.env(&s) {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let unknown = reconcile(&["--run", "99"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no run 99"));
    // Only what run 1 sent: here, everything.
    let out = reconcile(&["--run", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 changes")
            && stdout.contains("pay row 'P0000': transaction pending → completed"),
        "{stdout}"
    );
    let completed: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM items WHERE step = 'pay' AND provider_status = 'completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(completed, 3);
    let csv =
        std::fs::read_to_string(setup.path("reports/soak/2026-11/latest/results.csv")).unwrap();
    assert_eq!(csv.matches(",completed,").count(), 3, "{csv}");
    // Nothing changed since: a second reconcile finds nothing.
    let again = reconcile(&[]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 changes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_rate_limited_requeues_rather_than_fails() {
    // The provider allows 2 requests a second; the job asks for far more: 429s all along.
    let s = start(fast(Faults {
        rate_limit: Some(2),
        ..Faults::default()
    }))
    .await;
    let setup = Setup::new(&job_text(10, ""), &people(6));
    let child = binary(&setup, &s, &[]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 4);
    let (failed, in_flight): (i64, i64) =
        setup.state_row("SELECT SUM(state = 'failed'), SUM(state = 'in_flight') FROM items");
    assert_eq!(
        (failed, in_flight),
        (0, 0),
        "rate-limited rows wait for the next run; none failed, none in doubt"
    );
    let done = binary(&setup, &s, &[]).wait_with_output().unwrap();
    assert_exit(&done, 0);
    assert_exactly_once(&ledger(&s).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_stops_the_run_with_rows_still_pending() {
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(30));
    let (code, stderr) = run_with(&setup, &s, "HC_TEST_SECRET_KEY", "not-the-secret");
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("refused payrun's credentials (HTTP 401"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-secret"), "the secret was printed");
    let conn = rusqlite::Connection::open(setup.path("state.db")).unwrap();
    let not_pending: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM items WHERE step = 'contact' AND state != 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(not_pending, 0, "rows failed or in doubt instead of waiting");
    // With the right secret, the next run does everything.
    assert_eq!(setup.run(&s, false).await.exit_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_stops_the_run_with_rows_still_pending() {
    let s = start(fast(Faults::default())).await;
    let n = 200;
    let setup = Setup::new(&job_text(10, ""), &people(n));
    // A port nothing listens on: every connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, stderr) = run_with(
        &setup,
        &s,
        "HC_TEST_BASE_URL",
        &format!("http://{closed}/api"),
    );
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("cannot reach the provider (cannot connect")
            && stderr.contains("rows not done stay pending"),
        "{stderr}"
    );
    let (not_pending, requests): (i64, i64) = setup.state_row(
        "SELECT (SELECT COUNT(*) FROM items WHERE state != 'pending'), requests FROM runs",
    );
    assert_eq!(not_pending, 0, "rows failed instead of waiting");
    // It stopped when the first row ran out of attempts (the rows of the two chunks under
    // way had a few each), not after all 2,400 attempts of the 200 rows.
    assert!(requests < 600, "{requests} requests");
    // Once the provider answers, the next run does everything, each payout once.
    assert_eq!(setup.run(&s, false).await.exit_code, 0);
    assert_exactly_once(&ledger(&s).await, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_that_is_not_a_url_is_refused_before_anything_is_sent() {
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(3));
    let (code, stderr) = run_with(&setup, &s, "HC_TEST_BASE_URL", "sandbox.example.com/api");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("provider.base_url 'sandbox.example.com/api' is not an http(s) URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("sandbox-secret"), "the secret was printed");
    // Exit 2: nothing sent, and nothing written either.
    assert!(
        !setup.path("state.db").exists(),
        "a state database was created for a job that cannot run"
    );
    assert_eq!(
        ledger(&s).await["contacts"]
            .as_array()
            .expect("the ledger lists contacts")
            .len(),
        0,
        "something reached the provider"
    );
}

/// A request the provider keeps refusing with 429 past its retries fails its row saying so,
/// in every step alike — payout batches too ("gave up after N attempts: …", where they once
/// gave only the provider's words).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_retry_says_it_gave_up_in_every_step() {
    let s = start(fast(Faults {
        rate_limit: Some(2),
        ..Faults::default()
    }))
    .await;
    // Payouts only, a row a batch, one attempt each: the provider's limit is met at once.
    let job = job_text(1, "").replace("retry: { attempts: 12", "retry: { attempts: 1");
    let contact = &job[job.find("  - id: contact").unwrap()..job.find("  - id: pay").unwrap()];
    let setup = Setup::new(&job.replace(contact, ""), &people(6));
    let report = setup.run(&s, false).await;
    // (No contacts were created: the batches under the limit are refused for that.)
    let (limited, gave_up): (i64, i64) = setup.state_row(
        "SELECT SUM(error_code = 'RATE_LIMITED'), SUM(error_code = 'RATE_LIMITED' AND error_message LIKE 'gave up after 1 attempts: %') FROM items WHERE step = 'pay'",
    );
    assert!(limited > 0, "no batch hit the limit: {}", report.counts);
    assert_eq!(gave_up, limited, "{}", report.counts);
}

/// Real names are paid: apostrophes (' and ’), hyphens, full stops and letters of any
/// script with their marks pass `validate`, and the sandbox pays them (it accepts what
/// payrun accepts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_as_people_write_them_are_paid() {
    let s = start(fast(Faults::default())).await;
    let names = [
        ("Siobhán", "O'Brien"),
        ("Jean-Luc", "D’Arcy"),
        ("Zoë", "Nguyễn"),
        ("Ana", "St. John"),
    ];
    let mut csv = String::from("id,first,last,email,amount,account\n");
    for (i, (first, last)) in names.iter().enumerate() {
        csv.push_str(&format!(
            "P{i:04},{first},{last},ann{i}@example.com,{}.{:02},{:08}\n",
            100 + i,
            i % 100,
            10_000_000 + i
        ));
    }
    let setup = Setup::new(&job_text(10, ""), &csv);
    let report = setup.run(&s, false).await;
    assert_eq!(report.exit_code, 0, "{}", report.counts);
    let paid: Vec<String> = ledger(&s).await["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["payout_transactions"].as_array().unwrap().clone())
        .map(|t| t["last_name"].as_str().unwrap_or_default().to_string())
        .collect();
    for (_, last) in names {
        assert!(paid.iter().any(|p| p == last), "{last} not paid: {paid:?}");
    }
}
