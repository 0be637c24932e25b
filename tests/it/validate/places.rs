//! Where diagnostics point, and what they look like (snapshots, --help).

use super::*;

/// A step's diagnostics point into that step, found by its place in `steps`, not by
/// searching the text for its id: `pay` is not `pay_bonus`, and a second step with the same
/// id is the one pointed at.
#[test]
fn a_diagnostic_points_into_its_own_step() {
    let pay = &JOB[JOB.find("  - id: pay\n").unwrap()..];
    let bonus = pay.replace("id: pay\n", "id: pay_bonus\n");
    let job = JOB.replace(pay, &format!("{bonus}{pay}"));
    // The second `pay` step (from line 60) names a column the header lacks.
    let broken = format!(
        "{}{}",
        &job[..job.rfind("{{ row.net_pay }}").unwrap()],
        &job[job.rfind("{{ row.net_pay }}").unwrap()..].replacen("net_pay", "netpay", 1)
    );
    let f = Fixture::new(&broken, &rows());
    assert_invalid(
        &validate(&f),
        &["job.yaml:60:7: field 'pay.amount': template uses column 'netpay'"],
    );
    let twice = job.replace("id: pay_bonus", "id: pay");
    let f = Fixture::new(&twice, &rows());
    assert_invalid(
        &validate(&f),
        &["job.yaml:50:5: step id 'pay' is used twice"],
    );
}

/// A provider takes its own keys only: FinHub's tenant_id in a Hello Clever job is refused
/// at its place, saying which keys Hello Clever takes.
#[test]
fn a_key_of_the_other_provider_is_refused_at_its_place() {
    let job = JOB.replace(
        "  secret_key: ${HC_TEST_SECRET_KEY}\n",
        "  secret_key: ${HC_TEST_SECRET_KEY}\n  tenant_id: acme\n",
    );
    let f = Fixture::new(&job, &rows());
    assert_invalid(
        &validate(&f),
        &[
            "job.yaml:11:3: provider.tenant_id is not a helloclever setting (it takes kind, base_url, app_id, secret_key, callbacks)",
        ],
    );
}

/// What a user sees for a job file with mistakes: every problem at once, each with its
/// place, the line, a caret under the culprit and a suggestion; then the count. A change
/// of layout fails here.
#[test]
fn diagnostics_look_as_they_did() {
    let job = JOB
        .replace("      amount:", "      amont:")
        .replace("type: payout", "type: payuot")
        .replace("  concurrency: 4\n", "  concurency: 4\n");
    let out = validate(&Fixture::new(&job, &rows()));
    assert_eq!(out.code, 2);
    insta::assert_snapshot!("diagnostics_unknown_key", out.stderr);
    let job = JOB
        .replace("      amount:", "      amont:")
        .replace(
            "  secret_key: ${HC_TEST_SECRET_KEY}\n",
            "  secret_key: ${HC_TEST_SECRET_KEY}\n  tenant_id: acme\n",
        )
        .replace("input:\n", "report: { formats: [csv, pdf] }\ninput:\n");
    let out = validate(&Fixture::new(&job, &rows()));
    assert_eq!(out.code, 2);
    insta::assert_snapshot!("diagnostics_every_problem", out.stderr);
    let job = JOB.replace("type: payout", "type: payuot");
    let out = validate(&Fixture::new(&job, &rows()));
    assert_eq!(out.code, 2);
    insta::assert_snapshot!("diagnostics_step_type", out.stderr);
}

/// `--help` of payrun and of each command: what a user reads first.
#[test]
fn help_looks_as_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = String::new();
    for cmd in [
        None,
        Some("validate"),
        Some("plan"),
        Some("run"),
        Some("status"),
        Some("report"),
        Some("reconcile"),
        Some("approve"),
        Some("unlock"),
        Some("cancel"),
        Some("methods"),
        Some("sandbox"),
    ] {
        let args: Vec<&str> = cmd.into_iter().chain(["--help"]).collect();
        let out = payrun_in(dir.path(), &args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        all.push_str(&format!("$ payrun {}\n{}\n", args.join(" "), out.stdout));
    }
    insta::assert_snapshot!("help", all);
}
