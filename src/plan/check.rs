//! The row checker: streams the CSV once, renders every step's fields for every row,
//! validates them, and enforces the guardrails. `validate` runs it alone; `plan` runs it
//! first (nothing is written unless it is clean) and again to build the items it stores.
//!
//! Fields whose template is a constant are checked once, before the rows, and their
//! problems point at the job file; per row, only what the row can change is checked.

use super::items::{build_item, skipped_item};
use super::reader;
use super::rules::{Facts, check_value};
use crate::input::{CsvSource, InputError};
use crate::job::steps::{FieldKind, Required, StepKind};
use crate::job::{Field, FieldValue, Job, Step};
use crate::provider::helloclever::methods;
use crate::template::{Template, Uses};
use crate::validate;
use chrono::NaiveDate;
use csv::StringRecord;
use rust_decimal::Decimal;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::path::PathBuf;

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
}

/// One input row's items.
#[derive(Debug, Clone)]
pub struct RowPlan {
    pub line: u64,
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
    fn text(&self) -> Option<&str> {
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

/// Positions of the fields that other checks depend on.
#[derive(Default)]
struct Indexes {
    currency: Option<usize>,
    method: Option<usize>,
    amount: Option<usize>,
    kind: Option<usize>,
    reg_no: Option<usize>,
    issue_date: Option<usize>,
    expiry_date: Option<usize>,
}

/// What is known about a step before any row is read.
struct StepRules {
    /// Per field: checked once up front, not per row.
    checked_once: Vec<bool>,
    idx: Indexes,
    /// The currency's minor units when the currency is a constant.
    minor_units: Option<Option<u32>>,
    amount_column: Option<String>,
}

impl StepRules {
    fn new(step: &Step) -> StepRules {
        let pos = |name: &str| step.fields.iter().position(|f| f.spec.name == name);
        let idx = Indexes {
            currency: pos("currency"),
            method: pos("payout_method_name"),
            amount: pos("amount"),
            kind: pos("type"),
            reg_no: pos("reg_no"),
            issue_date: pos("issue_date"),
            expiry_date: pos("expiry_date"),
        };
        let literal = |i: Option<usize>| match i.map(|i| &step.fields[i].value) {
            Some(FieldValue::One(Template::Literal(s), _)) => Some(s.as_str()),
            _ => None,
        };
        let currency = literal(idx.currency);
        let currency_fixed = idx.currency.is_none() || currency.is_some();
        let checked_once = step
            .fields
            .iter()
            .map(|f| match (&f.value, f.spec.kind) {
                // These depend on the currency: once only if it is fixed too.
                (
                    FieldValue::One(Template::Literal(_), _),
                    FieldKind::Amount | FieldKind::PayoutMethod,
                ) => currency_fixed,
                (FieldValue::One(Template::Literal(_), _), _) => true,
                _ => false,
            })
            .collect();
        StepRules {
            checked_once,
            minor_units: currency.map(|c| validate::currency(c).ok()),
            amount_column: match idx.amount.map(|i| &step.fields[i].value) {
                Some(FieldValue::One(_, uses)) if uses.columns.len() == 1 => {
                    Some(uses.columns[0].clone())
                }
                _ => None,
            },
            idx,
        }
    }
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
    let src = CsvSource::open(&job.input.csv, job.input.delimiter, &job.input.key)?;
    let size_hint = std::fs::metadata(&job.input.csv).map_or(0, |m| m.len());
    let checker = RowChecker {
        job,
        rules: job.steps.iter().map(StepRules::new).collect(),
        csv_dir: job
            .input
            .csv
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
        today: chrono::Utc::now().date_naive(),
        build,
    };
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
    errors: Vec<(usize, InputError)>,
    /// (slot, step, amount, currency) of each valid payout.
    payouts: Vec<(usize, usize, Decimal, [u8; 3])>,
    /// (slot, items) of each clean row, when building.
    items: Vec<(usize, Vec<ItemPlan>)>,
}

/// The per-row checks: pure, shared by the worker threads.
struct RowChecker<'a> {
    job: &'a Job,
    rules: Vec<StepRules>,
    csv_dir: PathBuf,
    today: NaiveDate,
    build: bool,
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
                let ccy = std::str::from_utf8(&ccy).unwrap_or("???");
                self.add_to_total(ccy, amount, line, key, rules[si].amount_column.as_ref());
            }
            if let Some((_, row_items)) = items.next_if(|(s, _)| *s == slot)
                && !on_row(RowPlan {
                    line,
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
        ccy: &str,
        amount: Decimal,
        line: u64,
        key: &str,
        column: Option<&String>,
    ) {
        let entry = match self.summary.totals.get_mut(ccy) {
            Some(e) => e,
            None => self
                .summary
                .totals
                .entry(ccy.to_string())
                .or_insert((Decimal::ZERO, 0)),
        };
        entry.0 += amount;
        entry.1 += 1;
        let total = entry.0;
        if self
            .job
            .limits
            .max_total
            .get(ccy)
            .is_some_and(|max| total > *max)
            && !self.over_total.contains_key(ccy)
        {
            self.over_total.insert(
                ccy.to_string(),
                Offender {
                    line,
                    key: key.to_string(),
                    column: column.cloned(),
                },
            );
        }
    }

    fn finish(mut self) -> Result<CheckSummary, InputError> {
        let job = self.job;
        if !self.suspects.is_empty() {
            for (key, line, first) in confirm_duplicates(job, &self.suspects)? {
                self.report(InputError {
                    path: job.input.csv.clone(),
                    line: Some(line),
                    column: Some(job.input.key.join("+")),
                    message: format!("duplicate key '{key}' (first used on line {first})"),
                });
            }
        }
        if let (Some(max), Some(o)) = (job.limits.max_rows, self.over_rows.take()) {
            let rows = self.summary.rows;
            self.report(InputError {
                path: job.input.csv.clone(),
                line: Some(o.line),
                column: None,
                message: format!("limits.max_rows is {max} but the input has {rows} rows; row '{}' is the first over the limit", o.key),
            });
        }
        for (ccy, o) in std::mem::take(&mut self.over_total) {
            let max = job.limits.max_total[&ccy];
            let total = self.summary.totals[&ccy].0;
            self.report(InputError {
                path: job.input.csv.clone(),
                line: Some(o.line),
                column: o.column,
                message: format!("limits.max_total for {ccy} is {max} but the planned total is {total}; row '{}' is the first to pass the limit", o.key),
            });
        }
        Ok(self.summary)
    }
}

/// Collects one row's problems, in the order found.
struct RowErrors<'o> {
    out: &'o mut ChunkResult,
    slot: usize,
    count: usize,
}

