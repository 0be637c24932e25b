//! `payrun run`: the job's work sent under the protocol, then its summary, reports,
//! metrics and webhook; `--dry-run` shows what would be sent.

use super::output::{Problems, plural, print_duplicates, shown};
use super::{Error, job_and_state, run_error, runtime};
use crate::exit;
use crate::job::Job;
use crate::state::ExportState;
use std::path::Path;

pub(super) fn run(args: &crate::cli::RunArgs, bars: bool, quiet: bool) -> Result<i32, Error> {
    let (job, state_path) = job_and_state(&args.plan, args.sandbox)?;
    if args.dry_run {
        return dry_run(&job, &state_path, &super::plan_options(&args.control, None));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        watch_signals(stop.clone());
        let mut opts = crate::exec::RunOptions {
            retry_failed: args.retry_failed,
            stop,
            show_progress: bars,
            progress_every: args.progress_every,
            plan: super::plan_options(&args.control, None),
            allow_duplicates: args.allow_duplicates,
            ..crate::exec::RunOptions::at(&state_path)
        };
        let _sandbox = match args.sandbox {
            true => Some(embedded_sandbox(&job, &mut opts).await?),
            false => None,
        };
        // The run goes on a worker thread, not this one: its tasks' wake-ups then stay
        // within the runtime's workers (a quarter fewer context switches).
        let job = std::sync::Arc::new(job);
        let shared = job.clone();
        let ran = tokio::spawn(async move {
            let mut problems = Problems::default();
            let ran = crate::exec::run(&shared, opts, &mut |e| problems.print(e)).await;
            problems.finish();
            ran
        })
        .await
        .unwrap_or_else(|e| Err(crate::exec::RunError::Worker(e)));
        match ran {
            Ok(report) => {
                if !quiet {
                    let status = status_command(args);
                    print_run(&job, &report, &status);
                    if args.sandbox {
                        println!("  state: {} (`{status}`)", crate::state::shown(&state_path));
                    }
                }
                after_run(&job, args, &state_path, report, quiet).await
            }
            Err(e) => {
                let e = run_error(&job, e);
                if e.exit_code() == exit::FATAL {
                    // Said before the reports of the stopped run are written.
                    e.print();
                    let metrics = args.metrics_file.as_deref().map(|p| (p, args.metrics_mode));
                    report_fatal(&job, &state_path, metrics).await;
                    return Ok(exit::FATAL);
                }
                Err(e)
            }
        }
    })
}

/// `--dry-run`: what would be sent, planned into a copy of the state.
fn dry_run(
    job: &Job,
    state_path: &Path,
    opts: &crate::plan::digest::PlanOptions,
) -> Result<i32, Error> {
    let mut problems = Problems::default();
    let dry = crate::exec::dry_run(job, state_path, opts, &mut |e| problems.print(e));
    problems.finish();
    let lines = dry.map_err(|e| run_error(job, e))?;
    println!(
        "dry run of '{}' scope '{}': nothing is sent, no state changes",
        job.name, job.scope
    );
    if lines.is_empty() {
        println!("nothing to send: every row is done");
    }
    for l in lines {
        println!("{l}");
    }
    Ok(exit::SUCCESS)
}

/// `--sandbox`: the emulator on a free port, and the run pointed at it with its
/// credentials (seeded with records to export when the job exports).
async fn embedded_sandbox(
    job: &Job,
    opts: &mut crate::exec::RunOptions,
) -> Result<crate::sandbox::Sandbox, Error> {
    let config = crate::sandbox::Config {
        kyc_delay: std::time::Duration::from_millis(500),
        payout_delay: std::time::Duration::from_millis(1500),
        // Payers pay a moment after each payment request.
        payin_delay: Some(std::time::Duration::from_secs(2)),
        // Something to export: records of every kind over the last 400 days.
        seed_data: if job.exports.is_empty() { 0 } else { 4000 },
        ..crate::sandbox::Config::default()
    };
    let started = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => crate::sandbox::start(l, config.clone()).await,
        Err(e) => Err(e),
    };
    let sb = started.map_err(|e| Error::Fatal(format!("cannot start the sandbox: {e}")))?;
    if job.provider.kind == crate::provider::ProviderKind::FinHub {
        tracing::info!(url = %sb.finhub_url(), "using the embedded sandbox (FinHub)");
        opts.base_url = Some(sb.finhub_url());
        opts.credentials = Some((
            config.finhub.client_id.clone(),
            config.finhub.client_secret.clone(),
        ));
    } else {
        tracing::info!(url = %sb.base_url(), "using the embedded sandbox");
        opts.base_url = Some(sb.base_url());
        opts.credentials = Some((config.app_id.clone(), config.secret_key.clone()));
    }
    opts.poll_cap = Some(std::time::Duration::from_millis(200));
    Ok(sb)
}

