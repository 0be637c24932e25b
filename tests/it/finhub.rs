//! FinHub end to end against the sandbox: onboarding, exactly one customer per row under
//! lost responses, token expiry mid-run, bulk chunks with partial failures mapped to the
//! right rows, and the export by status across pages.

use crate::sandbox_support::{ledger, start};
use payrun::exec::{RunOptions, RunReport, run};
use payrun::job::env::Env;
use payrun::job::{LoadOptions, load};
use payrun::sandbox::{Config, Faults, FinhubConfig, Sandbox};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

mod cli;
mod existing;

const CUSTOMER: &str = r#"  - id: customer
    type: customer
    fields:
      customerType: Person
      customerName: "{{ row.first }} {{ row.last }}"
      person.email: "{{ row.email }}"
      person.firstName.name: "{{ row.first }}"
      person.lastName.name: "{{ row.last }}"
      person.telephoneNumbers.number: "+61412345678"
"#;

const BULK: &str = r#"  - id: customer
    type: customers_bulk
    batch: { size: 10 }
    fields:
      customerType: Person
      customerName: "{{ row.first }} {{ row.last }}"
      person.email: "{{ row.email }}"
      person.firstName.name: "{{ row.first }}"
"#;

const AFTER: &str = r#"  - id: id-front
    type: documents
    fields:
      purpose: KYC
      documentType: ID front side
      name: id-front.jpg
      location: "https://files.example.com/{{ row.id }}/front.jpg"
  - id: confirm
    type: kyc_confirmation
    fields: { kycConfirmation: confirmed }
  - id: status
    type: customer_status
    fields: { status: "{{ row.status }}" }
"#;

fn job(steps: &str, retry: &str) -> String {
    format!(
        r#"version: 1
name: fh
provider:
  kind: finhub
  base_url: ${{FINHUB_BASE_URL}}
  tenant_id: ${{FINHUB_TENANT_ID}}
  token_url: ${{FINHUB_BASE_URL}}/oauth/token
  client_id: ${{FINHUB_CLIENT_ID}}
  client_secret: ${{FINHUB_CLIENT_SECRET}}
limits:
  rate: 500/s
  burst: 20
  concurrency: 8
  timeout: 2s
  # The sandbox applies a request before it drops the reply: nothing is applied later.
  settle: 300ms
  settle_recheck: 100ms
  retry: {retry}
input: {{ csv: people.csv, key: id }}
steps:
{steps}"#
    )
}

const RETRY: &str = "{ attempts: 12, base: 5ms, max: 50ms, max_elapsed: 60s }";

/// `n` rows; `blocked` rows get an address FinHub's screening refuses.
fn people(n: usize, blocked: &[usize]) -> String {
    let statuses = ["verified", "under_verificaiton", "on_hold"];
    let mut s = String::from("id,first,last,email,status\n");
    for i in 0..n {
        let domain = if blocked.contains(&i) {
            "blocked.example"
        } else {
            "example.com"
        };
        s.push_str(&format!(
            "R{i:03},Ann{i},Lee,ann{i}@{domain},{}\n",
            statuses[i % 3]
        ));
    }
    s
}

/// An item as the state holds it: state, provider reference, error message.
type ItemView = (String, Option<String>, Option<String>);

struct Dir(tempfile::TempDir);

