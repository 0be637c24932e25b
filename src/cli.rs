//! The command line as typed: clap definitions only, no behaviour.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// payrun runs declarative batch jobs against payment APIs: contacts, KYC and payouts
/// from CSV, with rate limits, retries and crash-safe idempotent state.
#[derive(Debug, Parser)]
#[command(name = "payrun", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the job file and every input row; send nothing, write nothing.
    Validate(JobArgs),
    /// Validate, then record the planned items and batches in the state database.
    Plan(PlanArgs),
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