/// After a run that was recorded: its reports, the webhook and the metrics file; the run's
/// exit code.
async fn after_run(
    job: &Job,
    args: &crate::cli::RunArgs,
    state_path: &Path,
    mut report: crate::exec::RunReport,
    quiet: bool,
) -> Result<i32, Error> {
    // A run refused for its input sent nothing, and writes no report either: `latest/`
    // stays the last real run's.
    if report.exit_code == exit::INVALID_INPUT {
        return Ok(report.exit_code);
    }
    let written = match report.report.take() {
        Some(loaded) => crate::report::write_loaded(job, loaded, Some(report.run_id)),
        None => crate::report::write(job, state_path, Some(report.run_id)),
    };
    match written {
        Ok(dir) if !quiet => println!("  reports: {}", shown(&dir).display()),
        Ok(_) => {}
        // The run itself is recorded; the reports can be written again.
        Err(e) => {
            say!("warning: reports not written ({e}); `payrun report` writes them from state")
        }
    }
    match crate::report::notify(job, state_path, report.run_id, report.exit_code).await {
        Ok(true) => tracing::info!("run summary posted to the notify webhook"),
        Ok(false) => {}
        Err(e) => tracing::warn!("notify: {e}"),
    }
    if let Some(path) = &args.metrics_file
        && let Err(e) = crate::report::write_metrics(
            job,
            state_path,
            Some(report.run_id),
            (path, args.metrics_mode),
        )
    {
        say!("warning: metrics not written: {e}");
    }
    Ok(report.exit_code)
}

/// First SIGINT/SIGTERM: stop taking work, finish what is in flight. Second: exit now (state
/// stays correct: anything sent is in flight, and the next run resolves it).
fn watch_signals(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for n in 0.. {
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            if n == 0 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                say!(
                    "stopping: no new work is taken; requests in flight finish (signal again to exit now)"
                );
            } else {
                std::process::exit(exit::INTERRUPTED);
            }
        }
    });
}

/// After a run that failed fatally (credentials refused, the provider out of reach, a full
/// disk): its reports, metrics and webhook all the same, with why — monitoring must see it.
/// Only a run that was recorded as stopped so; best effort (the disk may be what failed).
async fn report_fatal(job: &Job, state_path: &Path, metrics_file: Option<(&Path, u32)>) {
    let Some(run_id) = fatal_run(job, state_path) else {
        return;
    };
    if let Err(e) = crate::report::write(job, state_path, Some(run_id)) {
        say!("warning: reports not written ({e})");
    }
    if let Some(file) = metrics_file
        && let Err(e) = crate::report::write_metrics(job, state_path, Some(run_id), file)
    {
        say!("warning: metrics not written: {e}");
    }
    match crate::report::notify(job, state_path, run_id, exit::FATAL).await {
        Ok(true) => tracing::info!("run summary posted to the notify webhook"),
        Ok(false) => {}
        Err(e) => tracing::warn!("notify: {e}"),
    }
}

/// The latest run of the job and scope, when it ended fatally with a reason recorded.
fn fatal_run(job: &Job, state_path: &Path) -> Option<i64> {
    let st = crate::state::State::open(state_path).ok()?;
    let plan = crate::state::work::plan_id(st.connection(), &job.name, &job.scope).ok()??;
    crate::state::work::latest_fatal(st.connection(), plan).ok()?
}

