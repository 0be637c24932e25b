//! What each command does and prints. Errors are printed here, once, and turned into the
//! documented exit codes (see `exit`).

use crate::cli::{Cli, Command, JobArgs, PlanArgs};
use crate::exit;
use crate::input::InputError;
use crate::job::{self, Job, LoadOptions};
use crate::plan::{self, CheckSummary, PlanError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether stderr takes one JSON object a line (`--log-format json`).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes one message for the user on stderr: the line as it is, or with `--log-format
/// json` one JSON object like every log line (level from an `error: `/`warning: ` prefix;
/// the lines after the first, such as a diagnostic's source and carets, as `detail`).
pub(crate) fn say(text: &str) {
    if !JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
        return;
    }
    match (text.strip_prefix("error: "), text.strip_prefix("warning: ")) {
        (Some(t), _) => say_as(tracing::Level::ERROR, t),
        (_, Some(t)) => say_as(tracing::Level::WARN, t),
        _ => say_as(tracing::Level::INFO, text),
    }
}

/// A problem with the input (file, line, column, what): as it is, or one JSON object.
fn say_problem(text: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        say_as(tracing::Level::ERROR, text);
    } else {
        say(text);
    }
}

/// One JSON log object on stderr, at `level`.
fn say_as(level: tracing::Level, text: &str) {
    let (first, detail) = text.split_once('\n').unwrap_or((text, ""));
    match (level, detail.is_empty()) {
        (tracing::Level::ERROR, true) => tracing::error!("{first}"),
        (tracing::Level::ERROR, false) => tracing::error!(detail, "{first}"),
        (tracing::Level::WARN, true) => tracing::warn!("{first}"),
        (tracing::Level::WARN, false) => tracing::warn!(detail, "{first}"),
        (_, true) => tracing::info!("{first}"),
        (_, false) => tracing::info!(detail, "{first}"),
    }
}

/// [`say`] with `format!` arguments.
macro_rules! say {
    ($($arg:tt)*) => {
        say(&format!($($arg)*))
    };
}

