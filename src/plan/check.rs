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
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One step's work for one row, as planned.
#[derive(Debug, Clone)]
pub struct ItemPlan {
    pub step: usize,
    /// `when` was false: the row does not take part in this step.
    pub skipped: bool,
    /// The rendered fields as canonical JSON, sensitive values masked (safe to store/show).
    pub payload: String,
    /// The keyed hash (hex, see [`crate::state::key`]) of the full, unmasked fields (and
    /// image contents): detects changes.
    pub hash: String,
    /// The plain SHA-256 a state from before keys holds for the same content, while it may.
    pub legacy_hash: Option<String>,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    /// Rows with equal groups may share a payout batch.
    pub group: Option<String>,
    pub external_id: Option<String>,
    /// The full, unmasked fields to send, as canonical JSON (image hashes left out); only
    /// when rendering for the executor.
    pub send: Option<String>,
    /// A payout's SHA-256 of its full fields, for the plan's digest (never stored).
    pub digest: Option<[u8; 32]>,
    /// A payout's keyed hash of the account it pays and the amount (see
    /// [`super::items::account_text`]): the same payment under another scope is found by it.
    pub payee: Option<String>,
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
    /// Per payin currency: sum of the amounts asked of payers and number of payins.
    pub payin_totals: BTreeMap<String, (Decimal, u64)>,
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
/// file order, duplicates and guardrails last); with `build` (the key to hash them with),
/// each clean row's items go to `on_row`, which returns `false` to stop early. An `Err` is
/// an input that cannot be read.
pub fn check_rows(
    job: &Job,
    build: Option<crate::state::key::ContentKey>,
    on_error: &mut dyn FnMut(InputError),
    on_row: &mut dyn FnMut(RowPlan) -> bool,
) -> Result<CheckSummary, InputError> {
    let Some(input) = &job.input else {
        // A job of exports only reads no rows.
        return Ok(CheckSummary::default());
    };
    let src = CsvSource::open(&input.csv, input.delimiter, &input.key)?;
    let size = std::fs::metadata(&input.csv).map_or(0, |m| m.len());
    let checker = RowChecker::new(job, build, false);
    let mut merger = Merger {
        job,
        on_error,
        summary: CheckSummary::default(),
        keys: vec![Vec::new(); KEY_BUCKETS],
        // Rows are rarely under 64 bytes.
        bucket_size: (size / 64).min(1 << 30) as usize / KEY_BUCKETS + 16,
        over_rows: None,
        over_total: BTreeMap::new(),
        running: Vec::new(),
        accounts: vec![Vec::new(); ACCOUNT_BUCKETS],
        account_bucket_size: if job.guards.shared_accounts {
            0
        } else {
            (size / 64).min(1 << 30) as usize / ACCOUNT_BUCKETS + 16
        },
    };
    for e in checker.check_constants() {
        merger.report(e);
    }
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    reader::pipeline(
        src,
        (workers, input.max_record_bytes),
        |chunk, out: &mut ChunkResult| {
            out.clear();
            let mut scratch = Vec::new();
            for (slot, &line) in chunk.lines.iter().enumerate() {
                let key = chunk.key(slot);
                out.hashes.push(key_hash(key));
                checker.check_row(slot, line, key, chunk.row(slot), out, &mut scratch);
            }
            for &(_, _, amount, ccy) in &out.payouts {
                add_to(&mut out.subtotals, ccy, amount);
            }
        },
        |chunk, result| merger.merge(chunk, result, &checker.rules, on_row),
    )?;
    merger.finish(workers, &checker)
}

/// Account hashes are kept in this many buckets by their top 12 bits, sorted in parallel
/// (small buckets sort fast).
const ACCOUNT_BUCKETS: usize = 4096;

/// Key hashes are kept in this many buckets by their top 12 bits, sorted at the end to find
/// repeats: appending is cheaper than a hash set insert, small buckets sort fast, and the
/// buckets sort in parallel.
const KEY_BUCKETS: usize = 4096;

/// What the workers found in one chunk, by row slot, in slot order.
#[derive(Default)]
pub struct ChunkResult {
    pub(super) errors: Vec<(usize, InputError)>,
    /// (slot, step, amount, currency) of each valid payout.
    pub(super) payouts: Vec<(usize, usize, Decimal, [u8; 3])>,
    /// (slot, items) of each clean row, when building.
    pub(super) items: Vec<(usize, Vec<ItemPlan>)>,
    /// The key hash of every row read.
    pub(super) hashes: Vec<u64>,
    /// (slot, hash of step and account) of each valid payout, unless the job lets two keys
    /// pay one account.
    pub(super) accounts: Vec<u64>,
    /// Per payout currency: the chunk's total and number of payouts.
    pub(super) subtotals: Subtotals,
    /// Per payin currency: the chunk's total and number of payins.
    pub(super) payin_subtotals: Subtotals,
}

/// A chunk's total and count per currency.
pub(super) type Subtotals = SmallVec<[([u8; 3], Decimal, u64); 2]>;

/// Counts `amount` in `ccy`'s subtotal.
pub(super) fn add_to(subtotals: &mut Subtotals, ccy: [u8; 3], amount: Decimal) {
    match subtotals.iter_mut().find(|t| t.0 == ccy) {
        Some(t) => {
            t.1 += amount;
            t.2 += 1;
        }
        None => subtotals.push((ccy, amount, 1)),
    }
}

impl ChunkResult {
    /// Empties it for the next chunk, keeping the buffers.
    fn clear(&mut self) {
        self.errors.clear();
        self.payouts.clear();
        self.items.clear();
        self.hashes.clear();
        self.accounts.clear();
        self.subtotals.clear();
        self.payin_subtotals.clear();
    }
}

/// What depends on row order, on the calling thread: duplicate keys, totals, guardrails
/// and reporting.
struct Merger<'a, 'e> {
    job: &'a Job,
    on_error: &'e mut dyn FnMut(InputError),
    summary: CheckSummary,
    /// Keys read, as 64-bit hashes to keep memory flat, by their top bits; a repeated hash
    /// is only a suspect until `finish` confirms it against the real key text, so a
    /// collision is never reported.
    keys: Vec<Vec<u64>>,
    /// The expected size of a bucket, from the file's size.
    bucket_size: usize,
    over_rows: Option<Offender>,
    over_total: BTreeMap<String, Offender>,
    /// Running totals by currency (code, total, payouts, limit): a few entries compared as
    /// three bytes each, on the one thread every row passes through.
    running: Vec<([u8; 3], Decimal, u64, Option<Decimal>)>,
    /// (hash of step and account, line) of each payout: two keys paying one account are
    /// found by sorting them at the end.
    accounts: Vec<Vec<u64>>,
    /// The expected size of an accounts bucket, from the file's size.
    account_bucket_size: usize,
}

impl Merger<'_, '_> {
    fn report(&mut self, e: InputError) {
        self.summary.errors += 1;
        (self.on_error)(e);
    }