impl Dir {
    fn new(job: &str, csv: &str) -> Dir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("job.yaml"), job).unwrap();
        std::fs::write(d.path().join("people.csv"), csv).unwrap();
        Dir(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn env(s: &Sandbox) -> Vec<(&'static str, String)> {
        vec![
            ("FINHUB_BASE_URL", s.finhub_url()),
            ("FINHUB_TENANT_ID", "sandbox-tenant".into()),
            ("FINHUB_CLIENT_ID", "sandbox-client".into()),
            ("FINHUB_CLIENT_SECRET", "sandbox-secret".into()),
        ]
    }

    async fn run(&self, s: &Sandbox) -> RunReport {
        self.run_with(Dir::env(s)).await
    }

    /// Runs the job in this process with these environment variables.
    async fn run_with(&self, env: Vec<(&'static str, String)>) -> RunReport {
        let job = load(
            &self.path("job.yaml"),
            &LoadOptions {
                vars: vec![],
                env: Some(Env::from_pairs(env.iter().map(|(k, v)| (*k, v.as_str())))),
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

    /// Runs until every row is done (exit 0), at most `tries` times.
    async fn run_until_done(&self, s: &Sandbox, tries: usize) -> RunReport {
        let mut last = self.run(s).await;
        for _ in 1..tries {
            if last.exit_code == 0 {
                break;
            }
            last = self.run(s).await;
        }
        last
    }

    /// (row key → (step → (state, provider_ref, error_message))).
    fn items(&self) -> BTreeMap<String, BTreeMap<String, ItemView>> {
        let conn = rusqlite::Connection::open(self.path("state.db")).unwrap();
        let mut st = conn
            .prepare("SELECT row_key, step, state, provider_ref, error_message FROM items")
            .unwrap();
        let mut out: BTreeMap<String, BTreeMap<String, _>> = BTreeMap::new();
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .unwrap();
        for row in rows {
            let (k, step, state, pref, msg) = row.unwrap();
            out.entry(k).or_default().insert(step, (state, pref, msg));
        }
        out
    }
}

fn customers(l: &Value) -> Vec<Value> {
    l["finhub"]["customers"].as_array().unwrap().clone()
}

/// Every row's email is held by exactly one customer; returns email → customer.
fn exactly_one_each(l: &Value, emails: &[String]) -> BTreeMap<String, Value> {
    let mut by_email: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for c in customers(l) {
        by_email
            .entry(c["email"].as_str().unwrap().to_string())
            .or_default()
            .push(c);
    }
    emails
        .iter()
        .map(|e| {
            let found = by_email.get(e).cloned().unwrap_or_default();
            assert_eq!(found.len(), 1, "{e}: {} customers", found.len());
            (e.clone(), found[0].clone())
        })
        .collect()
}

fn config(faults: Faults) -> Config {
    Config {
        faults,
        seed: 17,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_creates_documents_confirms_and_sets_status() {
    let s = start(config(Faults::default())).await;
    let n = 30;
    let dir = Dir::new(&job(&format!("{CUSTOMER}{AFTER}"), RETRY), &people(n, &[]));
    let r = dir.run(&s).await;
    assert_eq!(r.exit_code, 0, "{}", r.counts);
    let l = ledger(&s).await;
    let emails: Vec<String> = (0..n).map(|i| format!("ann{i}@example.com")).collect();
    let by_email = exactly_one_each(&l, &emails);
    let items = dir.items();
    for (i, e) in emails.iter().enumerate() {
        let c = &by_email[e];
        let row = &items[&format!("R{i:03}")];
        // The row's customer id is the one FinHub holds for its email.
        assert_eq!(row["customer"].1.as_deref(), c["id"].as_str(), "{e}");
        assert_eq!(
            c["status"],
            ["verified", "under_verificaiton", "on_hold"][i % 3]
        );
        assert_eq!(c["kycConfirmation"], "confirmed");
        let docs = c["documents"].as_array().unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["documentType"], "ID front side");
        assert_eq!(row["id-front"].1.as_deref(), docs[0]["documentId"].as_str());
    }
    // A second run has nothing to send.
    let before = l["finhub"]["requests"].clone();
    assert_eq!(dir.run(&s).await.exit_code, 0);
    assert_eq!(ledger(&s).await["finhub"]["requests"], before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_still_make_exactly_one_customer_and_document_per_row() {
    let s = start(config(Faults {
        lost_response_rate: 0.1,
        error_rate: 0.05,
        timeout_rate: 0.03,
        timeout_delay: Duration::from_secs(3),
        latency: Some((Duration::from_millis(1), Duration::from_millis(3))),
        ..Faults::default()
    }))
    .await;
    let n = 60;
    let dir = Dir::new(&job(&format!("{CUSTOMER}{AFTER}"), RETRY), &people(n, &[]));
    let r = dir.run_until_done(&s, 4).await;
    assert_eq!(r.exit_code, 0, "{}", r.counts);
    let l = ledger(&s).await;
    let emails: Vec<String> = (0..n).map(|i| format!("ann{i}@example.com")).collect();
    let by_email = exactly_one_each(&l, &emails);
    assert_eq!(customers(&l).len(), n);
    for c in by_email.values() {
        assert_eq!(c["documents"].as_array().unwrap().len(), 1, "{c}");
    }
    let dropped = l["finhub"]["requests"]["POST /finhub/customer/2.0.0/create"]["dropped"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        dropped > 0,
        "the soak lost no create reply: {}",
        l["finhub"]["requests"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_chunks_survive_lost_replies_and_map_partial_failures_to_their_rows() {
    let s = start(config(Faults {
        lost_response_rate: 0.2,
        ..Faults::default()
    }))
    .await;
    // A customer that exists already: its row brings it up to date.
    let c = crate::sandbox_support::client();
    let token: Value = c
        .post(format!("{}/oauth/token", s.finhub_url()))
        .json(&json!({"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut existing = None;
    while existing.is_none() {
        // The sandbox may lose this reply too; the email is then taken by the first try.
        let r = c
            .post(format!("{}/customer/create", s.finhub_url()))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .header("tenantId", "sandbox-tenant")
            .json(&json!({"customerType": "Person", "customerName": "Old Name", "person": {"email": "ann5@example.com"}}))
            .send()
            .await;
        if let Ok(r) = r {
            existing = Some(r.status().as_u16());
        }
    }
    let n = 25;
    let blocked = [3, 12, 21];
    let dir = Dir::new(&job(BULK, RETRY), &people(n, &blocked));
    let r = dir.run_until_done(&s, 4).await;
    assert_eq!(r.exit_code, 1, "three rows are refused: {}", r.counts);
    let items = dir.items();
    let l = ledger(&s).await;
    let ok: Vec<String> = (0..n)
        .filter(|i| !blocked.contains(i))
        .map(|i| format!("ann{i}@example.com"))
        .collect();
    let by_email = exactly_one_each(&l, &ok);
    for i in 0..n {
        let (state, pref, msg) = &items[&format!("R{i:03}")]["customer"];
        if blocked.contains(&i) {
            assert_eq!(state, "failed", "row {i}");
            assert!(
                msg.as_deref().unwrap_or("").contains("screening"),
                "row {i}: {msg:?}"
            );
        } else {
            assert_eq!(state, "succeeded", "row {i}");
            let email = format!("ann{i}@example.com");
            assert_eq!(pref.as_deref(), by_email[&email]["id"].as_str(), "row {i}");
        }
    }
    // Nothing was created for the refused rows.
    assert!(
        customers(&l)
            .iter()
            .all(|c| !c["email"].as_str().unwrap().ends_with("blocked.example"))
    );
    // Every chunk went as one bulk request (answered, or applied with its reply lost).
    let bulk = &l["finhub"]["requests"]["POST /finhub/customer/2.0.0/createBulk"];
    let handled = bulk["200"].as_u64().unwrap_or(0) + bulk["dropped"].as_u64().unwrap_or(0);
    assert!(handled >= 3, "{bulk}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_renewed_mid_run() {
    // Tokens last 2 s. First honestly told: renewed ahead of expiry (at 80% of its life,
    // 400 ms before: a busy machine's stalls stay well inside that), never a 401.
    let honest = start(Config {
        finhub: FinhubConfig {
            token_ttl: Duration::from_millis(2000),
            ..FinhubConfig::default()
        },
        ..config(Faults::default())
    })
    .await;
    let steps = format!("{CUSTOMER}{AFTER}");
    let slow = job(&steps, RETRY).replace("rate: 500/s", "rate: 40/s");
    let dir = Dir::new(&slow, &people(50, &[]));
    assert_eq!(dir.run(&honest).await.exit_code, 0);
    let l = ledger(&honest).await;
    let tokens = l["finhub"]["requests"]["POST /finhub/oauth/token"]["200"]
        .as_u64()
        .unwrap();
    assert!(tokens >= 2, "{tokens} token(s) over a run of about 5 s");
    let refused: u64 = l["finhub"]["requests"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|by| by.get("401").and_then(Value::as_u64))
        .sum();
    assert_eq!(refused, 0);

    // Then told an hour: the 401 that follows renews the token once and the call goes on.
    let liar = start(Config {
        finhub: FinhubConfig {
            token_ttl: Duration::from_millis(300),
            claimed_expires_in: Some(3600),
            ..FinhubConfig::default()
        },
        ..config(Faults::default())
    })
    .await;
    let dir = Dir::new(&slow, &people(30, &[]));
    let r = dir.run(&liar).await;
    assert_eq!(r.exit_code, 0, "{}", r.counts);
    let l = ledger(&liar).await;
    let refused: u64 = l["finhub"]["requests"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|by| by.get("401").and_then(Value::as_u64))
        .sum();
    assert!(refused >= 1, "the token never expired mid-run");
    let emails: Vec<String> = (0..30).map(|i| format!("ann{i}@example.com")).collect();
    exactly_one_each(&l, &emails);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_export_by_status_across_pages() {
    let s = start(Config {
        seed_data: 900,
        ..config(Faults::default())
    })
    .await;
    let steps = r#"  - id: verified
    type: export
    resource: customers_by_status
    filter: { status: verified }
    output: { path: out/verified.csv }
  - id: all
    type: export
    resource: customers_by_status
    output: { path: out/all.jsonl }
"#;
    let text = job(steps, RETRY).replace("input: { csv: people.csv, key: id }\n", "");
    let dir = Dir::new(&text, "");
    let r = dir.run(&s).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.exports);
    let l = ledger(&s).await;
    let all: BTreeSet<String> = customers(&l)
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    let verified: BTreeSet<String> = customers(&l)
        .iter()
        .filter(|c| c["status"] == "verified")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((all.len(), verified.len()), (900, 113));
    let mut rd = csv::Reader::from_path(dir.path("out/verified.csv")).unwrap();
    let got: Vec<String> = rd.records().map(|r| r.unwrap()[0].to_string()).collect();
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), verified);
    assert_eq!(got.len(), verified.len());
    let text = std::fs::read_to_string(dir.path("out/all.jsonl")).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: BTreeSet<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((ids.len(), records.len()), (900, 900));
    assert_eq!(ids, all);
    // Secrets of the customer record never reach the file.
    assert!(
        records
            .iter()
            .all(|r| r["person"]["password"] == "****" && r["person"]["pinCode"] == "****")
    );
    // 113 verified customers: two pages of 100.
    assert_eq!(
        r.exports
            .iter()
            .find(|e| e.step == "verified")
            .unwrap()
            .pages,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_waiting_for_a_refused_customer_go_once_it_is_fixed() {
    let s = start(config(Faults::default())).await;
    let dir = Dir::new(&job(&format!("{CUSTOMER}{AFTER}"), RETRY), &people(3, &[1]));
    assert_eq!(dir.run(&s).await.exit_code, 1);
    let items = dir.items();
    assert_eq!(items["R001"]["customer"].0, "failed");
    assert_eq!(items["R001"]["id-front"].0, "blocked");
    // The address is corrected in the file: the customer is made, then what waited for it.
    std::fs::write(dir.path("people.csv"), people(3, &[])).unwrap();
    let r = dir.run_until_done(&s, 2).await;
    assert_eq!(r.exit_code, 0, "{}", r.counts);
    let l = ledger(&s).await;
    let by_email = exactly_one_each(
        &l,
        &(0..3)
            .map(|i| format!("ann{i}@example.com"))
            .collect::<Vec<_>>(),
    );
    let fixed = &by_email["ann1@example.com"];
    assert_eq!(fixed["documents"].as_array().unwrap().len(), 1);
    assert_eq!(fixed["kycConfirmation"], "confirmed");
    assert_eq!(fixed["status"], "under_verificaiton");
}