/// Sets up log lines on stderr. On a terminal, `run` shows progress bars instead of info
/// lines; colour only on a terminal and never with NO_COLOR set.
fn init_logging(format: crate::cli::LogFormat, quiet: bool) -> bool {
    JSON_LOGS.store(
        format == crate::cli::LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    if format == crate::cli::LogFormat::Json {
        // Even a bug's last words are one JSON object.
        std::panic::set_hook(Box::new(|info| {
            say_as(
                tracing::Level::ERROR,
                &format!("payrun failed (a bug): {info}"),
            );
        }));
    }
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bars = terminal && !quiet && format == crate::cli::LogFormat::Text;
    let level = if quiet || bars {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    let _ = match format {
        crate::cli::LogFormat::Text => builder.with_ansi(colour).try_init(),
        crate::cli::LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    bars
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let bars = init_logging(cli.log_format, cli.quiet);
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Plan(args) => plan_cmd(&args),
        Command::Sandbox(args) => sandbox(*args),
        Command::Run(args) => run_cmd(&args, bars, cli.quiet),
        Command::Status(args) => status_cmd(&args),
        Command::Report(args) => report_cmd(&args),
        Command::Reconcile(args) => reconcile_cmd(&args, cli.quiet),
        Command::Unlock(args) => unlock_cmd(&args),
    }
}

/// The job, with a `--sandbox` rehearsal's paths when `sandbox`, and its state database
/// (`--state`, or the default beside the job file).
fn job_and_state(args: &PlanArgs, sandbox: bool) -> Result<(Job, PathBuf), i32> {
    let mut job = load(&args.job)?;
    if sandbox {
        // A rehearsal must never touch the real run's state, reports or export files: a
        // row "paid" in the sandbox would otherwise count as paid for real.
        plan::use_sandbox_paths(&mut job);
    }
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| plan::default_state_path(&job));
    Ok((job, state))
}

fn load(args: &JobArgs) -> Result<Job, i32> {
    let opts = LoadOptions {
        vars: args.vars.clone(),
        env: None,
    };
    job::load(&args.job, &opts).map_err(|diags| {
        for d in &diags {
            say!("error: {d}");
        }
        say!(
            "{} {} in {}; nothing was done",
            diags.len(),
            plural(diags.len() as u64, "problem", "problems"),
            args.job.display()
        );
        exit::INVALID_INPUT
    })
}

/// Row problems, printed as they are found, one per line on stderr. The same problem on
/// many rows — the same column and message but for the value — is printed for its first
/// [`SHOWN`] rows, then counted, and the count said at the end ([`Problems::finish`]): one
/// template mistake must not print a line per row of a million-row file.
#[derive(Default)]
struct Problems {
    seen: std::collections::HashMap<(Option<String>, String), u64>,
}

/// Rows shown of one problem.
const SHOWN: u64 = 3;

impl Problems {
    fn print(&mut self, e: InputError) {
        // The value a message quotes varies by row: `… (got '1,000.00')`.
        let kind = match e.message.rfind(" (got ") {
            Some(at) if e.message.ends_with(')') => e.message[..at].to_string(),
            _ => e.message.clone(),
        };
        let n = self.seen.entry((e.column.clone(), kind)).or_default();
        *n += 1;
        if *n <= SHOWN {
            say_problem(&crate::redact::printable(&e.to_string()));
        }
    }

    /// Says how many more rows each problem shown [`SHOWN`] times had.
    fn finish(&self) {
        let mut more: Vec<_> = self.seen.iter().filter(|(_, n)| **n > SHOWN).collect();
        more.sort();
        for ((column, kind), n) in more {
            let n = n - SHOWN;
            say_problem(&format!(
                "… and {n} more {} with: {}{kind}",
                plural(n, "row", "rows"),
                column
                    .as_deref()
                    .map(|c| format!("column '{c}': "))
                    .unwrap_or_default()
            ));
        }
    }
}

fn input_failure(e: &InputError) -> i32 {
    say!("error: {e}");
    exit::INVALID_INPUT
}

fn validate(args: &JobArgs) -> i32 {
    let job = match load(args) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    let mut problems = Problems::default();
    let checked = plan::validate(&job, &mut |e| problems.print(e));
    problems.finish();
    match checked {
        Err(e) => input_failure(&e),
        Ok(summary) => {
            let secs = started.elapsed().as_secs_f64();
            if job.input.is_none() {
                println!(
                    "{}: {} export step(s): no problems",
                    job.path.display(),
                    job.exports.len()
                );
                return exit::SUCCESS;
            }
            let steps = job.steps.len() as u64;
            println!(
                "{}: {} {} × {steps} {} checked in {secs:.2}s: {}",
                job.path.display(),
                summary.rows,
                plural(summary.rows, "row", "rows"),
                plural(steps, "step", "steps"),
                match summary.errors {
                    0 => "no problems".to_string(),
                    n => format!("{n} {}", plural(n, "problem", "problems")),
                }
            );
            print_totals(&summary);
            if summary.errors == 0 {
                exit::SUCCESS
            } else {
                exit::INVALID_INPUT
            }
        }
    }
}

fn print_totals(summary: &CheckSummary) {
    for (ccy, (total, n)) in &summary.totals {
        println!("  {ccy} {total} in {n} {}", plural(*n, "payout", "payouts"));
    }
}

fn plan_cmd(args: &PlanArgs) -> i32 {
    let (job, state_path) = match job_and_state(args, false) {
        Ok(j) => j,
        Err(code) => return code,
    };
    if job.input.is_none() {
        println!(
            "nothing to plan: '{}' holds only export steps; `payrun run` runs them",
            job.name
        );
        return exit::SUCCESS;
    }
    // Planning changes items: not while a run of this job and scope may be sending them,
    // so it holds the run's lock (a first plan has no run to wait for).
    let _lock = if state_path.exists() {
        match crate::state::lock::try_take(&state_path, &job.name, &job.scope) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                let held = crate::state::State::open(&state_path)
                    .map(|st| {
                        let plan =
                            crate::state::work::plan_id(st.connection(), &job.name, &job.scope)
                                .ok()
                                .flatten();
                        crate::state::lock::Held::read(st.connection(), plan)
                    })
                    .map_or_else(|_| "a run".to_string(), |h| h.to_string());
                say!(
                    "error: a run of '{}' scope '{}' is in progress: {held}; plan again when it ends",
                    job.name,
                    job.scope
                );
                return exit::LOCKED;
            }
            Err(e) => {
                say!(
                    "error: cannot take the lock beside {}: {e}",
                    state_path.display()
                );
                return exit::FATAL;
            }
        }
    } else {
        None
    };
    let mut problems = Problems::default();
    let planned = plan::plan(&job, &state_path, &mut |e| problems.print(e));
    problems.finish();
    match planned {
        Err(PlanError::Invalid(summary)) => {
            say!(
                "{} {} in {}; nothing was planned",
                summary.errors,
                plural(summary.errors, "problem", "problems"),
                job.csv_path().display()
            );
            exit::INVALID_INPUT
        }
        Err(PlanError::Input(e)) => input_failure(&e),
        Err(PlanError::State(e)) => {
            say!("error: {e}");
            state_failure_code(&e)
        }
        Err(e @ PlanError::Stopped) => {
            say!("{e}");
            exit::INTERRUPTED
        }
        Ok(outcome) => {
            println!(
                "plan for job '{}', scope '{}' ({} rows) in {}",
                job.name,
                job.scope,
                outcome.summary.rows,
                outcome.state_path.display()
            );
            println!();
            let w = job
                .steps
                .iter()
                .map(|s| s.id.chars().count())
                .max()
                .unwrap_or(0)
                .max(12);
            println!(
                "{:<w$} {:<8} {:>8} {:>10} {:>8} {:>9} {:>6} {:>8} {:>8}",
                "step",
                "type",
                "new",
                "unchanged",
                "changed",
                "conflict",
                "done",
                "skipped",
                "batches"
            );
            for (step, c) in job.steps.iter().zip(&outcome.counts.steps) {
                let batches = if step.kind == job::steps::StepKind::Payout {
                    format!("{} (+{})", c.batches, c.new_batches)
                } else {
                    "-".to_string()
                };
                println!(
                    "{:<w$} {:<8} {:>8} {:>10} {:>8} {:>9} {:>6} {:>8} {:>8}",
                    step.id,
                    step.kind.as_str(),
                    c.new,
                    c.unchanged,
                    c.changed,
                    c.conflict,
                    c.done,
                    c.skipped,
                    batches
                );
            }
            if !outcome.summary.totals.is_empty() {
                println!();
                println!("payout totals:");
                print_totals(&outcome.summary);
            }
            let conflicts = &outcome.counts.conflicts;
            if !conflicts.is_empty() {
                println!();
                println!(
                    "{} {}: these rows changed after they were sent and will not be re-sent:",
                    conflicts.len(),
                    plural(conflicts.len() as u64, "conflict", "conflicts")
                );
                for (line, key, step) in conflicts.iter().take(50) {
                    println!(
                        "  {}:{line}: key '{key}', step '{step}'",
                        job.csv_path().display()
                    );
                }
                if conflicts.len() > 50 {
                    println!("  … and {} more", conflicts.len() - 50);
                }
            }
            exit::SUCCESS
        }
    }
}

