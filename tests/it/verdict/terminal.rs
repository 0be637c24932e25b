//! On a terminal: progress bars, and the plan table's layout.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_bars_count_rows_and_say_what_they_wait_for() {
    // `script` gives the run a terminal (util-linux, on Debian and in CI).
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has util-linux's script"
        );
        eprintln!("skipped: no `script` to give payrun a terminal");
        return;
    }
    let s = start(payrun::sandbox::Config {
        payout_delay: std::time::Duration::from_secs(2),
        ..fast(Faults::default())
    })
    .await;
    let setup = Setup::new(&job_text(10, ""), &people(12));
    let in_a_terminal = || {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec"])
            .arg(format!(
                "{} run job.yaml --state state.db",
                env!("CARGO_BIN_EXE_payrun")
            ))
            .arg("/dev/null")
            .current_dir(setup.dir.path())
            .env("TERM", "xterm");
        for (k, v) in setup.env(&s) {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_exit(&out, 0);
        String::from_utf8_lossy(&out.stdout).replace('\r', "\n")
    };
    let shown = in_a_terminal();
    assert!(shown.contains("12/12 rows"), "{shown}");
    assert!(
        shown.contains("waiting for 2 payout batch(es) to complete"),
        "{shown}"
    );
    // A run with nothing to do shows no bar at all.
    let again = in_a_terminal();
    assert!(!again.contains("0/0"), "{again}");
    assert!(
        !again.contains("/0 rows") && !again.contains('['),
        "{again}"
    );
}

#[test]
fn the_plan_table_fits_a_long_step_id() {
    let setup = Setup::new(
        &job_text(10, "").replace("- id: contact", "- id: contact_for_every_employee"),
        &people(2),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["plan", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header = stdout.lines().find(|l| l.starts_with("step ")).unwrap();
    let row = stdout
        .lines()
        .find(|l| l.starts_with("contact_for_every_employee"))
        .unwrap();
    assert_eq!(header.find(" type"), row.find(" contact "), "{stdout}");
    assert_eq!(header.len(), row.len(), "{stdout}");
}
