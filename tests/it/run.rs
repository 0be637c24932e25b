//! `payrun run` against the sandbox: every row done, exactly one payout per row under
//! faults and crashes, the lock, conflicts, failures and their retry.

use crate::sandbox_support::{ledger, start};
use payrun::exec::{RunOptions, RunReport, run};
use payrun::job::env::Env;
use payrun::job::{LoadOptions, load};
use payrun::sandbox::{Config, Faults, Sandbox};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// A contact + payout job over `people.csv`, provider from HC_TEST_* variables.
pub(crate) fn job_text(batch: u32, extra_limits: &str) -> String {
    format!(
        r#"version: 1
name: soak
scope: "2026-11"
provider:
  kind: helloclever
  base_url: ${{HC_TEST_BASE_URL}}
  app_id: ${{HC_TEST_APP_ID}}
  secret_key: ${{HC_TEST_SECRET_KEY}}
limits:
  rate: 400/s
  burst: 20
  concurrency: 8
  timeout: 2s
  retry: {{ attempts: 12, base: 5ms, max: 100ms, max_elapsed: 60s }}
  # The sandbox applies a request before it drops the reply: nothing is applied later.
  settle: 300ms
  settle_recheck: 100ms
{extra_limits}
input: {{ csv: people.csv, key: id }}
steps:
  - id: contact
    type: contact
    fields:
      email: "{{{{ row.email }}}}"
      first_name: "{{{{ row.first }}}}"
      last_name: "{{{{ row.last }}}}"
      type: individual
      dob: "1990-01-01"
      phone: "+61412345678"
      gender: female
      street: 1 George Street
      city: Sydney
      postal_code: "2000"
      state: NSW
      country: AU
  - id: pay
    type: payout
    batch: {{ size: {batch} }}
    fields:
      currency: AUD
      payout_method_name: au_bank_aud
      description: Salary 2026-11
      first_name: "{{{{ row.first }}}}"
      last_name: "{{{{ row.last }}}}"
      email: "{{{{ row.email }}}}"
      amount: "{{{{ row.amount }}}}"
      payout_method_params: {{ bsb: "062000", account_number: "{{{{ row.account }}}}", account_name: "{{{{ row.first }}}} {{{{ row.last }}}}" }}
    wait: {{ until: completed, timeout: 20s, poll: 100ms }}
"#
    )
}

/// `n` rows: id, first, last, email, amount, account.
pub(crate) fn people(n: usize) -> String {
    let mut s = String::from("id,first,last,email,amount,account\n");
    for i in 0..n {
        s.push_str(&format!(
            "P{i:04},Ann{i},Lee,ann{i}@example.com,{}.{:02},{:08}\n",
            100 + i,
            i % 100,
            10_000_000 + i
        ));
    }
    s
}

