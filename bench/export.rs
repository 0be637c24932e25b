//! Export benchmark: 100,000 card payments from an in-process sandbox seeded with
//! `--seed-data 100000`, by the real `payrun` binary. Reports wall time, requests, pages and
//! peak RSS (bounded: records stream to the file; only their ids are kept, to de-duplicate).
//!
//! Run: `cargo bench --bench export` (N=20000 for a quicker pass). Needs `/usr/bin/time`
//! (Debian package `time`) for peak RSS.

use payrun::sandbox::{self, Config};
use std::process::Command;
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sb = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        sandbox::start(
            l,
            Config {
                seed_data: n,
                ..Config::default()
            },
        )
        .await
        .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.yaml"),
        r#"version: 1
name: bench-export
provider: { kind: helloclever, base_url: "${BENCH_BASE_URL}", app_id: sandbox-app, secret_key: sandbox-secret }
limits: { rate: 10000/s, burst: 100, concurrency: 1 }
steps:
  - id: cards
    type: export
    resource: card_payments
    from: -500d
    to: now
    output: { path: cards.csv }
"#,
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_payrun"))
        .args(["run", "job.yaml", "--state", "state.db", "-q"])
        .env("BENCH_BASE_URL", sb.base_url())
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
    let lines = std::fs::read_to_string(dir.path().join("cards.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(
        (rows as usize, lines),
        (n, n),
        "every card payment exported once"
    );
    let size = std::fs::metadata(dir.path().join("cards.csv"))
        .unwrap()
        .len();
    println!("export of {n} card payments (page size 100, no rate limit, one connection):");
    println!(
        "  wall {wall:.2} s, {:.0} rows/s, {requests} requests ({pages} pages), file {:.1} MiB, peak RSS {:.1} MiB",
        n as f64 / wall,
        size as f64 / 1048576.0,
        rss_kib as f64 / 1024.0
    );
}
