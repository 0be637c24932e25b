//! FinHub through the binary: the example, load-time checks, refused credentials, a given token, crashes.

use super::*;

#[test]
fn the_finhub_example_runs_against_the_embedded_sandbox() {
    let d = tempfile::tempdir().unwrap();
    for sub in ["jobs", "examples"] {
        std::fs::create_dir(d.path().join(sub)).unwrap();
    }
    for f in [
        "jobs/finhub-onboarding.yaml",
        "examples/finhub-customers.csv",
    ] {
        std::fs::copy(crate::support::repo().join(f), d.path().join(f)).unwrap();
    }
    let out = crate::support::payrun_in(
        d.path(),
        &["run", "jobs/finhub-onboarding.yaml", "--sandbox"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // The summary says where the rehearsal's state is, and how to see it.
    assert!(
        out.stdout.contains(
            "state: jobs/.payrun/finhub-onboarding.sandbox.db (`payrun status jobs/finhub-onboarding.yaml --sandbox`)"
        ),
        "{}",
        out.stdout
    );
    // The reports' folder as the user would type it, not `jobs/../reports/...`.
    assert!(
        out.stdout
            .contains("reports: reports/sandbox/finhub-onboarding/default/1\n"),
        "{}",
        out.stdout
    );
    let csv = std::fs::read_to_string(
        d.path()
            .join("reports/sandbox/finhub-onboarding/default/latest/results.csv"),
    )
    .unwrap();
    assert_eq!(csv.lines().count(), 51);
    assert_eq!(csv.matches(",succeeded,c-").count(), 50, "{csv}");

    // The rehearsal's state is its own: `status` and `report` show it with --sandbox, and
    // point there without it, creating no state of the real runs.
    let job = "jobs/finhub-onboarding.yaml";
    let real_state = d.path().join("jobs/.payrun/finhub-onboarding.db");
    let out = crate::support::payrun_in(d.path(), &["status", job]);
    // Nothing to show: exit 2, as report and reconcile say it.
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("has no state yet"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`payrun status jobs/finhub-onboarding.yaml --sandbox` shows it"),
        "{}",
        out.stderr
    );
    let out = crate::support::payrun_in(d.path(), &["reconcile", job, "--sandbox"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("rehearsal's provider ended with its run"),
        "{}",
        out.stderr
    );
    let out = crate::support::payrun_in(d.path(), &["status", job, "--sandbox"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("finhub-onboarding.sandbox.db"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().any(|l| l.split_whitespace().eq([
            "kyc-confirmation",
            "succeeded",
            "50"
        ])),
        "{}",
        out.stdout
    );
    let out = crate::support::payrun_in(d.path(), &["report", job]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("--sandbox` shows it"), "{}", out.stderr);
    let out = crate::support::payrun_in(d.path(), &["reconcile", job]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        !real_state.exists(),
        "a command that reads state created it"
    );
    let latest = d
        .path()
        .join("reports/sandbox/finhub-onboarding/default/latest/results.csv");
    std::fs::remove_file(&latest).unwrap();
    let out = crate::support::payrun_in(d.path(), &["report", job, "--sandbox"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(std::fs::read_to_string(&latest).unwrap(), csv);

    // Read by a pipe that closes early (`| head`), status ends quietly.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["status", job, "--sandbox"])
        .current_dir(d.path())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

#[test]
fn finhub_jobs_are_checked_against_the_provider() {
    let validate = |steps: &str| {
        let d = Dir::new(&job(steps, RETRY), &people(2, &[]));
        let out = crate::support::payrun_in(d.0.path(), &["validate", "job.yaml"]);
        assert_eq!(out.code, 2, "{}", out.stdout);
        out.stderr
    };
    let stderr = validate(
        "  - id: c\n    type: contact\n    fields: { email: \"{{ row.email }}\" }\n  - id: e\n    type: export\n    resource: card_payments\n    from: -1d\n    output: { path: x.csv }\n",
    );
    for want in [
        "'contact' is a helloclever step, but the job's provider is finhub",
        "card_payments is exported from helloclever",
    ] {
        assert!(stderr.contains(want), "missing '{want}' in:\n{stderr}");
    }
    // Enum literals are the reference's own, misspellings included.
    let stderr = validate(&format!(
        "{CUSTOMER}  - id: s\n    type: customer_status\n    fields: {{ status: under_verification }}\n"
    ));
    assert!(
        stderr.contains("under_verificaiton") && stderr.contains("under_verification"),
        "{stderr}"
    );
}

#[test]
fn refused_credentials_stop_the_run_and_leave_rows_pending() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(start(config(Faults::default())));
    let d = Dir::new(&job(CUSTOMER, RETRY), &people(40, &[]));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(["run", "job.yaml", "--state", "state.db"])
        .current_dir(d.0.path());
    for (k, v) in Dir::env(&s) {
        cmd.env(k, v);
    }
    cmd.env("FINHUB_TENANT_ID", "someone-else");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("refused payrun's credentials (HTTP 403"),
        "{stderr}"
    );
    let items = d.items();
    assert!(
        items.values().all(|steps| steps["customer"].0 == "pending"),
        "{items:?}"
    );
    // It stopped at once: a few requests in flight at most, not one per row.
    let l = rt.block_on(ledger(&s));
    let refused = l["finhub"]["requests"]["POST /finhub/customer/2.0.0/create"]["403"]
        .as_u64()
        .unwrap_or(0);
    assert!((1..=8).contains(&refused), "{refused} refused requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_token_and_the_unversioned_base_path_work_too() {
    let s = start(config(Faults::default())).await;
    let token: Value = crate::sandbox_support::client()
        .post(format!("{}/oauth/token", s.finhub_url()))
        .json(&json!({"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = job(CUSTOMER, RETRY).replace(
        "  token_url: ${FINHUB_BASE_URL}/oauth/token\n  client_id: ${FINHUB_CLIENT_ID}\n  client_secret: ${FINHUB_CLIENT_SECRET}\n",
        "  base_path: /customer\n  token: ${FINHUB_TOKEN}\n",
    );
    assert!(text.contains("token: ${FINHUB_TOKEN}"));
    let dir = Dir::new(&text, &people(5, &[]));
    let mut env = Dir::env(&s);
    env.push((
        "FINHUB_TOKEN",
        token["access_token"].as_str().unwrap().to_string(),
    ));
    let r = dir.run_with(env).await;
    assert_eq!(r.exit_code, 0, "{}", r.counts);
    let l = ledger(&s).await;
    assert_eq!(customers(&l).len(), 5);
    let unversioned = l["finhub"]["requests"]["POST /finhub/customer/create"]["200"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(unversioned, 5, "{}", l["finhub"]["requests"]);
    assert_eq!(
        l["finhub"]["requests"]["POST /finhub/oauth/token"]["200"].as_u64(),
        Some(1),
        "only the test's own token request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_resume_with_exactly_one_customer_per_row() {
    let s = start(config(Faults {
        lost_response_rate: 0.05,
        latency: Some((Duration::from_millis(1), Duration::from_millis(3))),
        ..Faults::default()
    }))
    .await;
    let n = 150;
    let d = Dir::new(
        &job(&format!("{CUSTOMER}{AFTER}"), RETRY).replace("rate: 500/s", "rate: 300/s"),
        &people(n, &[]),
    );
    let spawn = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
        cmd.args(["run", "job.yaml", "--state", "state.db", "-q"])
            .current_dir(d.0.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in Dir::env(&s) {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let mut rng = fastrand::Rng::with_seed(9);
    for _ in 0..6 {
        let mut child = spawn();
        tokio::time::sleep(Duration::from_millis(rng.u64(50..400))).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let mut code = None;
    for _ in 0..4 {
        code = spawn().wait().unwrap().code();
        if code == Some(0) {
            break;
        }
    }
    assert_eq!(code, Some(0));
    let l = ledger(&s).await;
    let emails: Vec<String> = (0..n).map(|i| format!("ann{i}@example.com")).collect();
    let by_email = exactly_one_each(&l, &emails);
    assert_eq!(customers(&l).len(), n);
    for c in by_email.values() {
        assert_eq!(c["documents"].as_array().unwrap().len(), 1, "{c}");
    }
}
