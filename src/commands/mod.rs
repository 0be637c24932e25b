//! What each command does and prints, one file per command. A command returns its exit
//! code, or an [`Error`] that [`run`] prints once and turns into the documented exit code
//! (see `exit`).

/// Says a message for the user on stderr (see [`output::say`]), with `format!` arguments.
macro_rules! say {
    ($($arg:tt)*) => {
        crate::commands::output::say(&format!($($arg)*))
    };
}

mod approve;
mod cancel;
mod error;
mod methods;
mod output;
mod plan;
mod reconcile;
mod report;
mod run;
mod sandbox;
mod status;
mod unlock;
mod validate;

pub use error::Error;

use crate::cli::{Cli, Command, JobArgs, PlanArgs};
use crate::job::{self, Job, LoadOptions};
use std::path::{Path, PathBuf};

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let bars = output::init_logging(cli.log_format, cli.quiet);
    let Some(command) = cli.command else {
        return generate(cli.generate);
    };
    let done = match command {
        Command::Validate(args) => validate::validate(&args),
        Command::Plan(args) => plan::plan(&args),
        Command::Sandbox(args) => sandbox::sandbox(*args),
        Command::Run(args) => run::run(&args, bars, cli.quiet),
        Command::Status(args) => status::status(&args),
        Command::Report(args) => report::report(&args),
        Command::Reconcile(args) => reconcile::reconcile(&args, cli.quiet),
        Command::Approve(args) => approve::approve(&args),
        Command::Unlock(args) => unlock::unlock(&args),
        Command::Methods(args) => methods::methods(&args),
        Command::Cancel(args) => cancel::cancel(&args),
        Command::State(crate::cli::StateCommand::Copy { from, to }) => state_copy(&from, &to),
    };
    done.unwrap_or_else(|e| {
        e.print();
        e.exit_code()
    })
}

/// `--generate KIND`: a completion script or the man page on standard output.
fn generate(kind: Option<crate::cli::Generate>) -> i32 {
    use crate::cli::Generate;
    use clap::CommandFactory;
    use clap_complete::Shell;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    let shell = match kind {
        Some(Generate::CompleteBash) => Shell::Bash,
        Some(Generate::CompleteZsh) => Shell::Zsh,
        Some(Generate::CompleteFish) => Shell::Fish,
        Some(Generate::CompletePowershell) => Shell::PowerShell,
        Some(Generate::Man) => {
            return match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => crate::exit::SUCCESS,
                Err(e) => {
                    say!("error: cannot write the man page: {e}");
                    crate::exit::FATAL
                }
            };
        }
        None => {
            say!("error: a command is needed (`payrun --help` lists them)");
            return crate::exit::INVALID_INPUT;
        }
    };
    clap_complete::generate(shell, &mut cmd, "payrun", &mut out);
    crate::exit::SUCCESS
}

/// Where a job's state is: `--state`, else `PAYRUN_STATE` (for real runs; a `--sandbox`
/// rehearsal keeps its own beside the job), else `.payrun/<job>.db` beside the job file.
/// A `postgresql://` (or `postgres://`) URL names a PostgreSQL database; another URL is
/// refused, its password masked.
fn state_location(given: Option<&Path>, job: &Job) -> Result<PathBuf, Error> {
    let from_env = || {
        std::env::var_os("PAYRUN_STATE")
            .filter(|v| !v.is_empty() && !job.sandbox)
            .map(PathBuf::from)
    };
    let Some(state) = given.map(Path::to_path_buf).or_else(from_env) else {
        return Ok(crate::plan::default_state_path(job));
    };
    let text = state.to_string_lossy();
    if crate::state::pg::is_url(&text) {
        return Ok(state);
    }
    if let Some((scheme, _)) = text.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        let shown = crate::redact::url_without_password(&text);
        return Err(Error::Invalid(format!(
            "state '{shown}': payrun keeps its state in a SQLite file or a PostgreSQL database; \
             give a file path or a postgresql:// URL (--state or PAYRUN_STATE)"
        )));
    }
    Ok(state)
}

/// The job, with a `--sandbox` rehearsal's paths when `sandbox`, and its state database
/// (see [`state_location`]).
fn job_and_state(args: &PlanArgs, sandbox: bool) -> Result<(Job, PathBuf), Error> {
    let mut job = load(&args.job)?;
    if sandbox {
        // A rehearsal must never touch the real run's state, reports or export files: a
        // row "paid" in the sandbox would otherwise count as paid for real.
        crate::plan::use_sandbox_paths(&mut job);
    }
    let state = state_location(args.state.as_deref(), &job)?;
    Ok((job, state))
}