    /// Takes one chunk's results in file order; returns `false` when `on_row` asks to stop.
    /// Clean chunks cost a few steps each, not a step per row: the workers did the rest.
    fn merge(
        &mut self,
        chunk: &reader::Chunk,
        result: &mut ChunkResult,
        rules: &[StepRules],
        on_row: &mut dyn FnMut(RowPlan) -> bool,
    ) -> bool {
        let rows = result.hashes.len() as u64;
        if let Some(max) = self.job.limits.max_rows
            && self.over_rows.is_none()
            && self.summary.rows + rows > max
        {
            // The row that passes the limit: the (max - rows so far + 1)th read here.
            let slot = (max - self.summary.rows) as usize;
            self.over_rows = Some(Offender {
                line: chunk.lines[slot],
                key: chunk.key(slot).to_string(),
                column: None,
            });
        }
        self.summary.rows += rows;
        for &h in &result.accounts {
            let bucket = &mut self.accounts[(h >> 52) as usize];
            if bucket.capacity() == 0 {
                bucket.reserve(self.account_bucket_size);
            }
            bucket.push(h);
        }
        for h in &result.hashes {
            let bucket = &mut self.keys[(h >> 52) as usize];
            if bucket.capacity() == 0 {
                // Sized on first use, not up front: the pages are touched while the workers
                // run rather than before they start, and once rather than at each doubling.
                bucket.reserve(self.bucket_size);
            }
            bucket.push(*h);
        }
        for &(ccy, subtotal, n) in &result.subtotals {
            self.add_to_totals(chunk, result, rules, ccy, subtotal, n);
        }
        for &(ccy, subtotal, n) in &result.payin_subtotals {
            let ccy = String::from_utf8_lossy(&ccy).into_owned();
            let t = self.summary.payin_totals.entry(ccy).or_default();
            t.0 += subtotal;
            t.1 += n;
        }

        if chunk.bad.is_empty() && result.errors.is_empty() && result.items.is_empty() {
            return true;
        }
        // Problems are reported in file order, and rows handed on in it.
        let mut bad = chunk.bad.iter().peekable();
        let mut errors = result.errors.drain(..).peekable();
        let mut items = result.items.drain(..).peekable();
        for (slot, &line) in chunk.lines.iter().enumerate() {
            while let Some((_, e)) = bad.next_if(|(s, _)| *s == slot) {
                self.report(e.clone());
            }
            while let Some((_, e)) = errors.next_if(|(s, _)| *s == slot) {
                self.report(e);
            }
            if let Some((_, row_items)) = items.next_if(|(s, _)| *s == slot)
                && !on_row(RowPlan {
                    line,
                    offset: chunk.offset(slot),
                    key: chunk.key(slot).to_string(),
                    items: row_items,
                })
            {
                return false;
            }
        }
        for (_, e) in bad {
            self.report(e.clone());
        }
        true
    }

