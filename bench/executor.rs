//! Executor benchmarks, against in-process sandboxes, running the real `payrun` binary:
//!
//! 1. overhead: 20,000-row onboarding job, faults off, no rate limit, concurrency 8; payrun
//!    rows/s next to `wrk` requests/s on the same endpoint with the same concurrency, in nine
//!    alternating rounds (best against best, and the median of the rounds' ratios);
//! 2. rate accuracy: job limit 50/s (default burst) against a sandbox enforcing 50/s,
//!    2,000 rows;
//! 3. latency hiding: sandbox latency 200 ms, limit 100/s, concurrency 32, 2,000 rows;
//! 4. resume: re-run of a completed 100,000-row job (wall time, requests).
//!
//! 5. with `BENCH_PG=postgresql://…` (a server whose role may create databases): the
//!    overhead job with the state in PostgreSQL next to SQLite, alternating, with the
//!    round trips to PostgreSQL per row and the CPU time of payrun, of the sandbox and —
//!    when the server runs on this machine and its data directory is readable — of the
//!    server.
//!
//! `BENCH_CPUS=0` (a list, `0,1`) keeps this process, its sandboxes and the payrun runs on
//! those CPUs: with the PostgreSQL server moved to the others (`taskset -a -p -c 1 PID` of
//! its postmaster), the server has cores of its own, as on a host of its own.
//!
//! Run: `cargo bench --bench executor` (needs `wrk`). SKIP_SLOW=1 skips 2 and 3; SKIP_WRK=1
//! skips 1 and 4.

use payrun::sandbox::{self, Config, Faults, Sandbox};

/// The sandboxes here run in this process: with the allocator of the `payrun` binary, they
/// are the sandbox `payrun sandbox` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Rounds of the overhead measurement.
const ROUNDS: usize = 9;

fn job(rate: &str, burst: u32, concurrency: u32) -> String {
    format!(
        r#"version: 1
name: bench
provider: {{ kind: helloclever, base_url: "${{BENCH_BASE_URL}}", app_id: sandbox-app, secret_key: sandbox-secret }}
limits: {{ rate: {rate}, burst: {burst}, concurrency: {concurrency}, timeout: 30s, retry: {{ attempts: 8, base: 50ms, max: 2s }} }}
input: {{ csv: contacts.csv, key: id }}
steps:
  - id: contact
    type: contact
    fields:
      email: "{{{{ row.email }}}}"
      first_name: Luxy
      last_name: Tran
      type: individual
      dob: "1991-12-24"
      phone: "+6123224242"
      gender: male
      street: 338 George Street
      city: Sydney
      postal_code: "2000"
      state: NSW
      country: AU
"#
    )
}

fn csv(dir: &Path, n: usize) {
    let mut s = String::from("id,email\n");
    for i in 0..n {
        s.push_str(&format!("C{i:06},c{i}@bench.example.com\n"));
    }
    std::fs::write(dir.join("contacts.csv"), s).unwrap();
}

struct Measured {
    wall: f64,
    requests: i64,
    rate_limited: i64,
    code: i32,
}

fn run_payrun(dir: &Path, sb: &Sandbox) -> Measured {
    run_payrun_at(dir, sb, "state.db").0
}

/// A run with its state at `state` (a file in `dir`, or a PostgreSQL URL); also the round
/// trips to PostgreSQL its log reports.
fn run_payrun_at(dir: &Path, sb: &Sandbox, state: &str) -> (Measured, u64) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["run", "job.yaml", "--state", state])
        .env("BENCH_BASE_URL", sb.base_url())
        .env(
            "PAYRUN_STATE_KEY",
            "be0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0c",
        )
        .current_dir(dir)
        .output()
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    let trips = log
        .split("state_round_trips=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    if !state.ends_with(".db") {
        return (
            Measured {
                wall,
                requests: 0,
                rate_limited: 0,
                code: out.status.code().unwrap_or(-1),
            },
            trips,
        );
    }
    let conn = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    let (requests, rate_limited) = conn
        .query_row(
            "SELECT requests, rate_limited FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    (
        Measured {
            wall,
            requests,
            rate_limited,
            code: out.status.code().unwrap_or(-1),
        },
        0,
    )
}

