//! payrun's first promise against a provider that is late, lags, runs short of funds, or
//! outlives the state: each test ends by reading the sandbox's ledger.

use crate::run::{
    Setup, assert_exactly_once, assert_exit, binary, command, fast, job_text, people,
};
use crate::sandbox_support::{client, ledger, post, start};
use payrun::sandbox::{Config, Faults, Sandbox};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

/// Requests the ledger counted for an endpoint, by outcome (`200`, `dropped`, ...), summed.
fn requests(l: &Value, endpoint: &str) -> u64 {
    l["requests"][endpoint]
        .as_object()
        .map_or(0, |by| by.values().filter_map(Value::as_u64).sum())
}

/// The JSON log lines of a run's standard error, as (level, message).
fn log_lines(stderr: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["level"].as_str().unwrap_or_default().to_string(),
                v["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_applied_after_the_timeout_and_listed_late_are_paid_once() {
    // Every create, submission and payout is applied 1.5 s after it arrives — after the
    // client's 1 s timeout — and a new payout shows in the listing 2 s after that.
    let s = start(fast(Faults {
        late_apply_rate: 1.0,
        late_apply_delay: Duration::from_millis(1500),
        listing_lag: Duration::from_secs(2),
        ..Faults::default()
    }))
    .await;
    let n = 300;
    // Settled 2.5 s after sending: the first look at the listing (3.5 s after the send)
    // misses the lagging batch; only the second, 1.5 s later, finds it.
    let job = job_text(10, "")
        .replace("timeout: 2s", "timeout: 1s")
        .replace("concurrency: 8", "concurrency: 64")
        .replace("settle: 300ms", "settle: 2500ms")
        .replace("settle_recheck: 100ms", "settle_recheck: 1500ms");
    let setup = Setup::new(&job, &people(n));
    let started = Instant::now();
    let out = command(&setup, &s)
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    let wall = started.elapsed();
    assert_exit(&out, 0);
    let l = ledger(&s).await;
    assert_exactly_once(&l, n);
    assert_eq!(l["contacts"].as_array().unwrap().len(), n);
    // Nothing was sent twice: every request in doubt was found, none sent again.
    assert_eq!(requests(&l, "POST /api/v2/contacts"), n as u64);
    assert_eq!(requests(&l, "POST /api/v2/payouts"), (n / 10) as u64);
    // And the run said it waited, with the time it would look.
    let waits: Vec<String> = log_lines(&out.stderr)
        .into_iter()
        .filter(|(_, m)| {
            m.contains("in doubt: the provider may still apply them; looking them up at")
        })
        .map(|(_, m)| m)
        .collect();
    assert!(
        waits.iter().any(|m| m.contains("request(s)"))
            && waits.iter().any(|m| m.contains("payout batch(es)")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (settle_ms, resolved): (i64, i64) =
        setup.state_row("SELECT settle_ms, in_doubt_resolved FROM runs");
    assert_eq!(resolved, (n + n / 10) as i64);
    eprintln!(
        "late apply, {n} rows: {:.1} s in all, {:.1} s of it waiting for requests in doubt to settle",
        wall.as_secs_f64(),
        settle_ms as f64 / 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_short_of_funds_waits_and_each_row_is_paid_once_after_a_top_up() {
    let s = start(Config {
        balances: [("AUD".to_string(), "50.00".parse().unwrap())].into(),
        ..fast(Faults::default())
    })
    .await;
    let n = 20;
    // The wait gives up on the batch after a second: the rows stay waiting for funds.
    let job = job_text(100, "").replace("timeout: 20s", "timeout: 1s");
    let setup = Setup::new(&job, &people(n));
    let report = setup.run(&s, false).await;
    assert_eq!(report.exit_code, 1, "{}", report.counts);
    let counts: Value = serde_json::from_str(&report.counts.json()).unwrap();
    assert_eq!(counts["pay"]["awaiting_funds"], n, "{counts}");
    let (code, message, uuid): (String, String, String) = setup.state_row(
        "SELECT i.error_code, i.error_message, b.provider_ref FROM items i JOIN batches b ON b.id = i.batch_id WHERE i.step = 'pay' LIMIT 1",
    );
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "HC_PAYOUT1",
            "Insufficient available funds. Top up your balance."
        )
    );
    // --retry-failed, twice: the batch exists and may pay, so its rows go in no other.
    for _ in 0..2 {
        let again = setup.run(&s, true).await;
        assert_eq!(again.exit_code, 1);
    }
    assert_eq!(requests(&ledger(&s).await, "POST /api/v2/payouts"), 1);
    // Funds arrive; reconcile follows the batch to its end.
    top_up(&s, "5000.00").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let out = reconcile_cmd(&setup, &s);
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("pay row 'P0000': transaction awaiting funds → completed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let l = ledger(&s).await;
    assert_exactly_once(&l, n);
    assert_eq!(
        l["payouts"].as_array().unwrap().len(),
        1,
        "one batch for every row"
    );
    assert_eq!(l["payouts"][0]["uuid"], uuid.as_str());
    assert_eq!(l["payouts"][0]["status"], "completed");
    let (paid,): (i64,) = setup.state_row(
        "SELECT COUNT(*) FROM items WHERE step = 'pay' AND state = 'succeeded' AND provider_status = 'completed'",
    );
    assert_eq!(paid, n as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfunded_batch_that_expires_ends_the_wait_and_only_then_goes_out_again() {
    let s = start(Config {
        balances: [("AUD".to_string(), "50.00".parse().unwrap())].into(),
        unfunded_expiry: Some(Duration::from_millis(500)),
        ..fast(Faults::default())
    })
    .await;
    let n = 3;
    let setup = Setup::new(&job_text(100, ""), &people(n));
    // The wait (20 s) ends when the batch expires, not at its timeout.
    let started = Instant::now();
    let report = setup.run(&s, false).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.exit_code, 1);
    let (failed, code): (i64, String) = setup.state_row(
        "SELECT COUNT(*), MAX(error_code) FROM items WHERE step = 'pay' AND state = 'failed'",
    );
    assert_eq!((failed, code.as_str()), (n as i64, "PAYOUT_EXPIRED"));
    // The expired batch can no longer pay: its rows go out in a new one, once funded.
    top_up(&s, "5000.00").await;
    let again = setup.run(&s, true).await;
    assert_eq!(again.exit_code, 0, "{}", again.counts);
    let l = ledger(&s).await;
    let batches = l["payouts"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0]["status"], "expired");
    assert_eq!(batches[1]["status"], "completed");
    let paid: usize = batches[1]["payout_transactions"].as_array().unwrap().len();
    assert_eq!(paid, n);
}

/// Funds arrive at the sandbox: its waiting batches are paid, oldest first.
async fn top_up(s: &Sandbox, amount: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/__sandbox/top_up", s.addr))
        .json(&json!({"currency": "AUD", "amount": amount}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `payrun ARGS…` in the setup's folder, with the job's environment for `s`.
fn payrun(setup: &Setup, s: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(args).current_dir(setup.dir.path());
    for (k, v) in setup.env(s) {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn reconcile_cmd(setup: &Setup, s: &Sandbox) -> std::process::Output {
    payrun(setup, s, &["reconcile", "job.yaml", "--state", "state.db"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_period_run_again_with_a_fresh_state_file_pays_nothing_twice() {
    let s = start(fast(Faults::default())).await;
    let n = 25;
    let setup = Setup::new(&job_text(10, ""), &people(n));
    assert_eq!(setup.run(&s, false).await.exit_code, 0);
    let before = requests(&ledger(&s).await, "POST /api/v2/payouts");
    assert_eq!(before, 3);
    // The same period, with a new state file (a container's lost disk, a typo in --state).
    let out = payrun(&setup, &s, &["run", "job.yaml", "--state", "fresh.db"]);
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("adopted, not sent again"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = ledger(&s).await;
    assert_eq!(
        requests(&l, "POST /api/v2/payouts"),
        before,
        "no batch was sent"
    );
    assert_exactly_once(&l, n);
    // Every row is recorded as paid, with its transaction.
    let fresh = rusqlite::Connection::open(setup.path("fresh.db")).unwrap();
    let (paid, with_tx): (i64, i64) = fresh
        .query_row(
            "SELECT SUM(state = 'succeeded'), COUNT(provider_ref) FROM items WHERE step = 'pay'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((paid, with_tx), (n as i64, n as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_batch_under_one_of_the_jobs_external_ids_is_a_duplicate_said_loudly() {
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(3));
    assert_eq!(setup.run(&s, false).await.exit_code, 0);
    // Someone (another tool, a restored copy of payrun) sends the first row again, under
    // the job's batch and row external ids, for tomorrow.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let (_, planted) = post(
        &client(),
        &s,
        "/v2/payouts",
        &json!({"payout_transaction_details": [{"first_name": "Ann0", "last_name": "Lee",
                 "email": "ann0@example.com", "amount": 100, "external_id": "soak-2026-11-pay-P0000",
                 "payout_method_params": {"bsb": "062000", "account_number": "10000000", "account_name": "Ann0 Lee"}}],
                "currency": "AUD", "payout_method_name": "au_bank_aud", "description": "Salary 2026-11",
                "webhook_notification": {}, "external_id": "soak-2026-11-pay-b0001",
                "scheduled_at": tomorrow}),
    )
    .await;
    let planted = planted["uuid"].as_str().unwrap().to_string();
    let out = reconcile_cmd(&setup, &s);
    assert_exit(&out, 7);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DUPLICATE PAYOUT") && stderr.contains(&planted),
        "{stderr}"
    );
    assert!(stderr.contains("cancel_scheduled"), "{stderr}");
    // Both the batch's id and the row's are named, with both batches.
    let (n, rows): (i64, String) =
        setup.state_row("SELECT COUNT(*), GROUP_CONCAT(COALESCE(row_key, '-')) FROM duplicates");
    assert_eq!((n, rows.contains("P0000")), (2, true), "{rows}");
    let text =
        std::fs::read_to_string(setup.path("reports/soak/2026-11/latest/summary.json")).unwrap();
    crate::support::assert_summary_schema(&text);
    let summary: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["exit_code"], 7);
    let dups = summary["duplicates"].as_array().unwrap();
    assert!(
        dups.iter().any(|d| d["uuids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == planted.as_str())),
        "{summary}"
    );
    // Cancelled (it was scheduled), the extra batch can no longer pay: the check clears.
    let (status, _) = post(
        &client(),
        &s,
        "/v2/payouts/cancel_scheduled",
        &json!({"uuid": planted}),
    )
    .await;
    assert_eq!(status, 200);
    assert_exit(&reconcile_cmd(&setup, &s), 0);
    let (left,): (i64,) = setup.state_row("SELECT COUNT(*) FROM duplicates");
    assert_eq!(left, 0);
}

/// `unshare -p -f --mount-proc payrun run …`: payrun in a PID namespace of its own, where it
/// is pid 1 — as in a container.
fn in_namespace(setup: &Setup, s: &Sandbox) -> Option<std::process::Child> {
    let probe = std::process::Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|st| st.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root with util-linux: unshare must work there"
        );
        eprintln!("skipped: unshare -p needs root (CI runs it)");
        return None;
    }
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-p", "-f", "--mount-proc", env!("CARGO_BIN_EXE_payrun")])
        .args(["run", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in setup.env(s) {
        cmd.env(k, v);
    }
    Some(cmd.spawn().unwrap())
}

/// Reads a child's standard error until a line holds `what`.
fn wait_for_line(
    child: &mut std::process::Child,
    what: &str,
) -> BufReader<std::process::ChildStderr> {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains(what) {
        assert!(stderr.read_line(&mut seen).unwrap() > 0, "{seen}");
    }
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_at_a_time_across_pid_namespaces_and_a_dead_holder_is_taken_over() {
    // Slow requests: a run lasts seconds.
    let s = start(fast(Faults {
        latency: Some((Duration::from_millis(150), Duration::from_millis(150))),
        ..Faults::default()
    }))
    .await;
    let n = 12;
    let setup = Setup::new(
        &job_text(4, "").replace("concurrency: 8", "concurrency: 1"),
        &people(n),
    );
    let Some(mut first) = in_namespace(&setup, &s) else {
        return;
    };
    let _first_log = wait_for_line(&mut first, "run started");
    // A second container, the same volume: both are pid 1, and the kernel still says no.
    let second = in_namespace(&setup, &s)
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert_exit(&second, 3);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("holds the lock: run 1 (pid 1 on"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let (runs,): (i64,) = setup.state_row("SELECT COUNT(*) FROM runs");
    assert_eq!(runs, 1, "the second run started nothing");
    assert_exactly_once(&ledger(&s).await, n);

    // A holder killed outright leaves its record; its lock went with it.
    std::fs::write(setup.path("people.csv"), people(2 * n)).unwrap();
    let mut killed = binary(&setup, &s, &[]);
    let _log = wait_for_line(&mut killed, "step started");
    killed.kill().unwrap();
    killed.wait().unwrap();
    let unlock = payrun(&setup, &s, &["unlock", "job.yaml", "--state", "state.db"]);
    assert_exit(&unlock, 0);
    assert!(
        String::from_utf8_lossy(&unlock.stdout).contains("cleared the lock of run 2"),
        "{}",
        String::from_utf8_lossy(&unlock.stdout)
    );
    let (code,): (i64,) = setup.state_row("SELECT exit_code FROM runs WHERE id = 2");
    assert_eq!(code, 4, "the dead run is recorded as interrupted");
    // Killed again, and not unlocked: the next run takes the lock over by itself.
    let mut killed = binary(&setup, &s, &[]);
    let _log = wait_for_line(&mut killed, "run started");
    killed.kill().unwrap();
    killed.wait().unwrap();
    let done = binary(&setup, &s, &[]).wait_with_output().unwrap();
    assert_exit(&done, 0);
    assert_exactly_once(&ledger(&s).await, 2 * n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_whose_reply_cannot_be_read_is_recorded_and_never_sent_again() {
    // Every create and payout is applied, then answered 200 with a page that is not JSON;
    // the listing shows a payout only 2 s later, past the job's settle window and recheck.
    let s = start(fast(Faults {
        garbled_rate: 1.0,
        listing_lag: Duration::from_secs(2),
        ..Faults::default()
    }))
    .await;
    let n = 6;
    let setup = Setup::new(&job_text(3, ""), &people(n));
    let report = setup.run(&s, false).await;
    // Not found yet, but surely applied: left in doubt, not sent again.
    assert_eq!(report.exit_code, 1, "{}", report.counts);
    let counts: Value = serde_json::from_str(&report.counts.json()).unwrap();
    assert_eq!(counts["pay"]["in_doubt"], n, "{counts}");
    // One name for it everywhere: the run's counts, results.csv, summary.json, status.
    let written = payrun(&setup, &s, &["report", "job.yaml", "--state", "state.db"]);
    assert_exit(&written, 0);
    let csv =
        std::fs::read_to_string(setup.path("reports/soak/2026-11/latest/results.csv")).unwrap();
    assert_eq!(csv.matches(",in_doubt,").count(), n, "{csv}");
    assert!(csv.contains("IN_DOUBT,"), "{csv}");
    let summary =
        std::fs::read_to_string(setup.path("reports/soak/2026-11/latest/summary.json")).unwrap();
    assert!(summary.contains("\"in_doubt\": 6"), "{summary}");
    let status = payrun(&setup, &s, &["status", "job.yaml", "--state", "state.db"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("in_doubt"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    assert_eq!(requests(&ledger(&s).await, "POST /api/v2/payouts"), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = setup.run(&s, false).await;
    assert_eq!(report.exit_code, 0, "{}", report.counts);
    let l = ledger(&s).await;
    assert_exactly_once(&l, n);
    assert_eq!(requests(&l, "POST /api/v2/contacts"), n as u64);
    assert_eq!(requests(&l, "POST /api/v2/payouts"), 2);
}