/// The run's lock of the job and scope in the state at `state_path` (which exists): a
/// command that changes items holds it, and is refused while a run holds it (`then` says
/// what to do).
fn take_lock(
    job: &Job,
    state_path: &Path,
    then: &str,
) -> Result<crate::state::lock::RunLock, Error> {
    match crate::state::lock::try_take(state_path, &job.name, &job.scope) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => {
            let held = crate::state::State::open(state_path)
                .map(|st| {
                    let plan = crate::state::work::plan_id(st.connection(), &job.name, &job.scope)
                        .ok()
                        .flatten();
                    crate::state::lock::Held::read(st.connection(), plan)
                })
                .map_or_else(|_| "a run".to_string(), |h| h.to_string());
            Err(Error::Locked(format!(
                "a run of '{}' scope '{}' is in progress: {held}; {then}",
                job.name, job.scope
            )))
        }
        Err(e) => Err(Error::Fatal(format!(
            "cannot take the lock beside {}: {e}",
            crate::state::shown(state_path)
        ))),
    }
}

/// `payrun state copy FROM TO`.
fn state_copy(from: &Path, to: &Path) -> Result<i32, Error> {
    use crate::state::copy::{CopyError, copy_state};
    let copied = copy_state(from, to).map_err(|e| match e {
        CopyError::Locked(m) => Error::Locked(m),
        CopyError::Failed(m) => Error::Invalid(m),
    })?;
    println!(
        "copied {} into {}:",
        crate::state::shown(from),
        crate::state::shown(to)
    );
    for (table, n) in copied {
        println!("  {table:<15} {n}");
    }
    Ok(crate::exit::SUCCESS)
}

/// Loads the job file; its problems, each with its place, are the error.
fn load(args: &JobArgs) -> Result<Job, Error> {
    let opts = LoadOptions {
        vars: args.vars.clone(),
        env: None,
    };
    job::load(&args.job, &opts).map_err(|diags| Error::Job {
        file: args.job.clone(),
        diags,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Fatal(format!("cannot start the async runtime: {e}")))
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
    if crate::state::exists(path) {
        return None;
    }
    let mut why = format!(
        "'{}' scope '{}' has no state yet ({} does not exist): run {}",
        job.name,
        job.scope,
        crate::state::shown(path),
        if job.sandbox {
            "`payrun run --sandbox`"
        } else {
            "`payrun plan` or `payrun run`"
        }
    );
    if let Some(cmd) = sandbox_cmd
        && !job.sandbox
        && args.state.is_none()
        && crate::plan::state_path_of(job, true).exists()
    {
        why.push_str(&format!(
            "\na sandbox rehearsal has state: `payrun {cmd} {} --sandbox` shows it",
            args.job.job.display()
        ));
    }
    Some(why)
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

/// Why the input could not be planned (the rows' problems were printed as found).
fn plan_error(job: &Job, e: crate::plan::PlanError) -> Error {
    use crate::plan::PlanError;
    match e {
        PlanError::Invalid(summary) => Error::Rows(format!(
            "{} {} in {}; nothing was planned",
            summary.errors,
            output::plural(summary.errors, "problem", "problems"),
            job.csv_path().display()
        )),
        PlanError::Input(e) => Error::Input(e),
        PlanError::State(e) => Error::State(e),
        e @ PlanError::Stopped => Error::Interrupted(e.to_string()),
    }
}

/// What `plan` and `run` ask of a plan: who makes it (`--as`, else the OS user) and its
/// control totals.
fn plan_options(
    control: &crate::cli::ControlArgs,
    by: Option<&str>,
) -> crate::plan::digest::PlanOptions {
    crate::plan::digest::PlanOptions {
        by: by.map_or_else(crate::plan::digest::os_user, str::to_string),
        expect_totals: control.expect_totals.clone(),
        expect_rows: control.expect_rows,
    }
}

/// Why a run or reconcile could not go ahead.
fn run_error(job: &Job, e: crate::exec::RunError) -> Error {
    use crate::exec::RunError;
    match e {
        RunError::Locked(held) => Error::Locked(format!(
            "another run of '{}' scope '{}' holds the lock: {held}; {}",
            job.name,
            job.scope,
            held.what_to_do()
        )),
        RunError::Config(m) => Error::Invalid(m),
        RunError::Setting(d) => Error::Invalid(d.to_string()),
        RunError::Plan(e) => plan_error(job, e),
        RunError::State(e) => Error::State(e),
        e @ (RunError::Fatal(_)
        | RunError::Http(_)
        | RunError::Lock { .. }
        | RunError::Reread(_)
        | RunError::Worker(_)) => Error::Fatal(e.to_string()),
    }
}
