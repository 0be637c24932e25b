//! What payrun says is what happened: exit codes, the closing summary, logs and reports an
//! operator can act on.

use crate::run::{Setup, assert_exit, command, fast, job_text, people, run_with};
use crate::sandbox_support::{ledger, start};
use payrun::sandbox::Faults;

mod terminal;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_belong_to_the_run_that_made_them() {
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(3));
    assert_exit(&command(&setup, &s).output().unwrap(), 0);
    let latest = setup.path("reports/soak/2026-11/latest/summary.json");
    let first = std::fs::read_to_string(&latest).unwrap();
    // A run refused for its input sends nothing and writes no report: latest/ stays.
    std::fs::write(
        setup.path("people.csv"),
        people(3).replace("101.01", "a lot"),
    )
    .unwrap();
    let refused = command(&setup, &s).output().unwrap();
    assert_exit(&refused, 2);
    assert_eq!(std::fs::read_to_string(&latest).unwrap(), first);
    assert!(!setup.path("reports/soak/2026-11/2").exists());
    // Another state file's run 1 does not replace this one's.
    std::fs::write(setup.path("people.csv"), people(3)).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(["run", "job.yaml", "--state", "other.db"])
        .current_dir(setup.dir.path());
    for (k, v) in setup.env(&s) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let folder = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("reports: "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    assert!(folder.starts_with("reports/soak/2026-11/1-"), "{folder}");
    assert_eq!(
        std::fs::read_to_string(setup.path("reports/soak/2026-11/1/summary.json")).unwrap(),
        first,
        "the first state file's run 1 keeps its reports"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_a_run_still_going_says_so() {
    use std::io::BufRead;
    let s = start(fast(Faults {
        latency: Some((
            std::time::Duration::from_millis(200),
            std::time::Duration::from_millis(200),
        )),
        ..Faults::default()
    }))
    .await;
    let setup = Setup::new(
        &job_text(10, "").replace("concurrency: 8", "concurrency: 1"),
        &people(10),
    );
    let mut child = crate::run::binary(&setup, &s, &[]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("step started") {
        assert!(stderr.read_line(&mut seen).unwrap() > 0, "{seen}");
    }
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["report", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    assert_exit(&report, 3);
    assert!(
        String::from_utf8_lossy(&report.stderr)
            .contains("run 1 of 'soak' scope '2026-11' is still running"),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_run_still_writes_its_summary_metrics_and_webhook() {
    let s = start(fast(Faults::default())).await;
    let (url, seen) = crate::run::hook(200).await;
    let job = format!(
        "{}notify: {{ webhook_url: \"{url}\", when: always }}\n",
        job_text(10, "")
    );
    let setup = Setup::new(&job, &people(3));
    let out = command(&setup, &s)
        .env("HC_TEST_SECRET_KEY", "not-the-secret")
        .args(["--metrics-file", "payrun.prom"])
        .output()
        .unwrap();
    assert_exit(&out, 5);
    let text =
        std::fs::read_to_string(setup.path("reports/soak/2026-11/latest/summary.json")).unwrap();
    crate::support::assert_summary_schema(&text);
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["exit_code"], 5);
    assert!(
        summary["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused payrun's credentials")),
        "{summary}"
    );
    let metrics = std::fs::read_to_string(setup.path("payrun.prom")).unwrap();
    assert!(metrics.contains("payrun_last_run_exit_code{"), "{metrics}");
    assert!(metrics.contains("} 5\n"), "{metrics}");
    let posted = seen.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert!(
        posted[0].contains("refused payrun's credentials"),
        "{}",
        posted[0]
    );
    assert!(!posted[0].contains("not-the-secret"));
}

/// Every line of a command's standard error, each parsed as JSON.
fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Asserts one of a JSON log's lines is an error whose message holds `text`.
fn assert_error(lines: &[serde_json::Value], text: &str) {
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(text))),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_json_log_is_json() {
    let s = start(fast(Faults::default())).await;
    // A row problem, a refused run.
    let setup = Setup::new(&job_text(10, ""), &people(3).replace("101.01", "a lot"));
    let out = command(&setup, &s)
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert_error(&json_lines(&out.stderr), "people.csv:3");
    // A fatal error.
    std::fs::write(setup.path("people.csv"), people(3)).unwrap();
    let out = command(&setup, &s)
        .env("HC_TEST_SECRET_KEY", "wrong")
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert_exit(&out, 5);
    assert_error(&json_lines(&out.stderr), "refused payrun's credentials");
    // A job file problem, with its source line and carets.
    std::fs::write(
        setup.path("job.yaml"),
        job_text(10, "").replace("concurrency: 8", "concurency: 8"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["validate", "job.yaml", "--log-format", "json"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let lines = json_lines(&out.stderr);
    let problem = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("unknown key 'concurency'")
        })
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(problem["level"], "ERROR");
    assert!(
        problem["fields"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("^^^"),
        "{problem}"
    );
}

#[test]
fn a_template_mistake_is_said_once_and_a_problem_on_every_row_is_counted() {
    let validate = |setup: &Setup| {
        std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
            .args(["validate", "job.yaml"])
            .current_dir(setup.dir.path())
            .output()
            .unwrap()
    };
    // An unknown filter: caught when the job loads, once, whatever the number of rows.
    let setup = Setup::new(
        &job_text(10, "").replace(
            r#"email: "{{ row.email }}""#,
            r#"email: "{{ row.email | lowr }}""#,
        ),
        &people(1000),
    );
    let out = validate(&setup);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("template uses filter 'lowr', which does not exist; did you mean 'lower'?"),
        "{stderr}"
    );
    assert!(stderr.lines().count() < 20, "{stderr}");
    // A value problem on every row: the first rows, then a count.
    let mut csv = String::from("id,first,last,email,amount,account\n");
    for i in 0..1000 {
        csv.push_str(&format!(
            "P{i:04},Ann,Lee,ann{i}@example.com,\"1,{:03}.00\",{:08}\n",
            i % 1000,
            10_000_000 + i
        ));
    }
    let setup = Setup::new(&job_text(10, ""), &csv);
    let out = validate(&setup);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().count() <= 4, "{stderr}");
    assert!(
        stderr.contains("… and 997 more rows with: column 'amount'"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_a_terminal_a_long_step_says_how_far_it_is() {
    let s = start(payrun::sandbox::Config {
        payout_delay: std::time::Duration::from_secs(2),
        ..fast(Faults {
            latency: Some((
                std::time::Duration::from_millis(60),
                std::time::Duration::from_millis(60),
            )),
            ..Faults::default()
        })
    })
    .await;
    let setup = Setup::new(
        &job_text(10, "").replace("concurrency: 8", "concurrency: 1"),
        &people(20),
    );
    let out = command(&setup, &s)
        .args(["--log-format", "json", "--progress-every", "300ms"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let messages: Vec<String> = json_lines(&out.stderr)
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str().map(str::to_string))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("contact: ")
            && m.contains("/20 rows done, ")
            && m.contains(" s left")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m
                .starts_with("pay: 20/20 rows done; waiting for 2 payout batch(es) to complete")),
        "{messages:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_wrapper_runs_the_current_period_and_the_units_verify() {
    let s = start(fast(Faults::default())).await;
    // A job whose scope is its period, with a default a wrapper must not fall back to.
    let job = job_text(10, "").replace(
        "scope: \"2026-11\"",
        "scope: \"{{ vars.period }}\"\nvars: { period: \"1999-01\" }",
    );
    let setup = Setup::new(&job, &people(3));
    let wrapper = crate::support::repo().join("examples/cron/payrun-period.sh");
    let mut cmd = std::process::Command::new(&wrapper);
    cmd.args(["--state", "state.db"])
        .current_dir(setup.dir.path())
        .env("PAYRUN", env!("CARGO_BIN_EXE_payrun"))
        .env("JOB", "job.yaml");
    for (k, v) in setup.env(&s) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_exit(&out, 0);
    let this_month = chrono::Utc::now().format("%Y-%m").to_string();
    let (scope,): (String,) = setup.state_row("SELECT scope FROM plans");
    assert_eq!(scope, this_month);
    // Its exit code is payrun's, with what it means.
    let refused = std::process::Command::new(&wrapper)
        .args(["--state", "state.db"])
        .current_dir(setup.dir.path())
        .env("PAYRUN", env!("CARGO_BIN_EXE_payrun"))
        .env("JOB", "missing.yaml")
        .output()
        .unwrap();
    assert_exit(&refused, 2);
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("exited 2: the job file or the input is invalid"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The units: valid for systemd, and no exit code but 0 counts as success.
    let units = crate::support::repo().join("examples/systemd");
    let service = std::fs::read_to_string(units.join("payroll.service")).unwrap();
    assert!(!service.contains("SuccessExitStatus"), "{service}");
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if analyze.is_err() {
        eprintln!("systemd-analyze is not installed: the units were not verified");
        return;
    }
    let dir = setup.path("units");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(setup.path("env"), "").unwrap();
    let service = service
        .replace(
            "/srv/payroll/examples/cron/payrun-period.sh",
            wrapper.to_str().unwrap(),
        )
        .replace("/srv/payroll", setup.dir.path().to_str().unwrap())
        .replace(
            "/etc/payrun/helloclever.env",
            setup.path("env").to_str().unwrap(),
        );
    std::fs::write(dir.join("payroll.service"), service).unwrap();
    std::fs::copy(units.join("payroll.timer"), dir.join("payroll.timer")).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("payroll.service"))
        .arg(dir.join("payroll.timer"))
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_file_or_a_provider_says_cannot_forge_a_line() {
    let s = start(fast(Faults::default())).await;
    // A key holding a newline and a log line of its own, on a row the provider refuses.
    let forged = "2026-12-03T00:00:00.000000Z  INFO run finished run=1 exit_code=0";
    let csv = people(2)
        .replace("P0001", &format!("\"P0001\n{forged}\""))
        .replace("101.01", "150000.00");
    let setup = Setup::new(&job_text(10, ""), &csv);
    let out = command(&setup, &s).output().unwrap();
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.lines().any(|l| l.starts_with("2026-12-03T00:00:00")),
        "{stderr}"
    );
    assert!(stderr.contains("P0001\\n2026-12-03T00:00:00"), "{stderr}");
}

/// What a user sees, with what varies from run to run made stable: times, the temporary
/// folder, request counts and uuids.
fn stable(text: &str, dir: &std::path::Path) -> String {
    let text = text.replace(dir.to_str().unwrap(), "[dir]");
    let mut out = String::new();
    let b = text.as_bytes();
    let mut i = 0;
    let digit = |j: usize| b.get(j).is_some_and(u8::is_ascii_digit);
    while i < b.len() {
        // 2026-12-03T15:22:10(.123)(Z): a time.
        let shape = "dddd-dd-ddTdd:dd:dd";
        let is_time = shape.bytes().enumerate().all(|(k, c)| match c {
            b'd' => digit(i + k),
            c => b.get(i + k) == Some(&c),
        });
        if is_time {
            let mut j = i + shape.len();
            if b.get(j) == Some(&b'.') {
                j += 1;
                while digit(j) {
                    j += 1;
                }
            }
            if b.get(j) == Some(&b'Z') {
                j += 1;
            }
            out.push_str("[time]");
            i = j;
            continue;
        }
        let c = text[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out.lines()
        .map(|l| {
            if l.trim_start().starts_with("requests ") {
                "  requests [varies]".to_string()
            } else if let Some(at) = l.find(" requests, ") {
                let start = l[..at].rfind(' ').map_or(0, |s| s + 1);
                format!("{}N{}", &l[..start], &l[at..])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `payrun status job.yaml --state state.db`, made stable.
fn status(setup: &Setup) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["status", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    stable(&String::from_utf8_lossy(&out.stdout), setup.dir.path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closing_summary_and_status_say_what_needs_a_person() {
    // Conflicts: a paid period run again with three amounts corrected.
    let s = start(fast(Faults::default())).await;
    let setup = Setup::new(&job_text(10, ""), &people(5));
    assert_exit(&command(&setup, &s).output().unwrap(), 0);
    let corrected = people(5)
        .replace("101.01", "111.11")
        .replace("102.02", "122.22")
        .replace("103.03", "133.33");
    std::fs::write(setup.path("people.csv"), corrected).unwrap();
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["plan", "job.yaml", "--state", "state.db"])
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(plan.contains("AUD 570.70 in 5 payouts"), "{plan}");
    let out = command(&setup, &s).output().unwrap();
    assert_exit(&out, 1);
    insta::assert_snapshot!(
        "summary_conflicts",
        stable(&String::from_utf8_lossy(&out.stdout), setup.dir.path())
    );
    insta::assert_snapshot!("status_conflicts", status(&setup));
    // The totals agree with what `plan` printed.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(setup.path("reports/soak/2026-11/latest/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["totals"]["AUD"]["planned"], "570.70");

    // Waiting for funds.
    let poor = start(payrun::sandbox::Config {
        balances: [("AUD".to_string(), "50.00".parse().unwrap())].into(),
        ..fast(Faults::default())
    })
    .await;
    let setup = Setup::new(
        &job_text(10, "").replace("timeout: 20s", "timeout: 1s"),
        &people(3),
    );
    let out = command(&setup, &poor).output().unwrap();
    assert_exit(&out, 1);
    insta::assert_snapshot!(
        "summary_awaiting_funds",
        stable(&String::from_utf8_lossy(&out.stdout), setup.dir.path())
    );
    insta::assert_snapshot!("status_awaiting_funds", status(&setup));

    // A fatal run: nothing on stdout, one error on stderr, and status shows the run.
    let setup = Setup::new(&job_text(10, ""), &people(3));
    let out = command(&setup, &s)
        .env("HC_TEST_SECRET_KEY", "wrong")
        .arg("-q")
        .output()
        .unwrap();
    assert_exit(&out, 5);
    insta::assert_snapshot!(
        "summary_fatal",
        stable(
            &format!(
                "stdout:\n{}stderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            setup.dir.path()
        )
    );
    insta::assert_snapshot!("status_fatal", status(&setup));
}
