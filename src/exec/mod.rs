//! `payrun run`: plan, then execute the planned items against the provider, under the
//! idempotency protocol of DESIGN.md:
//!
//! 1. the intent (`in_flight`, attempt, external id) is durably committed before a request
//!    leaves (group commit: concurrent intents share one fsync);
//! 2. a definite answer records `succeeded` or `failed`;
//! 3. no answer leaves the item `in_flight`: in doubt. Before any resend, payrun asks the
//!    provider whether the operation happened, and resends only when it did not.
//!
//! Steps run in order — contacts, KYC, payouts — and a row enters a step only when its
//! earlier steps succeeded. Rows are re-read from the CSV by offset when sent, so full
//! account numbers are never stored.

mod contact;
mod ctx;
mod doubt;
mod dry;
pub mod export;
mod finhub;
mod kyc;
mod listing;
mod open;
pub mod pace;
mod payin;
mod payout;
pub mod progress;
mod protocol;
mod queue;
mod rows;
mod runs;

use ctx::AbortOnDrop;
pub use ctx::{Change, Client, Ctx, Halt, SAME_ANSWER};
pub use dry::dry_run;
use open::open;
pub use open::{
    Recall, cancel_payins, payin_methods, payout_methods, provider_base, recall_scheduled,
};
pub(crate) use rows::*;
pub use runs::{reconcile, run};

use crate::input::RecordReader;
use crate::job::Job;
use crate::job::steps::StepKind;
use crate::plan::Renderer;
use crate::provider::helloclever::client::HelloClever;
use crate::state::work::{self, Outcome, WorkItem};
use crate::state::{BatchState, Db, ItemState, StateError};
use pace::Pacer;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a run could not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("another run holds the lock: {0}")]
    Locked(crate::state::lock::Held),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Config(String),
    /// A provider setting whose variable is unset (only `run` needs credentials).
    #[error("{0}")]
    Setting(Box<crate::job::Diagnostic>),
    /// The input, checked or planned again (`--dry-run` plans into a copy).
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error("{0}")]
    Fatal(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("{}", lock_failure(path, source))]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input, planned a moment ago, cannot be read again to send its rows.
    #[error("{0}")]
    Reread(#[source] crate::input::InputError),
    #[error("a worker task failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub exit_code: i32,
    /// Items by step (in job order) and name.
    pub counts: work::Tally,
    pub stats: work::RunStats,
    /// The run's exports.
    pub exports: Vec<crate::state::exports::ExportRecord>,
    /// The run's report, loaded by the database thread, whose page cache holds the run's
    /// items (a new connection would read them all from disk again); `None` when it could
    /// not be loaded there.
    pub report: Option<crate::report::Report>,
    /// Duplicates the last check found at the provider: (step, duplicate).
    pub duplicates: Vec<(String, work::Duplicate)>,
    /// Where the plan's approvals stood, for a job with `approval:`.
    pub approval: Option<crate::plan::approval::Standing>,
}

/// How to run.
pub struct RunOptions {
    pub state_path: std::path::PathBuf,
    /// Replaces the job's `base_url` (the embedded sandbox).
    pub base_url: Option<String>,
    /// Replaces the job's credentials (the embedded sandbox): app id, secret key.
    pub credentials: Option<(String, String)>,
    pub retry_failed: bool,
    /// Set to stop taking new work (signals).
    pub stop: Arc<AtomicBool>,
    /// Caps the job's poll intervals (used with the embedded sandbox).
    pub poll_cap: Option<std::time::Duration>,
    /// Show progress bars (a terminal, not --quiet).
    pub show_progress: bool,
    /// Without bars, how often a step that works says how far it is.
    pub progress_every: std::time::Duration,
    /// Who plans, and the control totals the plan must meet.
    pub plan: crate::plan::digest::PlanOptions,
    /// `--allow-duplicates`: payouts another scope paid recently may go out again.
    pub allow_duplicates: bool,
}

impl RunOptions {
    /// The options of a run on the state at `state_path` as the job gives it: the job's
    /// provider, no retries of failed rows, no progress shown, planned by the OS user.
    pub fn at(state_path: &std::path::Path) -> RunOptions {
        RunOptions {
            state_path: state_path.to_path_buf(),
            base_url: None,
            credentials: None,
            retry_failed: false,
            stop: Default::default(),
            poll_cap: None,
            show_progress: false,
            progress_every: std::time::Duration::from_secs(10),
            plan: crate::plan::digest::PlanOptions::by(crate::plan::digest::os_user()),
            allow_duplicates: false,
        }
    }
}

/// Why a run's lock could not be taken: beside a state file, or — a PostgreSQL state, whose
/// errors name the database already — its lease.
fn lock_failure(path: &std::path::Path, source: &std::io::Error) -> String {
    if crate::state::pg::is_url(&path.to_string_lossy()) {
        format!("cannot take the run's lease: {source}")
    } else {
        format!(
            "cannot take the run's lock beside {}: {source}",
            path.display()
        )
    }
}
