//! Reports: what happened to every row and every dollar, built from the state database
//! alone (so `payrun report` regenerates any run's files exactly). One model, [`Report`],
//! feeds every writer: results.csv, summary.json, junit.xml.

mod csv_out;
pub use csv_out::neutralise;
mod html;
mod junit;
mod metrics;
mod summary;

use crate::job::Job;
use crate::job::steps::StepKind;
use crate::state::Conn;
use crate::state::{ItemState, Status};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reports of up to this many rows keep them in memory (a few hundred bytes each), so the
/// writers do not each read the database again.
const HELD_ROWS: usize = 100_000;

/// The version of summary.json's schema (see docs/reports.md).
pub const SUMMARY_SCHEMA: u32 = 1;

/// One step of one row, as the report shows it.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// The state's one name.
    pub status: Status,
    pub provider_ref: Option<String>,
    pub provider_status: Option<String>,
    pub batch_ref: Option<String>,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub updated_at: String,
    /// What the provider gave for the row (a payin's pay details, a refund's amount).
    pub details: Option<String>,
}

/// One input row.
#[derive(Debug, Clone)]
pub struct RowResult {
    pub key: String,
    pub line: u64,
    /// By step index; `None` when the row has no item for that step.
    pub steps: Vec<Option<StepResult>>,
}

/// The run a report is about.
pub use crate::state::work::RunInfo;

/// Money per currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub planned: Decimal,
    pub sent: Decimal,
    pub completed: Decimal,
    pub failed: Decimal,
}

/// Money collected with payins, per currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Asked of payers: every payin row of the plan.
    pub requested: Decimal,
    /// Paid by the payer (refunded or not).
    pub collected: Decimal,
    /// Asked (or in doubt), not paid yet.
    pub pending: Decimal,
    /// Expired or cancelled unpaid.
    pub expired: Decimal,
    /// Refunded by the job's refund steps.
    pub refunded: Decimal,
}

impl Collected {
    /// One line of it, as the run's summary and `status` say it: `collected AUD 10.00 of
    /// 20.00 asked, pending 10.00` (figures that are zero left out).
    pub fn said(&self, ccy: &str) -> String {
        let mut line = format!(
            "collected {ccy} {} of {} asked",
            self.collected, self.requested
        );
        for (what, n) in [
            ("pending", self.pending),
            ("expired", self.expired),
            ("refunded", self.refunded),
        ] {
            if !n.is_zero() {
                line.push_str(&format!(", {what} {n}"));
            }
        }
        line
    }
}

/// A refund item's refunded amount and currency, from what the provider answered.
pub(crate) fn refund_of(details: Option<&str>) -> Option<(Decimal, String)> {
    #[derive(serde::Deserialize)]
    struct Refunded {
        refund_amount: Decimal,
        currency: String,
    }
    let r: Refunded = serde_json::from_str(details?).ok()?;
    Some((r.refund_amount, r.currency))
}

/// [`refund_of`]'s amount for a step result.
pub(crate) fn refunded(s: &StepResult) -> Option<Decimal> {
    refund_of(s.details.as_deref()).map(|(a, _)| a)
}

/// Whether a payin's status says its payer paid.
pub fn payin_paid(status: Option<&str>) -> bool {
    matches!(status, Some(s) if s == "received" || s.starts_with("return_"))
}

