//! The command line as typed: clap definitions only, no behaviour.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// payrun runs declarative batch jobs against payment APIs: contacts, KYC and payouts
/// from CSV, with rate limits, retries and crash-safe idempotent state.
#[derive(Debug, Parser)]
#[command(
    name = "payrun",
    version,
    about,
    long_about = None,
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print a shell completion script or the man page (roff) and exit.
    #[arg(long, value_enum, value_name = "KIND", exclusive = true)]
    pub generate: Option<Generate>,
    /// How log lines on stderr look: text, or json (one object per line, for machines).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Only warnings and errors; no progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// What `--generate` prints (ripgrep's convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    CompleteBash,
    CompleteZsh,
    CompleteFish,
    CompletePowershell,
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the job file and every input row; send nothing, write nothing.
    Validate(JobArgs),
    /// Validate, then record the planned items and batches in the state database, and
    /// print the plan's digest (what approvals are given to).
    Plan(PlanCmdArgs),
    /// Plan, then send the planned work to the provider (rate-limited, retried, exactly once),
    /// then run the export steps.
    Run(RunArgs),
    /// Show a job's items by step and state, its exports and watermarks, its last runs and
    /// any item in doubt.
    Status(StatusArgs),
    /// Refresh every sent payout and transaction (and undecided KYC) from the provider,
    /// record what changed, and write the reports again.
    Reconcile(ReconcileArgs),
    /// Write (again) a run's reports from the state database: results.csv, summary.json,
    /// junit.xml, into report.dir/<job>/<scope>/<run id>/ and latest/.
    Report(ReportArgs),
    /// Approve the current plan of a job with `approval:`, by its digest (as `plan` or a run
    /// awaiting approval printed it).
    Approve(ApproveArgs),
    /// Clear the lock of a run whose process is gone (refused while it is alive).
    Unlock(PlanArgs),
    /// Work on a state database as a whole (`payrun state copy FROM TO`).
    #[command(subcommand)]
    State(StateCommand),
    /// Recall the job's scheduled payout batches (all, or those named) through the
    /// provider, and record their rows as cancelled.
    Cancel(CancelArgs),
    /// Show the provider's payout methods and the fields each requires, and keep them in
    /// the state database: validate and plan check payout_method_params against them.
    Methods(MethodsArgs),
    /// Run the local emulator of Hello Clever (under /api) and FinHub (under /finhub), for
    /// tests, demos and dry rehearsals.
    Sandbox(Box<SandboxArgs>),
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy every job's history from one state to another (a SQLite file or a
    /// postgresql:// URL each, either way); the target must hold no plan, and no run may
    /// hold the source meanwhile.
    Copy {
        /// The state to copy from.
        from: std::path::PathBuf,
        /// The state to copy into (created when it is a file that does not exist).
        to: std::path::PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// A batch to recall, by the provider's uuid or payrun's external id (repeatable;
    /// default, when no --payin is named: every sent batch of the job and scope)
    #[arg(long = "batch", value_name = "ID")]
    pub batches: Vec<String>,
    /// A pending payin to cancel, by the provider's uuid or the row's key (repeatable;
    /// default: every pending payin of the job and scope whose method may be cancelled)
    #[arg(long = "payin", value_name = "ID")]
    pub payins: Vec<String>,
    /// Do not ask (required when not on a terminal)
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct PlanCmdArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub control: ControlArgs,
    /// Who makes the plan, recorded with its digest (default: the OS user); the job's
    /// approvers cannot approve a plan they made.
    #[arg(long = "as", value_name = "NAME", value_parser = parse_name)]
    pub by: Option<String>,
}

/// Control totals given apart from the file: a mismatch refuses the plan (exit 2).
#[derive(Debug, Args, Default, Clone)]
pub struct ControlArgs {
    /// The payouts' total in a currency: --expect-total AUD=61234.56 (repeatable; when
    /// given, every currency the file pays must be named).
    #[arg(long = "expect-total", value_name = "CCY=AMOUNT", value_parser = parse_balance)]
    pub expect_totals: Vec<(String, rust_decimal::Decimal)>,
    /// The number of rows in the file.
    #[arg(long, value_name = "N")]
    pub expect_rows: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// The digest approved (sha256:…, as printed): it must be the current plan's.
    #[arg(long, value_name = "DIGEST")]
    pub digest: String,
    /// The approver: one of the job's approval.approvers.
    #[arg(long = "as", value_name = "NAME", value_parser = parse_name)]
    pub by: String,
    /// Why, or what was checked: kept with the approval and shown in reports.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Approve the plan of the `run --sandbox` rehearsals (kept apart from the real runs').
    #[arg(long)]
    pub sandbox: bool,
}

