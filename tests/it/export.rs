//! Export jobs against the sandbox's seeded data: every record of every resource, across
//! many pages and split windows, with the window's boundaries honoured, inconsistent page
//! metadata and records arriving mid-export; crash safety of the file and the `last_run`
//! watermark.

use crate::sandbox_support::{client, contact, ledger, post, start};
use payrun::exec::{RunOptions, RunReport, run};
use payrun::job::env::Env;
use payrun::job::{LoadOptions, load};
use payrun::sandbox::{Config, Faults, Sandbox};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

mod faults;

/// A job of export steps (`steps` is YAML, indented as list items under `steps:`).
fn job(steps: &str, rate: &str) -> String {
    format!(
        r#"version: 1
name: exports
provider:
  kind: helloclever
  base_url: ${{HC_TEST_BASE_URL}}
  app_id: sandbox-app
  secret_key: sandbox-secret
limits:
  rate: {rate}
  burst: 10
  retry: {{ attempts: 3, base: 5ms, max: 20ms }}
steps:
{steps}
"#
    )
}

fn step(id: &str, resource: &str, from: &str, to: &str, file: &str) -> String {
    format!(
        "  - id: {id}\n    type: export\n    resource: {resource}\n    from: \"{from}\"\n    to: \"{to}\"\n    output: {{ path: \"out/{file}\" }}\n"
    )
}