#[derive(Debug, Clone)]
pub struct Report {
    pub job: String,
    pub scope: String,
    pub steps: Vec<(String, StepKind)>,
    pub run: RunInfo,
    /// Input rows with at least one item of the job's steps.
    pub row_count: usize,
    /// Rows by step and status.
    counts: BTreeMap<String, BTreeMap<Status, u64>>,
    /// Rows with a step failed, in conflict, blocked or pending.
    pub attention: usize,
    pub totals: BTreeMap<String, Totals>,
    /// Payins' money per currency (jobs with payin or refund steps).
    pub collected: BTreeMap<String, Collected>,
    plan_id: i64,
    /// The rows, when there are at most [`HELD_ROWS`]; a larger report reads them again
    /// from the database as each writer goes ([`Report::each_row`]), so a report of a
    /// million rows never holds them all.
    rows: Option<Vec<RowResult>>,
    /// The state database it was loaded from, to read the rows again when not held.
    source: PathBuf,
    /// The run's export steps.
    pub exports: Vec<crate::state::exports::ExportRecord>,
    /// Duplicates the last check found at the provider: (step, duplicate).
    pub duplicates: Vec<(String, crate::state::work::Duplicate)>,
    /// Which state file the report comes from (see [`run_dir`]).
    pub instance: String,
    /// For a job with `approval:`: the current plan's digest and its approvals.
    pub approval: Option<crate::plan::approval::Standing>,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{0}")]
    NotFound(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Report {
    /// Builds the report of run `run_id` (the latest when `None`) from the state database
    /// at `source`, read through `conn`.
    pub fn load(
        conn: &Conn,
        source: &Path,
        job: &Job,
        run_id: Option<i64>,
    ) -> Result<Report, crate::state::SqlError> {
        let steps = job.steps.iter().map(|s| (s.id.clone(), s.kind)).collect();
        Report::load_of(
            conn,
            source,
            (&job.name, &job.scope),
            (steps, job.approval.as_ref()),
            run_id,
        )
    }

    /// [`Report::load`] of the plan of `(job name, scope)` with these steps: what a closure
    /// that cannot borrow the job needs.
    pub fn load_of(
        conn: &Conn,
        source: &Path,
        (name, scope): (&str, &str),
        (steps, approval): (Vec<(String, StepKind)>, Option<&crate::job::Approval>),
        run_id: Option<i64>,
    ) -> Result<Report, crate::state::SqlError> {
        let plan_id: Option<i64> = crate::state::work::plan_id(conn, name, scope)?;
        let plan_id = plan_id.unwrap_or(-1);
        let approval = match approval {
            Some(a) => crate::plan::approval::standing(conn, a, plan_id, chrono::Utc::now())?,
            None => None,
        };
        let run = crate::state::work::run_info(conn, plan_id, run_id)?.unwrap_or_default();
        let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
        let mut collected: BTreeMap<String, Collected> = BTreeMap::new();
        let mut counts: BTreeMap<String, BTreeMap<Status, u64>> = BTreeMap::new();
        let (mut row_count, mut attention) = (0, 0);
        let mut rows = Some(Vec::new());
        let money = Some((&mut totals, &mut collected));
        scan(conn, plan_id, &steps, money, &mut |row| {
            row_count += 1;
            if needs_attention(&row) {
                attention += 1;
            }
            for (si, s) in row.steps.iter().enumerate() {
                if let Some(s) = s {
                    *counts
                        .entry(steps[si].0.clone())
                        .or_default()
                        .entry(s.status)
                        .or_default() += 1;
                }
            }
            match &mut rows {
                Some(held) if held.len() < HELD_ROWS => held.push(row),
                _ => rows = None,
            }
        })?;
        let exports = if run.id > 0 {
            crate::state::exports::of_run(conn, run.id)?
        } else {
            Vec::new()
        };
        let duplicates = crate::state::work::duplicates_of(conn, plan_id)?;
        let instance = crate::state::work::instance(conn)?;
        Ok(Report {
            approval,
            instance,
            duplicates,
            exports,
            job: name.to_string(),
            scope: scope.to_string(),
            steps,
            run,
            row_count,
            counts,
            attention,
            totals,
            collected,
            plan_id,
            rows,
            source: source.to_path_buf(),
        })
    }

    /// What a plan's payins collected per currency, without holding its rows (for
    /// `status`).
    pub fn collected_of(
        conn: &Conn,
        job: &Job,
    ) -> Result<BTreeMap<String, Collected>, crate::state::SqlError> {
        let Some(plan_id) = crate::state::work::plan_id(conn, &job.name, &job.scope)? else {
            return Ok(BTreeMap::new());
        };
        let steps: Vec<(String, StepKind)> =
            job.steps.iter().map(|s| (s.id.clone(), s.kind)).collect();
        let (mut totals, mut collected) = (BTreeMap::new(), BTreeMap::new());
        scan(
            conn,
            plan_id,
            &steps,
            Some((&mut totals, &mut collected)),
            &mut |_| {},
        )?;
        Ok(collected)
    }

    /// Counts by step and status.
    pub fn counts(&self) -> BTreeMap<String, BTreeMap<Status, u64>> {
        self.counts.clone()
    }

    /// Every row in file order: those held, or else read again from the state database
    /// (on a connection of the caller's thread) as `f` takes them.
    pub fn each_row(&self, f: &mut dyn FnMut(&RowResult)) -> Result<(), ReportError> {
        if let Some(rows) = &self.rows {
            rows.iter().for_each(f);
            return Ok(());
        }
        let state = crate::state::State::open(&self.source)?;
        scan(
            state.connection(),
            self.plan_id,
            &self.steps,
            None,
            &mut |row| f(&row),
        )
        .map_err(|e| state.err(e).into())
    }
}

/// Text escaped for HTML or XML: `apos` is how `'` is written; `no_controls` turns control
/// characters other than tab, newline and carriage return into spaces. Borrowed when there
/// is nothing to change.
pub(crate) fn escape_markup<'s>(
    s: &'s str,
    apos: &'static str,
    no_controls: bool,
) -> std::borrow::Cow<'s, str> {
    // XML 1.0 allows neither C0 controls (but tab and line ends) nor U+FFFE, U+FFFF.
    let control = |c: char| {
        no_controls
            && (((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
                || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
    };
    if !s
        .chars()
        .any(|c| matches!(c, '&' | '<' | '>' | '"' | '\'') || control(c))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str(apos),
            c if control(c) => out.push(' '),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether a row has a step that needs a look: failed, in conflict, blocked, pending, in
/// doubt or waiting for funds.
pub(crate) fn needs_attention(row: &RowResult) -> bool {
    row.steps.iter().flatten().any(|s| s.status.needs_a_look())
}

/// Adds a payin's or a refund's money to `collected`.
fn count_collected(
    collected: &mut BTreeMap<String, Collected>,
    kind: StepKind,
    i: &crate::state::work::ReportItem,
) {
    match kind {
        StepKind::Payin => {
            let (Some(a), Some(c)) = (i.amount, &i.currency) else {
                return;
            };
            let t = collected.entry(c.clone()).or_default();
            t.requested += a;
            let status = i.provider_status.as_deref();
            if payin_paid(status) {
                t.collected += a;
            } else if status == Some("expired") {
                t.expired += a;
            } else if i.state == ItemState::InFlight
                || (i.state != ItemState::Failed && status == Some("pending"))
            {
                t.pending += a;
            }
        }
        StepKind::Refund if i.state == ItemState::Succeeded => {
            if let Some((a, c)) = refund_of(i.details.as_deref()) {
                collected.entry(c).or_default().refunded += a;
            }
        }
        _ => {}
    }
}

/// Reads the plan's items in file order and hands each row (its items of the job's steps)
/// to `on_row`; adds the payouts' and payins' money to `money` when given.
type Money<'m> = (
    &'m mut BTreeMap<String, Totals>,
    &'m mut BTreeMap<String, Collected>,
);

fn scan(
    conn: &Conn,
    plan_id: i64,
    steps: &[(String, StepKind)],
    mut money: Option<Money<'_>>,
    on_row: &mut dyn FnMut(RowResult),
) -> crate::state::SqlResult<()> {
    let mut current: Option<RowResult> = None;
    crate::state::work::each_report_item(conn, plan_id, &mut |i| {
        // Rows of steps no longer in the job are left out.
        let Some(si) = steps
            .iter()
            .position(|(id, _)| *id == i.step)
            .or(usize::try_from(i.step_index)
                .ok()
                .filter(|s| *s < steps.len()))
        else {
            return;
        };
        let status = Status::of(i.state, i.conflict);
        if let Some((_, collected)) = money.as_mut()
            && status != Status::Skipped
        {
            count_collected(collected, steps[si].1, &i);
        }
        let (error_code, error_message) = if status.needs_a_look() {
            status.reason(i.error_code, i.error_message)
        } else {
            (i.error_code, i.error_message)
        };
        if let Some((totals, _)) = money.as_mut()
            && steps[si].1 == StepKind::Payout
            && status != Status::Skipped
            && let (Some(a), Some(c)) = (i.amount, &i.currency)
        {
            let t = totals.entry(c.clone()).or_default();
            // Planned is what the file asks now (as `plan` prints it): a row changed after
            // it was sent counts at its new amount; what was sent, at the old.
            t.planned += i.asked.unwrap_or(a);
            if matches!(
                i.state,
                ItemState::Succeeded | ItemState::InFlight | ItemState::AwaitingFunds
            ) {
                t.sent += a;
            }
            if i.provider_status.as_deref() == Some("completed") {
                t.completed += a;
            }
            if status == Status::Failed {
                t.failed += a;
            }
        }
        let result = StepResult {
            status,
            provider_ref: i.provider_ref,
            provider_status: i.provider_status,
            batch_ref: i.batch_ref,
            amount: i.amount,
            currency: i.currency,
            attempts: i.attempts,
            error_code,
            error_message,
            updated_at: i.updated_at,
            details: i.details,
        };
        if current
            .as_ref()
            .is_some_and(|row| row.line != i.row_line || row.key != i.row_key)
            && let Some(done) = current.take()
        {
            on_row(done);
        }
        let row = current.get_or_insert_with(|| RowResult {
            key: i.row_key,
            line: i.row_line,
            steps: vec![None; steps.len()],
        });
        row.steps[si] = Some(result);
    })?;
    if let Some(done) = current {
        on_row(done);
    }
    Ok(())
}

/// Where a run's reports go: `report.dir/<job>/<scope>/<run id>/` — unless that folder
/// holds another state file's run of the same id (each folder says whose it is in
/// `.payrun-state`): then `<run id>-<state file's id>`, so no run's reports replace
/// another's.
pub fn run_dir(job: &Job, run_id: i64, instance: &str) -> PathBuf {
    let scope = job.report.dir.join(&job.name).join(&job.scope);
    let plain = scope.join(run_id.to_string());
    let whose = std::fs::read_to_string(plain.join(STATE_MARK)).ok();
    match whose {
        Some(w) if w.trim() != instance => scope.join(format!("{run_id}-{instance}")),
        _ => plain,
    }
}

/// The file in a run's report folder that names the state file it comes from.
const STATE_MARK: &str = ".payrun-state";

/// Writes the job's report formats for a run (the latest when `None`) into its directory,
/// and the same files into `latest/` beside it. Returns the run's directory.
pub fn write(job: &Job, state_path: &Path, run_id: Option<i64>) -> Result<PathBuf, ReportError> {
    let state = crate::state::State::open(state_path)?;
    let report =
        Report::load(state.connection(), state_path, job, run_id).map_err(|e| state.err(e))?;
    drop(state);
    write_loaded(job, report, run_id)
}

/// [`write`] of a report loaded already (`run_id`: the run asked for, for the message when
/// it is not there).
pub fn write_loaded(
    job: &Job,
    report: Report,
    run_id: Option<i64>,
) -> Result<PathBuf, ReportError> {
    let state_path = report.source.as_path();
    if report.run.id == 0 {
        return Err(ReportError::NotFound(match run_id {
            Some(id) => format!(
                "run {id} of '{}' scope '{}' is not in {}",
                job.name,
                job.scope,
                crate::state::shown(state_path)
            ),
            None => format!(
                "'{}' scope '{}' has no run yet in {}",
                job.name,
                job.scope,
                crate::state::shown(state_path)
            ),
        }));
    }
    let dir = run_dir(job, report.run.id, &report.instance);
    let latest = job
        .report
        .dir
        .join(&job.name)
        .join(&job.scope)
        .join("latest");
    for d in [&dir, &latest] {
        crate::private::create_dir_all(d).map_err(|source| ReportError::Write {
            path: d.clone(),
            source,
        })?;
    }
    crate::private::create(&dir.join(STATE_MARK))
        .and_then(|mut f| std::io::Write::write_all(&mut f, report.instance.as_bytes()))
        .map_err(|source| ReportError::Write {
            path: dir.join(STATE_MARK),
            source,
        })?;
    let names: Vec<&'static str> = job
        .report
        .formats
        .iter()
        .filter_map(|format| match format.as_str() {
            "csv" => Some("results.csv"),
            "json" => Some("summary.json"),
            "junit" => Some("junit.xml"),
            "html" => Some("report.html"),
            _ => None,
        })
        .collect();
    // One thread a file: the formats are independent, and a run's end leaves cores idle.
    // Each thread has its own connection (a connection is not shared between threads).
    let written: Vec<Result<(), ReportError>> = std::thread::scope(|s| {
        let report = &report;
        let (dir, latest) = (&dir, &latest);
        let threads: Vec<_> = names
            .iter()
            .map(|&name| s.spawn(move || write_file(name, report, dir, latest)))
            .collect();
        threads
            .into_iter()
            .zip(&names)
            .map(|(t, name)| {
                t.join().unwrap_or_else(|_| {
                    Err(ReportError::Write {
                        path: dir.join(name),
                        source: std::io::Error::other("the report writer failed"),
                    })
                })
            })
            .collect()
    });
    written.into_iter().collect::<Result<(), _>>()?;
    Ok(dir)
}

/// Writes one report file into the run's directory, then puts it into `latest/`.
fn write_file(name: &str, report: &Report, dir: &Path, latest: &Path) -> Result<(), ReportError> {
    // Written under a temporary name and renamed: a reader never sees half a file. The
    // text streams to the file: a large run's report is never held whole in memory.
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = crate::private::create(&tmp).and_then(|file| {
        let mut w = std::io::BufWriter::with_capacity(256 << 10, file);
        let mut out = Out::new(&mut w);
        match name {
            "results.csv" => csv_out::results_csv(report, &mut out),
            "summary.json" => out.push_str(&summary::summary_json(report)),
            "junit.xml" => junit::junit_xml(report, &mut out),
            _ => html::report_html(report, &mut out),
        }
        out.finish()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
    let (copy, tmp) = (latest.join(name), latest.join(format!(".{name}.tmp")));
    // A second name for the same file (a copy where the file system cannot link): the
    // run's files are never written again once in place; a later run replaces the name.
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(&path, &tmp)
        .or_else(|_| std::fs::copy(&path, &tmp).map(drop))
        .and_then(|()| std::fs::rename(&tmp, &copy))
        .map_err(|source| ReportError::Write { path: copy, source })
}

/// Where a report's text goes: straight to its file (through a buffer). The first write
/// error is kept and returned by [`Out::finish`].
pub(crate) struct Out<'w> {
    w: &'w mut dyn std::io::Write,
    err: Option<std::io::Error>,
}

impl<'w> Out<'w> {
    pub(crate) fn new(w: &'w mut dyn std::io::Write) -> Out<'w> {
        Out { w, err: None }
    }

    pub(crate) fn push_str(&mut self, s: &str) {
        if self.err.is_none()
            && let Err(e) = self.w.write_all(s.as_bytes())
        {
            self.err = Some(e);
        }
    }

    pub(crate) fn fail(&mut self, e: std::io::Error) {
        self.err.get_or_insert(e);
    }

    /// The writer, for writers of their own (the csv crate's).
    pub(crate) fn writer(&mut self) -> &mut dyn std::io::Write {
        &mut *self.w
    }

    pub(crate) fn finish(self) -> std::io::Result<()> {
        match self.err {
            Some(e) => Err(e),
            None => self.w.flush(),
        }
    }
}

impl std::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// Writes Prometheus text-format metrics of a run (the latest when `None`) to `path`, with
/// permission bits `mode` (owner-only unless the user asks otherwise: a collector running
/// as another user needs 0644).
pub fn write_metrics(
    job: &Job,
    state_path: &Path,
    run_id: Option<i64>,
    (path, mode): (&Path, u32),
) -> Result<(), ReportError> {
    let state = crate::state::State::open(state_path)?;
    let report =
        Report::load(state.connection(), state_path, job, run_id).map_err(|e| state.err(e))?;
    let tmp = path.with_extension("prom.tmp");
    crate::private::create_with_mode(&tmp, mode)
        .and_then(|mut f| std::io::Write::write_all(&mut f, metrics::metrics(&report).as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Posts the run's summary (summary.json) to `notify.webhook_url` when the job asks for it:
/// after a run with failures, or after every run with `when: always`. Three attempts; it
/// never changes the run's exit code. Returns whether a summary was delivered.
pub async fn notify(
    job: &Job,
    state_path: &Path,
    run_id: i64,
    exit_code: i32,
) -> Result<bool, String> {
    let Some(n) = &job.notify else {
        return Ok(false);
    };
    if !n.always && exit_code == crate::exit::SUCCESS {
        return Ok(false);
    }
    if n.unresolved {
        return Err("notify.webhook_url has an unset variable; no notification sent".into());
    }
    let body = {
        let state = crate::state::State::open(state_path).map_err(|e| e.to_string())?;
        let report = Report::load(state.connection(), state_path, job, Some(run_id))
            .map_err(|e| e.to_string())?;
        summary::summary_json(&report)
    };
    let http = crate::provider::http::client(std::time::Duration::from_secs(10), 1)
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match http
            .post(&n.url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(true),
            // The URL is not part of the message: it may carry a token.
            Ok(r) => last = format!("the webhook answered HTTP {}", r.status().as_u16()),
            Err(e) => {
                last = format!(
                    "the webhook could not be reached ({})",
                    if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connection refused or failed"
                    } else {
                        "transport error"
                    }
                )
            }
        }
    }
    Err(last)
}
