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

mod approval;
mod day_to_day;
mod lock;
mod payins;
mod postgres;

mod provider;

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
            plan: Default::default(),
            allow_duplicates: false,
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
        plan: Default::default(),
        allow_duplicates: false,
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
