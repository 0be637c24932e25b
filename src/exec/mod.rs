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
mod doubt;
mod dry;
pub mod export;
mod finhub;
mod kyc;
mod listing;
pub mod pace;
mod payout;
pub mod progress;
mod protocol;
mod queue;

pub use dry::dry_run;

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
    #[error("{0}")]
    Fatal(String),
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
}

/// Everything the step runners share.
pub struct Ctx {
    /// The job's provider: one of these is set. Steps call their own provider's client;
    /// a job holds only its provider's steps (checked when it loads).
    pub helloclever: Option<HelloClever>,
    pub finhub: Option<Arc<crate::provider::finhub::client::FinHub>>,
    /// FinHub customers by email, read when a create is in doubt.
    pub directory: finhub::Directory,
    pub run_started: tokio::time::Instant,
    pub pacer: Pacer,
    pub db: Db,
    pub plan_id: i64,
    /// The run (or reconcile) this is.
    pub run_id: i64,
    /// Set by the first SIGINT/SIGTERM: take no new work.
    pub stop: Arc<AtomicBool>,
    /// Set when every request would fail the same way (credentials refused, the provider
    /// out of reach): the run stops, and what is not done stays pending rather than
    /// failing row by row.
    pub halt: std::sync::Mutex<Option<Halt>>,
    /// Polls no less often than this (the embedded sandbox moves statuses in seconds).
    pub poll_cap: Option<std::time::Duration>,
    /// The current step's count and what it waits on (bars on a terminal).
    pub progress: progress::Progress,
    /// `limits.settle` and `limits.settle_recheck` (see [`doubt`]).
    pub settle: std::time::Duration,
    pub settle_recheck: std::time::Duration,
    /// `limits.lookback`: how far back the provider's payouts are read.
    pub lookback: std::time::Duration,
    /// Whether anything succeeded in this run: until then, the same refusal for row after
    /// row is taken for a job that cannot work (see [`SAME_ANSWER`]).
    pub any_success: AtomicBool,
    /// The last refusal and how many times in a row it came.
    pub same_answer: std::sync::Mutex<Option<(String, String, u32)>>,
    /// When the run started (RFC 3339), for the rows a halt puts back.
    pub started_at: String,
    /// Units that went in doubt in this run so far: a step with none, and none left by
    /// an earlier run, has nothing to settle.
    pub entered_doubt: std::sync::atomic::AtomicU64,
    /// The run's lock, held (and its heartbeat written) while the run lives.
    lock: std::sync::Mutex<Option<crate::state::lock::Heartbeat>>,
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a run stopped before its work was done, with the provider's or the network's words.
#[derive(Debug, Clone)]
pub enum Halt {
    /// 401/403: the credentials were refused.
    Refused(String),
    /// An item's every attempt, over its whole retry budget, failed to connect: the provider
    /// cannot be reached, and each row would spend its retries on it in turn.
    Unreachable(String),
    /// Before anything succeeded, [`SAME_ANSWER`] rows in a row were refused with the same
    /// code and message: a wrong base URL (404, 405, a proxy's page) or a job-wide
    /// mistake, not the rows.
    SameAnswer { code: String, message: String },
}

/// Refusals in a row with the same code and message, before anything succeeded, that stop
/// a run ([`Halt::SameAnswer`]).
pub const SAME_ANSWER: u32 = 5;

/// Something `reconcile` found different at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub step: String,
    pub row_key: String,
    pub what: String,
}

impl Ctx {
    /// The Hello Clever client; a refusal (never retried) when the job's provider is
    /// another, which the load-time checks already rule out.
    pub fn hc(&self) -> Result<&HelloClever, crate::provider::error::CallError> {
        self.helloclever
            .as_ref()
            .ok_or_else(|| crate::provider::error::CallError::Status {
                status: 400,
                code: Some("NOT_THIS_PROVIDER".into()),
                message: "a Hello Clever step in a job whose provider is not Hello Clever".into(),
                retry_after: None,
            })
    }

