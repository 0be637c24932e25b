//! What the step runners share: the provider's client, the pacer, the database, the
//! stop flag, and how an item's outcome is recorded.

use super::*;

/// Everything the step runners share.
pub struct Ctx {
    /// The job's provider client; each step runner is given its own, typed.
    pub client: Client,
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
    pub(super) lock: std::sync::Mutex<Option<crate::state::lock::Heartbeat>>,
}

/// A task that ends with its owner.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

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

/// The job's provider client. A job holds only its provider's steps (checked when it
/// loads), so each step runner is handed the client of its kind.
pub enum Client {
    HelloClever(Arc<HelloClever>),
    FinHub(Arc<crate::provider::finhub::client::FinHub>),
}

impl Ctx {
    /// The plan's items of `step` in `states`, in file order.
    pub(crate) async fn items_in(
        &self,
        step: &str,
        states: &[ItemState],
    ) -> Result<Vec<WorkItem>, StateError> {
        let (plan_id, step, states) = (self.plan_id, step.to_string(), states.to_vec());
        self.db
            .read(move |c| work::items_in(c, plan_id, &step, &states))
            .await
    }

    /// The plan's payout batches of `step` in `states`, oldest first.
    pub(crate) async fn batches_in(
        &self,
        step: &str,
        states: &[BatchState],
    ) -> Result<Vec<work::WorkBatch>, StateError> {
        let (plan_id, step, states) = (self.plan_id, step.to_string(), states.to_vec());
        self.db
            .read(move |c| work::batches_in(c, plan_id, &step, &states))
            .await
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
        self.db.record_outcome(id, o)
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

    /// A step's wait (`wait: {timeout, poll}`): runs `round` every `every` until it says
    /// nothing is left (`None`), or `timeout` has passed, or the run stops. Each round is
    /// told whether it is the last (`expired`), and returns what it still waits for, which
    /// the step's bar or progress lines say.
    pub(crate) async fn poll_until<F, Fut>(
        &self,
        timeout: std::time::Duration,
        every: std::time::Duration,
        mut round: F,
    ) -> Result<(), RunError>
    where
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, RunError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let expired = tokio::time::Instant::now() >= deadline || self.stopping();
            let waiting = round(expired).await?;
            if waiting.is_none() || expired {
                self.waiting(None);
                return Ok(());
            }
            self.waiting(waiting);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(every.min(left).max(std::time::Duration::from_millis(10))).await;
        }
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
