//! The row checker: streams the CSV once, renders every step's fields for every row,
//! validates them, and enforces the guardrails. `validate` runs it alone; `plan` runs it
//! first (nothing is written unless it is clean) and again to build the items it stores.
//!
//! Fields whose template is a constant are checked once, before the rows, and their
//! problems point at the job file; per row, only what the row can change is checked.

use super::reader;
use super::rows::{RowChecker, StepRules};
use crate::input::{CsvSource, InputError};
use crate::job::Job;
use csv::StringRecord;
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;

/// One step's work for one row, as planned.
#[derive(Debug, Clone)]
pub struct ItemPlan {
    pub step: usize,
    /// `when` was false: the row does not take part in this step.
    pub skipped: bool,
    /// The rendered fields as canonical JSON, sensitive values masked (safe to store/show).
    pub payload: String,
    /// SHA-256 (hex) of the full, unmasked fields (and image contents): detects changes.
    pub hash: String,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    /// Rows with equal groups may share a payout batch.
    pub group: Option<String>,
    pub external_id: Option<String>,
    /// The full, unmasked fields to send; only when rendering for the executor.
    pub send: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One input row's items.
#[derive(Debug, Clone)]
pub struct RowPlan {
    pub line: u64,
    /// Byte offset of the record in the file (after any BOM), to re-read it later.
    pub offset: u64,
    pub key: String,
    pub items: Vec<ItemPlan>,
}

/// What a full pass found.
#[derive(Debug, Default, Clone)]
pub struct CheckSummary {
    pub rows: u64,
    pub errors: u64,
    /// Per payout currency: sum of planned amounts and number of payouts.
    pub totals: BTreeMap<String, (Decimal, u64)>,
}

/// A rendered field value.
pub enum Rendered<'r> {
    Text(Cow<'r, str>),
    Map(Vec<(&'r str, Cow<'r, str>)>),
}

impl Rendered<'_> {
    pub(super) fn text(&self) -> Option<&str> {
        match self {
            Rendered::Text(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }
}

/// Where a guardrail was first crossed.
struct Offender {
    line: u64,
    key: String,
    column: Option<String>,
}

/// Checks every row of the job's input. Row problems go to `on_error` (all of them, in
/// file order, duplicates and guardrails last); with `build`, each clean row's items go to
/// `on_row`, which returns `false` to stop early. An `Err` is an input that cannot be read.
pub fn check_rows(
    job: &Job,
    build: bool,
    on_error: &mut dyn FnMut(InputError),
    on_row: &mut dyn FnMut(RowPlan) -> bool,
) -> Result<CheckSummary, InputError> {
    let Some(input) = &job.input else {
        // A job of exports only reads no rows.
        return Ok(CheckSummary::default());
    };
    let src = CsvSource::open(&input.csv, input.delimiter, &input.key)?;
    let size_hint = std::fs::metadata(&input.csv).map_or(0, |m| m.len());
    let checker = RowChecker::new(job, build, false);
    let mut merger = Merger {
        job,
        on_error,
        summary: CheckSummary::default(),
        seen: HashSet::with_capacity_and_hasher(
            (size_hint / 64).min(4 << 20) as usize,
            BuildHasherDefault::default(),
        ),
        suspects: Vec::new(),
        over_rows: None,
        over_total: BTreeMap::new(),
        running: Vec::new(),
    };
    for e in checker.check_constants() {
        merger.report(e);
    }
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    reader::pipeline(
        src,
        workers,
        |chunk| {
            let mut out = ChunkResult::default();
            for (slot, line) in chunk.lines.iter().enumerate() {
                if let Ok(line) = line {
                    checker.check_row(
                        slot,
                        *line,
                        &chunk.keys[slot],
                        &chunk.records[slot],
                        &mut out,
                    );
                }
            }
            out
        },
        |chunk, result| merger.merge(chunk, result, &checker.rules, on_row),
    )?;
    merger.finish()
}

/// What the workers found in one chunk, by row slot, in slot order.
#[derive(Default)]
pub struct ChunkResult {
    pub(super) errors: Vec<(usize, InputError)>,
    /// (slot, step, amount, currency) of each valid payout.
    pub(super) payouts: Vec<(usize, usize, Decimal, [u8; 3])>,
    /// (slot, items) of each clean row, when building.
    pub(super) items: Vec<(usize, Vec<ItemPlan>)>,
}

/// What depends on row order, on the calling thread: duplicate keys, totals, guardrails
/// and reporting.
struct Merger<'a, 'e> {
    job: &'a Job,
    on_error: &'e mut dyn FnMut(InputError),
    summary: CheckSummary,
    /// Keys seen, as 64-bit hashes to keep memory flat; a repeat is only a suspect until
    /// `finish` confirms it against the real key text, so a collision is never reported.
    seen: HashSet<u64, BuildHasherDefault<Prehashed>>,
    suspects: Vec<(String, u64)>,
    over_rows: Option<Offender>,
    over_total: BTreeMap<String, Offender>,
    /// Running totals by currency (code, total, payouts, limit): a few entries compared as
    /// three bytes each, on the one thread every row passes through.
    running: Vec<([u8; 3], Decimal, u64, Option<Decimal>)>,
}

impl Merger<'_, '_> {
    fn report(&mut self, e: InputError) {
        self.summary.errors += 1;
        (self.on_error)(e);
    }

    /// Takes one chunk's results in file order; returns `false` when `on_row` asks to stop.
    fn merge(
        &mut self,
        chunk: &reader::Chunk,
        result: ChunkResult,
        rules: &[StepRules],
        on_row: &mut dyn FnMut(RowPlan) -> bool,
    ) -> bool {
        let mut errors = result.errors.into_iter().peekable();
        let mut payouts = result.payouts.into_iter().peekable();
        let mut items = result.items.into_iter().peekable();
        for (slot, line) in chunk.lines.iter().enumerate() {
            let line = match line {
                Err(e) => {
                    self.report(e.clone());
                    continue;
                }
                Ok(line) => *line,
            };
            let key = chunk.keys[slot].as_str();
            self.summary.rows += 1;
            if self
                .job
                .limits
                .max_rows
                .is_some_and(|max| self.summary.rows > max)
                && self.over_rows.is_none()
            {
                self.over_rows = Some(Offender {
                    line,
                    key: key.to_string(),
                    column: None,
                });
            }
            if !self.seen.insert(key_hash(key)) {
                self.suspects.push((key.to_string(), line));
            }
            while let Some((_, e)) = errors.next_if(|(s, _)| *s == slot) {
                self.report(e);
            }
            while let Some((_, si, amount, ccy)) = payouts.next_if(|(s, ..)| *s == slot) {
                self.add_to_total(ccy, amount, line, key, rules[si].amount_column.as_ref());
            }
            if let Some((_, row_items)) = items.next_if(|(s, _)| *s == slot)
                && !on_row(RowPlan {
                    line,
                    offset: chunk.records[slot]
                        .position()
                        .map_or(0, csv::Position::byte),
                    key: key.to_string(),
                    items: row_items,
                })
            {
                return false;
            }
        }
        true
    }

    fn add_to_total(
        &mut self,
        ccy: [u8; 3],
        amount: Decimal,
        line: u64,
        key: &str,
        column: Option<&String>,
    ) {
        let i = match self.running.iter().position(|r| r.0 == ccy) {
            Some(i) => i,
            None => {
                let max = std::str::from_utf8(&ccy)
                    .ok()
                    .and_then(|c| self.job.limits.max_total.get(c))
                    .copied();
                self.running.push((ccy, Decimal::ZERO, 0, max));
                self.running.len() - 1
            }
        };
        let entry = &mut self.running[i];
        entry.1 += amount;
        entry.2 += 1;
        if entry.3.is_some_and(|max| entry.1 > max) {
            let ccy = String::from_utf8_lossy(&ccy).into_owned();
            self.over_total.entry(ccy).or_insert_with(|| Offender {
                line,
                key: key.to_string(),
                column: column.cloned(),
            });
        }
    }

    fn finish(mut self) -> Result<CheckSummary, InputError> {
        let job = self.job;
        for (ccy, total, n, _) in std::mem::take(&mut self.running) {
            self.summary
                .totals
                .insert(String::from_utf8_lossy(&ccy).into_owned(), (total, n));
        }
        if !self.suspects.is_empty() {
            for (key, line, first) in confirm_duplicates(job, &self.suspects)? {
                self.report(InputError {
                    path: job.csv_path(),
                    line: Some(line),
                    column: job.input.as_ref().map(|i| i.key.join("+")),
                    message: format!("duplicate key '{key}' (first used on line {first})"),
                });
            }
        }
        if let (Some(max), Some(o)) = (job.limits.max_rows, self.over_rows.take()) {
            let rows = self.summary.rows;
            self.report(InputError {
                path: job.csv_path(),
                line: Some(o.line),
                column: None,
                message: format!("limits.max_rows is {max} but the input has {rows} rows; row '{}' is the first over the limit", o.key),
            });
        }
        for (ccy, o) in std::mem::take(&mut self.over_total) {
            let max = job.limits.max_total[&ccy];
            let total = self.summary.totals[&ccy].0;
            self.report(InputError {
                path: job.csv_path(),
                line: Some(o.line),
                column: o.column,
                message: format!("limits.max_total for {ccy} is {max} but the planned total is {total}; row '{}' is the first to pass the limit", o.key),
            });
        }
        Ok(self.summary)
    }
}

/// Re-reads the input to find the first line of each suspected duplicate key; returns
/// (key, line, first line) for the real duplicates.
fn confirm_duplicates(
    job: &Job,
    suspects: &[(String, u64)],
) -> Result<Vec<(String, u64, u64)>, InputError> {
    let wanted: HashSet<&str> = suspects.iter().map(|(k, _)| k.as_str()).collect();
    let mut first: HashMap<String, u64> = HashMap::new();
    let Some(input) = &job.input else {
        return Ok(Vec::new());
    };
    let mut src = CsvSource::open(&input.csv, input.delimiter, &input.key)?;
    let (mut record, mut key) = (StringRecord::new(), String::new());
    loop {
        match src.next_row(&mut record, &mut key) {
            Ok(None) => break,
            Ok(Some(line)) if wanted.contains(key.as_str()) => {
                first.entry(key.clone()).or_insert(line);
            }
            Ok(Some(_)) => {}
            Err(e) if e.line.is_none() => return Err(e),
            Err(_) => {}
        }
    }
    Ok(suspects
        .iter()
        .filter_map(|(k, line)| {
            first
                .get(k)
                .filter(|f| *f < line)
                .map(|f| (k.clone(), *line, *f))
        })
        .collect())
}

/// A fast 64-bit hash of a key (FNV-1a, then a final mix). Not collision-proof, and it
/// need not be: repeats are confirmed on the real text.
fn key_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