fn all_five(from: &str) -> String {
    [
        step("contacts", "contacts", from, "now", "contacts.json"),
        step("payouts", "payouts", from, "now", "payouts.csv"),
        step("payins", "payins", from, "now", "payins.jsonl"),
        step(
            "agreements",
            "payment_agreements",
            from,
            "now",
            "agreements.csv",
        ),
        step("cards", "card_payments", from, "now", "cards.csv"),
    ]
    .concat()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new(job_text: &str) -> Dir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("job.yaml"), job_text).unwrap();
        Dir(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    async fn run_at(&self, base_url: &str) -> RunReport {
        let env = Env::from_pairs([("HC_TEST_BASE_URL", base_url)]);
        let job = load(
            &self.path("job.yaml"),
            &LoadOptions {
                vars: vec![],
                env: Some(env),
            },
        )
        .unwrap_or_else(|d| panic!("{d:?}"));
        let opts = RunOptions {
            state_path: self.path("state.db"),
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
        run(&job, opts, &mut |e| panic!("{e}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn run(&self, s: &Sandbox) -> RunReport {
        self.run_at(&s.base_url()).await
    }
}

fn seeded(n: usize, faults: Faults) -> Config {
    Config {
        seed_data: n,
        faults,
        ..Config::default()
    }
}

/// The ids of an export file: the first column of a CSV, or `key` of each JSON record.
fn ids(path: &Path, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let records: Vec<Value> = match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => {
            let mut r = csv::Reader::from_reader(text.as_bytes());
            let h = r.headers().unwrap().clone();
            let i = h.iter().position(|c| c == key).unwrap();
            return r.records().map(|rec| rec.unwrap()[i].to_string()).collect();
        }
        Some("jsonl") => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        _ => serde_json::from_str::<Vec<Value>>(&text).unwrap(),
    };
    records
        .iter()
        .map(|r| match &r[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The ledger's ids of `resource` created within `[from, to]` (RFC 3339; `None`: open).
fn ledger_ids(l: &Value, resource: &str, from: Option<&str>, to: Option<&str>) -> BTreeSet<String> {
    let t = |s: &str| {
        chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z")
            .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
            .unwrap()
    };
    l["exportable"][resource]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let at = t(r["created_at"].as_str().unwrap());
            from.is_none_or(|f| at >= t(f)) && to.is_none_or(|x| at <= t(x))
        })
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn unique(ids: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "an id appears twice in the export");
    set
}

fn export<'r>(r: &'r RunReport, step: &str) -> &'r payrun::state::exports::ExportRecord {
    r.exports.iter().find(|e| e.step == step).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_is_exported_completely_across_pages_and_split_windows() {
    let s = start(seeded(450, Faults::default())).await;
    let dir = Dir::new(&job(&all_five("-800d"), "500/s"));
    let r = dir.run(&s).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.exports);
    let l = ledger(&s).await;
    for (step, resource, file, key) in [
        ("contacts", "contacts", "contacts.json", "email"),
        ("payouts", "payouts", "payouts.csv", "batch_uuid"),
        ("payins", "payins", "payins.jsonl", "uuid"),
        ("agreements", "payment_agreements", "agreements.csv", "id"),
        ("cards", "card_payments", "cards.csv", "uuid"),
    ] {
        let got = unique(&ids(&dir.path(&format!("out/{file}")), key));
        let want = ledger_ids(&l, resource, None, None);
        assert_eq!(want.len(), 450);
        assert_eq!(got, want, "{resource}");
        let e = export(&r, step);
        assert_eq!((e.state.as_str(), e.rows), ("completed", 450), "{step}");
    }
    // Payouts: 20 a page, and 800 days cut into three windows of at most 365 days.
    let payouts = export(&r, "payouts");
    assert!(payouts.pages >= 23, "{} pages", payouts.pages);
    let list = &l["requests"]["GET /v2/payouts/all"];
    assert_eq!(list.get("400"), None, "a window the API refuses: {list}");
    // 100 a page elsewhere: 5 pages.
    assert_eq!(export(&r, "cards").pages, 5);
    // Exact decimals and UTC times in the CSV; no partial file left behind.
    let text = std::fs::read_to_string(dir.path("out/cards.csv")).unwrap();
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let h = rd.headers().unwrap().clone();
    let rec = rd.records().next().unwrap().unwrap();
    let col = |n: &str| rec[h.iter().position(|c| c == n).unwrap()].to_string();
    assert!(
        col("amount").split_once('.').unwrap().1.len() == 2,
        "{}",
        col("amount")
    );
    assert!(
        col("created_at").ends_with(".000Z"),
        "{}",
        col("created_at")
    );
    assert!(!col("sender_details.card.card_brand").is_empty());
    let names: Vec<_> = std::fs::read_dir(dir.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_filters_are_honoured_at_both_boundaries() {
    let s = start(seeded(120, Faults::default())).await;
    let l = ledger(&s).await;
    // The 10th to the 30th record of each kind, by creation time (seeded at whole seconds).
    let times: Vec<String> = l["exportable"]["card_payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["created_at"].as_str().unwrap().to_string())
        .collect();
    let plain = |t: &str| t[..19].to_string(); // 2026-01-01T00:00:00
    let (from, to) = (plain(&times[10]), plain(&times[30]));
    let steps = [
        step("cards", "card_payments", &from, &to, "cards.csv"),
        step(
            "agreements",
            "payment_agreements",
            &from,
            &to,
            "agreements.csv",
        ),
        step("payouts", "payouts", &from, &to, "payouts.csv"),
        step("payins", "payins", &from, &to, "payins.csv"),
        step("contacts", "contacts", &from, &to, "contacts.csv"),
    ]
    .concat();
    let dir = Dir::new(&job(&steps, "500/s"));
    let r = dir.run(&s).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.exports);
    let (f, t) = (format!("{from}Z"), format!("{to}Z"));
    for (resource, file, key) in [
        ("card_payments", "cards.csv", "uuid"),
        ("payment_agreements", "agreements.csv", "id"),
        ("payouts", "payouts.csv", "batch_uuid"),
        ("payins", "payins.csv", "uuid"),
        ("contacts", "contacts.csv", "email"),
    ] {
        let want = ledger_ids(&l, resource, Some(&f), Some(&t));
        assert_eq!(
            want.len(),
            21,
            "{resource}: records 10..=30, both ends included"
        );
        assert_eq!(
            unique(&ids(&dir.path(&format!("out/{file}")), key)),
            want,
            "{resource}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_page_metadata_loses_nothing_and_asks_one_page_more_at_most() {
    let faults = Faults {
        inconsistent_pages: true,
        ..Faults::default()
    };
    let s = start(seeded(250, faults)).await;
    let steps = [
        step(
            "agreements",
            "payment_agreements",
            "-500d",
            "now",
            "agreements.csv",
        ),
        step("cards", "card_payments", "-500d", "now", "cards.csv"),
        step("payouts", "payouts", "-300d", "now", "payouts.csv"),
    ]
    .concat();
    let dir = Dir::new(&job(&steps, "500/s"));
    let r = dir.run(&s).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.exports);
    let l = ledger(&s).await;
    assert_eq!(
        unique(&ids(&dir.path("out/agreements.csv"), "id")),
        ledger_ids(&l, "payment_agreements", None, None)
    );
    assert_eq!(
        unique(&ids(&dir.path("out/cards.csv"), "uuid")),
        ledger_ids(&l, "card_payments", None, None)
    );
    // Shape B's last page points past the end: one empty page more (3 + 1).
    assert_eq!(export(&r, "agreements").pages, 4);
    // Shape A without totals: the short third page ends it.
    assert_eq!(export(&r, "cards").pages, 3);
    let payouts = unique(&ids(&dir.path("out/payouts.csv"), "batch_uuid"));
    let cut = chrono::Utc::now() - chrono::Duration::days(300);
    let want = ledger_ids(&l, "payouts", Some(&cut.to_rfc3339()), None);
    assert!(want.len() > 150);
    assert_eq!(payouts, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_fetched_at_once_under_latency_and_make_the_file_a_sequential_export_makes() {
    let faults = Faults {
        latency: Some((Duration::from_millis(30), Duration::from_millis(30))),
        ..Faults::default()
    };
    let s = start(seeded(1500, faults)).await;
    let peak = |l: &Value| l["peak_in_flight"].as_u64().unwrap();
    let with = |concurrency: u32| {
        job(
            &step("cards", "card_payments", "-500d", "now", "cards.csv"),
            "500/s",
        )
        .replace(
            "  burst: 10\n",
            &format!("  burst: 10\n  concurrency: {concurrency}\n"),
        )
    };
    let one = Dir::new(&with(1));
    let r = one.run(&s).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.exports);
    // One page at a time (the ledger's own request may overlap the last).
    assert!(peak(&ledger(&s).await) <= 2);
    let eight = Dir::new(&with(8));
    let r = eight.run(&s).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.exports);
    assert!(
        peak(&ledger(&s).await) >= 4,
        "pages are asked for at once: {}",
        peak(&ledger(&s).await)
    );
    let e = export(&r, "cards");
    assert_eq!(e.duplicates, 0, "a listing that holds still is read once");
    // The same records, in the same order: the same file.
    let (a, b) = (
        std::fs::read(one.path("out/cards.csv")).unwrap(),
        std::fs::read(eight.path("out/cards.csv")).unwrap(),
    );
    assert_eq!(
        unique(&ids(&eight.path("out/cards.csv"), "uuid")).len(),
        1500
    );
    assert!(
        a == b,
        "the concurrent export's file differs from the sequential one's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arriving_mid_export_are_written_once() {
    let faults = Faults {
        arrivals: 3,
        ..Faults::default()
    };
    let s = start(seeded(450, faults)).await;
    let before = ledger(&s).await;
    let steps = [
        step(
            "agreements",
            "payment_agreements",
            "-500d",
            "now",
            "agreements.jsonl",
        ),
        step("cards", "card_payments", "-500d", "now", "cards.csv"),
    ]
    .concat();
    let dir = Dir::new(&job(&steps, "500/s"));
    let r = dir.run(&s).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.exports);
    for (step, resource, file, key) in [
        ("agreements", "payment_agreements", "agreements.jsonl", "id"),
        ("cards", "card_payments", "cards.csv", "uuid"),
    ] {
        let got = unique(&ids(&dir.path(&format!("out/{file}")), key));
        let seeded = ledger_ids(&before, resource, None, None);
        assert!(
            got.is_superset(&seeded),
            "{resource}: a seeded record is missing"
        );
        let e = export(&r, step);
        // Each later page began with records already written (shifted by the arrivals).
        assert!(
            e.duplicates >= 3,
            "{step}: {} duplicates skipped",
            e.duplicates
        );
        assert_eq!(e.rows as usize, got.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_export_leaves_no_file_and_the_next_run_completes_it() {
    let s = start(seeded(3000, Faults::default())).await;
    let dir = Dir::new(&job(
        &step(
            "cards",
            "card_payments",
            "last_run or -500d",
            "now",
            "cards.csv",
        ),
        "15/s",
    ));
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
            .args(["run", "job.yaml", "--state", "state.db", "-q"])
            .current_dir(dir.0.path())
            .env("HC_TEST_BASE_URL", s.base_url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    // Kill it once a few pages are in the partial file.
    let partial = dir.path("out/cards.csv.partial");
    let mut waited = 0;
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 2_000 && waited < 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let _ = child.kill(); // SIGKILL, mid-export
    let _ = child.wait();
    assert!(
        !dir.path("out/cards.csv").exists(),
        "a half export at the real path"
    );
    let st = payrun::state::State::open(&dir.path("state.db")).unwrap();
    let conn = st.connection();
    let mark = payrun::state::exports::watermark(conn, 1, "cards").unwrap();
    assert_eq!(
        mark, None,
        "the watermark moved for an export that did not finish"
    );

    let out = spawn().wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = unique(&ids(&dir.path("out/cards.csv"), "uuid"));
    assert_eq!(
        got,
        ledger_ids(&ledger(&s).await, "card_payments", None, None)
    );
    assert!(!partial.exists());
    assert!(
        payrun::state::exports::watermark(conn, 1, "cards")
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_run_moves_the_watermark_only_when_an_export_completes() {
    let s = start(seeded(50, Faults::default())).await;
    let dir = Dir::new(&job(
        &step(
            "contacts",
            "contacts",
            "last_run or -500d",
            "now",
            "contacts.csv",
        ),
        "500/s",
    ));
    let first = dir.run(&s).await;
    assert_eq!(ids(&dir.path("out/contacts.csv"), "email").len(), 50);
    let first_to = export(&first, "contacts").to_at.clone();

    // New contacts after the first export: the next one holds them and nothing older.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c = client();
    for i in 0..3 {
        let (status, _) = post(
            &c,
            &s,
            "/v2/contacts",
            &contact(&format!("new{i}@example.com")),
        )
        .await;
        assert_eq!(status, 200);
    }
    // The window ends at the run's whole second, so records of that very second wait for
    // the next run (which starts from it): let a second pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = dir.run(&s).await;
    let e = export(&second, "contacts");
    assert_eq!(
        e.from_at, first_to,
        "last_run starts where the last export ended"
    );
    let got = unique(&ids(&dir.path("out/contacts.csv"), "email"));
    let want: BTreeSet<String> = (0..3).map(|i| format!("new{i}@example.com")).collect();
    assert_eq!(got, want);

    // A failed export (the provider is gone) keeps the file and the watermark as they were.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/api", l.local_addr().unwrap())
    };
    let third = dir.run_at(&gone).await;
    assert_eq!(third.exit_code, 1);
    assert_eq!(export(&third, "contacts").state.as_str(), "failed");
    assert_eq!(unique(&ids(&dir.path("out/contacts.csv"), "email")), want);
    let st = payrun::state::State::open(&dir.path("state.db")).unwrap();
    let conn = st.connection();
    assert_eq!(
        payrun::state::exports::watermark(conn, 1, "contacts").unwrap(),
        Some(e.to_at.clone())
    );
}

#[test]
fn the_nightly_example_runs_against_the_embedded_sandbox() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("jobs")).unwrap();
    std::fs::copy(
        crate::support::repo().join("jobs/nightly-exports.yaml"),
        d.path().join("jobs/nightly-exports.yaml"),
    )
    .unwrap();
    let out =
        crate::support::payrun_in(d.path(), &["run", "jobs/nightly-exports.yaml", "--sandbox"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for f in [
        "contacts",
        "payouts",
        "payins",
        "agreements",
        "card-payments",
    ] {
        let p = d
            .path()
            .join(format!("exports/nightly-exports/sandbox/{f}.csv"));
        let rows = csv::Reader::from_path(&p).unwrap().records().count();
        assert!(rows > 0 || f == "contacts", "{f}: no rows from yesterday");
    }
    let text = std::fs::read_to_string(
        d.path()
            .join("reports/sandbox/nightly-exports/default/latest/summary.json"),
    )
    .unwrap();
    crate::support::assert_summary_schema(&text);
    let summary: Value = serde_json::from_str(&text).unwrap();
    let exported = summary["exported"].as_object().unwrap();
    assert_eq!(exported.len(), 5, "{summary}");
    assert!(exported["card_payments"].as_u64().unwrap() > 0);
    assert_eq!(summary["exports"]["payouts"]["state"], "completed");
    // A rehearsal keeps apart from the real run: its own state, reports and files.
    assert!(
        d.path()
            .join("jobs/.payrun/nightly-exports.sandbox.db")
            .exists()
    );
    assert!(!d.path().join("jobs/.payrun/nightly-exports.db").exists());
    assert!(
        !d.path()
            .join("exports/nightly-exports/contacts.csv")
            .exists()
    );
    assert!(!d.path().join("reports/nightly-exports").exists());
}

#[test]
fn export_steps_are_checked_before_anything_runs() {
    let steps = "  - id: a\n    type: export\n    resource: card_payment\n    from: -1d\n    output: { path: a.csv }\n\
                 \x20 - id: b\n    type: export\n    resource: card_payments\n    from: tomorrow\n    filter: { status: recieved, colour: red }\n    output: { path: b.csv, format: xml }\n\
                 \x20 - id: c\n    type: export\n    resource: payouts\n    from: -1d\n\
                 \x20 - id: d\n    type: export\n    resource: payins\n    from: -1d\n    output: { path: d.csv }\n\
                 \x20 - id: e\n    type: export\n    resource: contacts\n    from: -1d\n    output: { path: d.csv }\n";
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("job.yaml"), job(steps, "5/s")).unwrap();
    let out = crate::support::payrun_in(d.path(), &["validate", "job.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    for want in [
        "unknown resource 'card_payment'",
        "did you mean 'card_payments'",
        "'tomorrow' is not a time",
        "unknown filter 'colour'",
        "card payment status 'recieved'",
        "did you mean 'received'",
        "step 'c': an export step needs output",
        "step 'e' writes d.csv, as step 'd' does",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing '{want}' in:\n{}",
            out.stderr
        );
    }
}