    /// Records that an item's request, sent at `sent`, may have been applied (`applied`:
    /// was): it stays in flight and settles (see [`doubt`]). Queued, not waited for: if it
    /// is lost, the next run counts the settle window from its own start.
    pub(crate) fn in_doubt(
        &self,
        unit: work::Unit,
        sent: chrono::DateTime<chrono::Utc>,
        applied: bool,
    ) -> Result<(), StateError> {
        self.entered_doubt.fetch_add(1, Ordering::Relaxed);
        let at = sent.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.db
            .record_later(move |c| work::set_doubt(c, unit, &at, applied))
    }

    /// Waits `d` for requests in doubt to settle, counting the wait in the run's figures;
    /// `false` when the run is stopping (it stops waiting at once).
    pub(crate) async fn settle_pause(&self, d: std::time::Duration) -> bool {
        let started = tokio::time::Instant::now();
        let deadline = started + d;
        while !self.stopping() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(std::time::Duration::from_millis(100))).await;
        }
        self.pacer
            .stats
            .settle_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        !self.stopping()
    }

    pub fn poll_every(&self, configured: std::time::Duration) -> std::time::Duration {
        self.poll_cap.map_or(configured, |cap| configured.min(cap))
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records an item's outcome, and counts its row done. The write is queued, not waited
    /// for (nobody needs it on disk to go on: an outcome lost to a crash leaves its item in
    /// flight, and the next run asks the provider); the step's end waits for all of them.
    pub fn outcome(&self, id: i64, o: Outcome) -> Result<(), StateError> {
        self.tick(1);
        self.update(id, o)
    }

    /// Records what a refresh learnt of an item (its row was counted when it was sent).
    pub fn update(&self, id: i64, o: Outcome) -> Result<(), StateError> {
        if o.state == ItemState::Succeeded {
            self.any_success.store(true, Ordering::Relaxed);
        }
        self.db.record_later(move |c| work::set_outcome(c, id, &o))
    }

    /// Puts an item back in the queue (stopping; its request was surely not applied).
    pub fn requeue(&self, id: i64) -> Result<(), StateError> {
        self.update(
            id,
            Outcome {
                state: ItemState::Pending,
                ..Outcome::default()
            },
        )
    }

    /// Waits until the next poll of a wait loop: `every`, but not past `deadline`.
    pub async fn next_poll(&self, every: std::time::Duration, deadline: tokio::time::Instant) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(every.min(left).max(std::time::Duration::from_millis(10))).await;
    }

    /// Lets the run's lock go (its record is gone already): the run is over, whoever still
    /// holds this context.
    pub fn release(&self) {
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Counts `n` more rows of the step done.
    pub fn tick(&self, n: u64) {
        self.progress.inc(n);
    }

    /// Says what the step waits on (`None`: it works again), on its bar or in the
    /// progress lines.
    pub fn waiting(&self, what: Option<String>) {
        self.progress.waiting(what);
    }
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
}

/// The provider settings `run` needs, resolved.
enum Settings {
    HelloClever {
        base: String,
        app_id: String,
        secret: String,
    },
    FinHub {
        base: String,
        tenant: String,
        auth: crate::provider::finhub::client::Auth,
        kyc_confirmation_path: String,
    },
}

/// A setting `run` needs: its value, else an error naming the unset variable or the key.
fn need(job: &Job, key: &str, setting: &crate::job::Setting) -> Result<String, RunError> {
    match setting {
        Some(Ok(v)) if !v.is_empty() => Ok(v.clone()),
        Some(Err(d)) => Err(RunError::Config(d.to_string())),
        _ => Err(RunError::Config(format!(
            "{}: provider.{key} is required to run",
            job.path.display()
        ))),
    }
}

/// A setting `run` can do without: its value if written, an error if its variable is unset.
fn optional(setting: &crate::job::Setting) -> Result<Option<String>, RunError> {
    match setting {
        Some(Ok(v)) => Ok(Some(v.clone())),
        Some(Err(d)) => Err(RunError::Config(d.to_string())),
        None => Ok(None),
    }
}

