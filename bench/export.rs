//! Export benchmark, by the real `payrun` binary against an in-process sandbox:
//!
//! 1. Throughput: 100,000 card payments (`--seed-data 100000`), no rate limit, one request
//!    at a time: wall time, requests, pages and peak RSS (bounded: records stream to the
//!    file; only their ids are kept, to de-duplicate).
//! 2. Pace: 20,000 card payments with 100 ms of sandbox latency a request and a limit of
//!    50 requests a second, exported one page at a time (`concurrency: 1`) and then with
//!    `concurrency: 8`, alternating: achieved requests a second as a share of the limit
//!    (target at least 0.9 with concurrency 8).
//!
//! Run: `cargo bench --bench export` (N=20000 for a quicker first part; SKIP_THROUGHPUT=1,
//! PACED_N, ROUNDS). Needs `/usr/bin/time` (Debian package `time`) for peak RSS.

use payrun::sandbox::{self, Config};
use std::process::Command;
use std::time::Instant;

fn main() {
    if std::env::var_os("SKIP_THROUGHPUT").is_none() {
        throughput();
    }
    paced();
}

/// What one export run measured.
struct Measured {
    wall: f64,
    rows: i64,
    pages: i64,
    requests: i64,
    rss_kib: u64,
}

/// Runs the export job `job` (YAML) against the sandbox at `base_url` in a fresh folder.
fn export_once(job: &str, base_url: &str, file: &str) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.yaml"), job).unwrap();
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_payrun"))
        .args(["run", "job.yaml", "--state", "state.db", "-q"])
        .env("BENCH_BASE_URL", base_url)
        .current_dir(dir.path())
        .output()
        .expect("/usr/bin/time is needed (apt-get install time)");
    let wall = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "payrun failed:\n{stderr}");
    let rss_kib: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let (rows, pages, requests): (i64, i64, i64) = conn
        .query_row(
            "SELECT e.rows, e.pages, r.requests FROM exports e JOIN runs r ON r.id = e.run_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let lines = std::fs::read_to_string(dir.path().join(file))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(lines as i64, rows, "every row written once");
    Measured {
        wall,
        rows,
        pages,
        requests,
        rss_kib,
    }
}

/// The export job of every card payment of the last 500 days into cards.csv, with these
/// `limits` (YAML flow mapping entries).
fn job(limits: &str) -> String {
    format!(
        r#"version: 1
name: bench-export
provider: {{ kind: helloclever, base_url: "${{BENCH_BASE_URL}}", app_id: sandbox-app, secret_key: sandbox-secret }}
limits: {{ {limits} }}
steps:
  - id: cards
    type: export
    resource: card_payments
    from: -500d
    to: now
    output: {{ path: cards.csv }}
"#
    )
}

/// The number in the environment variable `name`, else `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

/// A sandbox seeded with `n` records of each kind, with `faults`.
fn sandbox(rt: &tokio::runtime::Runtime, n: usize, faults: sandbox::Faults) -> sandbox::Sandbox {
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        sandbox::start(
            l,
            Config {
                seed_data: n,
                faults,
                ..Config::default()
            },
        )
        .await
        .unwrap()
    })
}

/// Part 2: the limit kept busy under latency, one page at a time and eight at once.
fn paced() {
    let (n, rounds) = (env_or("PACED_N", 20_000), env_or("ROUNDS", 2));
    let rt = runtime(2);
    let latency = std::time::Duration::from_millis(100);
    let sb = sandbox(
        &rt,
        n,
        sandbox::Faults {
            latency: Some((latency, latency)),
            ..sandbox::Faults::default()
        },
    );
    let job = |concurrency: u32| job(&format!("rate: 50/s, burst: 1, concurrency: {concurrency}"));
    println!(
        "export of {n} card payments at 100 ms a request, limit 50/s (requests/s as a share of the limit):"
    );
    let mut best = [0f64; 2];
    for round in 1..=rounds {
        for (i, concurrency) in [1u32, 8].into_iter().enumerate() {
            let m = export_once(&job(concurrency), &sb.base_url(), "cards.csv");
            assert_eq!(m.rows as usize, n, "every card payment exported once");
            let rate = m.requests as f64 / m.wall;
            best[i] = best[i].max(rate);
            println!(
                "  round {round}, concurrency {concurrency}: wall {:.2} s, {} requests ({} pages), {rate:.1} requests/s = {:.2} of the limit, peak RSS {:.1} MiB",
                m.wall,
                m.requests,
                m.pages,
                rate / 50.0,
                m.rss_kib as f64 / 1024.0
            );
        }
    }
    println!(
        "best: concurrency 1 {:.2} of the limit, concurrency 8 {:.2} (target >= 0.90)",
        best[0] / 50.0,
        best[1] / 50.0
    );
}

/// Part 1: rows a second with nothing in the way.
fn throughput() {
    let n = env_or("N", 100_000);
    let rt = runtime(1);
    let sb = sandbox(&rt, n, sandbox::Faults::default());
    let job = job("rate: 10000/s, burst: 100, concurrency: 1");
    let m = export_once(&job, &sb.base_url(), "cards.csv");
    assert_eq!(m.rows as usize, n, "every card payment exported once");
    println!("export of {n} card payments (page size 100, no rate limit, one connection):");
    println!(
        "  wall {:.2} s, {:.0} rows/s, {} requests ({} pages), peak RSS {:.1} MiB",
        m.wall,
        n as f64 / m.wall,
        m.requests,
        m.pages,
        m.rss_kib as f64 / 1024.0
    );
}