fn sandbox(args: crate::cli::SandboxArgs) -> i32 {
    use crate::sandbox::{self, Config, Faults};
    let config = Config {
        app_id: args.app_id,
        secret_key: args.secret_key,
        kyc_delay: args.kyc_delay,
        payout_delay: args.payout_delay,
        balances: args.balances.into_iter().collect(),
        faults: Faults {
            latency: args.latency,
            error_rate: args.error_rate,
            rate_limit: args.rate_limit,
            reset_rate: args.reset_rate,
            lost_response_rate: args.lost_response_rate,
            timeout_rate: args.timeout_rate,
            timeout_delay: args.timeout_delay,
            late_apply_rate: args.late_apply_rate,
            late_apply_delay: args.late_apply_delay,
            listing_lag: args.listing_lag,
            garbled_rate: args.garbled_rate,
            inconsistent_pages: args.inconsistent_pages,
            arrivals: args.arrivals,
        },
        seed: args.seed,
        seed_data: args.seed_data,
        finhub: sandbox::FinhubConfig {
            client_id: args.finhub_client_id,
            client_secret: args.finhub_client_secret,
            tenant: args.finhub_tenant,
            token_ttl: args.finhub_token_ttl,
            claimed_expires_in: None,
        },
        payto_funding: args.payto_funding,
        unfunded_expiry: args.unfunded_expiry,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            return exit::FATAL;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind((args.bind, args.port)).await {
            Ok(l) => l,
            Err(e) => {
                say!("error: cannot listen on {}:{}: {e}", args.bind, args.port);
                return exit::FATAL;
            }
        };
        let server = match sandbox::start(listener, config).await {
            Ok(s) => s,
            Err(e) => {
                say!("error: cannot start the sandbox: {e}");
                return exit::FATAL;
            }
        };
        // The first line is a contract: tests and scripts read the address from it.
        println!("payrun sandbox listening on http://{}", server.addr);
        println!("Hello Clever API base URL: {}", server.base_url());
        println!("FinHub gateway URL: {}", server.finhub_url());
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await;
        exit::SUCCESS
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            say!("error: cannot start the async runtime: {e}");
            exit::FATAL
        })
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