/// Resolves the provider settings `run` needs; a missing variable is an error naming it.
fn provider_settings(job: &Job, opts: &RunOptions) -> Result<Settings, RunError> {
    use crate::job::ProviderSettings;
    use crate::provider::finhub::client::Auth;
    use crate::provider::http::Secret;
    match &job.provider.settings {
        ProviderSettings::HelloClever {
            base_url,
            app_id,
            secret_key,
        } => {
            let base = match &opts.base_url {
                Some(b) => b.clone(),
                None => optional(base_url)?
                    .unwrap_or_else(|| crate::provider::helloclever::SANDBOX_BASE_URL.to_string()),
            };
            let (app_id, secret) = match &opts.credentials {
                Some(c) => c.clone(),
                None => (
                    need(job, "app_id", app_id)?,
                    need(job, "secret_key", secret_key)?,
                ),
            };
            Ok(Settings::HelloClever {
                base,
                app_id,
                secret,
            })
        }
        ProviderSettings::FinHub {
            base_url,
            tenant_id,
            token,
            token_url,
            client_id,
            client_secret,
            base_path,
            kyc_confirmation_path,
        } => {
            let base = match &opts.base_url {
                Some(b) => b.clone(),
                None => need(job, "base_url", base_url)?,
            };
            let (tenant, auth) = match &opts.credentials {
                // The embedded sandbox: its client, its tenant.
                Some((id, secret)) => (
                    crate::sandbox::FinhubConfig::default().tenant,
                    Auth::ClientCredentials {
                        token_url: format!("{base}/oauth/token"),
                        client_id: Secret::new(id.clone()),
                        client_secret: Secret::new(secret.clone()),
                    },
                ),
                None => {
                    let tenant = need(job, "tenant_id", tenant_id)?;
                    let auth = match token {
                        Some(Ok(t)) if !t.is_empty() => Auth::Static(Secret::new(t.clone())),
                        _ => {
                            for s in [token_url, client_id, client_secret] {
                                optional(s)?;
                            }
                            // A token whose variable is unset was meant to be used.
                            optional(token)?;
                            Auth::ClientCredentials {
                                token_url: need(job, "token_url", token_url)?,
                                client_id: Secret::new(need(job, "client_id", client_id)?),
                                client_secret: Secret::new(need(
                                    job,
                                    "client_secret",
                                    client_secret,
                                )?),
                            }
                        }
                    };
                    (tenant, auth)
                }
            };
            let path = optional(base_path)?.unwrap_or_else(|| "/customer/2.0.0".into());
            Ok(Settings::FinHub {
                base: format!("{}{}", base.trim_end_matches('/'), path),
                tenant,
                auth,
                kyc_confirmation_path: optional(kyc_confirmation_path)?
                    .unwrap_or_else(|| crate::provider::finhub::KYC_CONFIRMATION_PATH.to_string()),
            })
        }
    }
}