fn parse_name(s: &str) -> Result<String, String> {
    if crate::job::approver_name_ok(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "expected 1-64 letters, digits, '.', '_', '-' or '@' (got '{}')",
            s.escape_debug()
        ))
    }
}

#[derive(Debug, Args)]
pub struct MethodsArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// The embedded sandbox's methods (nothing is read from the provider or kept).
    #[arg(long)]
    pub sandbox: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Run against the embedded sandbox (started on 127.0.0.1, fast status changes) instead
    /// of the job's provider: no credentials needed. A rehearsal: its state, reports and
    /// export files are kept apart from the real run's (see docs/running.md).
    #[arg(long)]
    pub sandbox: bool,
    /// Put failed items back in the queue first (not conflicts, not successes).
    #[arg(long)]
    pub retry_failed: bool,
    #[command(flatten)]
    pub control: ControlArgs,
    /// Send payouts that repeat what another scope of the job paid within
    /// guards.duplicate_window (refused otherwise, exit 2).
    #[arg(long)]
    pub allow_duplicates: bool,
    /// Plan and list exactly what would be sent (sensitive values masked); send nothing,
    /// change no state.
    #[arg(long, conflicts_with = "sandbox")]
    pub dry_run: bool,
    /// Write Prometheus text-format metrics of the run here (node_exporter textfile
    /// collector: e.g. /var/lib/node_exporter/textfile/payrun.prom).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<std::path::PathBuf>,
    /// The metrics file's permission bits, octal: owner-only by default, like everything
    /// payrun writes; 0644 for a collector that runs as another user.
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    pub metrics_mode: u32,
    /// Off a terminal (cron, CI), how often a working step logs how far it is: rows done,
    /// rate, time left, what it waits on.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_arg)]
    pub progress_every: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// The state of the `run --sandbox` rehearsals (kept apart from the real runs').
    #[arg(long)]
    pub sandbox: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// The run to report on (default: the latest).
    #[arg(long)]
    pub run: Option<i64>,
    /// A `run --sandbox` rehearsal's reports, from its own state, into report.dir/sandbox/.
    #[arg(long)]
    pub sandbox: bool,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Only what this run sent (default: everything the job's state holds as sent).
    #[arg(long)]
    pub run: Option<i64>,
    /// Accepted like `status` and `report` take it, to say that a rehearsal cannot be
    /// reconciled: its embedded sandbox ended with its run.
    #[arg(long)]
    pub sandbox: bool,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port to listen on (0 picks a free one; the first line printed says which).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// The app-id clients must send.
    #[arg(long, default_value = "sandbox-app")]
    pub app_id: String,
    /// The secret-key clients must send.
    #[arg(long, default_value = "sandbox-secret")]
    pub secret_key: String,
    /// Time from KYC submission to its outcome (document numbers starting REJECT end
    /// rejected, REVIEW manual_review, others approved).
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
    pub kyc_delay: std::time::Duration,
    /// Time from payout creation to completed (processing from half-way).
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub payout_delay: std::time::Duration,
    /// Payers pay each payin in full this long after it was created (before it expires);
    /// without it, only POST /v2/payins/simulate pays one.
    #[arg(long, value_parser = parse_duration_arg)]
    pub payin_delay: Option<std::time::Duration>,
    /// A balance: --balance AUD=1000000 (repeatable); currencies not given are unlimited.
    #[arg(long = "balance", value_name = "CCY=AMOUNT", value_parser = parse_balance)]
    pub balances: Vec<(String, rust_decimal::Decimal)>,
    /// Added latency per request: 20ms..200ms, or a single value.
    #[arg(long, value_parser = crate::sandbox::faults::parse_latency)]
    pub latency: Option<(std::time::Duration, std::time::Duration)>,
    /// Share of requests answered 500/502/503 before anything is applied.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate_arg)]
    pub error_rate: f64,
    /// Requests per second over all endpoints; above it, 429 with Retry-After.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Share of requests whose connection is dropped before anything is applied.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate_arg)]
    pub reset_rate: f64,
    /// Share of requests applied, then dropped without a reply.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate_arg)]
    pub lost_response_rate: f64,
    /// Share of requests applied, then answered only after --timeout-delay.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate_arg)]
    pub timeout_rate: f64,
    /// How long a --timeout-rate reply is held.
    #[arg(long, default_value = "120s", value_parser = parse_duration_arg)]
    pub timeout_delay: std::time::Duration,
    /// Share of requests that change something (creates, updates, submissions) held for
    /// --late-apply-delay, then applied whether or not the client still waits: what a
    /// gateway does with a request its client timed out on.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate_arg)]
    pub late_apply_rate: f64,
    /// How long a --late-apply-rate request is held before it is applied (and answered).
    #[arg(long, default_value = "45s", value_parser = parse_duration_arg)]
    pub late_apply_delay: std::time::Duration,
    /// Share of requests that change something applied, then answered 200 with a body
    /// that is not JSON (a proxy's page in front of a provider that did the work).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate_arg)]
    pub garbled_rate: f64,
    /// New payouts, payins, contacts and FinHub customers appear in listings this long
    /// after they exist (lookups by key see them at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration_arg)]
    pub listing_lag: std::time::Duration,
    /// A payout batch short of funds is paid through the PayTo agreement (answered
    /// HC_PAYOUT2) instead of waiting for a top-up (HC_PAYOUT1).
    #[arg(long)]
    pub payto_funding: bool,
    /// A batch still waiting for funds this long after its creation expires.
    #[arg(long, value_parser = parse_duration_arg)]
    pub unfunded_expiry: Option<std::time::Duration>,
    /// Seed for faults and generated ids: the same seed gives the same faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pre-populate N contacts, payouts, payins, PayTo agreements and card payments over
    /// the last 400 days.
    #[arg(long, default_value_t = 0)]
    pub seed_data: usize,
    /// List pages with the metadata the reference leaves open: no totals on
    /// page/per_page lists, a `next_page` past the end on size/next_page lists.
    #[arg(long)]
    pub inconsistent_pages: bool,
    /// New card payments and PayTo agreements that arrive before each list page after the
    /// first, dated at the window's start (they shift later pages by this many records).
    #[arg(long, default_value_t = 0)]
    pub arrivals: usize,
    /// FinHub: the client id and secret the token endpoint accepts.
    #[arg(long, default_value = "sandbox-client")]
    pub finhub_client_id: String,
    #[arg(long, default_value = "sandbox-secret")]
    pub finhub_client_secret: String,
    /// FinHub: the `tenantId` every customer call must carry.
    #[arg(long, default_value = "sandbox-tenant")]
    pub finhub_tenant: String,
    /// FinHub: how long an access token is accepted.
    #[arg(long, default_value = "1h", value_parser = parse_duration_arg)]
    pub finhub_token_ttl: std::time::Duration,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::job::parse_duration(s)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "expected permission bits in octal, such as 0644 (got '{s}')"
        )),
    }
}

fn parse_rate_arg(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "expected a share from 0 to 1, such as 0.05 (got '{s}')"
        )),
    }
}

fn parse_balance(s: &str) -> Result<(String, rust_decimal::Decimal), String> {
    let (ccy, amount) = s
        .split_once('=')
        .ok_or_else(|| format!("expected CCY=AMOUNT, got '{s}'"))?;
    crate::validate::currency(ccy).map_err(|e| format!("{e} (got '{ccy}')"))?;
    let amount = amount
        .parse()
        .map_err(|_| format!("'{amount}' is not an amount"))?;
    Ok((ccy.to_string(), amount))
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job file (YAML).
    pub job: PathBuf,
    /// Override a job variable: --var period=2026-12 (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// The state database (default: .payrun/<job name>.db beside the job file).
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}