/// A new database on the server at `admin`: its URL.
fn fresh_database(admin: &str, name: &str) -> String {
    let (admin, name) = (admin.to_string(), name.to_string());
    let url = admin.clone();
    let db = name.clone();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    })
    .join()
    .unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

fn setup(name: &str, n: usize, job_text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-exec-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("job.yaml"), job_text).unwrap();
    csv(&dir, n);
    dir
}

const WRK_SCRIPT: &str = r#"
local counter = 0
local id = 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function()
  counter = counter + 1
  local body = string.format('{"email":"wrk-%d-%d@example.com","first_name":"Luxy","last_name":"Tran","type":"individual","dob":"1991-12-24","reg_no":"1","phone":"+6123224242","gender":"male","street":"338 George Street","city":"Sydney","postal_code":"2000","state":"NSW","country":"AU"}', tid, counter)
  return wrk.format("POST", nil, {["content-type"]="application/json", ["app-id"]="sandbox-app", ["secret-key"]="sandbox-secret"}, body)
end
"#;

/// CPU seconds (user and system) used so far by this process (`RUSAGE_SELF`: the in-process
/// sandboxes, since the main thread only waits) or by its waited-for children
/// (`RUSAGE_CHILDREN`: payrun, wrk).
fn cpu(who: libc::c_int) -> f64 {
    // SAFETY: a zeroed `rusage` is a valid value, and getrusage only writes into it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// CPU of `f` in microseconds: (children's, this process's).
fn cpu_of<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (c0, s0) = (cpu(libc::RUSAGE_CHILDREN), cpu(libc::RUSAGE_SELF));
    let out = f();
    let (c1, s1) = (cpu(libc::RUSAGE_CHILDREN), cpu(libc::RUSAGE_SELF));
    (out, (c1 - c0) * 1e6, (s1 - s0) * 1e6)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// wrk's requests per second, and how many requests it made.
fn wrk(url: &str, connections: u32) -> (f64, f64) {
    let script = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-exec.lua");
    std::fs::write(&script, WRK_SCRIPT).unwrap();
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c",
            &connections.to_string(),
            "-d",
            "3s",
            "-s",
            script.to_str().unwrap(),
            url,
        ])
        .output()
        .expect("wrk is needed: apt-get install wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("wrk prints Requests/sec");
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .expect("wrk prints its number of requests");
    (rate, requests)
}