/// Builds what a run or a reconcile works with: the provider client, the database thread,
/// the plan (created when `create_plan`), and a run record holding the plan's lock.
async fn open(
    job: &Job,
    opts: &RunOptions,
    create_plan: bool,
) -> Result<(Arc<Ctx>, Db, i64, i64), RunError> {
    use crate::provider::http::Secret;
    let settings = provider_settings(job, opts)?;
    let http = crate::provider::http::client(job.limits.timeout, job.limits.concurrency as usize)
        .map_err(|e| RunError::Fatal(format!("cannot build the HTTP client: {e}")))?;
    let (helloclever, finhub) = match settings {
        Settings::HelloClever {
            base,
            app_id,
            secret,
        } => (
            Some(
                HelloClever::new(http, &base, Secret::new(app_id), Secret::new(secret))
                    .map_err(|e| RunError::Config(format!("{}: {e}", job.path.display())))?,
            ),
            None,
        ),
        Settings::FinHub {
            base,
            tenant,
            auth,
            kyc_confirmation_path,
        } => (
            None,
            Some(Arc::new(crate::provider::finhub::client::FinHub::new(
                http,
                &base,
                Secret::new(tenant),
                auth,
                &kyc_confirmation_path,
            ))),
        ),
    };
    // The lock first: a run that cannot have it touches nothing.
    let lock =
        crate::state::lock::try_take(&opts.state_path, &job.name, &job.scope).map_err(|e| {
            RunError::Fatal(format!(
                "cannot take the run's lock beside {}: {e}",
                opts.state_path.display()
            ))
        })?;
    let db = Db::open(&opts.state_path)?;
    let Some(lock) = lock else {
        let (name, scope) = (job.name.clone(), job.scope.clone());
        let held = db
            .read(move |c| {
                let plan = work::plan_id(c, &name, &scope)?;
                Ok(crate::state::lock::Held::read(c, plan))
            })
            .await?;
        return Err(RunError::Locked(held));
    };
    let (name, scope) = (job.name.clone(), job.scope.clone());
    let plan_id = db
        .write(move |c| {
            if create_plan {
                work::create_plan(c, &name, &scope)?;
            }
            work::plan_id(c, &name, &scope)
        })
        .await?
        .ok_or_else(|| {
            RunError::Config(format!(
                "'{}' scope '{}' has not been run yet: nothing to reconcile",
                job.name, job.scope
            ))
        })?;
    let lock = Arc::new(lock);
    let held = lock.clone();
    let run_id = db
        .write(move |c| crate::state::lock::start_run(c, plan_id, &held))
        .await?
        .map_err(RunError::Locked)?;
    let lock = crate::state::lock::Heartbeat::start(lock, db.clone(), plan_id, run_id);
    let ctx = Arc::new(Ctx {
        helloclever,
        finhub,
        directory: finhub::Directory::default(),
        run_started: tokio::time::Instant::now(),
        pacer: Pacer::new(
            &job.limits.rate,
            job.limits.burst,
            job.limits.concurrency,
            job.limits.retry.clone(),
        ),
        db: db.clone(),
        plan_id,
        run_id,
        stop: opts.stop.clone(),
        halt: std::sync::Mutex::new(None),
        poll_cap: opts.poll_cap,
        progress: progress::Progress::new(opts.show_progress),
        any_success: AtomicBool::new(false),
        same_answer: std::sync::Mutex::new(None),
        started_at: work::now(),
        settle: job.limits.settle,
        settle_recheck: job.limits.settle_recheck,
        lookback: job.limits.lookback,
        entered_doubt: Default::default(),
        lock: std::sync::Mutex::new(Some(lock)),
    });
    Ok((ctx, db, plan_id, run_id))
}