/// The `payrun status` that shows what this run did: the same job, variables (the scope),
/// state (its password masked) and sandbox.
fn status_command(args: &crate::cli::RunArgs) -> String {
    let quoted = |v: &str| {
        if !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/=@%+".contains(&b))
        {
            v.to_string()
        } else {
            format!("'{}'", v.replace('\'', r"'\''"))
        }
    };
    let mut cmd = format!(
        "payrun status {}",
        quoted(&args.plan.job.job.to_string_lossy())
    );
    for (k, v) in &args.plan.job.vars {
        cmd.push_str(&format!(" --var {}", quoted(&format!("{k}={v}"))));
    }
    if let Some(state) = &args.plan.state {
        cmd.push_str(&format!(" --state {}", quoted(&crate::state::shown(state))));
    }
    if args.sandbox {
        cmd.push_str(" --sandbox");
    }
    cmd
}

fn print_run(job: &Job, report: &crate::exec::RunReport, status: &str) {
    let counts = report.counts.steps();
    let open: u64 = counts
        .iter()
        .flat_map(|(_, s)| s)
        .filter(|(s, _)| s.needs_a_look())
        .map(|(_, n)| n)
        .sum();
    let needing = format!("{open} {} need a look", plural(open, "row", "rows"));
    let meaning = match report.exit_code {
        exit::SUCCESS if report.exports.is_empty() => "all rows done",
        exit::SUCCESS => "all done",
        exit::ROWS_FAILED if open > 0 => needing.as_str(),
        exit::ROWS_FAILED => "an export failed",
        exit::DUPLICATE => "A PAYOUT EXISTS TWICE at the provider (see below)",
        exit::AWAITING_APPROVAL => "awaiting approval; no payout or refund was sent",
        exit::INVALID_INPUT => "invalid input; nothing was sent",
        exit::INTERRUPTED => "interrupted; run again to resume",
        _ => "stopped",
    };
    println!(
        "run {} of '{}' scope '{}': {meaning} (exit {})",
        report.run_id, job.name, job.scope, report.exit_code
    );
    let width = counts
        .iter()
        .map(|(s, _)| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(12);
    for (step, states) in counts {
        let parts: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!("  {step:<width$} {}", parts.join(", "));
    }
    let awaiting = report.exit_code == exit::AWAITING_APPROVAL;
    if open > 0 {
        println!("  needs a look:");
        for (step, states) in counts {
            let held = awaiting
                && job
                    .steps
                    .iter()
                    .any(|s| &s.id == step && s.kind == crate::job::steps::StepKind::Payout);
            for (state, n) in states {
                if state.needs_a_look() && *n > 0 {
                    let action = match state {
                        crate::state::Status::Pending if held => {
                            "awaiting approval: sent once the plan is approved"
                        }
                        _ => state.action(),
                    };
                    println!("    {step} {state} {n}: {action}");
                }
            }
        }
        println!("    (`{status}` lists them)");
    }
    if let Some(s) = report.approval.as_ref().filter(|s| !s.approved()) {
        for line in s.lines() {
            println!("  {line}");
        }
        println!(
            "  approve with: payrun approve {} --digest {} --as NAME",
            job.path.display(),
            s.digest.digest
        );
    }
    if let Some(r) = &report.report {
        for (ccy, c) in &r.collected {
            println!("  {}", c.said(ccy));
        }
    }
    for e in &report.exports {
        let how = match e.state {
            ExportState::Completed => format!("{} rows → {}", e.rows, e.path),
            ExportState::Failed => format!("FAILED: {}", e.error.as_deref().unwrap_or("")),
            other => other.to_string(),
        };
        println!(
            "  {:<12} export {} {} .. {}: {how}",
            e.step, e.resource, e.from_at, e.to_at
        );
    }
    let s = &report.stats;
    println!(
        "  requests {}, retries {}, rate-limited {}, in-doubt resolved {}{}",
        s.requests,
        s.retries,
        s.rate_limited,
        s.in_doubt_resolved,
        if s.settle_ms > 0 {
            format!(
                " (waited {:.1} s for them to settle)",
                s.settle_ms as f64 / 1000.0
            )
        } else {
            String::new()
        }
    );
    print_duplicates(&report.duplicates);
}
