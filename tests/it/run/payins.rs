//! Payins and refunds against the sandbox: the example job end to end, one payin per row
//! under faults, a payer who does not pay (blocked, then cancelled, then reconciled).

use super::{Setup, assert_exit, command, fast};
use crate::sandbox_support::{client, ledger, post, start, try_post};
use payrun::sandbox::{Config, Faults, Sandbox};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The one file called `name` under `dir` (the run's reports are filed by job and run).
fn find(dir: &Path, name: &str) -> PathBuf {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                found.push(p);
            }
        }
    }
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no {name} under {}", dir.display()))
}

/// The ledger's payins, by the payer's email.
fn payins_by_email(l: &Value) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for p in l["payin_requests"].as_array().unwrap() {
        out.entry(p["email"].as_str().unwrap().to_string())
            .or_default()
            .push(p.clone());
    }
    out
}

fn results(setup: &Setup) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(find(setup.dir.path(), "results.csv")).unwrap();
    csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .map(Result::unwrap)
        .collect()
}

/// The run's summary.json, checked against its schema.
fn summary(setup: &Setup) -> Value {
    let text = std::fs::read_to_string(find(setup.dir.path(), "summary.json")).unwrap();
    crate::support::assert_summary_schema(&text);
    serde_json::from_str(&text).unwrap()
}

/// The example job (jobs/collect-payins.yaml over examples/payins.csv), against `s`.
fn example(s: &Sandbox) -> (Setup, std::process::Command) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let job = std::fs::read_to_string(repo.join("jobs/collect-payins.yaml"))
        .unwrap()
        .replace("../examples/payins.csv", "people.csv")
        .replace("poll: 10s", "poll: 100ms")
        .replace("dir: ../reports", "dir: reports");
    let csv = std::fs::read_to_string(repo.join("examples/payins.csv")).unwrap();
    let setup = Setup::new(&job, &csv);
    let mut cmd = command(&setup, s);
    cmd.env("HELLOCLEVER_BASE_URL", s.base_url())
        .env("HELLOCLEVER_APP_ID", "sandbox-app")
        .env("HELLOCLEVER_SECRET_KEY", "sandbox-secret");
    (setup, cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payin_example_collects_gives_pay_details_refunds_and_reports_the_money() {
    let s = start(Config {
        payin_delay: Some(Duration::from_millis(300)),
        ..fast(Faults::default())
    })
    .await;
    let (setup, mut cmd) = example(&s);
    // A dry run first: each payin it would ask for, with the external id it would carry.
    let dry = example_again(&setup, &s).arg("--dry-run").output().unwrap();
    assert_exit(&dry, 0);
    let listed = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert_eq!(listed.matches(": POST /v2/payins {").count(), 8, "{listed}");
    let first = "external_id collect-payins-2026-12-collect-INV-2026-0101";
    assert!(listed.contains(first), "{listed}");
    let out = cmd
        .args(["--metrics-file", "payrun.prom"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let prom = std::fs::read_to_string(setup.path("payrun.prom")).unwrap();
    assert!(
        prom.contains(
            "payrun_collected_amount{payrun_job=\"collect-payins\",scope=\"2026-12\",currency=\"AUD\",kind=\"refunded\"} 940.80"
        ),
        "{prom}"
    );
    let l = ledger(&s).await;
    let by_email = payins_by_email(&l);
    let rows = results(&setup);
    assert_eq!(rows.len(), 8);
    assert_eq!(by_email.len(), 8);
    let csv = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/payins.csv"),
    )
    .unwrap();
    let mut input: HashMap<String, HashMap<String, String>> = HashMap::new();
    for r in csv::Reader::from_reader(csv.as_bytes()).deserialize::<HashMap<String, String>>() {
        let r = r.unwrap();
        input.insert(r["invoice"].clone(), r);
    }
    let mut external_ids = std::collections::HashSet::new();
    for row in &rows {
        let want = &input[&row["key"]];
        let payins = &by_email[&want["email"]];
        assert_eq!(payins.len(), 1, "one payin for {}", row["key"]);
        let p = &payins[0];
        assert!(external_ids.insert(p["external_id"].as_str().unwrap().to_string()));
        // The external id the dry run said.
        let said = format!("external_id {}", p["external_id"].as_str().unwrap());
        assert!(listed.contains(&said), "{said}");
        assert_eq!(
            p["amount"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap(),
            want["amount"].parse::<rust_decimal::Decimal>().unwrap()
        );
        // The pay details the payer needs are the provider's, on the row.
        assert_eq!(row["collect_payin_uuid"], p["uuid"].as_str().unwrap());
        assert_eq!(
            row["collect_pay_details"],
            format!("pay_id: {}", p["pay_code"]["pay_id"].as_str().unwrap())
        );
        assert_eq!(row["collect_payin_status"], "received");
        let refund = &want["refund_amount"];
        if refund.is_empty() {
            assert_eq!(row["refund_status"], "skipped");
            assert_eq!(p["refunded"], "0.0");
        } else {
            assert_eq!(row["refund_status"], "succeeded");
            assert_eq!(row["refund_refunded"], *refund);
            assert_eq!(
                p["refunded"]
                    .as_str()
                    .unwrap()
                    .parse::<rust_decimal::Decimal>()
                    .unwrap(),
                refund.parse::<rust_decimal::Decimal>().unwrap()
            );
            assert_eq!(p["status"], "return_pending");
        }
    }
    let total: rust_decimal::Decimal = input
        .values()
        .map(|r| r["amount"].parse::<rust_decimal::Decimal>().unwrap())
        .sum();
    // The closing summary says it too.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "collected AUD {total} of {total} asked, refunded 940.80"
        )),
        "{stdout}"
    );
    let sum = summary(&setup);
    let aud = &sum["collected"]["AUD"];
    assert_eq!(aud["requested"], total.to_string(), "{sum}");
    assert_eq!(aud["collected"], total.to_string());
    assert_eq!(aud["pending"], "0");
    assert_eq!(aud["expired"], "0");
    assert_eq!(aud["refunded"], "940.80");
    let html = std::fs::read_to_string(find(setup.dir.path(), "report.html")).unwrap();
    assert!(html.contains("<table id=\"collected\">") && html.contains("940.80"));
    // Run again: nothing more is asked of anyone, nothing refunded twice.
    let mut again = example_again(&setup, &s);
    assert_exit(&again.output().unwrap(), 0);
    let l = ledger(&s).await;
    assert_eq!(l["payin_requests"].as_array().unwrap().len(), 8);
    assert_eq!(l["requests"]["POST /api/v2/payins/refund"]["200"], 2);
    // Against a provider that no longer lists them (a fresh sandbox), paid payins are not
    // waited for: nothing is asked at all.
    let fresh = start(fast(Faults::default())).await;
    assert_exit(&example_again(&setup, &fresh).output().unwrap(), 0);
    let l = ledger(&fresh).await;
    assert!(
        l["requests"].get("GET /api/v2/payins/all").is_none(),
        "{}",
        l["requests"]
    );
}