/// Keeps this thread — and the threads and processes it starts from now on — on `cpus`
/// (`0,1`).
fn pin(cpus: &str) {
    // SAFETY: a zeroed `cpu_set_t` is an empty set, CPU_SET writes inside it, and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus.split(',') {
            libc::CPU_SET(
                cpu.trim().parse().expect("BENCH_CPUS: CPU numbers"),
                &mut set,
            );
        }
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "BENCH_CPUS: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// CPU seconds the PostgreSQL server at `admin` and its finished sessions have used, when
/// it runs on this machine and its data directory is readable (else `None`).
fn server_cpu(admin: &str) -> Option<f64> {
    let url = admin.to_string();
    let dir: String = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).ok()?;
        c.query_one("SHOW data_directory", &[])
            .ok()
            .map(|r| r.get(0))
    })
    .join()
    .ok()??;
    let pid = std::fs::read_to_string(Path::new(&dir).join("postmaster.pid")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.lines().next()?)).ok()?;
    // Fields after the command's closing parenthesis: utime, stime, cutime, cstime are the
    // 14th to 17th of the line, so the 12th to 15th after it.
    let rest = stat.rsplit_once(')')?.1;
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf reads a constant.
    Some(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

fn main() {
    if let Ok(cpus) = std::env::var("BENCH_CPUS") {
        pin(&cpus);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let start = |config: Config| {
        rt.block_on(async {
            sandbox::start(
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                config,
            )
            .await
            .unwrap()
        })
    };
    let skip_slow = std::env::var("SKIP_SLOW").is_ok();
    let skip_wrk = std::env::var("SKIP_WRK").is_ok();

    // 1. Overhead: rounds of one payrun run and one wrk run, each against a fresh sandbox
    // (a sandbox's ledger grows with every contact), alternating so that a noisy phase of
    // the machine hits both.
    // CPU per request (µs) of each round: payrun's per row, the sandbox's behind it, wrk's,
    // the sandbox's behind wrk. Both share the machine's cores with their sandbox.
    let mut rounds = Vec::new();
    let mut cpus: Vec<[f64; 4]> = Vec::new();
    for _ in 0..if skip_wrk { 0 } else { ROUNDS } {
        let sb = start(Config::default());
        let dir = setup("overhead", 20_000, &job("1000000/s", 1000, 8));
        let (m, payrun_cpu, sb_cpu) = cpu_of(|| run_payrun(&dir, &sb));
        assert_eq!(m.code, 0);
        assert_eq!(m.requests, 20_000);
        let wrk_sb = start(Config::default());
        let ((wrk_rate, wrk_requests), wrk_cpu, wrk_sb_cpu) = cpu_of(|| {
            let _guard = rt.enter();
            wrk(&format!("{}/v2/contacts", wrk_sb.base_url()), 8)
        });
        let payrun_rate = 20_000.0 / m.wall;
        let per = [
            payrun_cpu / 20_000.0,
            sb_cpu / 20_000.0,
            wrk_cpu / wrk_requests,
            wrk_sb_cpu / wrk_requests,
        ];
        println!(
            "   round: payrun {payrun_rate:.0} rows/s ({:.2} s for 20,000 rows), wrk {wrk_rate:.0} req/s: ratio {:.2}; CPU per request: payrun {:.0} µs + sandbox {:.0}, wrk {:.0} + sandbox {:.0}",
            m.wall,
            payrun_rate / wrk_rate,
            per[0],
            per[1],
            per[2],
            per[3]
        );
        rounds.push((payrun_rate, wrk_rate));
        cpus.push(per);
    }
    if !skip_wrk {
        let best_payrun = rounds.iter().map(|r| r.0).fold(0.0, f64::max);
        let best_wrk = rounds.iter().map(|r| r.1).fold(0.0, f64::max);
        println!(
            "1. overhead: payrun best {best_payrun:.0} rows/s ({:.2} s for 20,000 rows, durable state) vs wrk best {best_wrk:.0} req/s, same endpoint, 8 connections: ratio best/best {:.2}, median of rounds {:.2} (target >= 0.5)",
            20_000.0 / best_payrun,
            best_payrun / best_wrk,
            median(rounds.iter().map(|(p, w)| p / w).collect())
        );
        let m: Vec<f64> = (0..4)
            .map(|i| median(cpus.iter().map(|c| c[i]).collect()))
            .collect();
        println!(
            "   CPU per request, medians: payrun {:.0} µs (plan, durable state, reports included) + sandbox {:.0}; wrk {:.0} + sandbox {:.0}. With every core busy the ratio would be {:.2}",
            m[0],
            m[1],
            m[2],
            m[3],
            (m[2] + m[3]) / (m[0] + m[1])
        );
    }

    if !skip_slow {
        // 2. Rate accuracy.
        let sb = start(Config {
            faults: Faults {
                rate_limit: Some(50),
                ..Faults::default()
            },
            ..Config::default()
        });
        // The default burst (5): it lets the permits after a late one catch up, and the
        // pacer's window keeps any second to 50.
        let dir = setup("rate", 2_000, &job("50/s", 5, 8));
        let m = run_payrun(&dir, &sb);
        println!(
            "2. rate accuracy: 2,000 rows at a 50/s limit against a sandbox enforcing 50/s: {:.2} s, achieved {:.2} req/s = {:.1}% of 50/s, 429s: {} (target >= 98%, no 429s), exit {}",
            m.wall,
            m.requests as f64 / m.wall,
            100.0 * m.requests as f64 / m.wall / 50.0,
            m.rate_limited,
            m.code
        );

        // 3. Latency hiding.
        let lat = Duration::from_millis(200);
        let sb = start(Config {
            faults: Faults {
                latency: Some((lat, lat)),
                ..Faults::default()
            },
            ..Config::default()
        });
        let dir = setup("latency", 2_000, &job("100/s", 10, 32));
        let m = run_payrun(&dir, &sb);
        println!(
            "3. latency hiding: 200 ms latency, 100/s, concurrency 32: 2,000 rows in {:.2} s = {:.1} rows/s (target >= 95), exit {}",
            m.wall,
            2000.0 / m.wall,
            m.code
        );
    }

    // 5. The state in PostgreSQL, next to SQLite, alternating.
    if let Ok(admin) = std::env::var("BENCH_PG") {
        const PG_ROUNDS: usize = 5;
        const ROWS: usize = 20_000;
        let (mut lite, mut pg, mut trips) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..PG_ROUNDS {
            let sb = start(Config::default());
            let dir = setup("pg-lite", ROWS, &job("1000000/s", 1000, 8));
            let ((m, _), lite_cpu, lite_sb) = cpu_of(|| run_payrun_at(&dir, &sb, "state.db"));
            assert_eq!(m.code, 0);
            lite.push(ROWS as f64 / m.wall);
            let sb = start(Config::default());
            let dir = setup("pg", ROWS, &job("1000000/s", 1000, 8));
            let url = fresh_database(&admin, &format!("payrun_bench_{round}"));
            let before = server_cpu(&admin);
            let ((m, t), pg_cpu, pg_sb) = cpu_of(|| run_payrun_at(&dir, &sb, &url));
            assert_eq!(m.code, 0);
            let server = before.zip(server_cpu(&admin)).map(|(b, a)| a - b);
            pg.push(ROWS as f64 / m.wall);
            trips.push(t as f64 / ROWS as f64);
            println!(
                "   round: SQLite {:.0} rows/s (CPU s: payrun {:.2}, sandbox {:.2}), PostgreSQL {:.0} rows/s (CPU s: payrun {:.2}, sandbox {:.2}, server {}; {:.2} round trips a row): ratio {:.2}",
                lite[round],
                lite_cpu / 1e6,
                lite_sb / 1e6,
                pg[round],
                pg_cpu / 1e6,
                pg_sb / 1e6,
                server.map_or("?".to_string(), |s| format!("{s:.2}")),
                trips[round],
                pg[round] / lite[round]
            );
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        println!(
            "5. state in PostgreSQL: best {:.0} rows/s vs SQLite best {:.0}: ratio best/best {:.2}, median of rounds {:.2} (target >= 0.8); {:.2} round trips a row",
            best(&pg),
            best(&lite),
            best(&pg) / best(&lite),
            median(pg.iter().zip(&lite).map(|(p, l)| p / l).collect()),
            median(trips)
        );
    }
    if skip_wrk {
        return;
    }

    // 4. Resume.
    let sb = start(Config::default());
    let dir = setup("resume", 100_000, &job("1000000/s", 1000, 8));
    let first = run_payrun(&dir, &sb);
    let again = run_payrun(&dir, &sb);
    println!(
        "4. resume: first run of 100,000 rows {:.2} s ({} requests); re-run of the completed job {:.2} s, {} requests (exit {})",
        first.wall, first.requests, again.wall, again.requests, again.code
    );
}
