//! Personal data at rest, files confined to the input, names that cannot climb.

use crate::run::{Setup, assert_exit, command, fast, job_text, people};
use crate::sandbox_support::start;
use payrun::sandbox::Faults;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_payrun_writes_is_owner_only_whatever_the_umask() {
    use std::os::unix::process::CommandExt;
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(3));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(["run", "job.yaml", "--metrics-file", "payrun.prom"])
        .current_dir(setup.dir.path());
    for (k, v) in setup.env(&s) {
        cmd.env(k, v);
    }
    // SAFETY: umask only sets the child's file creation mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    assert_exit(&cmd.output().unwrap(), 0);
    let dir = setup.dir.path();
    assert_eq!(mode(&dir.join(".payrun")), 0o700);
    for entry in std::fs::read_dir(dir.join(".payrun")).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&dir.join("payrun.prom")), 0o600);
    for d in [
        "reports",
        "reports/soak",
        "reports/soak/2026-11",
        "reports/soak/2026-11/1",
    ] {
        assert_eq!(mode(&dir.join(d)), 0o700, "{d}");
    }
    for f in ["results.csv", "summary.json", "junit.xml", "report.html"] {
        let p = dir.join("reports/soak/2026-11/latest").join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    // A collector running as another user can be given the metrics it reads.
    let mut cmd = command(&setup, &s);
    cmd.args(["--metrics-file", "open.prom", "--metrics-mode", "0644"]);
    assert_exit(&cmd.output().unwrap(), 0);
    assert_eq!(mode(&dir.join("open.prom")), 0o644);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_leaves_no_copy_of_the_state_on_disk() {
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(3));
    assert_exit(&command(&setup, &s).output().unwrap(), 0);
    std::fs::write(setup.path("people.csv"), people(5)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = command(&setup, &s)
        .arg("--dry-run")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("POST /v2/contacts {").count(), 2, "{stdout}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let files: Vec<_> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("dry"))
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

#[test]
fn a_scope_or_a_var_that_climbs_is_refused() {
    let job = job_text(10, "").replace(
        "scope: \"2026-11\"",
        "scope: \"{{ vars.period }}\"\nvars: { period: \"2026-11\" }",
    );
    let setup = Setup::new(&job, &people(2));
    for bad in ["..", "2026/11", "../x", "a\nb"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
            .args(["validate", "job.yaml", "--var"])
            .arg(format!("period={bad}"))
            .current_dir(setup.dir.path())
            .output()
            .unwrap();
        assert_exit(&out, 2);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("it names folders"),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!setup.path(".payrun").exists() && !setup.path("reports").exists());
}

#[test]
fn another_applications_sqlite_file_is_refused_and_left_as_it_was() {
    let setup = Setup::new(&job_text(10, ""), &people(2));
    let foreign = setup.path("ledger.db");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT); INSERT INTO accounts (owner) VALUES ('someone');").unwrap();
    }
    let before = std::fs::read(&foreign).unwrap();
    for cmd in ["plan", "status", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
            .args([cmd, "job.yaml", "--state", "ledger.db"])
            .current_dir(setup.dir.path())
            .env("HC_TEST_BASE_URL", "http://127.0.0.1:9/api")
            .env("HC_TEST_APP_ID", "a")
            .env("HC_TEST_SECRET_KEY", "s")
            .output()
            .unwrap();
        assert_exit(&out, 2);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is not a payrun state database"),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        before,
        "the file was changed"
    );
    assert!(!setup.path("ledger.db-wal").exists());
}
