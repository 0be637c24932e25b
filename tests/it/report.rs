//! Reports after a sandbox run with mixed outcomes: one row per input row with the right
//! statuses, formula cells neutralised, no secret or full account number anywhere, and the
//! same files again when regenerated from state.

use crate::sandbox_support::start;
use payrun::exec::{RunOptions, run};
use payrun::job::env::Env;
use payrun::job::{LoadOptions, load};
use payrun::sandbox::Config;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const SECRET: &str = "s3cr3t-VALUE-9f8e7d";

const JOB: &str = r#"version: 1
name: mixed
scope: "2026-11"
provider: { kind: helloclever, base_url: "${HC_TEST_BASE_URL}", app_id: sandbox-app, secret_key: "${HC_TEST_SECRET_KEY}" }
limits: { rate: 200/s, concurrency: 4, retry: { attempts: 3, base: 5ms, max: 20ms } }
input: { csv: rows.csv, key: id }
steps:
  - id: contact
    type: contact
    fields: { email: "{{ row.email }}", first_name: "{{ row.first }}", last_name: Lee, type: individual, dob: "1990-01-01",
              phone: "+61412345678", gender: female, street: 1 George Street, city: Sydney, postal_code: "2000", state: NSW, country: AU }
  - id: kyc
    type: kyc
    fields: { email: "{{ row.email }}", token: "{{ row.token }}" }
    wait: { until: approved, timeout: 1s, poll: 100ms }
  - id: pay
    type: payout
    batch: { size: 1 }
    fields:
      currency: AUD
      payout_method_name: au_bank_aud
      description: Salary 2026-11
      first_name: "{{ row.first }}"
      last_name: Lee
      email: "{{ row.email }}"
      amount: "{{ row.amount }}"
      payout_method_params: { bsb: "062000", account_number: "{{ row.account }}", account_name: "{{ row.first }} Lee" }
    wait: { until: completed, timeout: 10s, poll: 100ms }
report: { dir: out, formats: [csv, json, junit, html] }
"#;