/// Refreshes what the provider holds for everything sent — payout batches and their
/// transactions (those waiting for funds too), KYC not yet decided — records it, checks
/// that each payout external id is paid once, and returns what changed. It takes the
/// lock and is recorded as a run (so its reports show the refreshed state).
///
/// With `only_run`, only what that run sent first (by the time of its first attempt).
pub async fn reconcile(
    job: &Job,
    opts: RunOptions,
    only_run: Option<i64>,
) -> Result<(RunReport, Vec<Change>), RunError> {
    let (ctx, db, plan_id, run_id) = open(job, &opts, false).await?;
    let span = match only_run {
        None => None,
        Some(id) => {
            let found = db.read(move |c| work::run_span(c, plan_id, id)).await?;
            match found {
                Some(span) => Some(span),
                None => {
                    let stats = work::RunStats::default();
                    db.write(move |c| {
                        work::finish_run(c, plan_id, run_id, crate::exit::INVALID_INPUT, &stats)
                    })
                    .await?;
                    return Err(RunError::Config(format!(
                        "'{}' scope '{}' has no run {id}",
                        job.name, job.scope
                    )));
                }
            }
        }
    };
    // Whether something first sent at `at` belongs to the run asked about.
    let in_span = |at: &Option<String>| match (&span, at) {
        (None, _) => true,
        (Some((from, to)), Some(at)) => at >= from && at <= to,
        (Some(_), None) => false,
    };
    let mut changes = Vec::new();
    let result: Result<(), RunError> = async {
        for step in &job.steps {
            let step_id = step.id.clone();
            let found = match step.kind {
                StepKind::Payout => {
                    let batches = ctx
                        .db
                        .read(move |c| {
                            work::batches_in(
                                c,
                                plan_id,
                                &step_id,
                                &[BatchState::Sent, BatchState::Completed],
                            )
                        })
                        .await?;
                    let mut found = Vec::new();
                    for b in batches.into_iter().filter(|b| in_span(&b.first_attempt_at)) {
                        if let Some(uuid) = b.provider_ref.clone()
                            && let Some((_, mut c)) = payout::refresh_batch(&ctx, &b, &uuid).await?
                        {
                            found.append(&mut c);
                        }
                    }
                    // Whatever run sent them: is each external id paid once?
                    payout::check_duplicates(&ctx, &step.id).await?;
                    found
                }
                StepKind::Kyc => {
                    let items = ctx
                        .db
                        .read(move |c| {
                            work::items_in(
                                c,
                                plan_id,
                                &step_id,
                                &[ItemState::Succeeded, ItemState::Blocked],
                            )
                        })
                        .await?;
                    let mut found = Vec::new();
                    for item in items
                        .iter()
                        .filter(|i| in_span(&i.first_attempt_at))
                        .filter(|i| {
                            i.provider_status
                                .as_deref()
                                .is_some_and(|s| !matches!(s, "approved" | "rejected" | "failed"))
                        })
                    {
                        let timeout = step
                            .wait
                            .as_ref()
                            .map_or(std::time::Duration::ZERO, |w| w.timeout);
                        if let Some(c) = kyc::refresh(&ctx, item, true, timeout).await? {
                            found.push(c);
                        }
                    }
                    found
                }
                // Nothing of these changes at FinHub on its own.
                _ => Vec::new(),
            };
            changes.extend(found.into_iter().map(|c| Change {
                step: step.id.clone(),
                ..c
            }));
        }
        // Outcomes are queued without waiting: all of them are committed here.
        ctx.db.settled().await?;
        Ok(())
    }
    .await;
    let floor = match &result {
        Ok(()) => crate::exit::SUCCESS,
        Err(_) => crate::exit::FATAL,
    };
    let stats = ctx.pacer.stats.snapshot();
    let recorded = stats.clone();
    let (exit_code, counts) = db
        .write(move |c| work::finish_run(c, plan_id, run_id, floor, &recorded))
        .await?;
    ctx.release();
    result?;
    let duplicates = db.read(move |c| work::duplicates_of(c, plan_id)).await?;
    Ok((
        RunReport {
            run_id,
            exit_code,
            counts,
            stats,
            exports: Vec::new(),
            report: None,
            duplicates,
        },
        changes,
    ))
}

/// Plans the job and runs it: takes the plan's lock (exit 3 when held), plans under it,
/// executes, records the run. Row problems found while planning go to `on_error`.
pub async fn run(
    job: &Job,
    opts: RunOptions,
    on_error: &mut (dyn FnMut(crate::input::InputError) + Send),
) -> Result<RunReport, RunError> {
    let (ctx, db, plan_id, run_id) = open(job, &opts, true).await?;
    tracing::info!(run = run_id, job = %job.name, scope = %job.scope, "run started");
    // Off a terminal, a working step says how far it is every `progress_every`.
    let _lines = (!ctx.progress.has_bars()).then(|| {
        let (ctx, every) = (Arc::downgrade(&ctx), opts.progress_every);
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(ctx) = ctx.upgrade() else { return };
                if let Some(line) = ctx.progress.line() {
                    tracing::info!("{line}");
                }
            }
        }))
    });
    // Planning happens under the lock: no other run can be sending while items change.
    let planned = tokio::task::block_in_place(|| {
        crate::plan::plan_unless_stopped(job, &opts.state_path, on_error, &opts.stop)
    });
    let floor = match planned {
        Err(crate::plan::PlanError::Invalid(_) | crate::plan::PlanError::Input(_)) => {
            crate::exit::INVALID_INPUT
        }
        Err(crate::plan::PlanError::Stopped) => {
            tracing::warn!("stopped while planning: nothing was planned or sent");
            crate::exit::INTERRUPTED
        }
        Err(crate::plan::PlanError::State(e)) => {
            let why = e.to_string();
            let _ = db
                .write(move |c| {
                    work::finish_fatal(c, plan_id, run_id, &work::RunStats::default(), &why)
                })
                .await;
            return Err(e.into());
        }
        Ok(planned) => {
            match execute_all(job, &ctx, opts.retry_failed, run_id, &planned.counts).await {
                Ok(code) => code,
                Err(e) => {
                    let (stats, why) = (ctx.pacer.stats.snapshot(), e.to_string());
                    let _ = db
                        .write(move |c| work::finish_fatal(c, plan_id, run_id, &stats, &why))
                        .await;
                    return Err(e);
                }
            }
        }
    };
    let stats = ctx.pacer.stats.snapshot();
    let recorded = stats.clone();
    let (exit_code, counts) = db
        .write(move |c| work::finish_run(c, plan_id, run_id, floor, &recorded))
        .await?;
    ctx.release();
    tracing::info!(
        run = run_id,
        exit_code,
        requests = stats.requests,
        retries = stats.retries,
        rate_limited = stats.rate_limited,
        in_doubt_resolved = stats.in_doubt_resolved,
        state_commits = db.commits(),
        "run finished"
    );
    let exports = db
        .read(move |c| crate::state::exports::of_run(c, run_id))
        .await?;
    let (names, steps, source) = (
        (job.name.clone(), job.scope.clone()),
        job.steps.iter().map(|s| (s.id.clone(), s.kind)).collect(),
        db.path().to_path_buf(),
    );
    let report = db
        .read(move |c| {
            crate::report::Report::load_of(c, &source, (&names.0, &names.1), steps, Some(run_id))
        })
        .await
        .ok();
    let duplicates = report
        .as_ref()
        .map(|r| r.duplicates.clone())
        .unwrap_or_default();
    Ok(RunReport {
        run_id,
        exit_code,
        counts,
        stats,
        exports,
        report,
        duplicates,
    })
}