impl RowChecker<'_> {
    /// Reports a problem with a field's value, naming the CSV column it came from when it
    /// came from exactly one, and the step field otherwise.
    #[allow(clippy::too_many_arguments)]
    fn field_error(
        &self,
        errs: &mut RowErrors,
        line: u64,
        label: &dyn std::fmt::Display,
        uses: &Uses,
        message: &str,
        got: Option<&str>,
        sensitive: bool,
    ) {
        let (column, prefix) = match uses.columns.as_slice() {
            [one] => (Some(one.clone()), String::new()),
            _ => (None, format!("field '{label}': ")),
        };
        errs.count += 1;
        errs.out.errors.push((
            errs.slot,
            InputError {
                path: self.job.input.csv.clone(),
                line: Some(line),
                column,
                message: format!("{prefix}{message}{}", got_suffix(got, sensitive)),
            },
        ));
    }

    /// Checks the fields whose value is the same for every row, once; problems point at
    /// the job file.
    fn check_constants(&self) -> Vec<InputError> {
        let job = self.job;
        let mut problems = Vec::new();
        for (si, step) in job.steps.iter().enumerate() {
            let rules = &self.rules[si];
            let currency = rules.idx.currency.and_then(|i| literal(&step.fields[i]));
            let facts = Facts {
                today: self.today,
                minor_units: rules.minor_units.flatten(),
                currency,
                max_amount: job.limits.max_amount,
                csv_dir: &self.csv_dir,
            };
            for (fi, field) in step.fields.iter().enumerate() {
                let Some(v) = literal(field).filter(|_| rules.checked_once[fi]) else {
                    continue;
                };
                let result = if v.is_empty() {
                    required(field)
                        .then(|| format!("{} is required but empty", field.spec.name))
                        .map_or(Ok(None), Err)
                } else {
                    check_value(field.spec.kind, v, &facts)
                };
                if let Err(e) = result {
                    let got = if v.is_empty() {
                        String::new()
                    } else {
                        got_suffix(Some(v), field.spec.sensitive)
                    };
                    problems.push(InputError {
                        path: job.path.clone(),
                        line: field.line.map(|l| l as u64),
                        column: None,
                        message: format!(
                            "field '{}': {e}{got}",
                            Label(&step.id, field.spec.name, None)
                        ),
                    });
                }
            }
        }
        problems
    }

    fn check_row(
        &self,
        slot: usize,
        line: u64,
        key: &str,
        record: &StringRecord,
        out: &mut ChunkResult,
    ) {
        let mut errs = RowErrors {
            out,
            slot,
            count: 0,
        };
        let mut items = Vec::new();
        for (si, step) in self.job.steps.iter().enumerate() {
            self.check_step(si, step, record, line, key, &mut errs, &mut items);
        }
        if self.build && errs.count == 0 {
            errs.out.items.push((slot, items));
        }
    }

    fn render<'r>(
        &self,
        errs: &mut RowErrors,
        line: u64,
        label: &dyn std::fmt::Display,
        t: &'r Template,
        uses: &Uses,
        record: &'r StringRecord,
    ) -> Option<Cow<'r, str>> {
        match self.job.templates.render(t, record) {
            Ok(v) => Some(v),
            Err(e) => {
                self.field_error(errs, line, label, uses, &e, None, false);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_step(
        &self,
        si: usize,
        step: &Step,
        record: &StringRecord,
        line: u64,
        key: &str,
        errs: &mut RowErrors,
        items: &mut Vec<ItemPlan>,
    ) {
        if let Some((t, uses)) = &step.when {
            let label = Label(&step.id, "when", None);
            let Some(v) = self.render(errs, line, &label, t, uses, record) else {
                return;
            };
            match v.trim() {
                "true" | "True" => {}
                "false" | "False" | "" => {
                    if self.build {
                        items.push(skipped_item(si));
                    }
                    return;
                }
                other => {
                    let msg = format!("'when' must render to true or false, not '{other}'");
                    self.field_error(errs, line, &label, uses, &msg, None, false);
                    return;
                }
            }
        }

        let errors_before = errs.count;
        // Inline storage: no allocation per row for the usual number of fields.
        let mut values: SmallVec<[Rendered; 14]> = SmallVec::new();
        for field in &step.fields {
            let label = Label(&step.id, field.spec.name, None);
            let rendered = match &field.value {
                FieldValue::One(t, uses) => Rendered::Text(
                    self.render(errs, line, &label, t, uses, record)
                        .unwrap_or_default(),
                ),
                FieldValue::Map(entries) => Rendered::Map(
                    entries
                        .iter()
                        .filter_map(|(k, t, uses)| {
                            let label = Label(&step.id, field.spec.name, Some(k));
                            self.render(errs, line, &label, t, uses, record)
                                .map(|v| (k.as_str(), v))
                        })
                        .collect(),
                ),
            };
            values.push(rendered);
        }
        if errs.count > errors_before {
            return;
        }

        let rules = &self.rules[si];
        let currency = rules.idx.currency.and_then(|i| values[i].text());
        let facts = Facts {
            today: self.today,
            minor_units: rules
                .minor_units
                .unwrap_or_else(|| currency.and_then(|c| validate::currency(c).ok())),
            currency,
            max_amount: self.job.limits.max_amount,
            csv_dir: &self.csv_dir,
        };
        let mut amount = None;
        let mut problems: Vec<(usize, Option<&str>, String)> = Vec::new();
        for (fi, (field, value)) in step.fields.iter().zip(&values).enumerate() {
            if rules.checked_once[fi] {
                if field.spec.kind == FieldKind::Amount {
                    amount = value
                        .text()
                        .and_then(|v| validate::amount(v, facts.minor_units).ok());
                }
                continue;
            }
            match value {
                Rendered::Map(entries) => {
                    let method = rules.idx.method.and_then(|i| values[i].text());
                    for (sub, msg, got) in check_params(entries, method) {
                        problems.push((fi, got, format!("{}\u{0}{msg}", sub.unwrap_or_default())));
                    }
                }
                Rendered::Text(v) if v.is_empty() => {
                    if required(field) {
                        problems.push((
                            fi,
                            None,
                            format!("\u{0}{} is required but empty", field.spec.name),
                        ));
                    }
                }
                Rendered::Text(v) => match check_value(field.spec.kind, v, &facts) {
                    Ok(parsed) => amount = amount.or(parsed),
                    Err(e) => problems.push((fi, Some(v), format!("\u{0}{e}"))),
                },
            }
        }
        cross_checks(step, rules, &values, amount, self.today, &mut problems);
        for (fi, got, msg) in problems {
            let field = &step.fields[fi];
            let (sub, msg) = msg.split_once('\u{0}').unwrap_or(("", &msg));
            let (uses, sensitive) = match (&field.value, sub) {
                (FieldValue::Map(entries), sub) if !sub.is_empty() => (
                    entries
                        .iter()
                        .find(|(k, _, _)| k == sub)
                        .map(|(_, _, u)| u.clone())
                        .unwrap_or_default(),
                    crate::redact::is_sensitive_name(sub),
                ),
                (FieldValue::One(_, uses), _) => (uses.clone(), field.spec.sensitive),
                _ => (Uses::default(), false),
            };
            let label = Label(&step.id, field.spec.name, (!sub.is_empty()).then_some(sub));
            self.field_error(errs, line, &label, &uses, msg, got, sensitive);
        }
        if errs.count > errors_before {
            return;
        }

        if step.kind == StepKind::Payout
            && let (Some(a), Some(ccy)) = (
                amount,
                currency.and_then(|c| <[u8; 3]>::try_from(c.as_bytes()).ok()),
            )
        {
            errs.out.payouts.push((errs.slot, si, a, ccy));
        }
        if self.build {
            match build_item(self.job, si, step, key, &values, amount, &self.csv_dir) {
                Ok(item) => items.push(item),
                Err(e) => {
                    errs.count += 1;
                    errs.out.errors.push((
                        errs.slot,
                        InputError {
                            path: self.job.input.csv.clone(),
                            line: Some(line),
                            column: None,
                            message: e,
                        },
                    ));
                }
            }
        }
    }
}

fn literal(field: &Field) -> Option<&str> {
    match &field.value {
        FieldValue::One(Template::Literal(s), _) => Some(s),
        _ => None,
    }
}

fn required(field: &Field) -> bool {
    matches!(
        field.spec.required,
        Required::Always | Required::DocumentKyc
    )
}

/// ` (got 'value')`, masked when sensitive and shortened when long.
fn got_suffix(got: Option<&str>, sensitive: bool) -> String {
    let Some(g) = got else { return String::new() };
    let shown = if sensitive {
        crate::redact::mask_tail(g)
    } else {
        g.to_string()
    };
    let short: String = shown.chars().take(80).collect();
    let ellipsis = if short.len() < shown.len() { "…" } else { "" };
    format!(" (got '{short}{ellipsis}')")
}

/// Checks payout method parameters: (parameter, message, offending value).
fn check_params<'v>(
    entries: &'v [(&str, Cow<str>)],
    method: Option<&str>,
) -> Vec<(Option<&'v str>, String, Option<&'v str>)> {
    let mut out = Vec::new();
    let Some(m) = method.and_then(methods::payout_method) else {
        for (k, v) in entries {
            if v.trim().is_empty() {
                out.push((Some(*k), format!("{k} is empty"), None));
            }
        }
        return out;
    };
    for p in m.params {
        match entries.iter().find(|(k, _)| *k == p.name) {
            None => out.push((
                None,
                format!("payout method {} needs parameter '{}'", m.name, p.name),
                None,
            )),
            Some((k, v)) => {
                if let Err(e) = (p.check)(v) {
                    out.push((Some(*k), e, Some(v.as_ref())));
                }
            }
        }
    }
    out
}