pub(crate) struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(job: &str, csv: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.yaml"), job).unwrap();
        std::fs::write(dir.path().join("people.csv"), csv).unwrap();
        Setup { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The one row `sql` selects from the state database, as a tuple.
    pub fn state_row<T>(&self, sql: &str) -> T
    where
        T: for<'a> TryFrom<&'a rusqlite::Row<'a>, Error = rusqlite::Error>,
    {
        rusqlite::Connection::open(self.path("state.db"))
            .unwrap()
            .query_row(sql, [], |r| T::try_from(r))
            .unwrap()
    }

    pub fn env(&self, s: &Sandbox) -> Vec<(String, String)> {
        vec![
            ("HC_TEST_BASE_URL".into(), s.base_url()),
            ("HC_TEST_APP_ID".into(), "sandbox-app".into()),
            ("HC_TEST_SECRET_KEY".into(), "sandbox-secret".into()),
        ]
    }

    /// Runs the job in this process (the library entry point).
    pub async fn run(&self, s: &Sandbox, retry_failed: bool) -> RunReport {
        let env = self.env(s);
        let opts = LoadOptions {
            vars: vec![],
            env: Some(Env::from_pairs(
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )),
        };
        let job = load(&self.path("job.yaml"), &opts).unwrap_or_else(|d| panic!("{d:?}"));
        let opts = RunOptions {
            state_path: self.path("state.db"),
            base_url: None,
            credentials: None,
            retry_failed,
            stop: Arc::new(AtomicBool::new(false)),
            poll_cap: Some(Duration::from_millis(100)),
            show_progress: false,
            progress_every: std::time::Duration::from_secs(10),
        };
        run(&job, opts, &mut |e| panic!("unexpected input error: {e}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

pub(crate) fn fast(faults: Faults) -> Config {
    Config {
        kyc_delay: Duration::from_millis(200),
        payout_delay: Duration::from_millis(300),
        faults,
        seed: 11,
        ..Config::default()
    }
}

/// Transactions in the ledger by email: (count, amounts).
pub(crate) fn transactions(l: &Value) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for b in l["payouts"].as_array().unwrap() {
        for t in b["payout_transactions"].as_array().unwrap() {
            out.entry(t["email"].as_str().unwrap().to_string())
                .or_default()
                .push(t["amount"].as_str().unwrap().to_string());
        }
    }
    out
}

pub(crate) fn assert_exactly_once(l: &Value, n: usize) {
    let txs = transactions(l);
    assert_eq!(txs.len(), n, "every row paid");
    for i in 0..n {
        let amounts = &txs[&format!("ann{i}@example.com")];
        assert_eq!(amounts.len(), 1, "row {i} paid {} times", amounts.len());
        let want: rust_decimal::Decimal = format!("{}.{:02}", 100 + i, i % 100).parse().unwrap();
        let got: rust_decimal::Decimal = amounts[0].parse().unwrap();
        assert_eq!(got, want, "row {i} amount");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_payroll_end_to_end() {
    let s = start(fast(Faults::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let job = load(
        &repo.join("jobs/payroll.yaml"),
        &LoadOptions {
            vars: vec![],
            env: Some(Env::from_pairs([])),
        },
    )
    .unwrap();
    let opts = |state: &Path| RunOptions {
        state_path: state.to_path_buf(),
        base_url: Some(s.base_url()),
        credentials: Some(("sandbox-app".into(), "sandbox-secret".into())),
        retry_failed: false,
        stop: Arc::new(AtomicBool::new(false)),
        poll_cap: Some(Duration::from_millis(100)),
        show_progress: false,
        progress_every: std::time::Duration::from_secs(10),
    };
    let report = run(&job, opts(&dir.path().join("s.db")), &mut |e| panic!("{e}"))
        .await
        .unwrap();
    assert_eq!(report.exit_code, 0, "{}", report.counts);
    let counts: Value = serde_json::from_str(&report.counts.json()).unwrap();
    assert_eq!(counts["contact"]["succeeded"], 20);
    assert_eq!(
        (
            counts["kyc"]["succeeded"].as_u64(),
            counts["kyc"]["skipped"].as_u64()
        ),
        (Some(6), Some(14))
    );
    assert_eq!(counts["pay"]["succeeded"], 20);
    let l = ledger(&s).await;
    assert_eq!(l["contacts"].as_array().unwrap().len(), 20);
    assert_eq!(l["kyc_submissions"].as_array().unwrap().len(), 6);
    let csv = std::fs::read_to_string(repo.join("examples/payroll.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let txs = transactions(&l);
    for r in rdr.deserialize::<HashMap<String, String>>() {
        let r = r.unwrap();
        let amounts = &txs[&r["email"]];
        assert_eq!(amounts.len(), 1);
        assert_eq!(
            amounts[0].parse::<rust_decimal::Decimal>().unwrap(),
            r["net_pay"].parse::<rust_decimal::Decimal>().unwrap()
        );
    }
    // What went out is the row's values in full, never the masked copy state keeps:
    // every account number and every KYC document number is the CSV's.
    let rows: HashMap<String, HashMap<String, String>> = csv::Reader::from_reader(csv.as_bytes())
        .deserialize::<HashMap<String, String>>()
        .map(|r| {
            let r = r.unwrap();
            (r["email"].clone(), r)
        })
        .collect();
    let mut sent_accounts = 0;
    for b in l["payouts"].as_array().unwrap() {
        for t in b["payout_transactions"].as_array().unwrap() {
            let row = &rows[t["email"].as_str().unwrap()];
            let params = &t["payout_method_params"];
            assert_eq!(params["account_number"], row["account_number"].as_str());
            assert_eq!(params["bsb"], row["bsb"].as_str());
            sent_accounts += 1;
        }
    }
    assert_eq!(sent_accounts, 20);
    for k in l["kyc_submissions"].as_array().unwrap() {
        let row = &rows[k["email"].as_str().unwrap()];
        assert_eq!(k["document_number"], row["document_number"].as_str());
    }
    // A second run has nothing to do.
    let again = run(&job, opts(&dir.path().join("s.db")), &mut |e| panic!("{e}"))
        .await
        .unwrap();
    assert_eq!((again.exit_code, again.stats.requests), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_soak_pays_every_row_exactly_once() {
    let faults = Faults {
        latency: Some((Duration::from_millis(1), Duration::from_millis(5))),
        error_rate: 0.10,
        rate_limit: Some(150),
        reset_rate: 0.02,
        lost_response_rate: 0.03,
        ..Faults::default()
    };
    let s = start(fast(faults)).await;
    let n = 200;
    let setup = Setup::new(&job_text(10, ""), &people(n));
    let mut report = setup.run(&s, false).await;
    // Items still in doubt after their attempts are resolved by the next run.
    for _ in 0..3 {
        if report.exit_code == 0 {
            break;
        }
        report = setup.run(&s, false).await;
    }
    assert_eq!(report.exit_code, 0, "{}", report.counts);
    let l = ledger(&s).await;
    assert_exactly_once(&l, n);
    assert_eq!(l["contacts"].as_array().unwrap().len(), n);
    let (retries, in_doubt): (i64, i64) =
        setup.state_row("SELECT SUM(retries), SUM(in_doubt_resolved) FROM runs");
    assert!(
        retries > 0 && in_doubt > 0,
        "retries {retries}, in doubt resolved {in_doubt}"
    );
    let dropped = l["requests"]["POST /api/v2/payouts"]["dropped"]
        .as_u64()
        .unwrap_or(0)
        + l["requests"]["POST /api/v2/contacts"]["dropped"]
            .as_u64()
            .unwrap_or(0);
    assert!(
        dropped > 0,
        "the soak must include dropped replies: {}",
        l["requests"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_paid_row_is_a_conflict_and_is_not_sent_again() {
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(100, ""), &people(3));
    assert_eq!(setup.run(&s, false).await.exit_code, 0);
    let changed = people(3).replace(
        "P0001,Ann1,Lee,ann1@example.com,101.01",
        "P0001,Ann1,Lee,ann1@example.com,999.00",
    );
    std::fs::write(setup.path("people.csv"), changed).unwrap();
    let again = setup.run(&s, false).await;
    // Nothing is sent, and the run does not call it done: the change was never paid.
    assert_eq!((again.exit_code, again.stats.requests), (1, 0));
    let counts: Value = serde_json::from_str(&again.counts.json()).unwrap();
    assert_eq!(
        (&counts["pay"]["conflict"], &counts["pay"]["succeeded"]),
        (&serde_json::json!(1), &serde_json::json!(2)),
        "{counts}"
    );
    assert_exactly_once(&ledger(&s).await, 3);
    let conn = rusqlite::Connection::open(setup.path("state.db")).unwrap();
    let conflicts: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM items WHERE conflict_hash IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        conflicts, 1,
        "the payout of the changed row (its contact fields did not change)"
    );
}

/// Runs the real binary on the setup's job against `s`.
/// `payrun run job.yaml` in the setup's folder, against `s`.
/// Asserts a finished process's exit code, showing its stderr when it differs.
pub(crate) fn assert_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn command(setup: &Setup, s: &Sandbox) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(["run", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path());
    for (k, v) in setup.env(s) {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary with one variable of the job's environment replaced: its exit code and
/// standard error.
pub(crate) fn run_with(
    setup: &Setup,
    s: &Sandbox,
    var: &str,
    value: &str,
) -> (Option<i32>, String) {
    let out = command(setup, s).env(var, value).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn binary(setup: &Setup, s: &Sandbox, extra: &[&str]) -> std::process::Child {
    let mut cmd = command(setup, s);
    cmd.args(extra);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd.spawn().unwrap()
}

/// The `step started` lines of a run's JSON log: (step, items to send).
fn steps_started(stderr: &[u8]) -> Vec<(String, u64)> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "step started")
        .map(|v| {
            let f = &v["fields"];
            (
                f["step"].as_str().unwrap().to_string(),
                f["items"].as_u64().unwrap(),
            )
        })
        .collect()
}

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
    let api = |l: Value| -> Value {
        l["requests"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains("/api/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
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
        "no payout was sent"
    );
}

/// A webhook receiver on 127.0.0.1:0 that records bodies and answers `status`.
pub(crate) async fn hook(status: u16) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn run_with_hook(setup: &Setup, s: &Sandbox, url: &str) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(["run", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .env("HOOK_URL", url);
    for (k, v) in setup.env(s) {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

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
