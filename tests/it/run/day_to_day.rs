//! What a payroll and onboarding team needs day to day: callbacks, cancelling scheduled
//! payrolls, contacts updated in part.

use super::*;

/// A copy of the example payroll (job, CSV and KYC images) in a folder of its own, with
/// `extra` written under its `provider:` settings.
fn example_payroll(extra_provider: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::create_dir_all(dir.path().join("examples/kyc")).unwrap();
    let job = std::fs::read_to_string(repo.join("jobs/payroll.yaml")).unwrap();
    let job = job.replacen(
        "  secret_key: ${HELLOCLEVER_SECRET_KEY}\n",
        &format!("  secret_key: ${{HELLOCLEVER_SECRET_KEY}}\n{extra_provider}"),
        1,
    );
    // The test sandbox moves statuses in a fraction of a second.
    let job = job
        .replace("timeout: 10m }", "timeout: 10m, poll: 100ms }")
        .replace("timeout: 30m }", "timeout: 30m, poll: 100ms }");
    std::fs::write(dir.path().join("jobs/payroll.yaml"), job).unwrap();
    std::fs::copy(
        repo.join("examples/payroll.csv"),
        dir.path().join("examples/payroll.csv"),
    )
    .unwrap();
    for f in std::fs::read_dir(repo.join("examples/kyc")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(
            f.path(),
            dir.path().join("examples/kyc").join(f.file_name()),
        )
        .unwrap();
    }
    dir
}