/// The row steps, then the export steps (unless the rows were interrupted).
async fn execute_all(
    job: &Job,
    ctx: &Arc<Ctx>,
    retry_failed: bool,
    run_id: i64,
    planned: &crate::state::PlanCounts,
) -> Result<i32, RunError> {
    // A first plan says how many items each step has to send: no need to count them
    // again (a cold pass over the new table, before the first request).
    let known = planned.fresh && !retry_failed;
    let todo: Vec<Option<u64>> = (0..job.steps.len())
        .map(|si| planned.steps.get(si).filter(|_| known).map(|c| c.new))
        .collect();
    let code = execute(job, ctx.clone(), retry_failed, &todo).await?;
    let halt = ctx.halt.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(halt) = halt {
        let stay = "nothing more was sent, and the rows not done stay pending for the next run";
        return Err(RunError::Fatal(match halt {
            Halt::Refused(why) => format!(
                "the provider refused payrun's credentials ({why}); {stay} — check provider credentials{}",
                if job.provider.kind == crate::provider::ProviderKind::FinHub {
                    " and tenant_id"
                } else {
                    ""
                }
            ),
            Halt::Unreachable(why) => format!(
                "cannot reach the provider ({why}); {stay} — check provider.base_url and the network"
            ),
            Halt::SameAnswer { code, message } => {
                // The rows refused so far were refused for the job, not for themselves.
                let (plan_id, since, c) = (ctx.plan_id, ctx.started_at.clone(), code.clone());
                let m = message.clone();
                ctx.db
                    .write(move |db| work::requeue_refused(db, plan_id, &since, &c, &m))
                    .await?;
                format!(
                    "the provider refused {SAME_ANSWER} rows in a row the same way ({code}: {}) and nothing succeeded: its requests are probably not reaching the API; {stay} — check provider.base_url (its path too: Hello Clever's ends in /api) and the job's fields",
                    crate::redact::scrub(&message)
                )
            }
        }));
    }
    if job.exports.is_empty() || code == crate::exit::INTERRUPTED {
        return Ok(code);
    }
    let all_done = export::run_all(job, ctx, run_id).await?;
    Ok(match all_done {
        _ if ctx.stopping() => crate::exit::INTERRUPTED,
        true => code,
        false => code.max(crate::exit::ROWS_FAILED),
    })
}

