//! The state in PostgreSQL: a real server (`.ci/run` starts a throwaway cluster and names
//! it in `PAYRUN_TEST_PG`), a fresh database per test, the real binary against the
//! sandbox. Without `PAYRUN_TEST_PG` these tests say so and pass, except under `CI=true`,
//! where they fail: CI must run them.

use super::*;
use std::path::Path;
use std::process::{Command, Stdio};

pub(super) const KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// A new, empty database on the test server: its URL (`None`: no server, outside CI).
pub(super) fn fresh_database() -> Option<String> {
    let Some(admin) = std::env::var("PAYRUN_TEST_PG")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "PAYRUN_TEST_PG is not set: .ci/run starts a PostgreSQL cluster for these tests"
        );
        eprintln!("skipped: no PostgreSQL server (set PAYRUN_TEST_PG, as .ci/run does)");
        return None;
    };
    let name = format!("payrun_{:016x}", fastrand::u64(..));
    let sql = format!("CREATE DATABASE {name}");
    let url = admin.clone();
    // The blocking client may not run on the test's async threads.
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client.batch_execute(&sql).unwrap();
    })
    .join()
    .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// Runs SQL on the database at `url` (as the test's administrator).
fn sql(url: &str, text: &str) {
    let (url, text) = (url.to_string(), text.to_string());
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client.batch_execute(&text).unwrap();
    })
    .join()
    .unwrap();
}

