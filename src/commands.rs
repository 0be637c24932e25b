//! What each command does and prints. Errors are printed here, once, and turned into the
//! documented exit codes (see `exit`).

use crate::cli::{Cli, Command, JobArgs};
use crate::exit;
use crate::input::InputError;
use crate::job::{self, Job, LoadOptions};
use crate::plan::{self, CheckSummary, PlanError};
use std::io::Write;

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Plan(args) => plan_cmd(&args.job, args.state.as_deref()),
        Command::Sandbox(args) => sandbox(args),
    }
}

fn load(args: &JobArgs) -> Result<Job, i32> {
    let opts = LoadOptions {
        vars: args.vars.clone(),
        env: None,
    };
    job::load(&args.job, &opts).map_err(|diags| {
        let mut err = std::io::stderr().lock();
        for d in &diags {
            let _ = writeln!(err, "error: {d}");
        }
        let _ = writeln!(
            err,
            "{} problem(s) in {}; nothing was done",
            diags.len(),
            args.job.display()
        );
        exit::INVALID_INPUT
    })
}

/// Prints row errors as they are found, on stderr, one per line.
fn error_printer() -> impl FnMut(InputError) {
    let stderr = std::io::stderr();
    move |e| {
        let _ = writeln!(stderr.lock(), "{e}");
    }
}

fn input_failure(e: &InputError) -> i32 {
    eprintln!("error: {e}");
    exit::INVALID_INPUT
}

fn validate(args: &JobArgs) -> i32 {
    let job = match load(args) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    match plan::validate(&job, &mut error_printer()) {
        Err(e) => input_failure(&e),
        Ok(summary) => {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{}: {} rows × {} steps checked in {secs:.2}s: {}",
                job.path.display(),
                summary.rows,
                job.steps.len(),
                if summary.errors == 0 {
                    "no problems".to_string()
                } else {
                    format!("{} problem(s)", summary.errors)
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
        println!("  {ccy} {total} in {n} payout(s)");
    }
}

fn plan_cmd(args: &JobArgs, state: Option<&std::path::Path>) -> i32 {
    let job = match load(args) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let state_path = state
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| plan::default_state_path(&job));
    match plan::plan(&job, &state_path, &mut error_printer()) {
        Err(PlanError::Invalid(summary)) => {
            eprintln!(
                "{} problem(s) in {}; nothing was planned",
                summary.errors,
                job.input.csv.display()
            );
            exit::INVALID_INPUT
        }
        Err(PlanError::Input(e)) => input_failure(&e),
        Err(PlanError::State(e)) => {
            eprintln!("error: {e}");
            exit::FATAL
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
            println!(
                "{:<12} {:<8} {:>8} {:>10} {:>8} {:>9} {:>6} {:>8} {:>8}",
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
                    "{:<12} {:<8} {:>8} {:>10} {:>8} {:>9} {:>6} {:>8} {:>8}",
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
                    "{} conflict(s): these rows changed after they were sent and will not be re-sent:",
                    conflicts.len()
                );
                for (line, key, step) in conflicts.iter().take(50) {
                    println!(
                        "  {}:{line}: key '{key}', step '{step}'",
                        job.input.csv.display()
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
        },
        seed: args.seed,
        seed_data: args.seed_data,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::FATAL;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind((args.bind, args.port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}:{}: {e}", args.bind, args.port);
                return exit::FATAL;
            }
        };
        let server = match sandbox::start(listener, config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot start the sandbox: {e}");
                return exit::FATAL;
            }
        };
        // The first line is a contract: tests and scripts read the address from it.
        println!("payrun sandbox listening on http://{}", server.addr);
        println!("Hello Clever API base URL: {}", server.base_url());
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await;
        exit::SUCCESS
    })
}
