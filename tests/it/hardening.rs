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

#[test]
fn no_masked_account_number_can_be_brute_forced_from_the_state() {
    use sha2::{Digest, Sha256};
    // The example payroll, planned.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["plan", "jobs/payroll.yaml", "--state"])
        .arg(&state)
        .current_dir(crate::support::repo())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let conn = rusqlite::Connection::open(&state).unwrap();
    let items: Vec<(String, String, String)> = conn
        .prepare("SELECT row_key, payload, content_hash FROM items WHERE step = 'pay'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(items.len(), 20);
    let csv = std::fs::read_to_string(crate::support::repo().join("examples/payroll.csv")).unwrap();
    let key = std::fs::read_to_string(payrun::state::key::key_path(&state)).unwrap();
    assert_eq!(mode(&payrun::state::key::key_path(&state)), 0o600);
    let mut recovered = 0;
    for (row, payload, hash) in &items {
        // What the state shows of the number: its length and last three digits.
        let at = payload.find("\"account_number\":\"").unwrap() + 18;
        let masked: String = payload[at..].chars().take_while(|c| *c != '"').collect();
        let (stars, tail) = (masked.matches('*').count(), &masked[masked.len() - 3..]);
        assert!(stars >= 5, "{masked}");
        // The attack is rebuilt right: with the key (which the attacker lacks), the true
        // number gives the stored hash.
        let truth = csv
            .lines()
            .find(|l| l.starts_with(&format!("{row},")))
            .and_then(|l| l.split(',').nth(24))
            .unwrap();
        let with = |number: &str| payload.replacen(&masked, number, 1);
        let keyed = {
            use hmac::{Hmac, Mac};
            let bytes: Vec<u8> = (0..32)
                .map(|i| u8::from_str_radix(&key.trim()[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let mut mac = Hmac::<Sha256>::new_from_slice(&bytes).unwrap();
            mac.update(with(truth).as_bytes());
            payrun::plan::hex(&mac.finalize().into_bytes())
        };
        assert_eq!(
            &keyed, hash,
            "row {row}: the candidate is built as payrun hashes"
        );
        // Without the key: every number of that length and tail, hashed as the state was
        // before keys.
        for n in 0..10u64.pow(stars as u32) {
            let candidate = format!("{n:0stars$}{tail}");
            if payrun::plan::hex(&Sha256::digest(with(&candidate).as_bytes())) == *hash {
                recovered += 1;
                break;
            }
        }
    }
    assert_eq!(
        recovered, 0,
        "account numbers recovered from the state alone"
    );
}

#[test]
fn a_state_from_before_keys_is_rehashed_as_rows_are_planned_again() {
    use sha2::{Digest, Sha256};
    let f = crate::support::Fixture::standard();
    let plan = |f: &crate::support::Fixture| {
        let out = f.payrun(&["plan", "job.yaml"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    plan(&f);
    // Made as an earlier payrun left it: plain SHA-256 hashes, no key file. (A contact's
    // stored payload is what was hashed: nothing in it is masked.)
    let db = f.state_db();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        let rows: Vec<(i64, String)> = c
            .prepare("SELECT id, payload FROM items WHERE step = 'contact'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (id, payload) in rows {
            let plain = payrun::plan::hex(&Sha256::digest(payload.as_bytes()));
            c.execute(
                "UPDATE items SET content_hash = ?2, state = 'succeeded' WHERE id = ?1",
                rusqlite::params![id, plain],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('hash', 'sha256')",
            [],
        )
        .unwrap();
    }
    std::fs::remove_file(payrun::state::key::key_path(&db)).unwrap();
    let stdout = plan(&f);
    // Not a change, not a conflict: the same rows, now hashed with a key of their own.
    let contact = stdout.lines().find(|l| l.starts_with("contact ")).unwrap();
    assert!(contact.contains("     3 "), "{stdout}");
    assert!(!stdout.contains("conflict:"), "{stdout}");
    let c = rusqlite::Connection::open(&db).unwrap();
    let plain_left: i64 = c
        .prepare("SELECT content_hash, payload FROM items WHERE step = 'contact'")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .filter(|(h, p)| *h == payrun::plan::hex(&Sha256::digest(p.as_bytes())))
        .count() as i64;
    assert_eq!(plain_left, 0);
    assert!(payrun::state::key::key_path(&db).exists());
}

#[test]
fn a_state_whose_key_is_lost_is_refused() {
    let f = crate::support::Fixture::standard();
    assert_eq!(f.payrun(&["plan", "job.yaml"]).code, 0);
    std::fs::remove_file(payrun::state::key::key_path(&f.state_db())).unwrap();
    let out = f.payrun(&["plan", "job.yaml"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains("key file") && out.stderr.contains("is missing"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_record_that_never_ends_is_refused_at_its_line_in_bounded_memory() {
    let setup = Setup::new(&job_text(10, ""), "");
    let validate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
            .args(["validate", "job.yaml"])
            .current_dir(setup.dir.path())
            .output()
            .unwrap()
    };
    // Two good rows, then a quote that is never closed, in a 300 MB file.
    let good = people(3);
    let mut csv = good.lines().take(3).collect::<Vec<_>>().join("\n");
    csv.push_str("\nP0002,\"Ann2,Lee,ann2@example.com,102.02,10000002\n");
    std::fs::write(setup.path("people.csv"), &csv).unwrap();
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(setup.path("people.csv"))
        .unwrap();
    f.set_len(300 << 20).unwrap();
    let out = validate();
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("people.csv:4: the quote opened on line 4 is never closed: the record grows past 1048576 bytes (input.max_record_bytes)"),
        "{stderr}"
    );
    // A line without end (a 10 MB payee name), no quote at all.
    let mut csv = good.lines().take(2).collect::<Vec<_>>().join("\n");
    csv.push_str(&format!(
        "\nP0001,{},Lee,a@example.com,1.00,10000001\n",
        "A".repeat(10 << 20)
    ));
    std::fs::write(setup.path("people.csv"), &csv).unwrap();
    let out = validate();
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("people.csv:3: the record is longer than 1048576 bytes"),
        "{stderr}"
    );
}
