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
