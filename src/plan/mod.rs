//! Planning: rows → items. `validate` checks every row and sends and writes nothing;
//! `plan` validates first and, only when the input is clean and within the guardrails,
//! upserts the items and batches into the state database.

pub mod approval;
mod check;
pub mod digest;
mod items;
mod reader;
mod rows;
mod rules;

pub use check::{CheckSummary, ItemPlan, RowPlan, check_rows};

use crate::input::InputError;
use crate::job::Job;
use crate::state::{PlanCounts, PlanWriter, State, StateError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a plan did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{} problem(s) in the input; nothing was planned", .0.errors)]
    Invalid(CheckSummary),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    State(#[from] StateError),
    /// A stop signal came while the plan was being written: nothing of it was kept.
    #[error("stopped while planning; nothing was planned")]
    Stopped,
}

/// What a successful plan did.
#[derive(Debug)]
pub struct PlanOutcome {
    pub summary: CheckSummary,
    pub counts: PlanCounts,
    pub state_path: PathBuf,
}

/// Checks every row of the job; problems go to `on_error`.
pub fn validate(
    job: &Job,
    on_error: &mut dyn FnMut(InputError),
) -> Result<CheckSummary, InputError> {
    check_rows(job, None, on_error, &mut |_| true)
}

/// The default state database of a job: `.payrun/<job name>.db` beside the job file.
pub fn default_state_path(job: &Job) -> PathBuf {
    state_path_of(job, job.sandbox)
}

/// [`default_state_path`] of the job's real runs, or of its `--sandbox` rehearsals.
pub fn state_path_of(job: &Job, sandbox: bool) -> PathBuf {
    let name = if sandbox {
        format!("{}.sandbox.db", job.name)
    } else {
        format!("{}.db", job.name)
    };
    job.dir.join(".payrun").join(name)
}

/// Moves what a `--sandbox` run writes away from the real run's: state in
/// `.payrun/<job>.sandbox.db`, reports under `<report.dir>/sandbox/`, export files in a
/// `sandbox/` folder beside their real place.
pub fn use_sandbox_paths(job: &mut Job) {
    job.sandbox = true;
    job.report.dir = job.report.dir.join("sandbox");
    for e in &mut job.exports {
        if let Some(name) = e.path.file_name().map(std::ffi::OsStr::to_os_string) {
            let dir = e.path.parent().map(Path::to_path_buf).unwrap_or_default();
            e.path = dir.join("sandbox").join(name);
        }
    }
}

/// Validates the job's input and, when it is clean, writes the plan into the state database.
pub fn plan(
    job: &Job,
    state_path: &Path,
    opts: &digest::PlanOptions,
    on_error: &mut dyn FnMut(InputError),
) -> Result<PlanOutcome, PlanError> {
    plan_unless_stopped(job, state_path, opts, on_error, &AtomicBool::new(false))
}

/// [`plan`], given up as soon as `stop` is set while the items are written (a plan of a
/// million rows takes seconds): the plan's transaction is rolled back, and the state is
/// exactly as it was.
pub fn plan_unless_stopped(
    job: &Job,
    state_path: &Path,
    opts: &digest::PlanOptions,
    on_error: &mut dyn FnMut(InputError),
    stop: &AtomicBool,
) -> Result<PlanOutcome, PlanError> {
    let summary = checked(job, opts, on_error)?;
    if summary.errors > 0 {
        return Err(PlanError::Invalid(summary));
    }
    let state = State::open(state_path)?;
    plan_into(job, &state, opts, on_error, stop)
}

/// [`validate`], then the control totals of `opts` (their mismatches are problems too).
pub fn checked(
    job: &Job,
    opts: &digest::PlanOptions,
    on_error: &mut dyn FnMut(InputError),
) -> Result<CheckSummary, InputError> {
    let mut summary = validate(job, on_error)?;
    for e in digest::control_totals(job, &summary, opts) {
        summary.errors += 1;
        on_error(e);
    }
    Ok(summary)
}

/// Writes the plan of a job whose input was found clean into `state` (the input is read
/// again, and checked again).
pub fn plan_into(
    job: &Job,
    state: &State,
    opts: &digest::PlanOptions,
    on_error: &mut dyn FnMut(InputError),
    stop: &AtomicBool,
) -> Result<PlanOutcome, PlanError> {
    let mut writer = PlanWriter::begin(state, job)?;
    let mut failure: Option<StateError> = None;
    let mut stopped = false;
    let mut late_errors = 0;
    // The input is read a second time to build the items: it may have changed since the
    // first pass, so rows are checked again and any problem aborts the plan.
    let second = check_rows(
        job,
        Some(state.key().clone()),
        &mut |e| {
            late_errors += 1;
            on_error(e)
        },
        &mut |row| {
            if stop.load(Ordering::Relaxed) {
                stopped = true;
                return false;
            }
            match writer.add_row(row) {
                Ok(()) => true,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        },
    )?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    if stopped {
        return Err(PlanError::Stopped);
    }
    if late_errors > 0 {
        return Err(PlanError::Invalid(second));
    }
    // The file may have changed since the first pass: its totals are checked again.
    let mismatched = digest::control_totals(job, &second, opts);
    if !mismatched.is_empty() {
        let mut second = second;
        for e in mismatched {
            second.errors += 1;
            on_error(e);
        }
        return Err(PlanError::Invalid(second));
    }
    let counts = writer.commit(&second, &opts.by)?;
    Ok(PlanOutcome {
        summary: second,
        counts,
        state_path: state.path().to_path_buf(),
    })
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Derives a stable external id from its parts (job, scope, step, row key or batch).
///
/// Readable where it can be: parts joined by `-`, kept to `[A-Za-z0-9._-]`, at most 64
/// characters. When anything had to be changed or cut, a hash of the exact parts is
/// appended, so two different rows never share an id.
pub fn external_id(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let clean: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean == joined && clean.len() <= 64 {
        return clean;
    }
    let digest = hex(&Sha256::digest(parts.join("\u{1f}").as_bytes()));
    let prefix: String = clean.chars().take(47).collect();
    format!("{prefix}-{}", &digest[..16])
}

/// Renders single rows again for the executor: the same templates and checks as `plan`,
/// with the full (unmasked) values of each item, which state never holds.
pub struct Renderer<'a> {
    checker: rows::RowChecker<'a>,
}

impl<'a> Renderer<'a> {
    /// Renders the job's rows as `plan` did into a state hashed with `key`.
    pub fn new(job: &'a Job, key: crate::state::key::ContentKey) -> Renderer<'a> {
        Renderer {
            checker: rows::RowChecker::new(job, Some(key), true),
        }
    }

    /// The key the planned hashes were made with.
    pub fn key(&self) -> &crate::state::key::ContentKey {
        self.checker.key.as_ref().expect("a renderer hashes")
    }

    /// Renders and checks step `si` of one record: its item, or its problems.
    pub fn render(
        &self,
        record: &csv::StringRecord,
        line: u64,
        key: &str,
        si: usize,
    ) -> Result<Option<ItemPlan>, Vec<InputError>> {
        let mut out = check::ChunkResult::default();
        let rows = crate::input::Rows::from_records([record]);
        self.checker
            .check_row_step(si, line, key, rows.row(0), &mut out);
        if !out.errors.is_empty() {
            return Err(out.errors.into_iter().map(|(_, e)| e).collect());
        }
        Ok(out
            .items
            .pop()
            .and_then(|(_, items)| items.into_iter().find(|i| i.step == si)))
    }
}

#[cfg(test)]
mod tests {
    use super::external_id;

    #[test]
    fn external_ids_are_stable_readable_and_distinct() {
        assert_eq!(
            external_id(&["payroll", "2026-11", "pay", "E001"]),
            "payroll-2026-11-pay-E001"
        );
        let a = external_id(&["payroll", "2026-11", "pay", "a b"]);
        let b = external_id(&["payroll", "2026-11", "pay", "a-b"]);
        assert_ne!(a, b);
        assert_eq!(a, external_id(&["payroll", "2026-11", "pay", "a b"]));
        let long = external_id(&["payroll", &"x".repeat(100)]);
        assert!(long.len() <= 64, "{long}");
    }
}