/// Checks between fields of one step; problems as (field index, offending value, message).
fn cross_checks<'v>(
    step: &Step,
    rules: &StepRules,
    values: &'v [Rendered],
    amount: Option<Decimal>,
    today: NaiveDate,
    problems: &mut Vec<(usize, Option<&'v str>, String)>,
) {
    let idx = &rules.idx;
    let text = |i: Option<usize>| i.and_then(|i| values[i].text());
    match step.kind {
        StepKind::Contact => {
            if text(idx.kind) == Some("organization")
                && text(idx.reg_no).is_none()
                && let Some(i) = idx.reg_no.or(idx.kind)
            {
                problems.push((
                    i,
                    None,
                    "\u{0}reg_no is required for an organization".into(),
                ));
            }
        }
        StepKind::Kyc => {
            let issue = text(idx.issue_date).and_then(|d| validate::date(d).ok());
            let expiry = text(idx.expiry_date).and_then(|d| validate::date(d).ok());
            if let (Some(ei), Some(e)) = (idx.expiry_date, expiry) {
                if let Some(i) = issue.filter(|i| e <= *i) {
                    problems.push((
                        ei,
                        text(idx.expiry_date),
                        format!("\u{0}expiry_date must be after issue_date {i}"),
                    ));
                } else if e < today {
                    problems.push((
                        ei,
                        text(idx.expiry_date),
                        "\u{0}the document has expired".into(),
                    ));
                }
            }
            if let (Some(ii), Some(i)) = (idx.issue_date, issue)
                && i > today
            {
                problems.push((
                    ii,
                    text(idx.issue_date),
                    "\u{0}issue_date is in the future".into(),
                ));
            }
        }
        StepKind::Payout => {
            let method = text(idx.method).and_then(methods::payout_method);
            if let (Some(m), Some(a), Some(ai)) = (method, amount, idx.amount)
                && (m.min_amount.is_some_and(|min| a < Decimal::from(min))
                    || m.max_amount.is_some_and(|max| a > Decimal::from(max)))
            {
                let msg = format!(
                    "\u{0}amount must be between {} and {} {} for {}",
                    m.min_amount.unwrap_or(0),
                    m.max_amount.map_or("any".to_string(), |x| x.to_string()),
                    m.currency,
                    m.name
                );
                problems.push((ai, text(idx.amount), msg));
            }
        }
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
    let mut src = CsvSource::open(&job.input.csv, job.input.delimiter, &job.input.key)?;
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

/// A field's name for messages (`pay.amount`, `pay.payout_method_params.bsb`), formatted
/// only when a message needs it.
struct Label<'a>(&'a str, &'a str, Option<&'a str>);

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)?;
        if let Some(sub) = self.2 {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
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
