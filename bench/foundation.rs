//! Foundation benchmark: `payrun validate` and `payrun plan` on a generated 1,000,000-row
//! payout CSV, next to a bare `csv` crate read of the same file in the same run.
//!
//! Run: `cargo bench --bench foundation` (ROWS=200000 for a quicker pass). Needs
//! `/usr/bin/time` (Debian package `time`) for peak RSS.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const JOB: &str = r#"version: 1
name: bench-payouts
scope: "{{ vars.period }}"
vars: { period: "2026-11" }
provider: { kind: helloclever, app_id: "${BENCH_APP_ID}", secret_key: "${BENCH_SECRET}" }
limits: { max_batch_size: 1000 }
input: { csv: payouts.csv, key: employee_id }
steps:
  - id: pay
    type: payout
    batch: { size: 1000 }
    fields:
      currency: AUD
      payout_method_name: au_bank_aud
      description: "Salary {{ vars.period }}"
      first_name: "{{ row.first_name }}"
      last_name: "{{ row.last_name }}"
      email: "{{ row.email | lower }}"
      amount: "{{ row.net_pay }}"
      payout_method_params:
        bsb: "{{ row.bsb }}"
        account_number: "{{ row.account_number }}"
        account_name: "{{ row.account_name }}"
"#;

fn main() {
    let rows: u64 = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-foundation");
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("payouts.csv");
    std::fs::write(dir.join("job.yaml"), JOB).unwrap();
    let t = Instant::now();
    generate(&csv, rows);
    let size = std::fs::metadata(&csv).unwrap().len();
    println!(
        "generated {rows} rows ({:.1} MiB) in {:.2}s",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let state = dir.join("state.db");
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(dir.join("state.db-wal"));
    let _ = std::fs::remove_file(dir.join("state.db-shm"));
    // The machines are noisy: bare reads and validations alternate, nine rounds, and the
    // best of each is compared (noise only ever adds time).
    let mut bare = f64::MAX;
    let mut validate = (f64::MAX, 0);
    let mut ratios = Vec::new();
    for _ in 0..9 {
        let b = bare_read(&csv, rows);
        let v = timed(&dir, &["validate", "job.yaml"]);
        ratios.push(b / v.0);
        bare = bare.min(b);
        validate = (validate.0.min(v.0), validate.1.max(v.1));
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "bare csv read (StringRecord, best of 9): {bare:.3}s = {:.0} rows/s",
        rows as f64 / bare
    );
    let plan = timed(
        &dir,
        &["plan", "job.yaml", "--state", state.to_str().unwrap()],
    );
    let replan = timed(
        &dir,
        &["plan", "job.yaml", "--state", state.to_str().unwrap()],
    );

    println!();
    println!(
        "{:<28} {:>9} {:>14} {:>13}",
        "command", "wall (s)", "rows/s", "peak RSS MiB"
    );
    for (name, (wall, rss)) in [
        ("payrun validate (best of 9)", validate),
        ("payrun plan (fresh state)", plan),
        ("payrun plan (unchanged)", replan),
    ] {
        println!(
            "{name:<28} {wall:>9.2} {:>14.0} {:>13.1}",
            rows as f64 / wall,
            rss as f64 / 1024.0
        );
    }
    println!();
    println!(
        "validate rows/s vs bare csv read: {:.2} best to best, {:.2} median of rounds (target >= 0.50); validate peak RSS {:.1} MiB (target <= 64)",
        bare / validate.0,
        ratios[ratios.len() / 2],
        validate.1 as f64 / 1024.0
    );
}

/// Writes `rows` realistic payout rows.
fn generate(path: &Path, rows: u64) {
    const FIRST: [&str; 8] = [
        "Olivia",
        "Jack",
        "Charlotte",
        "William",
        "Amelia",
        "Noah",
        "Isla",
        "Oliver",
    ];
    const LAST: [&str; 8] = [
        "Smith", "Nguyen", "Williams", "Brown", "Jones", "Taylor", "Wilson", "Martin",
    ];
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(
        w,
        "employee_id,first_name,last_name,email,net_pay,bsb,account_number,account_name"
    )
    .unwrap();
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut line = String::new();
    for i in 0..rows {
        // xorshift: deterministic, no dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (f, l) = (FIRST[(x % 8) as usize], LAST[((x >> 8) % 8) as usize]);
        line.clear();
        let _ = writeln!(
            line,
            "E{i:07},{f},{l},{}.{}{i}@Example.com,{}.{:02},{:06},{:08},{f} {l}",
            f.to_lowercase(),
            l.to_lowercase(),
            1000 + (x >> 16) % 9000,
            (x >> 32) % 100,
            (x >> 20) % 1_000_000,
            10_000_000 + (x >> 24) % 89_999_999,
        );
        w.write_all(line.as_bytes()).unwrap();
    }
    w.flush().unwrap();
}

fn bare_read(path: &Path, rows: u64) -> f64 {
    let t = Instant::now();
    let mut r = csv::Reader::from_path(path).unwrap();
    let mut rec = csv::StringRecord::new();
    let mut n = 0u64;
    let mut bytes = 0usize;
    while r.read_record(&mut rec).unwrap() {
        n += 1;
        bytes += rec.as_slice().len();
    }
    assert_eq!(n, rows);
    std::hint::black_box(bytes);
    t.elapsed().as_secs_f64()
}

/// Runs the real binary under `/usr/bin/time -v`; returns wall seconds and peak RSS in KiB.
fn timed(dir: &Path, args: &[&str]) -> (f64, u64) {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_payrun"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("/usr/bin/time is needed (apt-get install time)");
    let wall = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "payrun {args:?} failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rss = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (wall, rss)
}