fn example_again(setup: &Setup, s: &Sandbox) -> std::process::Command {
    let mut cmd = command(setup, s);
    cmd.env("HELLOCLEVER_BASE_URL", s.base_url())
        .env("HELLOCLEVER_APP_ID", "sandbox-app")
        .env("HELLOCLEVER_SECRET_KEY", "sandbox-secret");
    cmd
}

/// A contact and payin job over `n` people (ann{i}@example.com), waiting `wait` for them
/// to pay.
pub(super) fn payin_job(wait: &str, extra_steps: &str) -> String {
    let job = super::job_text(10, "");
    let head = &job[..job.find("  - id: pay\n").unwrap()];
    format!(
        r#"{head}  - id: collect
    type: payin
    fields:
      currency: AUD
      amount: "{{{{ row.amount }}}}"
      name: "{{{{ row.first }}}} {{{{ row.last }}}}"
      email: "{{{{ row.email }}}}"
      description: "Invoice {{{{ row.id }}}}"
      payin_method_name: au_payid_npp_aud
      payin_method_params: {{ callback_url: "https://example.com/paid" }}
    wait: {{ until: received, {wait}, poll: 100ms }}
{extra_steps}"#
    )
}

/// `n` payers owing 20.00 to 99.99 (the PayID method's range).
pub(super) fn payers(n: usize) -> String {
    let mut s = String::from("id,first,last,email,amount,account\n");
    for i in 0..n {
        s.push_str(&format!(
            "P{i:04},Ann{i},Lee,ann{i}@example.com,{}.{:02},0\n",
            20 + i % 80,
            i % 100
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payins_under_lost_responses_resets_and_5xx_are_one_per_row() {
    let s = start(Config {
        payin_delay: Some(Duration::from_millis(200)),
        ..fast(Faults {
            lost_response_rate: 0.15,
            reset_rate: 0.1,
            error_rate: 0.1,
            listing_lag: Duration::from_millis(300),
            ..Faults::default()
        })
    })
    .await;
    let n = 60;
    let setup = Setup::new(&payin_job("timeout: 20s", ""), &payers(n));
    let out = command(&setup, &s).output().unwrap();
    assert_exit(&out, 0);
    let l = ledger(&s).await;
    let by_email = payins_by_email(&l);
    assert_eq!(by_email.len(), n, "every row asked");
    for i in 0..n {
        let p = &by_email[&format!("ann{i}@example.com")];
        assert_eq!(p.len(), 1, "row {i} asked {} times", p.len());
        assert_eq!(p[0]["status"], "received");
    }
    // Responses were lost: the payins in doubt were found by their external ids.
    let dropped = l["requests"]["POST /api/v2/payins"]["dropped"]
        .as_u64()
        .unwrap_or(0);
    assert!(dropped > 0, "{}", l["requests"]);
    let (resolved,): (i64,) = setup.state_row("SELECT in_doubt_resolved FROM runs");
    assert!(resolved >= dropped as i64, "{resolved} < {dropped}");
    let rows = results(&setup);
    assert!(rows.iter().all(|r| r["collect_payin_status"] == "received"
        && r["collect_pay_details"].starts_with("pay_id: ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_payin_waits_blocked_is_cancelled_and_a_late_payment_is_reconciled() {
    // Nobody pays unless the test says so.
    let s = start(fast(Faults::default())).await;
    let n = 3;
    let setup = Setup::new(&payin_job("timeout: 1s", ""), &payers(n));
    let out = command(&setup, &s).output().unwrap();
    // Not paid is not failed: the rows are blocked, the run says they need a look.
    assert_exit(&out, 1);
    let (blocked, code): (i64, String) = setup.state_row(
        "SELECT COUNT(*), MAX(error_code) FROM items WHERE step = 'collect' AND state = 'blocked'",
    );
    assert_eq!((blocked, code.as_str()), (3, "PAYIN_PENDING"));
    let pending_total: rust_decimal::Decimal = (0..n)
        .map(|i| {
            format!("{}.{:02}", 20 + i % 80, i % 100)
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        summary(&setup)["collected"]["AUD"]["pending"],
        pending_total.to_string()
    );
    // `status` says what payers were asked and what came in.
    let status_out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["status", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&status_out.stdout);
    assert!(
        said.contains(&format!(
            "collected AUD 0 of {pending_total} asked, pending {pending_total}"
        )),
        "{said}"
    );
    let uuid_of = |key: &str| -> String {
        setup
            .state_row::<(String,)>(&format!(
                "SELECT provider_ref FROM items WHERE step = 'collect' AND row_key = '{key}'"
            ))
            .0
    };
    // Cancel one, by its row's key.
    let cancel = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
        cmd.args(["cancel", "job.yaml", "--state", "state.db", "--yes"])
            .args(extra)
            .current_dir(setup.dir.path());
        for (k, v) in setup.env(&s) {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = cancel(&["--payin", "P0000"]);
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("cancelled payin {}", uuid_of("P0000"))),
        "{stdout}"
    );
    let l = ledger(&s).await;
    let status = |l: &Value, uuid: &str| {
        l["payin_requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["uuid"] == uuid)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status(&l, &uuid_of("P0000")), "expired");
    assert_eq!(
        setup
            .state_row::<(String,)>(
                "SELECT state FROM items WHERE step = 'collect' AND row_key = 'P0000'"
            )
            .0,
        "cancelled"
    );
    // A name that is no pending payin is refused, and nothing is cancelled.
    let out = cancel(&["--payin", "P0000"]);
    assert_exit(&out, 2);
    // The second payer pays late: reconcile records it; the third is still pending.
    let c = client();
    let (code, _) = post(
        &c,
        &s,
        "/v2/payins/simulate",
        &serde_json::json!({"uuid": uuid_of("P0001"), "status": "completed"}),
    )
    .await;
    assert_eq!(code, 200);
    let mut rec = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    rec.args(["reconcile", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path());
    for (k, v) in setup.env(&s) {
        rec.env(k, v);
    }
    let out = rec.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("payin pending → received"), "{stdout}");
    let states: (String, String, String) = setup.state_row(
        "SELECT (SELECT state || ' ' || provider_status FROM items WHERE step = 'collect' AND row_key = 'P0000'),
                (SELECT state || ' ' || provider_status FROM items WHERE step = 'collect' AND row_key = 'P0001'),
                (SELECT state || ' ' || provider_status FROM items WHERE step = 'collect' AND row_key = 'P0002')",
    );
    assert_eq!(
        states,
        (
            "cancelled expired".to_string(),
            "succeeded received".to_string(),
            "blocked pending".to_string()
        )
    );
    assert_eq!(
        ledger(&s).await["payin_requests"].as_array().unwrap().len(),
        3
    );
    // Asked again on purpose: --retry-failed sends the cancelled row a new request; the
    // paid and the pending ones are not asked again.
    let cancelled = uuid_of("P0000");
    let out = command(&setup, &s).arg("--retry-failed").output().unwrap();
    assert_exit(&out, 1);
    let l = ledger(&s).await;
    assert_eq!(l["payin_requests"].as_array().unwrap().len(), 4);
    let again = uuid_of("P0000");
    assert_ne!(again, cancelled);
    assert_eq!(status(&l, &again), "pending");
    assert_eq!(payins_by_email(&l)["ann0@example.com"].len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payins_applied_after_the_timeout_and_listed_late_are_asked_once() {
    // Every payin is applied 1.5 s after it arrives — after the client's 1 s timeout — and
    // shows in the listing 2 s after that: the first look (3.5 s after the send) misses it.
    let s = start(Config {
        payin_delay: Some(Duration::from_millis(200)),
        ..fast(Faults {
            late_apply_rate: 1.0,
            late_apply_delay: Duration::from_millis(1500),
            listing_lag: Duration::from_secs(2),
            ..Faults::default()
        })
    })
    .await;
    let n = 20;
    let job = payin_job("timeout: 30s", "")
        .replace("timeout: 2s", "timeout: 1s")
        .replace("settle: 300ms", "settle: 2500ms")
        .replace("settle_recheck: 100ms", "settle_recheck: 1500ms");
    let setup = Setup::new(&job, &payers(n));
    let out = command(&setup, &s).output().unwrap();
    assert_exit(&out, 0);
    let l = ledger(&s).await;
    let by_email = payins_by_email(&l);
    assert_eq!(by_email.len(), n);
    assert!(
        by_email.values().all(|p| p.len() == 1),
        "a payer asked twice"
    );
    // None was sent again: each was found in doubt, by its external id.
    let sent: u64 = l["requests"]["POST /api/v2/payins"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(sent, n as u64);
    let (resolved,): (i64,) = setup.state_row("SELECT in_doubt_resolved FROM runs");
    assert!(
        resolved >= 2 * n as i64,
        "contacts and payins in doubt: {resolved}"
    );
}

/// Makes a payin on `s` by hand, asked again while the sandbox drops the reply (a payin
/// made twice is harmless here): the uuid of the one it answered for.
async fn payin_by_hand(c: &reqwest::Client, s: &Sandbox, body: &Value) -> String {
    for _ in 0..50 {
        if let Some((200, made)) = try_post(c, s, "/v2/payins", body).await {
            return made["uuid"].as_str().unwrap().to_string();
        }
    }
    panic!("the sandbox made no payin in 50 tries");
}

/// Has the payer of payin `uuid` pay it (the sandbox's simulation), asked again while the
/// sandbox drops the reply, until its ledger says received.
async fn paid_by_hand(c: &reqwest::Client, s: &Sandbox, uuid: &str) {
    let body = serde_json::json!({"uuid": uuid, "status": "completed"});
    for _ in 0..50 {
        let _ = try_post(c, s, "/v2/payins/simulate", &body).await;
        let received = ledger(s).await["payin_requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["uuid"] == uuid && p["status"] == "received");
        if received {
            return;
        }
    }
    panic!("payin {uuid} was not paid in 50 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_under_lost_responses_are_made_once_and_a_refunded_payin_is_not_refunded_again() {
    let s = start(Config {
        // Long enough that the payin made unpaid below is still unpaid when a run reads it
        // on a loaded machine (its payer pays it this long after it is made).
        payin_delay: Some(Duration::from_secs(3)),
        ..fast(Faults {
            lost_response_rate: 0.3,
            ..Faults::default()
        })
    })
    .await;
    let n = 20;
    let refund = "  - id: refund\n    type: refund\n    fields:\n      description: Credit note {{ row.id }}\n";
    let setup = Setup::new(&payin_job("timeout: 20s", refund), &payers(n));
    let out = command(&setup, &s).output().unwrap();
    assert_exit(&out, 0);
    let l = ledger(&s).await;
    for p in l["payin_requests"].as_array().unwrap() {
        // Refunded in full, once: a second refund would be over what was paid, or partial.
        assert_eq!(p["refunded"], p["total"], "{p}");
        assert_eq!(p["status"], "return_pending");
    }
    let dropped = l["requests"]["POST /api/v2/payins/refund"]["dropped"]
        .as_u64()
        .unwrap_or(0);
    assert!(dropped > 0, "{}", l["requests"]);
    let rows = results(&setup);
    assert!(
        rows.iter().all(|r| r["refund_status"] == "succeeded"
            && r["refund_refunded"]
                .parse::<rust_decimal::Decimal>()
                .unwrap()
                == r["amount"].parse::<rust_decimal::Decimal>().unwrap()),
        "{rows:?}"
    );
    assert_eq!(
        summary(&setup)["collected"]["AUD"]["refunded"],
        summary(&setup)["collected"]["AUD"]["collected"]
    );

    // A payin refunded by someone else is not refunded by a job that names it.
    let c = client();
    let uuid = l["payin_requests"][0]["uuid"].as_str().unwrap().to_string();
    let other = payin_by_hand(
        &c,
        &s,
        &serde_json::json!({"currency": "PHP", "gst": false, "amount": 500, "name": "Ann",
            "email": "ann0@example.com", "description": "Invoice", "payin_method_name": "ph_bank_maya_php",
            "payin_method_params": {}, "webhook_notification": {}}),
    )
    .await;
    paid_by_hand(&c, &s, &other).await;
    let mut refunded = None;
    for _ in 0..20 {
        let code = try_post(
            &c,
            &s,
            "/v2/payins/refund",
            &serde_json::json!({"uuid": other, "description": "By hand"}),
        )
        .await
        .map(|(code, _)| code);
        if code == Some(200)
            || ledger(&s).await["payin_requests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["uuid"] == other.as_str() && p["refunded"] != "0.0")
        {
            refunded = Some(code);
            break;
        }
    }
    assert!(refunded.is_some());
    let named = "version: 1\nname: refunds\nscope: once\nprovider:\n  kind: helloclever\n  base_url: ${HC_TEST_BASE_URL}\n  app_id: ${HC_TEST_APP_ID}\n  secret_key: ${HC_TEST_SECRET_KEY}\nlimits:\n  timeout: 2s\n  retry: { attempts: 12, base: 5ms, max: 100ms }\n  settle: 300ms\n  settle_recheck: 100ms\ninput: { csv: people.csv, key: id }\nsteps:\n  - id: refund\n    type: refund\n    fields:\n      payin: \"{{ row.payin }}\"\n      description: Credit note\n";
    // And one not paid yet waits for its payer, then is refunded by a later run.
    let expires = (chrono::Utc::now() + chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let unpaid = payin_by_hand(
        &c,
        &s,
        &serde_json::json!({"currency": "PHP", "gst": false, "amount": 700, "name": "Ann",
            "email": "ann0@example.com", "description": "Invoice", "payin_method_name": "ph_bank_maya_php",
            "payin_method_params": {}, "webhook_notification": {}, "expired_at": expires}),
    )
    .await;
    let refunds_before = ledger(&s).await["requests"]["POST /api/v2/payins/refund"].clone();
    let named_setup = Setup::new(
        named,
        &format!("id,payin\nR1,{other}\nR2,{uuid}\nR3,{unpaid}\n"),
    );
    let out = command(&named_setup, &s).output().unwrap();
    assert_exit(&out, 1);
    let (failed, code): (i64, String) =
        named_setup.state_row("SELECT COUNT(*), MAX(error_code) FROM items WHERE state = 'failed'");
    assert_eq!((failed, code.as_str()), (2, "REFUND_EXISTS"));
    let (state, code): (String, String) =
        named_setup.state_row("SELECT state, error_code FROM items WHERE row_key = 'R3'");
    assert_eq!(
        (state.as_str(), code.as_str()),
        ("blocked", "PAYIN_NOT_PAID")
    );
    // No refund was asked for.
    assert_eq!(
        ledger(&s).await["requests"]["POST /api/v2/payins/refund"],
        refunds_before
    );
    let payin_of = |l: &Value| {
        l["payin_requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["uuid"] == unpaid.as_str())
            .unwrap()
            .clone()
    };
    paid_by_hand(&c, &s, &unpaid).await;
    let out = command(&named_setup, &s).output().unwrap();
    assert_exit(&out, 1);
    let (state,): (String,) = named_setup.state_row("SELECT state FROM items WHERE row_key = 'R3'");
    assert_eq!(state, "succeeded");
    let p = payin_of(&ledger(&s).await);
    assert_eq!(p["refunded"], p["total"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_plan_check_a_payin_method_against_the_providers_required_fields() {
    let s = start(fast(Faults::default())).await;
    let check = |job: &str, cmd: &str| {
        let setup = Setup::new(job, &payers(2));
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
        c.args([cmd, "job.yaml"]).current_dir(setup.dir.path());
        if cmd == "plan" {
            c.args(["--state", "state.db"]);
        }
        for (k, v) in setup.env(&s) {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let good = payin_job("timeout: 20s", "");
    let out = check(&good, "validate");
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("AUD 41.01 asked in 2 payins"));
    let out = check(&good, "plan");
    assert_exit(&out, 0);
    let planned = String::from_utf8_lossy(&out.stdout);
    assert!(
        planned.contains("payin totals:\n  AUD 41.01 asked in 2 payins"),
        "{planned}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("payin methods: parameters checked against the provider's, read just now")
    );
    // The provider's record of au_payid_npp_aud marks callback_url Mandatory.
    let missing = good.replace(
        "      payin_method_params: { callback_url: \"https://example.com/paid\" }\n",
        "",
    );
    for cmd in ["validate", "plan"] {
        let out = check(&missing, cmd);
        assert_exit(&out, 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("step 'collect': payin method au_payid_npp_aud requires callback_url in payin_method_params (the provider's required fields)"),
            "{cmd}: {err}"
        );
    }
    let unknown = good.replace("au_payid_npp_aud", "au_payto_npp_aud");
    let out = check(&unknown, "validate");
    assert_exit(&out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the provider offers no payin method 'au_payto_npp_aud'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_payin_fails_and_one_whose_method_cannot_be_cancelled_is_not() {
    let s = start(fast(Faults::default())).await;
    let job = payin_job("timeout: 1s", "")
        .replace("currency: AUD", "currency: JPY")
        .replace("au_payid_npp_aud", "jp_bank_jpy")
        .replace(
            "      payin_method_params: { callback_url: \"https://example.com/paid\" }\n",
            "",
        );
    let yen = "id,first,last,email,amount,account\nY1,Ann,Lee,ann@example.com,1500,0\nY2,Bob,Ng,bob@example.com,2500,0\n";
    let setup = Setup::new(&job, yen);
    assert_exit(&command(&setup, &s).output().unwrap(), 1);
    let uuid = |key: &str| {
        setup
            .state_row::<(String,)>(&format!(
                "SELECT provider_ref FROM items WHERE step = 'collect' AND row_key = '{key}'"
            ))
            .0
    };
    // Y1's payer never pays: the provider ends it expired; the next run's wait fails it.
    let (code, _) = post(
        &client(),
        &s,
        "/v2/payins/simulate",
        &serde_json::json!({"uuid": uuid("Y1"), "status": "failed"}),
    )
    .await;
    assert_eq!(code, 200);
    assert_exit(&command(&setup, &s).output().unwrap(), 1);
    let (state, code): (String, String) = setup
        .state_row("SELECT state, error_code FROM items WHERE step = 'collect' AND row_key = 'Y1'");
    assert_eq!((state.as_str(), code.as_str()), ("failed", "PAYIN_EXPIRED"));
    let yen_totals = &summary(&setup)["collected"]["JPY"];
    assert_eq!(
        (
            yen_totals["requested"].as_str(),
            yen_totals["expired"].as_str(),
            yen_totals["pending"].as_str()
        ),
        (Some("4000"), Some("1500"), Some("2500"))
    );
    // jp_bank_jpy's record says is_cancellable false: Y2 is not cancelled, and says why.
    let mut cancel = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cancel
        .args(["cancel", "job.yaml", "--state", "state.db", "--yes"])
        .current_dir(setup.dir.path());
    for (k, v) in setup.env(&s) {
        cancel.env(k, v);
    }
    let out = cancel.output().unwrap();
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "not cancelled: payin {}: its method jp_bank_jpy does not allow cancelling (is_cancellable is false)",
            uuid("Y2")
        )),
        "{err}"
    );
    let l = ledger(&s).await;
    assert!(
        l["payin_requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["uuid"] == uuid("Y2").as_str() && p["status"] == "pending")
    );
    assert!(l["requests"].get("POST /api/v2/payins/cancel").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payin_example_runs_on_a_postgresql_state_and_cancels_there() {
    let Some(url) = super::postgres::fresh_database() else {
        return;
    };
    let s = start(Config {
        payin_delay: Some(Duration::from_millis(300)),
        ..fast(Faults::default())
    })
    .await;
    let (setup, _) = example(&s);
    let state = ["--state", url.as_str()];
    let key = ("PAYRUN_STATE_KEY", super::postgres::KEY);
    let on_pg = |cmd: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
        c.args([cmd, "job.yaml"])
            .args(state)
            .env(key.0, key.1)
            .env("HELLOCLEVER_BASE_URL", s.base_url())
            .env("HELLOCLEVER_APP_ID", "sandbox-app")
            .env("HELLOCLEVER_SECRET_KEY", "sandbox-secret")
            .current_dir(setup.dir.path());
        c
    };
    let out = on_pg("run").output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        ledger(&s).await["payin_requests"].as_array().unwrap().len(),
        8
    );
    let sum = summary(&setup);
    assert_eq!(sum["collected"]["AUD"]["refunded"], "940.80");
    assert!(
        results(&setup)
            .iter()
            .all(|r| r["collect_pay_details"].starts_with("pay_id: "))
    );
    // Run again: nothing asked twice.
    let out = on_pg("run").output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        ledger(&s).await["payin_requests"].as_array().unwrap().len(),
        8
    );
    // Nothing is left to cancel: every payer has paid.
    let out = on_pg("cancel").arg("--yes").output().unwrap();
    assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("and no payin its payer may still pay"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payin_the_listing_does_not_show_by_the_waits_end_is_not_called_done() {
    // Nobody pays, and new payins show in the listing only after a minute: at the end of
    // a one-second wait nothing is known of them, so they are unpaid, not done.
    let s = start(fast(Faults {
        listing_lag: Duration::from_secs(60),
        ..Faults::default()
    }))
    .await;
    let setup = Setup::new(&payin_job("timeout: 1s", ""), &payers(2));
    assert_exit(&command(&setup, &s).output().unwrap(), 1);
    let (blocked, code): (i64, String) = setup.state_row(
        "SELECT COUNT(*), MAX(error_code) FROM items WHERE step = 'collect' AND state = 'blocked'",
    );
    assert_eq!((blocked, code.as_str()), (2, "PAYIN_PENDING"));
    // The pay details of the request's answer are kept.
    assert!(
        results(&setup)
            .iter()
            .all(|r| r["collect_pay_details"].starts_with("pay_id: "))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_waited_for_its_contact_is_asked_to_pay_once_the_contact_is_fixed() {
    let s = start(Config {
        payin_delay: Some(Duration::from_millis(100)),
        ..fast(Faults::default())
    })
    .await;
    // Contacts are only updated here: a payer who is no contact yet fails that step, and
    // the payin waits for it.
    let job = payin_job("timeout: 20s", "").replace(
        "    type: contact\n",
        "    type: contact\n    mode: update\n",
    );
    let setup = Setup::new(&job, &payers(1));
    assert_exit(&command(&setup, &s).output().unwrap(), 1);
    let (state, code): (String, String) =
        setup.state_row("SELECT state, error_code FROM items WHERE step = 'collect'");
    assert_eq!((state.as_str(), code.as_str()), ("blocked", "WAITING"));
    assert_eq!(
        ledger(&s).await["payin_requests"].as_array().unwrap().len(),
        0
    );
    // The contact is made by hand; the failed contact row goes again, and then its payin.
    let (code, _) = post(
        &client(),
        &s,
        "/v2/contacts",
        &crate::sandbox_support::contact("ann0@example.com"),
    )
    .await;
    assert_eq!(code, 200);
    let out = command(&setup, &s).arg("--retry-failed").output().unwrap();
    assert_exit(&out, 0);
    let l = ledger(&s).await;
    assert_eq!(l["payin_requests"].as_array().unwrap().len(), 1);
    assert_eq!(l["payin_requests"][0]["status"], "received");
}
