//! What payrun says is what happened: exit codes, the closing summary, logs and reports an
//! operator can act on.

use crate::run::{Setup, assert_exit, command, fast, job_text, people, run_with};
use crate::sandbox_support::{ledger, start};
use payrun::sandbox::Faults;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_base_path_stops_the_run_with_every_row_pending() {
    let s = start(fast(Faults::default())).await;
    let n = 60;
    let setup = Setup::new(&job_text(10, ""), &people(n));
    // The base URL without its `/api`: every request is a 404.
    let root = s.base_url().trim_end_matches("/api").to_string();
    let (code, stderr) = run_with(&setup, &s, "HC_TEST_BASE_URL", &root);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("refused 5 rows in a row the same way (HTTP_404")
            && stderr.contains("check provider.base_url"),
        "{stderr}"
    );
    let (not_pending, requests): (i64, i64) = setup.state_row(
        "SELECT (SELECT COUNT(*) FROM items WHERE state != 'pending'), requests FROM runs",
    );
    assert_eq!(not_pending, 0, "no row is failed for the job's mistake");
    assert!(requests < n as i64, "{requests} requests");
    // With the right URL, the next run does everything.
    let out = command(&setup, &s).output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(ledger(&s).await["contacts"].as_array().unwrap().len(), n);
}