/// Executes a planned job: `plan_id` is the plan, `run_id` the run holding its lock.
/// `known_todo`: the number of items each step has to send, where already known.
pub async fn execute(
    job: &Job,
    ctx: Arc<Ctx>,
    retry_failed: bool,
    known_todo: &[Option<u64>],
) -> Result<i32, RunError> {
    let plan_id = ctx.plan_id;
    if retry_failed {
        let (retried, kept) = ctx
            .db
            .write(move |c| work::retry_failed(c, plan_id))
            .await?;
        tracing::info!(rows = retried, "--retry-failed: failed rows go out again");
        if kept > 0 {
            tracing::warn!(
                rows = kept,
                "--retry-failed: failed rows whose batch the provider holds and may still pay are not sent again (a transaction it reported failed may yet complete); `payrun reconcile` follows them"
            );
        }
    }
    let Some(input) = &job.input else {
        // A job of exports only: no rows to send.
        return Ok(crate::exit::SUCCESS);
    };
    let renderer = Renderer::new(job, ctx.db.key().clone());
    let mut rows = RecordReader::open(&input.csv, input.delimiter)
        .map_err(|e| RunError::Fatal(e.to_string()))?;
    let mut rows = RowSource {
        renderer: &renderer,
        reader: &mut rows,
    };
    for (si, step) in job.steps.iter().enumerate() {
        if ctx.stopping() {
            break;
        }
        let todo = match known_todo.get(si).copied().flatten() {
            Some(n) => n,
            None => {
                let (step_id, states) = (
                    step.id.clone(),
                    [ItemState::Pending, ItemState::InFlight, ItemState::Blocked],
                );
                ctx.db
                    .read(move |c| work::count_in(c, plan_id, &step_id, &states))
                    .await?
            }
        };
        tracing::info!(step = %step.id, items = todo, "step started");
        ctx.progress.start(&step.id, todo);
        match step.kind {
            StepKind::Contact => contact::run(job, si, step, &ctx, &mut rows).await?,
            StepKind::Kyc => kyc::run(job, si, step, &ctx, &mut rows).await?,
            StepKind::Payout => payout::run(job, si, step, &ctx, &mut rows).await?,
            _ => finhub::run(job, si, step, &ctx, &mut rows).await?,
        }
        // Outcomes are queued without waiting: all of the step's are committed here.
        ctx.db.settled().await?;
        ctx.progress.finish();
        log_step_end(&ctx, &step.id).await?;
    }
    // What the items earn is added when the run is recorded as finished.
    Ok(if ctx.stopping() {
        crate::exit::INTERRUPTED
    } else {
        crate::exit::SUCCESS
    })
}

/// Logs a step's end: its counts, and every row that failed or is blocked, with why.
async fn log_step_end(ctx: &Ctx, step: &str) -> Result<(), StateError> {
    let (plan_id, step_id) = (ctx.plan_id, step.to_string());
    let (rows, pending) = ctx
        .db
        .read(move |c| work::needing_a_look(c, plan_id, &step_id))
        .await?;
    for (row, state, code, message) in rows.iter().take(200) {
        // A key or a provider's message holds what the file or the provider put there:
        // printed as one line, control characters escaped.
        let message = crate::redact::scrub(message.as_deref().unwrap_or(""));
        let (row, message) = (
            crate::redact::printable(row),
            crate::redact::printable(&message),
        );
        tracing::warn!(step, row = %row, state = state.as_str(), code = code.as_deref().unwrap_or(""), "{message}");
    }
    if rows.len() > 200 {
        tracing::warn!(
            step,
            "… and {} more rows that need a look (see the report)",
            rows.len() - 200
        );
    }
    if pending > 0 {
        tracing::warn!(
            step,
            rows = pending,
            "{pending} not sent yet: the next run sends them"
        );
    }
    tracing::info!(
        step,
        needing_a_look = rows.len() as u64 + pending,
        "step finished"
    );
    Ok(())
}

/// A row's fields (the JSON text [`RowSource::payload`] gives) in the form a step needs.
pub(crate) fn parse_fields<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("the row's fields are not JSON: {e}"))
}

/// The bodies of items to send: the planned payload kept in state when nothing in it is
/// masked; otherwise the row read back from the CSV and rendered again, checked against
/// what was planned.
pub(crate) struct RowSource<'a, 'r> {
    renderer: &'a Renderer<'a>,
    reader: &'r mut RecordReader,
}

