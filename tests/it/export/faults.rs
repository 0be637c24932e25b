//! Exports under faults and signals.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_retry_through_faults_and_still_find_every_record() {
    let faults = Faults {
        error_rate: 0.2,
        lost_response_rate: 0.1,
        reset_rate: 0.05,
        rate_limit: Some(200),
        ..Faults::default()
    };
    let s = start(seeded(450, faults)).await;
    let steps = [
        step("cards", "card_payments", "-500d", "now", "cards.csv"),
        step("payouts", "payouts", "-500d", "now", "payouts.csv"),
    ]
    .concat();
    let text = job(&steps, "500/s").replace("attempts: 3", "attempts: 15");
    let dir = Dir::new(&text);
    let r = dir.run(&s).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.exports);
    assert!(r.stats.retries > 0, "no fault was met");
    let l = ledger(&s).await;
    assert_eq!(
        unique(&ids(&dir.path("out/cards.csv"), "uuid")),
        ledger_ids(&l, "card_payments", None, None)
    );
    assert_eq!(
        unique(&ids(&dir.path("out/payouts.csv"), "batch_uuid")),
        ledger_ids(&l, "payouts", None, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_mid_export_exits_4_and_cleans_up() {
    let s = start(seeded(3000, Faults::default())).await;
    let dir = Dir::new(&job(
        &step("cards", "card_payments", "-500d", "now", "cards.csv"),
        "10/s",
    ));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["run", "job.yaml", "--state", "state.db", "-q"])
        .current_dir(dir.0.path())
        .env("HC_TEST_BASE_URL", s.base_url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let partial = dir.path("out/cards.csv.partial");
    let mut waited = 0;
    while !partial.exists() && waited < 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!partial.exists(), "the partial file was left behind");
    assert!(!dir.path("out/cards.csv").exists());
    let conn = rusqlite::Connection::open(dir.path("state.db")).unwrap();
    let state: String = conn
        .query_row("SELECT state FROM exports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "interrupted");
}