const ROWS: &str = "id,first,email,token,amount,account\n\
R1,Ann,ann@example.com,tok-ok-1,100.00,11112222\n\
R2,Bob,bob@example.com,REVIEW-tok,200.00,33334444\n\
R3,Cat,cat@example.com,tok-ok-3,150000.00,55556666\n\
=SUM(1),Dan,dan@example.com,tok-ok-4,400.00,77778888\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_show_every_row_safely_and_regenerate_identically() {
    let s = start(Config {
        secret_key: SECRET.into(),
        kyc_delay: Duration::from_millis(100),
        payout_delay: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.yaml"), JOB).unwrap();
    std::fs::write(dir.path().join("rows.csv"), ROWS).unwrap();
    let base = s.base_url();
    let env = Env::from_pairs([
        ("HC_TEST_BASE_URL", base.as_str()),
        ("HC_TEST_SECRET_KEY", SECRET),
    ]);
    let job = load(
        &dir.path().join("job.yaml"),
        &LoadOptions {
            vars: vec![],
            env: Some(env.clone()),
        },
    )
    .unwrap();
    let state = dir.path().join("state.db");
    let opts = || RunOptions {
        state_path: state.clone(),
        base_url: None,
        credentials: None,
        retry_failed: false,
        stop: Arc::new(AtomicBool::new(false)),
        poll_cap: None,
        show_progress: false,
        progress_every: std::time::Duration::from_secs(10),
        plan: Default::default(),
        allow_duplicates: false,
    };
    let first = run(&job, opts(), &mut |e| panic!("{e}")).await.unwrap();
    assert_eq!(first.exit_code, 1);
    payrun::report::write(&job, &state, Some(first.run_id)).unwrap();

    // A paid row changes: the next run reports it as a conflict.
    std::fs::write(
        dir.path().join("rows.csv"),
        ROWS.replace(
            "R1,Ann,ann@example.com,tok-ok-1,100.00",
            "R1,Ann,ann@example.com,tok-ok-1,101.00",
        ),
    )
    .unwrap();
    let job = load(
        &dir.path().join("job.yaml"),
        &LoadOptions {
            vars: vec![],
            env: Some(env),
        },
    )
    .unwrap();
    let second = run(&job, opts(), &mut |e| panic!("{e}")).await.unwrap();
    let run_dir = payrun::report::write(&job, &state, Some(second.run_id)).unwrap();

    let csv = std::fs::read_to_string(run_dir.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "a header and one line per input row:\n{csv}"
    );
    let row = |key: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in\n{csv}"))
            .to_string()
    };
    assert!(row("R1,").contains(",conflict,"), "{csv}");
    // KYC under manual review at the timeout: blocked, and so is its payout.
    assert!(
        row("R2,").contains(",blocked,manual_review,blocked,"),
        "R2: {}",
        row("R2,")
    );
    assert!(row("R3,").contains(",failed,"), "R3: {}", row("R3,"));
    assert!(
        row("R3,").contains("amount must be between 1 and 100000 AUD"),
        "the provider's message: {}",
        row("R3,")
    );
    // The formula in the key is neutralised.
    assert!(row("'=SUM(1),").contains(",succeeded,"), "{csv}");

    let text = std::fs::read_to_string(run_dir.join("summary.json")).unwrap();
    crate::support::assert_summary_schema(&text);
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["schema"], 1);
    assert_eq!(summary["counts"]["pay"]["failed"], 1);
    assert_eq!(summary["totals"]["AUD"]["failed"], "150000.00");
    let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<failure type=\"CONFLICT\""), "{junit}");
    assert!(junit.contains("name=\"=SUM(1) (line 5)\""), "{junit}");

    // Snapshots of what users read, with what varies between runs blanked: times, the
    // provider's ids, durations and request counts.
    insta::assert_snapshot!("results_csv", stable_csv(&csv));
    insta::assert_snapshot!(
        "summary_json",
        stable_summary(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
    );
    insta::assert_snapshot!(
        "junit_xml",
        junit.replace(&format!("run {}", second.run_id), "run N")
    );

    // Prometheus metrics for the textfile collector.
    let prom = dir.path().join("payrun.prom");
    payrun::report::write_metrics(&job, &state, Some(second.run_id), (&prom, 0o644)).unwrap();
    let prom = std::fs::read_to_string(prom).unwrap();
    assert!(
        prom.contains(
            "payrun_rows{payrun_job=\"mixed\",scope=\"2026-11\",step=\"pay\",status=\"failed\"} 1"
        ),
        "{prom}"
    );
    assert!(
        prom.contains("payrun_last_run_success{payrun_job=\"mixed\",scope=\"2026-11\"} 0"),
        "{prom}"
    );
    assert!(prom.contains("payrun_amount{payrun_job=\"mixed\",scope=\"2026-11\",currency=\"AUD\",kind=\"failed\"} 150000.00"), "{prom}");

    // Regenerated from state: the same files.
    let again = payrun::report::write(&job, &state, Some(second.run_id)).unwrap();
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(
        html.contains("<td class=\"num\">150000.00</td>"),
        "failed total on the page"
    );
    assert!(
        html.contains("Needs a look (3)"),
        "R1 conflict, R2 blocked, R3 failed"
    );
    assert!(
        !html.contains("<script src")
            && !html.contains("<link")
            && !html.contains("http://")
            && !html.contains("https://"),
        "self-contained"
    );
    assert!(
        html.contains("&#39;=SUM(1)") || html.contains("=SUM(1)"),
        "keys are shown, escaped"
    );
    for f in ["results.csv", "summary.json", "junit.xml", "report.html"] {
        assert_eq!(
            std::fs::read(run_dir.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
        assert_eq!(
            std::fs::read(run_dir.join(f)).unwrap(),
            std::fs::read(run_dir.parent().unwrap().join("latest").join(f)).unwrap(),
            "latest/{f}"
        );
    }

    // No secret, no full account number: not in any report, not in the state database.
    let mut files = vec![state.clone(), dir.path().join("state.db-wal")];
    for entry in walk(&dir.path().join("out")) {
        files.push(entry);
    }
    for path in files.iter().filter(|p| p.exists()) {
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(SECRET),
            "the secret is in {}",
            path.display()
        );
        for account in ["11112222", "33334444", "55556666", "77778888"] {
            assert!(
                !text.contains(account),
                "account {account} in full in {}",
                path.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// results.csv with the provider's ids and the update times blanked.
fn stable_csv(csv: &str) -> String {
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let header = rdr.headers().unwrap().clone();
    let volatile: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.ends_with("_uuid") || *h == "updated_at")
        .map(|(i, _)| i)
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).unwrap();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let fields: Vec<&str> = rec
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if volatile.contains(&i) && !f.is_empty() {
                    "[id]"
                } else {
                    f
                }
            })
            .collect();
        w.write_record(&fields).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

/// summary.json with times, durations and request figures blanked.
fn stable_summary(json: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    for k in [
        "started_at",
        "ended_at",
        "duration_seconds",
        "achieved_request_rate",
        "requests",
        "run_id",
    ] {
        v[k] = serde_json::json!("[varies]");
    }
    serde_json::to_string_pretty(&v).unwrap()
}