/// `payrun ARGS` in the setup's folder, with the sandbox's credentials and the state key.
fn payrun(setup: &Setup, s: &Sandbox, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(args)
        .current_dir(setup.dir.path())
        .env("PAYRUN_STATE_KEY", KEY)
        .env_remove("PAYRUN_STATE")
        .env_remove("PAYRUN_STATE_KEY_FILE");
    for (k, v) in setup.env(s) {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `cmd` to its end (killed, and the test failed, after two minutes: a test here must
/// not hang CI): its exit code and standard error.
fn output(mut cmd: Command) -> (Option<i32>, String) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = within(child, Duration::from_secs(120));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `payrun run job.yaml --state DB` to its end, with `extra` in its environment.
fn run_on(setup: &Setup, s: &Sandbox, db: &str, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    output(payrun(setup, s, &["run", "job.yaml", "--state", db], extra))
}

/// Waits for `child` at most `limit`; kills it and fails past that.
fn within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("payrun did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `cmd` in a PID namespace of its own (`unshare -p -f --mount-proc`), as in a container;
/// as it is where `unshare` cannot (not root), outside CI, which runs as root.
fn in_own_pid_namespace(cmd: Command) -> Command {
    let works = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "true"])
        .status()
        .is_ok_and(|st| st.success());
    if !works {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI runs as root with util-linux: unshare -p must work there"
        );
        eprintln!("no PID namespace (unshare -p needs root): the run shares the test's");
        return cmd;
    }
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["-p", "-f", "--mount-proc"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
}

/// A child stopped with SIGSTOP is continued and killed if the test ends early.
struct Stopped(i32);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signals to a child this test started.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_soak_with_the_state_in_postgresql_pays_every_row_exactly_once() {
    let Some(db) = fresh_database() else { return };
    let faults = Faults {
        latency: Some((Duration::from_millis(1), Duration::from_millis(5))),
        error_rate: 0.10,
        reset_rate: 0.02,
        lost_response_rate: 0.03,
        ..Faults::default()
    };
    let s = start(fast(faults)).await;
    let n = 100;
    let setup = Setup::new(&job_text(10, ""), &people(n));
    let run = || run_on(&setup, &s, &db, &[]);
    let mut last = run();
    for _ in 0..3 {
        if last.0 == Some(0) {
            break;
        }
        last = run();
    }
    assert_eq!(last.0, Some(0), "{}", last.1);
    let l = ledger(&s).await;
    assert_exactly_once(&l, n);
    // Nothing is sent again, and status reads the state back.
    let before = l["requests"].clone();
    assert_eq!(run().0, Some(0));
    let after = ledger(&s).await["requests"].clone();
    assert_eq!(
        after["POST /api/v2/payouts"], before["POST /api/v2/payouts"],
        "a run after the last sends no payout"
    );
    let status = payrun(&setup, &s, &["status", "job.yaml", "--state", &db], &[])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains(&format!("pay          succeeded           {n}")),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_with_the_state_in_postgresql_resume_and_pay_every_row_exactly_once() {
    let Some(db) = fresh_database() else { return };
    let faults = Faults {
        lost_response_rate: 0.05,
        latency: Some((Duration::from_millis(1), Duration::from_millis(3))),
        ..Faults::default()
    };
    let s = start(fast(faults)).await;
    let n = 500;
    let setup = Setup::new(&job_text(25, ""), &people(n));
    let mut rng = fastrand::Rng::with_seed(5);
    let lease = [("PAYRUN_LEASE", "1s")];
    // Requests to the provider's API so far.
    let asked = |l: Value| -> u64 {
        crate::sandbox_support::api_requests(&l)
            .values()
            .flat_map(|by_code| by_code.as_object().unwrap().values())
            .filter_map(Value::as_u64)
            .sum()
    };
    for _ in 0..8 {
        let before = asked(ledger(&s).await);
        let mut child = payrun(&setup, &s, &["run", "job.yaml", "--state", &db], &lease)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed while it sends (a loaded machine may take longer to plan than a fixed
        // pause), or once it has ended by itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while asked(ledger(&s).await) == before
            && child.try_wait().unwrap().is_none()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..300))).await;
        let _ = child.kill(); // SIGKILL: its session ends; its lease stays until it lapses
        let _ = child.wait();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let sent = ledger(&s).await["contacts"].as_array().unwrap().len();
    assert!(sent > 0, "the killed runs got as far as sending contacts");
    let mut last = run_on(&setup, &s, &db, &lease);
    for _ in 0..3 {
        if last.0 == Some(0) {
            break;
        }
        last = run_on(&setup, &s, &db, &lease);
    }
    assert_eq!(last.0, Some(0), "{}", last.1);
    assert_exactly_once(&ledger(&s).await, n);
}

/// A run of five payouts that take an hour, holding the lease (2 s) of its state at `db`
/// and waiting `wait` for them, once it has sent its batch: the sandbox, the setup, the
/// job's text and the running child.
async fn a_holder_waiting(db: &str, wait: &str) -> (Sandbox, Setup, String, std::process::Child) {
    let s = start(Config {
        payout_delay: Duration::from_secs(3600),
        ..fast(Faults::default())
    })
    .await;
    let job = job_text(10, "").replace(
        "wait: { until: completed, timeout: 20s, poll: 100ms }",
        &format!("wait: {{ until: completed, timeout: {wait}, poll: 100ms }}"),
    );
    let setup = Setup::new(&job, &people(5));
    let child = payrun(&setup, &s, &["run", "job.yaml", "--state", db], &LEASE)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        crate::sandbox_support::eventually(|| async {
            !ledger(&s).await["payouts"].as_array().unwrap().is_empty()
        })
        .await
    );
    (s, setup, job, child)
}

/// A lease short enough for a test to see it run out.
const LEASE: [(&str, &str); 1] = [("PAYRUN_LEASE", "2s")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_job_and_scope_across_hosts_and_a_dead_holder_is_taken_over() {
    let Some(db) = fresh_database() else { return };
    // Payouts that take an hour: the first run waits on them.
    let (s, setup, job, mut first) = a_holder_waiting(&db, "30s").await;
    // Another container: a PID namespace of its own, where it is pid 1 (the holder's pid
    // may be 1 in its own too): refused all the same, and it sends nothing.
    let second = payrun(&setup, &s, &["run", "job.yaml", "--state", &db], &LEASE);
    let (code, err) = output(in_own_pid_namespace(second));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("holds the lock"), "{err}");
    assert!(
        err.contains("taken over once its lease runs out (2s without a heartbeat"),
        "{err}"
    );
    assert_eq!(ledger(&s).await["payouts"].as_array().unwrap().len(), 1);
    // `unlock` cannot tell a live holder on another host from a dead one: it waits for
    // the lease as well.
    let (code, err) = output(payrun(
        &setup,
        &s,
        &["unlock", "job.yaml", "--state", &db],
        &LEASE,
    ));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("its lease has not run out"), "{err}");
    // Nor is its history copied away meanwhile.
    let (code, err) = output(payrun(
        &setup,
        &s,
        &["state", "copy", &db, "copy.db"],
        &LEASE,
    ));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("copy it when the run ends"), "{err}");
    // The holder dies without a word: once its lease runs out, the next run goes ahead
    // (and sends nothing twice).
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let quick = job.replace("timeout: 30s", "timeout: 1s");
    std::fs::write(setup.path("job.yaml"), quick).unwrap();
    let (code, err) = run_on(&setup, &s, &db, &LEASE);
    assert!(matches!(code, Some(0 | 1)), "it took the job over: {err}");
    assert_eq!(ledger(&s).await["payouts"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_holder_past_its_lease_records_nothing_more_once_another_took_over() {
    let Some(db) = fresh_database() else { return };
    let (s, setup, _, frozen) = a_holder_waiting(&db, "6s").await;
    let pid = frozen.id() as i32;
    // SAFETY: signals to a child this test started and still holds.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let guard = Stopped(pid);
    std::thread::sleep(Duration::from_millis(2500));
    // Another run takes the lapsed lease over and does the job's work.
    let (code, err) = run_on(&setup, &s, &db, &LEASE);
    assert!(matches!(code, Some(0 | 1)), "it took the job over: {err}");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let out = within(frozen, Duration::from_secs(120));
    std::mem::forget(guard);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(said.contains("lost its lease"), "{said}");
    // One batch, sent once, whatever the frozen run did after it woke.
    assert_eq!(ledger(&s).await["payouts"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_moves_between_sqlite_and_postgresql_and_a_newer_schema_is_refused() {
    let Some(db) = fresh_database() else { return };
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(3));
    // Paid with the state in SQLite.
    let (code, err) = output(payrun(
        &setup,
        &s,
        &["run", "job.yaml", "--state", "local.db"],
        &[],
    ));
    assert_eq!(code, Some(0), "{err}");
    let paid = ledger(&s).await["payouts"].as_array().unwrap().len();
    // Moved to PostgreSQL, with the file's key.
    let key = [("PAYRUN_STATE_KEY_FILE", "local.db.key")];
    let mut copy = payrun(&setup, &s, &["state", "copy", "local.db", &db], &key);
    copy.env_remove("PAYRUN_STATE_KEY");
    let (code, err) = output(copy);
    assert_eq!(code, Some(0), "{err}");
    // A run there sends nothing again.
    let mut again = payrun(&setup, &s, &["run", "job.yaml", "--state", &db], &key);
    again.env_remove("PAYRUN_STATE_KEY");
    let (code, err) = output(again);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ledger(&s).await["payouts"].as_array().unwrap().len(), paid);
    // And back into a new file, which gets the key: nothing sent again either.
    let mut back = payrun(&setup, &s, &["state", "copy", &db, "back.db"], &key);
    back.env_remove("PAYRUN_STATE_KEY");
    assert_eq!(output(back).0, Some(0));
    let (code, err) = output(payrun(
        &setup,
        &s,
        &["run", "job.yaml", "--state", "back.db"],
        &[],
    ));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ledger(&s).await["payouts"].as_array().unwrap().len(), paid);
    // A target that holds plans already is refused.
    let mut twice = payrun(&setup, &s, &["state", "copy", "local.db", &db], &key);
    twice.env_remove("PAYRUN_STATE_KEY");
    let (code, err) = output(twice);
    assert_eq!(code, Some(2));
    assert!(err.contains("holds 1 plan(s) already"), "{err}");
    // A database of a newer payrun is left alone.
    sql(&db, "UPDATE schema_version SET version = 999");
    let mut newer = payrun(&setup, &s, &["status", "job.yaml", "--state", &db], &key);
    newer.env_remove("PAYRUN_STATE_KEY");
    let (code, err) = output(newer);
    assert_ne!(code, Some(0));
    assert!(err.contains("newer than this payrun's"), "{err}");
}

/// Every item of a plan, in file order, as the store keeps it: step, key, line, state,
/// version, payload, amount, currency, external id, and its batch's number and external
/// id (content hashes are keyed with each state's own key).
fn items_of(path: &Path) -> Vec<Vec<Option<String>>> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut stmt = c
        .prepare(
            "SELECT i.step, i.row_key, i.row_line, i.state, i.version, i.payload,
                    i.amount, i.currency, i.external_id, b.seq, b.external_id
             FROM items i LEFT JOIN batches b ON b.id = i.batch_id ORDER BY i.row_line, i.row_key, i.step",
        )
        .unwrap();
    stmt.query_map([], |r| {
        (0..11)
            .map(|i| {
                r.get::<_, Option<rusqlite::types::Value>>(i).map(|v| {
                    v.map(|v| match v {
                        rusqlite::types::Value::Integer(n) => n.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// A plan's digest as `payrun plan` prints it.
fn digest_said(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in: {text}"))
        .to_string()
}

/// Plans are written to PostgreSQL in bulk (`COPY`, many rows at a time) and to SQLite a
/// statement per 128 rows: a file planned, changed and planned again must leave the same
/// items, batches and digest in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_planned_and_planned_again_is_kept_alike_in_postgresql_and_sqlite() {
    let Some(db) = fresh_database() else { return };
    let s = start(fast(Faults::default())).await;
    // More rows than a bulk write takes at once: some bulk writes follow each other, others
    // have a batch opened between them.
    let setup = Setup::new(&job_text(1000, ""), &people(2500));
    let plan_both = |label: &str| {
        let mut said = Vec::new();
        for state in [db.as_str(), "state.db"] {
            let out = payrun(&setup, &s, &["plan", "job.yaml", "--state", state], &[])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{label}, {state}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            said.push(digest_said(&out));
        }
        assert_eq!(said[0], said[1], "{label}: the same digest in both stores");
    };
    plan_both("first plan");
    // A row changed, one gone, and 1,300 new rows after the others: looked up and written
    // between each other's bulk writes.
    let mut rows: Vec<String> = people(3800).lines().map(str::to_string).collect();
    rows[6] = rows[6].replace("Ann5,", "Anne5,");
    rows.remove(8);
    std::fs::write(setup.path("people.csv"), rows.join("\n") + "\n").unwrap();
    plan_both("second plan");
    let mut copy = payrun(&setup, &s, &["state", "copy", &db, "copied.db"], &[]);
    copy.env_remove("PAYRUN_STATE_KEY_FILE");
    let (code, err) = output(copy);
    assert_eq!(code, Some(0), "{err}");
    let (pg, lite) = (
        items_of(&setup.path("copied.db")),
        items_of(&setup.path("state.db")),
    );
    assert_eq!(lite.len(), 2 * 3800, "two items a row, the gone row's kept");
    assert_eq!(pg.len(), lite.len());
    if let Some((p, l)) = pg.iter().zip(&lite).find(|(p, l)| p != l) {
        panic!("PostgreSQL keeps {p:?}\nwhere SQLite keeps {l:?}");
    }
    let changed: Vec<_> = lite
        .iter()
        .filter(|i| i[1].as_deref() == Some("P0005"))
        .map(|i| i[4].clone())
        .collect();
    assert_eq!(
        changed,
        [Some("2".to_string()), Some("2".to_string())],
        "P0005's new version"
    );
}

#[test]
fn two_hosts_starting_at_once_migrate_one_database_once() {
    let Some(db) = fresh_database() else { return };
    let f = crate::support::Fixture::standard();
    let plans: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_payrun"))
                .args(["plan", "job.yaml", "--state", &db, "--var"])
                .arg(format!("period=2026-0{}", i + 1))
                .current_dir(f.dir.path())
                .env("PAYRUN_STATE_KEY", KEY)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in plans {
        let out = within(p, Duration::from_secs(120));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The script that starts, restarts and stops a throwaway cluster.
const PG_CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/pg-cluster");

/// A PostgreSQL cluster of a test's own (`.ci/pg-cluster`), which it may restart; stopped
/// and removed when dropped.
struct Cluster {
    dir: String,
    url: String,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    fn start_with(env: &[(&str, &Path)]) -> Cluster {
        let mut cmd = Command::new(PG_CLUSTER);
        cmd.arg("start");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (dir, url) = said.trim().split_once(' ').unwrap();
        Cluster {
            dir: dir.to_string(),
            url: url.to_string(),
        }
    }

    fn restart(&self) {
        let st = Command::new(PG_CLUSTER)
            .args(["restart", &self.dir])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(PG_CLUSTER).args(["stop", &self.dir]).status();
    }
}

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's postgresql brings it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_checked_as_libpq_users_expect() {
    if fresh_database().is_none() {
        return;
    }
    // A private authority, and a server certificate it signed for `localhost` only.
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=payrun test authority",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    let cluster = Cluster::start_with(&[("PG_SSL_DIR", dir)]);
    let by_ip = cluster.url.clone();
    let by_name = by_ip.replace("127.0.0.1", "localhost");
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(2));
    let run = |url: String| run_on(&setup, &s, &url, &[]);
    // The authority's own: the chain and the name both hold.
    let (code, err) = run(format!("{by_name}?sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(code, Some(0), "{err}");
    // Not among the system's roots: refused, before anything is sent.
    let (code, err) = run(format!("{by_name}?sslmode=verify-full"));
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains("cannot take the run's lease: postgresql://postgres@localhost")
            && err.contains("cannot connect")
            && err.contains("UnknownIssuer"),
        "{err}"
    );
    // The chain holds but the name does not: verify-full refuses, verify-ca (libpq's
    // meaning: any server the authority signed) goes ahead.
    let (code, err) = run(format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("certificate"), "{err}");
    let (code, err) = run(format!("{by_ip}?sslmode=verify-ca&sslrootcert={ca}"));
    assert_eq!(code, Some(0), "{err}");
    // require: encrypted, the certificate taken as it is.
    let (code, err) = run(format!("{by_ip}?sslmode=require"));
    assert_eq!(code, Some(0), "{err}");
    // A file that is not there, a mode libpq does not have: said plainly.
    let (code, err) = run(format!(
        "{by_ip}?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"
    ));
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("sslrootcert /nonexistent/ca.pem"), "{err}");
    let (code, err) = run(format!("{by_ip}?sslmode=verify-everything"));
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("sslmode=verify-everything is not one of"),
        "{err}"
    );
    assert_eq!(
        ledger(&s).await["payouts"].as_array().unwrap().len(),
        1,
        "paid once, in the first run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restarted_mid_run_stops_the_run_and_the_next_resolves_what_it_left() {
    // A server of its own to restart (the shared one serves the other tests): there is one
    // to start wherever there is a test server.
    if fresh_database().is_none() {
        return;
    }
    let cluster = Cluster::start();
    let db = cluster.url.clone();
    let s = start(fast(Faults {
        latency: Some((Duration::from_millis(40), Duration::from_millis(60))),
        ..Faults::default()
    }))
    .await;
    let n = 40;
    let setup = Setup::new(&job_text(1, ""), &people(n));
    let child = payrun(&setup, &s, &["run", "job.yaml", "--state", &db], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once payouts are going out, the server restarts: every connection is cut, and for a
    // moment none is taken.
    assert!(
        crate::sandbox_support::eventually(|| async {
            ledger(&s).await["payouts"].as_array().unwrap().len() >= 3
        })
        .await
    );
    cluster.restart();
    let out = within(child, Duration::from_secs(120));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "the run stops: {said}");
    assert!(
        !said.contains("panicked") && said.contains("state"),
        "it says the state failed: {said}"
    );
    let paid_before = ledger(&s).await["payouts"].as_array().unwrap().len();
    assert!(paid_before < n, "it stopped part-way: {paid_before} of {n}");
    // The next run resolves what was in flight and pays the rest: each row once.
    let mut last = run_on(&setup, &s, &db, &[]);
    for _ in 0..2 {
        if last.0 == Some(0) {
            break;
        }
        last = run_on(&setup, &s, &db, &[]);
    }
    assert_eq!(last.0, Some(0), "{}", last.1);
    assert_exactly_once(&ledger(&s).await, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_row_held_by_a_stuck_transaction_is_waited_for_a_bounded_time() {
    let Some(db) = fresh_database() else { return };
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(2));
    let run = || run_on(&setup, &s, &db, &LEASE);
    assert_eq!(run().0, Some(0));
    // Another session locks the lease row and then does nothing (a client stuck inside its
    // transaction, with no idle limit of its own): it holds the row until it ends.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let url = db.clone();
    let stuck = std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("SELECT 1 FROM leases FOR UPDATE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        tx.rollback().unwrap();
    });
    locked_rx.recv().unwrap();
    // The next run waits for the row no longer than twice its lease, then says it is held.
    let started = std::time::Instant::now();
    let (code, err) = run();
    let waited = started.elapsed();
    release_tx.send(()).unwrap();
    stuck.join().unwrap();
    assert_eq!(code, Some(3), "{err}");
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    // Once the row is free, the job runs again (nothing left to send).
    assert_eq!(run().0, Some(0));
}