/// Runs `payrun ARGS` in `dir` against the sandbox `s`, with JSON logs.
fn payrun_against(
    dir: &Path,
    s: &Sandbox,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(args)
        .args(["--log-format", "json"])
        .current_dir(dir)
        .env("HELLOCLEVER_BASE_URL", s.base_url())
        .env("HELLOCLEVER_APP_ID", "sandbox-app")
        .env("HELLOCLEVER_SECRET_KEY", "sandbox-secret");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Every file under `dir`, as bytes, for a search.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_reach_the_provider_in_kyc_and_payouts_and_the_header_is_never_shown() {
    const HEADER: &str = "Bearer cb-7Q2xv9-never-shown";
    const URL: &str = "https://hooks.example.org/payrun";
    let s = start(fast(Faults::default())).await;
    let dir = example_payroll(
        "  callbacks:\n    endpoint_url: https://hooks.example.org/payrun\n    \
         authorization_header: ${CALLBACK_AUTH}\n",
    );
    let out = payrun_against(
        dir.path(),
        &s,
        &["run", "jobs/payroll.yaml", "--state", "state.db"],
        &[("CALLBACK_AUTH", HEADER)],
    );
    assert_exit(&out, 0);
    let l = ledger(&s).await;
    let kyc = l["kyc_submissions"].as_array().unwrap();
    let payouts = l["payouts"].as_array().unwrap();
    assert!(!kyc.is_empty() && !payouts.is_empty());
    for sent in kyc.iter().chain(payouts) {
        assert_eq!(sent["webhook_as_sent"]["endpoint_url"], URL, "{sent}");
        assert_eq!(sent["webhook_as_sent"]["authorization_header"], HEADER);
    }
    // Nowhere payrun writes: its log, its state, its reports.
    let printed = [out.stdout.clone(), out.stderr.clone()].concat();
    assert!(!String::from_utf8_lossy(&printed).contains("cb-7Q2xv9"));
    for (path, bytes) in all_bytes(dir.path()) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("cb-7Q2xv9"),
            "the header is in {}",
            path.display()
        );
    }
    // An http:// URL is refused where it is written.
    let bad = example_payroll(
        "  callbacks: { endpoint_url: \"http://hooks.example.org\", authorization_header: x }\n",
    );
    let out = payrun_against(bad.path(), &s, &["validate", "jobs/payroll.yaml"], &[]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("provider.callbacks.endpoint_url must be an https:// URL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spreadsheet_dates_and_amounts_are_read_as_the_job_says() {
    let s = start(fast(Faults::default())).await;
    let job = job_text(10, "")
        .replace(
            "dob: \"1990-01-01\"",
            "dob: \"{{ row.dob | date_from('dd/mm/yyyy') }}\"",
        )
        .replace(
            "amount: \"{{ row.amount }}\"",
            "amount: \"{{ row.amount | amount_from('1,234.56') }}\"",
        );
    let good = "id,first,last,email,amount,account,dob\n\
                P1,Ann,Lee,ann@example.com,\"$6,874.07\",11112222,13/03/1985\n\
                P2,Bob,Ng,bob@example.com,AUD 950.5,33334444,1/2/1979\n";
    let setup = Setup::new(&job, good);
    let report = setup.run(&s, false).await;
    assert_eq!(report.exit_code, 0, "{}", report.counts);
    let l = ledger(&s).await;
    let mut dobs: Vec<&str> = l["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["dob"].as_str().unwrap())
        .collect();
    dobs.sort();
    assert_eq!(dobs, ["1979-02-01", "1985-03-13"]);
    let txs = transactions(&l);
    assert_eq!(txs["ann@example.com"], ["6874.07"]);
    assert_eq!(txs["bob@example.com"], ["950.5"]);

    // Values that do not match fail their rows at their line and column, before anything
    // is sent; a pattern that cannot be read fails the job where it is written.
    let bad = "id,first,last,email,amount,account,dob\n\
               P1,Ann,Lee,ann@example.com,\"$6,874.07\",11112222,13/13/1985\n\
               P2,Bob,Ng,bob@example.com,\"$68,74.07\",33334444,01/02/1979\n";
    let setup = Setup::new(&job, bad);
    let out = command(&setup, &s).args(["--dry-run"]).output().unwrap();
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "people.csv:2: column 'dob'",
        "'13/13/1985' is not a real date (read as dd/mm/yyyy)",
        "people.csv:3: column 'amount'",
        "'$68,74.07' is not an amount written like 1,234.56",
    ] {
        assert!(err.contains(needle), "{needle} not in: {err}");
    }
    let setup = Setup::new(&job.replace("dd/mm/yyyy", "dd/mm/yy"), good);
    let out = command(&setup, &s).args(["--dry-run"]).output().unwrap();
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("job.yaml:")
            && err.contains("write yyyy (a two-digit year could be either century)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_mode_changes_only_the_configured_fields_and_creates_nobody() {
    let s = start(fast(Faults::default())).await;
    // Three contacts, created by the usual job.
    let created = Setup::new(&job_text(10, ""), &people(3));
    assert_eq!(created.run(&s, false).await.exit_code, 0);
    // New phone numbers from a file that has nothing else; one email is nobody's.
    let job = r#"version: 1
name: phones
provider: { kind: helloclever, base_url: "${HC_TEST_BASE_URL}", app_id: "${HC_TEST_APP_ID}", secret_key: "${HC_TEST_SECRET_KEY}" }
limits: { rate: 200/s, retry: { attempts: 3, base: 5ms, max: 20ms } }
input: { csv: people.csv, key: email }
steps:
  - id: phones
    type: contact
    mode: update
    fields:
      email: "{{ row.email }}"
      phone: "{{ row.phone }}"
"#;
    let csv = "email,phone\n\
               ann0@example.com,+61 400 000 000\n\
               ann1@example.com,\n\
               nobody@example.com,+61 400 000 002\n";
    let setup = Setup::new(job, csv);
    let out = command(&setup, &s).output().unwrap();
    assert_exit(&out, 1);
    let l = ledger(&s).await;
    let contacts = l["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 3, "nobody was created: {contacts:?}");
    let by_email = |e: &str| contacts.iter().find(|c| c["email"] == e).unwrap().clone();
    let ann0 = by_email("ann0@example.com");
    assert_eq!(ann0["phone"], "+61 400 000 000");
    assert_eq!(
        (ann0["first_name"].as_str(), ann0["city"].as_str()),
        (Some("Ann0"), Some("Sydney"))
    );
    // An empty value is not sent: ann1 keeps her phone.
    assert_eq!(by_email("ann1@example.com")["phone"], "+61412345678");
    // The row of nobody says why, in the run's log.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("CONTACT_NOT_FOUND") && log.contains("mode: update creates none"),
        "{log}"
    );
    // Create mode: a contact that exists is left as it is (another city in the file), a
    // new one is created, and both rows go on to be paid.
    let create = job_text(10, "")
        .replace("name: soak", "name: newcomers")
        .replace(
            "    type: contact\n",
            "    type: contact\n    mode: create\n",
        )
        .replace("city: Sydney", "city: Melbourne");
    assert!(create.contains("mode: create"));
    let mut rows = people(4);
    rows = rows.replace("ann1@", "ann9@");
    let setup = Setup::new(&create, &rows);
    let report = setup.run(&s, false).await;
    assert_eq!(report.exit_code, 0, "{}", report.counts);
    let l = ledger(&s).await;
    let contacts = l["contacts"].as_array().unwrap();
    let city = |e: &str| contacts.iter().find(|c| c["email"] == e).unwrap()["city"].clone();
    assert_eq!(city("ann0@example.com"), "Sydney");
    assert_eq!(city("ann9@example.com"), "Melbourne");
    assert_eq!(city("ann3@example.com"), "Melbourne");
}

/// `payrun ARGS` in the setup's folder with (or without) the sandbox's credentials.
fn payrun_in_setup(
    setup: &Setup,
    s: &Sandbox,
    args: &[&str],
    credentials: bool,
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(args).current_dir(setup.dir.path());
    if credentials {
        for (k, v) in setup.env(s) {
            cmd.env(k, v);
        }
    } else {
        cmd.env("HC_TEST_BASE_URL", s.base_url());
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_lists_the_providers_methods_and_validate_checks_params_against_them() {
    let s = start(fast(Faults::default())).await;
    // A Thai payout that forgets the bank code: a method payrun's own table does not know.
    let job = job_text(10, "")
        .replace(
            "payout_method_name: au_bank_aud",
            "payout_method_name: th_bank_thb",
        )
        .replace("currency: AUD", "currency: THB")
        .replace("bsb: \"062000\", ", "");
    let setup = Setup::new(
        &job,
        &people(2)
            .replace("100.00", "300.00")
            .replace("101.01", "301.01"),
    );
    let out = payrun_in_setup(&setup, &s, &["methods", "job.yaml"], true);
    assert_exit(&out, 0);
    let listed = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "au_bank_aud  AUD",
        "th_bank_thb  THB, 100 to 2000000",
        "required: account_name, account_number, bank_code",
    ] {
        assert!(listed.contains(needle), "{needle} not in:\n{listed}");
    }
    // Without credentials, validate and plan use what `methods` kept.
    let out = payrun_in_setup(&setup, &s, &["validate", "job.yaml"], false);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 problem"));
    let out = payrun_in_setup(&setup, &s, &["plan", "job.yaml"], false);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("payout method th_bank_thb requires bank_code in payout_method_params (the provider's required fields)"),
        "{err}"
    );
    assert!(err.contains("nothing was planned"), "{err}");
    // A fresh folder, no credentials, nothing kept: validate says plainly what it could not do.
    let bare = Setup::new(&job, &people(1));
    let out = payrun_in_setup(&bare, &s, &["validate", "job.yaml"], false);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("the provider's required fields could not be read")
            && said.contains("HC_TEST_APP_ID"),
        "{said}"
    );
    // With credentials, validate reads them from the provider.
    let out = payrun_in_setup(&bare, &s, &["validate", "job.yaml"], true);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires bank_code"));
    // A method the provider does not offer.
    let other = Setup::new(&job.replace("th_bank_thb", "xx_bank_xxx"), &people(1));
    let out = payrun_in_setup(&other, &s, &["validate", "job.yaml"], true);
    assert_exit(&out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the provider offers no payout method 'xx_bank_xxx' (it offers: au_bank_aud, ph_bank_maya_php"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_payroll_is_cancelled_and_paid_again_only_when_asked() {
    let s = start(fast(Faults::default())).await;
    let job = job_text(2, "")
        .replace(
            "      amount: \"{{ row.amount }}\"\n",
            "      amount: \"{{ row.amount }}\"\n      scheduled_at: \"2030-01-01T10:00:00\"\n",
        )
        .replace(
            "    wait: { until: completed, timeout: 20s, poll: 100ms }\n",
            "",
        );
    assert!(job.contains("scheduled_at"));
    let setup = Setup::new(&job, &people(4));
    setup.run(&s, false).await;
    let live = |l: &Value| -> Vec<(String, String)> {
        l["payouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["uuid"].as_str().unwrap().to_string(),
                    b["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let before = live(&ledger(&s).await);
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|(_, st)| st == "scheduled"), "{before:?}");
    // (Not on a terminal: `output()` gives the child no standard input.)
    let cancel = |extra: &[&str]| {
        let mut args = vec!["cancel", "job.yaml", "--state", "state.db"];
        args.extend_from_slice(extra);
        payrun_in_setup(&setup, &s, &args, true)
    };
    // Not on a terminal, without --yes: nothing is cancelled.
    let out = cancel(&[]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --yes"));
    assert_eq!(live(&ledger(&s).await), before);
    // One batch by its uuid.
    let first = before[0].0.clone();
    let out = cancel(&["--batch", &first, "--yes"]);
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 rows recorded as cancelled"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let now = live(&ledger(&s).await);
    assert_eq!(
        now[0],
        (first.clone(), "expired".to_string()),
        "no longer live"
    );
    assert_eq!(now[1].1, "scheduled");
    // The rest: the first is refused as cancelled already, the second goes.
    let out = cancel(&["--yes"]);
    assert_exit(&out, 0);
    let now = live(&ledger(&s).await);
    assert!(now.iter().all(|(_, st)| st == "expired"), "{now:?}");
    let out = cancel(&["--batch", &first, "--yes"]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("was cancelled already"));
    // Status and a reconcile show them cancelled; a run sends nothing again.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["status", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("cancelled") && shown.contains("4"),
        "{shown}"
    );
    let report = setup.run(&s, false).await;
    assert_eq!(
        report.exit_code, 1,
        "cancelled rows are unpaid: {}",
        report.counts
    );
    let counts: Value = serde_json::from_str(&report.counts.json()).unwrap();
    assert_eq!(counts["pay"]["cancelled"], 4);
    assert_eq!(live(&ledger(&s).await).len(), 2, "nothing sent again");
    // Only --retry-failed plans them again: two new batches.
    let report = setup.run(&s, true).await;
    let counts: Value = serde_json::from_str(&report.counts.json()).unwrap();
    assert!(counts["pay"]["cancelled"].is_null(), "{counts}");
    assert_eq!(live(&ledger(&s).await).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_is_not_scheduled_is_not_cancelled() {
    let s = start(Config {
        payout_delay: Duration::from_secs(3600),
        ..fast(Faults::default())
    })
    .await;
    let job = job_text(10, "").replace(
        "    wait: { until: completed, timeout: 20s, poll: 100ms }\n",
        "",
    );
    let setup = Setup::new(&job, &people(2));
    setup.run(&s, false).await;
    let args = ["cancel", "job.yaml", "--state", "state.db", "--yes"];
    let out = payrun_in_setup(&setup, &s, &args, true);
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(", not scheduled (only a batch waiting"),
        "{err}"
    );
    let l = ledger(&s).await;
    assert_ne!(l["payouts"][0]["status"], "expired");
}