impl RowSource<'_, '_> {
    /// The full fields of `item` in step `si`, if the row still renders to what was planned.
    pub fn fields(&mut self, si: usize, item: &mut WorkItem) -> Result<Map<String, Value>, String> {
        parse_fields(&self.payload(si, item)?)
    }

    /// [`RowSource::fields`] as the canonical JSON text they were rendered to. When the
    /// state holds that text already (nothing in it masked), it is what is sent: exactly
    /// what was planned, with no need to read the row again (it is taken out of `item`).
    pub fn payload(&mut self, si: usize, item: &mut WorkItem) -> Result<String, String> {
        match item.take_planned_body(self.renderer.key()) {
            Some(body) => Ok(body),
            None => self.rendered(si, item),
        }
    }

    /// The row of `item` read from the file and rendered again, checked to be what was
    /// planned.
    fn rendered(&mut self, si: usize, item: &WorkItem) -> Result<String, String> {
        let record = self
            .reader
            .read_at(item.row_offset, item.row_line)
            .map_err(|e| e.to_string())?;
        let planned = self
            .renderer
            .render(&record, item.row_line, &item.row_key, si)
            .map_err(|errs| {
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?
            .ok_or("the row no longer renders this step")?;
        if planned.hash != item.content_hash {
            return Err(
                "the row changed since it was planned; run again to plan the change".into(),
            );
        }
        planned
            .send
            .ok_or_else(|| "the row does not take part in this step any more".into())
    }
}

/// Whether a row may enter step `si`: every earlier step's item succeeded (KYC with a wait
/// also approved) or was skipped. Otherwise, why not.
pub(crate) fn ready(
    job: &Job,
    si: usize,
    row_key: &str,
    states: &work::RowStates,
) -> Result<(), String> {
    for earlier in &job.steps[..si] {
        let Some((state, provider_status)) = states.get(&(row_key.to_string(), earlier.id.clone()))
        else {
            continue;
        };
        let approved_needed = earlier.kind == StepKind::Kyc && earlier.wait.is_some();
        match state {
            ItemState::Skipped => {}
            ItemState::Succeeded
                if !approved_needed || provider_status.as_deref() == Some("approved") => {}
            ItemState::Failed => return Err(format!("step '{}' failed for this row", earlier.id)),
            _ => return Err(format!("waiting for step '{}'", earlier.id)),
        }
    }
    Ok(())
}

/// Marks items whose row is not ready as blocked, and returns the ready ones.
pub(crate) async fn split_ready(
    job: &Job,
    si: usize,
    ctx: &Ctx,
    items: Vec<WorkItem>,
) -> Result<Vec<WorkItem>, StateError> {
    let earlier = earlier_states(ctx, si).await?;
    keep_ready(job, si, ctx, items, earlier.as_ref())
}

/// What [`keep_ready`] needs to know of the rows' earlier steps (nothing for the first).
pub(crate) async fn earlier_states(
    ctx: &Ctx,
    si: usize,
) -> Result<Option<work::RowStates>, StateError> {
    if si == 0 {
        return Ok(None);
    }
    let plan_id = ctx.plan_id;
    Ok(Some(
        ctx.db.read(move |c| work::row_states(c, plan_id)).await?,
    ))
}

/// [`split_ready`] with the earlier steps' states read already.
pub(crate) fn keep_ready(
    job: &Job,
    si: usize,
    ctx: &Ctx,
    items: Vec<WorkItem>,
    earlier: Option<&work::RowStates>,
) -> Result<Vec<WorkItem>, StateError> {
    let Some(states) = earlier else {
        return Ok(items);
    };
    let mut go = Vec::with_capacity(items.len());
    for item in items {
        match ready(job, si, &item.row_key, states) {
            Ok(()) => go.push(item),
            // In-flight items were sent: they are resolved whatever their row does now.
            Err(_) if item.state == ItemState::InFlight => go.push(item),
            Err(why) => {
                let o = Outcome {
                    state: ItemState::Blocked,
                    error_code: Some("WAITING".into()),
                    error_message: Some(why),
                    ..Outcome::default()
                };
                ctx.outcome(item.id, o)?;
            }
        }
    }
    Ok(go)
}