    /// Adds a chunk's payouts in one currency to the running total; when that passes the
    /// currency's `limits.max_total`, finds the row that passed it.
    fn add_to_totals(
        &mut self,
        chunk: &reader::Chunk,
        result: &ChunkResult,
        rules: &[StepRules],
        ccy: [u8; 3],
        subtotal: Decimal,
        n: u64,
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
        let (_, total, count, max) = self.running[i];
        self.running[i].1 = total + subtotal;
        self.running[i].2 = count + n;
        let Some(max) = max.filter(|max| total + subtotal > *max) else {
            return;
        };
        let name = String::from_utf8_lossy(&ccy).into_owned();
        if self.over_total.contains_key(&name) {
            return;
        }
        let mut sum = total;
        for &(slot, si, amount, c) in &result.payouts {
            if c != ccy {
                continue;
            }
            sum += amount;
            if sum > max {
                self.over_total.insert(
                    name,
                    Offender {
                        line: chunk.lines[slot],
                        key: chunk.key(slot).to_string(),
                        column: rules[si].amount_column.clone(),
                    },
                );
                return;
            }
        }
    }

    fn finish(mut self, workers: usize, checker: &RowChecker) -> Result<CheckSummary, InputError> {
        let job = self.job;
        for (ccy, total, n, _) in std::mem::take(&mut self.running) {
            self.summary
                .totals
                .insert(String::from_utf8_lossy(&ccy).into_owned(), (total, n));
        }
        let suspects = repeated_hashes(std::mem::take(&mut self.accounts), workers);
        for (line, first, key, first_key) in shared_accounts(job, checker, &suspects)? {
            self.report(InputError {
                path: job.csv_path(),
                line: Some(line),
                column: None,
                message: format!(
                    "row '{key}' pays the same account as row '{first_key}' (line {first}); two keys paying one account are refused (guards: {{ shared_accounts: allow }} permits it)"
                ),
            });
        }
        let suspects = repeated_hashes(std::mem::take(&mut self.keys), workers);
        if !suspects.is_empty() {
            for (key, line, first) in confirm_duplicates(job, &suspects)? {
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

/// The key hashes that occur more than once: each bucket is sorted, on `workers` threads.
fn repeated_hashes(mut buckets: Vec<Vec<u64>>, workers: usize) -> HashSet<u64> {
    let per_thread = buckets.len().div_ceil(workers.max(1));
    std::thread::scope(|scope| {
        let found: Vec<_> = buckets
            .chunks_mut(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    let mut repeated = Vec::new();
                    for bucket in part {
                        bucket.sort_unstable();
                        repeated.extend(bucket.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]));
                        *bucket = Vec::new();
                    }
                    repeated
                })
            })
            .collect();
        found
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Re-reads the input for the rows whose key hash is suspect; returns (key, line, first
/// line) for each row whose key text an earlier row already had, in file order.
fn confirm_duplicates(
    job: &Job,
    suspects: &HashSet<u64>,
) -> Result<Vec<(String, u64, u64)>, InputError> {
    let mut first: HashMap<String, u64> = HashMap::new();
    let mut repeats = Vec::new();
    let Some(input) = &job.input else {
        return Ok(Vec::new());
    };
    let mut src = CsvSource::open(&input.csv, input.delimiter, &input.key)?;
    let (mut record, mut key) = (StringRecord::new(), String::new());
    loop {
        match src.next_row(&mut record, &mut key) {
            Ok(None) => break,
            Ok(Some(line)) if suspects.contains(&key_hash(&key)) => match first.get(&key) {
                Some(f) => repeats.push((key.clone(), line, *f)),
                None => {
                    first.insert(key.clone(), line);
                }
            },
            Ok(Some(_)) => {}
            Err(e) if e.line.is_none() => return Err(e),
            Err(_) => {}
        }
    }
    Ok(repeats)
}

/// The payouts whose account hash is among `suspects` (hashes seen more than once) and
/// whose account an earlier row of the same step pays: (line, first line, key, first key),
/// in file order. Found by reading the file again and working out each payout's account
/// (only when there are suspects: a file of distinct accounts is read once).
fn shared_accounts(
    job: &Job,
    checker: &RowChecker,
    suspects: &HashSet<u64>,
) -> Result<Vec<(u64, u64, String, String)>, InputError> {
    let Some(input) = job.input.as_ref().filter(|_| !suspects.is_empty()) else {
        return Ok(Vec::new());
    };
    let payout_steps: Vec<usize> = (0..job.steps.len())
        .filter(|&si| job.steps[si].kind == crate::job::steps::StepKind::Payout)
        .collect();
    let mut first: HashMap<u64, (u64, String)> = HashMap::new();
    let mut repeats = Vec::new();
    let mut src = CsvSource::open(&input.csv, input.delimiter, &input.key)?;
    let (mut record, mut key) = (StringRecord::new(), String::new());
    let mut out = ChunkResult::default();
    loop {
        let line = match src.next_row(&mut record, &mut key) {
            Ok(None) => break,
            Ok(Some(line)) => line,
            Err(e) if e.line.is_none() => return Err(e),
            Err(_) => continue,
        };
        let rows = crate::input::Rows::from_records([&record]);
        for &si in &payout_steps {
            out.clear();
            checker.check_row_step(si, line, &key, rows.row(0), &mut out);
            for h in out.accounts.iter().filter(|h| suspects.contains(h)) {
                match first.get(h) {
                    Some((f, fk)) => repeats.push((line, *f, key.clone(), fk.clone())),
                    None => {
                        first.insert(*h, (line, key.clone()));
                    }
                }
            }
        }
    }
    Ok(repeats)
}

/// A fast 64-bit hash of a key: eight bytes at a time, then murmur3's final mix. Not
/// collision-proof, and it need not be: repeats are confirmed on the real text.
fn key_hash(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(31);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