fn run_cmd(args: &crate::cli::RunArgs, bars: bool, quiet: bool) -> i32 {
    let (job, state_path) = match job_and_state(&args.plan, args.sandbox) {
        Ok(j) => j,
        Err(code) => return code,
    };
    if args.dry_run {
        let mut problems = Problems::default();
        let dry = crate::exec::dry_run(&job, &state_path, &mut |e| problems.print(e));
        problems.finish();
        return match dry {
            Ok(lines) => {
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
                exit::SUCCESS
            }
            Err(crate::exec::RunError::Config(m)) => {
                say!("{m}");
                exit::INVALID_INPUT
            }
            Err(e) => {
                say!("error: {e}");
                exit::FATAL
            }
        };
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        watch_signals(stop.clone());
        let state_path_for_report = state_path.clone();
        let mut opts = crate::exec::RunOptions {
            state_path,
            base_url: None,
            credentials: None,
            retry_failed: args.retry_failed,
            stop,
            poll_cap: None,
            show_progress: bars,
            progress_every: args.progress_every,
        };
        let _sandbox = if args.sandbox {
            let config = crate::sandbox::Config {
                kyc_delay: std::time::Duration::from_millis(500),
                payout_delay: std::time::Duration::from_millis(1500),
                // Something to export: records of every kind over the last 400 days.
                seed_data: if job.exports.is_empty() { 0 } else { 4000 },
                ..crate::sandbox::Config::default()
            };
            let started = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => crate::sandbox::start(l, config.clone()).await,
                Err(e) => Err(e),
            };
            let sb = match started {
                Ok(sb) => sb,
                Err(e) => {
                    say!("error: cannot start the sandbox: {e}");
                    return exit::FATAL;
                }
            };
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
            Some(sb)
        } else {
            None
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
        .unwrap_or_else(|e| Err(crate::exec::RunError::Fatal(format!("the run failed: {e}"))));
        match ran {
            Ok(mut report) => {
                if !quiet {
                    print_run(&job, &report);
                    if args.sandbox {
                        println!(
                            "  state: {} (`payrun status {} --sandbox`)",
                            state_path_for_report.display(),
                            args.plan.job.job.display()
                        );
                    }
                }
                // A run refused for its input sent nothing, and writes no report either:
                // `latest/` stays the last real run's.
                if report.exit_code == exit::INVALID_INPUT {
                    return report.exit_code;
                }
                let written = match report.report.take() {
                    Some(loaded) => crate::report::write_loaded(&job, loaded, Some(report.run_id)),
                    None => crate::report::write(&job, &state_path_for_report, Some(report.run_id)),
                };
                match written {
                    Ok(dir) if !quiet => println!("  reports: {}", shown(&dir).display()),
                    Ok(_) => {}
                    // The run itself is recorded; the reports can be written again.
                    Err(e) => say!(
                        "warning: reports not written ({e}); `payrun report` writes them from state"
                    ),
                }
                match crate::report::notify(
                    &job,
                    &state_path_for_report,
                    report.run_id,
                    report.exit_code,
                )
                .await
                {
                    Ok(true) => tracing::info!("run summary posted to the notify webhook"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("notify: {e}"),
                }
                if let Some(path) = &args.metrics_file
                    && let Err(e) = crate::report::write_metrics(
                        &job,
                        &state_path_for_report,
                        Some(report.run_id),
                        (path, args.metrics_mode),
                    )
                {
                    say!("warning: metrics not written: {e}");
                }
                report.exit_code
            }
            Err(e) => {
                let code = run_failure(&job, &e);
                if code == exit::FATAL {
                    let metrics = args.metrics_file.as_deref().map(|p| (p, args.metrics_mode));
                    report_fatal(&job, &state_path_for_report, metrics).await;
                }
                code
            }
        }
    })
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

fn print_run(job: &Job, report: &crate::exec::RunReport) {
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
    if open > 0 {
        println!("  needs a look:");
        for (step, states) in counts {
            for (state, n) in states {
                if state.needs_a_look() && *n > 0 {
                    println!("    {step} {state} {n}: {}", state.action());
                }
            }
        }
        println!("    (`payrun status {}` lists them)", job.path.display());
    }
    for e in &report.exports {
        let how = match e.state.as_str() {
            "completed" => format!("{} rows → {}", e.rows, e.path),
            "failed" => format!("FAILED: {}", e.error.as_deref().unwrap_or("")),
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

/// `one` or `many` as `n` asks.
pub(crate) fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// Says, on standard output too, each external id the provider holds twice.
fn print_duplicates(duplicates: &[(String, crate::state::work::Duplicate)]) {
    for (step, d) in duplicates {
        println!(
            "  DUPLICATE {step} {}{}: batches {} at the provider can pay it; keep the first, cancel the others if still scheduled (POST /v2/payouts/cancel_scheduled), else recover the money; then `payrun reconcile`",
            d.external_id,
            d.row_key
                .as_deref()
                .map(|k| format!(" (row '{k}')"))
                .unwrap_or_default(),
            d.uuids.join(", ")
        );
    }
}

fn status_cmd(args: &crate::cli::StatusArgs) -> i32 {
    let (job, path) = match job_and_state(&args.plan, args.sandbox) {
        Ok(j) => j,
        Err(code) => return code,
    };
    // Like report and reconcile: with no state, there is nothing to show (exit 2).
    if let Some(why) = no_state_yet(&job, &args.plan, &path, Some("status")) {
        say!("error: {why}");
        return exit::INVALID_INPUT;
    }
    let result = (|| -> Result<(), crate::state::StateError> {
        let st = crate::state::State::open(&path)?;
        let conn = st.connection();
        let err = |e| st.err(e);
        let Some(plan_id) =
            crate::state::work::plan_id(conn, &job.name, &job.scope).map_err(err)?
        else {
            println!("'{}' scope '{}' has not been planned", job.name, job.scope);
            return Ok(());
        };
        println!(
            "job '{}' scope '{}' ({})",
            job.name,
            job.scope,
            path.display()
        );
        // The same counts, by the same names, as the run's summary.
        let tally = crate::state::work::Tally::of(conn, plan_id).map_err(err)?;
        let rows: Vec<(String, crate::state::Status, u64)> = tally
            .steps()
            .iter()
            .flat_map(|(step, states)| states.iter().map(move |(s, n)| (step.clone(), *s, *n)))
            .collect();
        let width = rows
            .iter()
            .map(|(step, ..)| step.len())
            .max()
            .unwrap_or(0)
            .max(12);
        for (step, s, n) in rows {
            println!("  {step:<width$} {s:<14} {n:>8}");
        }
        let exports = crate::state::exports::latest(conn, plan_id).map_err(err)?;
        if !exports.is_empty() {
            println!("latest exports:");
        }
        for e in exports {
            let mark = crate::state::exports::watermark(conn, plan_id, &e.step).map_err(err)?;
            println!(
                "  {:<12} {} {} .. {}: {}, {} rows{}; last_run = {}",
                e.step,
                e.resource,
                e.from_at,
                e.to_at,
                e.state,
                e.rows,
                match e.error.as_deref() {
                    None | Some("") => String::new(),
                    Some(error) => format!(" ({error})"),
                },
                mark.as_deref().unwrap_or("none yet")
            );
        }
        println!("last runs:");
        for run in crate::state::work::recent_runs(conn, plan_id, 5).map_err(err)? {
            let code = run.exit_code.map_or("-".to_string(), |c| c.to_string());
            println!(
                "  run {}: {} → {}, exit {code}, {} {}, {} {}, {} in doubt resolved{}",
                run.id,
                run.started_at,
                run.ended_at.as_deref().unwrap_or("running"),
                run.requests,
                plural(run.requests, "request", "requests"),
                run.retries,
                plural(run.retries, "retry", "retries"),
                run.in_doubt_resolved,
                run.error
                    .map(|e| format!("\n    stopped: {}", crate::redact::printable(&e)))
                    .unwrap_or_default()
            );
        }
        let doubt = crate::state::work::in_doubt(conn, plan_id, 50).map_err(err)?;
        if !doubt.is_empty() {
            println!(
                "in doubt (sent, outcome unknown; the next run waits limits.settle after the last send, then asks the provider before any resend):"
            );
            for d in doubt {
                println!(
                    "  {} row '{}': {} attempt(s), first at {}, last sent at {}",
                    d.step,
                    crate::redact::printable(&d.row_key),
                    d.attempts,
                    d.first_attempt_at,
                    d.since.as_deref().unwrap_or("not recorded")
                );
            }
        }
        for (step, d) in crate::state::work::duplicates_of(conn, plan_id).map_err(err)? {
            println!(
                "DUPLICATE {step} {}{}: batches {} at the provider can pay it (found by the last check; `payrun reconcile` checks again)",
                d.external_id,
                d.row_key
                    .as_deref()
                    .map(|k| format!(" (row '{k}')"))
                    .unwrap_or_default(),
                d.uuids.join(", ")
            );
        }
        if let Some((h, heartbeat)) = crate::state::lock::holder(conn, plan_id).map_err(err)? {
            // The OS lock says whether the holder lives: free, its process is gone.
            let gone = crate::state::lock::try_take(&path, &job.name, &job.scope)
                .is_ok_and(|l| l.is_some_and(|l| l.by_kernel()));
            println!(
                "locked by run {} (pid {} on {}, started {}, last alive {heartbeat}){}",
                h.run_id,
                h.pid,
                h.host,
                h.started_at,
                if gone {
                    ": its process is gone; the next run takes the lock over (`payrun unlock` clears it now)"
                } else {
                    ""
                }
            );
        }
        Ok(())
    })();
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            say!("error: {e}");
            state_failure_code(&e)
        }
    }
}

/// Why there is nothing to show when the state database `path` does not exist yet (the
/// commands that read it create none), with the command that shows a `--sandbox`
/// rehearsal's state when only that exists.
fn no_state_yet(
    job: &Job,
    args: &PlanArgs,
    path: &Path,
    sandbox_cmd: Option<&str>,
) -> Option<String> {
    if path.exists() {
        return None;
    }
    let mut why = format!(
        "'{}' scope '{}' has no state yet ({} does not exist): run {}",
        job.name,
        job.scope,
        path.display(),
        if job.sandbox {
            "`payrun run --sandbox`"
        } else {
            "`payrun plan` or `payrun run`"
        }
    );
    if let Some(cmd) = sandbox_cmd
        && !job.sandbox
        && args.state.is_none()
        && plan::state_path_of(job, true).exists()
    {
        why.push_str(&format!(
            "\na sandbox rehearsal has state: `payrun {cmd} {} --sandbox` shows it",
            args.job.job.display()
        ));
    }
    Some(why)
}

fn report_cmd(args: &crate::cli::ReportArgs) -> i32 {
    let (job, state_path) = match job_and_state(&args.plan, args.sandbox) {
        Ok(j) => j,
        Err(code) => return code,
    };
    if let Some(why) = no_state_yet(&job, &args.plan, &state_path, Some("report")) {
        say!("error: {why}");
        return exit::INVALID_INPUT;
    }
    // A run still going has no reports yet: they would show it half done.
    if let Some(running) = running_run(&job, &state_path, args.run) {
        say!(
            "error: run {running} of '{}' scope '{}' is still running: its reports are written when it ends",
            job.name,
            job.scope
        );
        return exit::LOCKED;
    }
    match crate::report::write(&job, &state_path, args.run) {
        Ok(dir) => {
            println!("reports written to {}", shown(&dir).display());
            exit::SUCCESS
        }
        Err(crate::report::ReportError::NotFound(m)) => {
            say!("error: {m}");
            exit::INVALID_INPUT
        }
        Err(e) => {
            say!("error: {e}");
            exit::FATAL
        }
    }
}

fn reconcile_cmd(args: &crate::cli::ReconcileArgs, quiet: bool) -> i32 {
    if args.sandbox {
        say!(
            "error: a --sandbox rehearsal's provider ended with its run: there is nothing to reconcile it with (`payrun status {} --sandbox` shows what it did)",
            args.plan.job.job.display()
        );
        return exit::INVALID_INPUT;
    }
    let (only_run, args) = (args.run, &args.plan);
    let (job, state_path) = match job_and_state(args, false) {
        Ok(j) => j,
        Err(code) => return code,
    };
    // A rehearsal's sandbox is gone with its run: there is nothing to reconcile it with.
    if let Some(why) = no_state_yet(&job, args, &state_path, None) {
        say!("error: {why}");
        return exit::INVALID_INPUT;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opts = crate::exec::RunOptions {
            state_path: state_path.clone(),
            base_url: None,
            credentials: None,
            retry_failed: false,
            stop,
            poll_cap: None,
            show_progress: false,
            progress_every: std::time::Duration::from_secs(10),
        };
        match crate::exec::reconcile(&job, opts, only_run).await {
            Ok((report, changes)) => {
                if !quiet {
                    println!(
                        "reconciled '{}' scope '{}' (run {}): {} {}",
                        job.name,
                        job.scope,
                        report.run_id,
                        changes.len(),
                        plural(changes.len() as u64, "change", "changes")
                    );
                    for c in &changes {
                        println!(
                            "  {} row '{}': {}",
                            c.step,
                            crate::redact::printable(&c.row_key),
                            c.what
                        );
                    }
                    print_duplicates(&report.duplicates);
                }
                match crate::report::write(&job, &state_path, Some(report.run_id)) {
                    Ok(dir) if !quiet => println!("  reports: {}", shown(&dir).display()),
                    Ok(_) => {}
                    Err(e) => say!("warning: reports not written ({e})"),
                }
                report.exit_code
            }
            Err(e) => run_failure(&job, &e),
        }
    })
}

/// The run `run` (the latest when `None`) when it has not ended and its process holds the
/// lock.
fn running_run(job: &Job, state_path: &Path, run: Option<i64>) -> Option<i64> {
    let st = crate::state::State::open(state_path).ok()?;
    let plan = crate::state::work::plan_id(st.connection(), &job.name, &job.scope).ok()??;
    let run = crate::state::work::run_info(st.connection(), plan, run)
        .ok()
        .flatten()?;
    let (id, ended) = (run.id, run.ended_at);
    let free = crate::state::lock::try_take(state_path, &job.name, &job.scope)
        .ok()?
        .is_some();
    (ended.is_none() && !free).then_some(id)
}

/// `payrun unlock`: clears the recorded lock of a run whose process is gone. The OS lock
/// decides: while the holder lives it holds it, and nothing is cleared.
fn unlock_cmd(args: &PlanArgs) -> i32 {
    use crate::state::lock;
    let (job, path) = match job_and_state(args, false) {
        Ok(j) => j,
        Err(code) => return code,
    };
    if let Some(why) = no_state_yet(&job, args, &path, None) {
        println!("{why}; nothing to unlock");
        return exit::SUCCESS;
    }
    let result = (|| -> Result<i32, crate::state::StateError> {
        let st = crate::state::State::open(&path)?;
        let conn = st.connection();
        let err = |e| st.err(e);
        let plan = crate::state::work::plan_id(conn, &job.name, &job.scope).map_err(err)?;
        let taken = lock::try_take(&path, &job.name, &job.scope).map_err(|e| {
            crate::state::StateError::Db {
                path: path.clone(),
                message: format!("cannot take the lock: {e}"),
            }
        })?;
        let recorded = plan
            .map(|p| lock::holder(conn, p))
            .transpose()
            .map_err(err)?
            .flatten();
        let Some(taken) = taken else {
            say!(
                "error: the lock of '{}' scope '{}' is held by a live process: {}; it is not cleared (stop that run, or let it finish)",
                job.name,
                job.scope,
                lock::Held::read(conn, plan)
            );
            return Ok(exit::LOCKED);
        };
        let (Some(plan), Some((holder, heartbeat))) = (plan, recorded) else {
            println!("'{}' scope '{}' is not locked", job.name, job.scope);
            return Ok(exit::SUCCESS);
        };
        if !taken.by_kernel() && !lock::expired(&heartbeat) {
            say!(
                "error: run {} wrote its heartbeat at {heartbeat}, less than {}s ago: it may be alive; it is not cleared",
                holder.run_id,
                lock::LEASE.as_secs()
            );
            return Ok(exit::LOCKED);
        }
        lock::clear_dead(conn, plan, &holder).map_err(err)?;
        println!(
            "cleared the lock of run {} (pid {} on {}, started {}, last alive {heartbeat}): its process is gone; what it left in flight is settled by the next run",
            holder.run_id, holder.pid, holder.host, holder.started_at
        );
        Ok(exit::SUCCESS)
    })();
    result.unwrap_or_else(|e| {
        say!("error: {e}");
        exit::FATAL
    })
}

/// Prints why a run or reconcile could not go ahead and returns its exit code.
fn run_failure(job: &Job, e: &crate::exec::RunError) -> i32 {
    match e {
        crate::exec::RunError::Locked(held) => {
            say!(
                "error: another run of '{}' scope '{}' holds the lock: {held}; wait for it to end (`payrun unlock` clears the lock of a run whose process is gone)",
                job.name,
                job.scope
            );
            exit::LOCKED
        }
        crate::exec::RunError::Config(m) => {
            say!("error: {m}");
            exit::INVALID_INPUT
        }
        crate::exec::RunError::State(e) => {
            say!("error: {e}");
            state_failure_code(e)
        }
        e => {
            say!("error: {e}");
            exit::FATAL
        }
    }
}

/// The exit code of a state database failure: 2 when `--state` names a file that is not
/// payrun's (a mistake in the command; nothing was done), else 5.
fn state_failure_code(e: &crate::state::StateError) -> i32 {
    match e {
        crate::state::StateError::Foreign { .. } => exit::INVALID_INPUT,
        _ => exit::FATAL,
    }
}

/// A directory payrun wrote, as a user would type it: relative to the current directory
/// when it is under it (`reports/payroll/…`, not `jobs/../reports/payroll/…`), else in full.
/// Resolved through the file system, so a symbolic link in the way is followed as it was.
fn shown(dir: &Path) -> PathBuf {
    let Ok(full) = std::fs::canonicalize(dir) else {
        return dir.to_path_buf();
    };
    std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .ok()
        .and_then(|cwd| full.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(full)
}
