//! The per-row checks, run on worker threads: render each step's fields, check each value
//! and the rules between values, and build the items to store. Pure: the only state is
//! what the row carries.

use super::check::{ChunkResult, ItemPlan, Rendered};
use super::items::{build_item, skipped_item};
use super::rules::{Facts, check_value};
use crate::input::{InputError, Row};
use crate::job::steps::{FieldKind, Required, StepKind};
use crate::job::{Field, FieldValue, Job, Step};
use crate::provider::helloclever::methods;
use crate::template::{Template, Uses};
use crate::validate;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::path::PathBuf;

mod checks;

use checks::*;

/// Positions of the fields that other checks depend on.
#[derive(Default)]
struct Indexes {
    currency: Option<usize>,
    method: Option<usize>,
    amount: Option<usize>,
    kind: Option<usize>,
    reg_no: Option<usize>,
    payin_method: Option<usize>,
    issue_date: Option<usize>,
    expiry_date: Option<usize>,
}

/// What is known about a step before any row is read.
pub(super) struct StepRules {
    /// Per field: checked once up front, not per row.
    checked_once: Vec<bool>,
    idx: Indexes,
    /// The currency's minor units when the currency is a constant.
    minor_units: Option<Option<u32>>,
    /// The payout method when its name is a constant (looked up once, not per row).
    method: Option<Option<&'static methods::PayoutMethod>>,
    /// With that method known: the map field of its parameters, and where each parameter
    /// is among that field's rendered entries (the job's keys, in the job's order).
    param_slots: Option<(usize, Vec<Option<usize>>)>,
    pub(super) amount_column: Option<String>,
    /// A payout step's parameters that name the account it pays: the map field, and the
    /// positions of its entries in key order (see `items::account_text`).
    account: Option<(usize, Vec<usize>)>,
}

impl StepRules {
    pub(super) fn new(step: &Step) -> StepRules {
        let pos = |name: &str| step.fields.iter().position(|f| f.spec.name == name);
        let idx = Indexes {
            currency: pos("currency"),
            method: pos("payout_method_name"),
            payin_method: pos("payin_method_name"),
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
                    FieldKind::Amount | FieldKind::PayoutMethod | FieldKind::PayinMethod,
                ) => currency_fixed,
                (FieldValue::One(Template::Literal(_), _), _) => true,
                _ => false,
            })
            .collect();
        let method = literal(idx.method).map(methods::payout_method);
        let param_slots =
            pos("payout_method_params").and_then(|fi| match (&step.fields[fi].value, method) {
                (FieldValue::Map(entries), Some(Some(m))) => Some((
                    fi,
                    m.params
                        .iter()
                        .map(|p| entries.iter().position(|(k, _, _)| k == p.name))
                        .collect(),
                )),
                _ => None,
            });
        let account = pos("payout_method_params").and_then(|fi| match &step.fields[fi].value {
            FieldValue::Map(entries) => {
                let mut order: Vec<usize> = (0..entries.len()).collect();
                // Of a key given twice, the last: as the item's JSON keeps it.
                order.sort_by(|a, b| entries[*a].0.cmp(&entries[*b].0).then(b.cmp(a)));
                order.dedup_by(|later, earlier| entries[*later].0 == entries[*earlier].0);
                order.retain(|&i| super::items::account_key(&entries[i].0));
                Some((fi, order))
            }
            FieldValue::One(..) => None,
        });
        StepRules {
            account,
            method,
            param_slots,
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

impl StepRules {
    /// The hash of the account a payout's rendered `values` pay (see
    /// `items::account_hash`).
    fn account(&self, values: &[Rendered]) -> Option<u64> {
        let method = self.idx.method.and_then(|i| values[i].text()).unwrap_or("");
        let params: &[(&str, Cow<str>)] = match &self.account {
            Some((fi, _)) => match &values[*fi] {
                Rendered::Map(m) => m,
                Rendered::Text(_) => &[],
            },
            None => &[],
        };
        let order = self.account.as_ref().map_or(&[][..], |(_, o)| o.as_slice());
        super::items::account_hash(
            method,
            order
                .iter()
                .filter_map(|&i| params.get(i))
                .map(|(k, v)| (*k, v.as_ref())),
        )
    }

    /// The row's payout method, if it names a known one.
    fn method(&self, values: &[Rendered]) -> Option<&'static methods::PayoutMethod> {
        match self.method {
            Some(fixed) => fixed,
            None => self
                .idx
                .method
                .and_then(|i| values[i].text())
                .and_then(methods::payout_method),
        }
    }
}

/// The per-row checks: pure, shared by the worker threads.
pub(super) struct RowChecker<'a> {
    pub(super) job: &'a Job,
    pub(super) rules: Vec<StepRules>,
    pub(super) csv_dir: PathBuf,
    pub(super) today: NaiveDate,
    pub(super) build: bool,
    /// The key items are hashed with, when building them.
    pub(super) key: Option<crate::state::key::ContentKey>,
    /// Keep the full values of each item (rendering for the executor).
    pub(super) keep_full: bool,
}

/// Collects one row's problems, in the order found.
struct RowErrors<'o> {
    out: &'o mut ChunkResult,
    slot: usize,
    count: usize,
}

impl RowErrors<'_> {
    fn push(&mut self, e: InputError) {
        self.count += 1;
        self.out.errors.push((self.slot, e));
    }
}

impl<'a> RowChecker<'a> {
    pub(super) fn new(
        job: &'a Job,
        key: Option<crate::state::key::ContentKey>,
        keep_full: bool,
    ) -> RowChecker<'a> {
        RowChecker {
            job,
            rules: job.steps.iter().map(StepRules::new).collect(),
            csv_dir: job.files_root(),
            today: chrono::Utc::now().date_naive(),
            build: key.is_some(),
            key,
            keep_full,
        }
    }
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
        errs.push(InputError {
            path: self.job.csv_path(),
            line: Some(line),
            column,
            message: format!("{prefix}{message}{}", got_suffix(got, sensitive)),
        });
    }

    /// Checks the fields whose value is the same for every row, once; problems point at
    /// the job file.
    pub(super) fn check_constants(&self) -> Vec<InputError> {
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

    /// Checks one row. `scratch` holds each step's rendered values; kept from row to row
    /// (its values borrow the chunk's records), it is overwritten in place, which is
    /// cheaper than pushing into a fresh vector (each push copies through the stack).
    pub(super) fn check_row<'r>(
        &'r self,
        slot: usize,
        line: u64,
        key: &str,
        record: Row<'r>,
        out: &mut ChunkResult,
        scratch: &mut Vec<Vec<Rendered<'r>>>,
    ) {
        let mut errs = RowErrors {
            out,
            slot,
            count: 0,
        };
        let mut items = Vec::new();
        scratch.resize_with(self.job.steps.len(), Vec::new);
        for ((si, step), values) in self.job.steps.iter().enumerate().zip(scratch) {
            self.check_step(si, step, record, line, key, &mut errs, &mut items, values);
        }
        if self.build && errs.count == 0 {
            errs.out.items.push((slot, items));
        }
    }

    /// Checks one step of one row: the executor rendering an item again to send it. Other
    /// steps are left alone (their own items are checked when they are sent), so a row's
    /// KYC images are not read again to send its contact.
    pub(super) fn check_row_step<'r>(
        &'r self,
        si: usize,
        line: u64,
        key: &str,
        record: Row<'r>,
        out: &mut ChunkResult,
    ) {
        let mut errs = RowErrors {
            out,
            slot: 0,
            count: 0,
        };
        let mut items = Vec::new();
        let mut values = Vec::new();
        let step = &self.job.steps[si];
        self.check_step(
            si,
            step,
            record,
            line,
            key,
            &mut errs,
            &mut items,
            &mut values,
        );
        if self.build && errs.count == 0 {
            errs.out.items.push((0, items));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn render<'r>(
        &self,
        errs: &mut RowErrors,
        line: u64,
        label: &dyn std::fmt::Display,
        t: &'r Template,
        uses: &Uses,
        record: Row<'r>,
        buf: String,
    ) -> Option<Cow<'r, str>> {
        match self.job.templates.render_reusing(t, record, buf) {
            Ok(v) => Some(v),
            Err(e) => {
                self.field_error(errs, line, label, uses, &e, None, false);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_step<'r>(
        &self,
        si: usize,
        step: &'r Step,
        record: Row<'r>,
        line: u64,
        key: &str,
        errs: &mut RowErrors,
        items: &mut Vec<ItemPlan>,
        values: &mut Vec<Rendered<'r>>,
    ) {
        if !self.when_allows(si, step, record, line, errs, items) {
            return;
        }
        let errors_before = errs.count;
        self.render_fields(step, record, line, errs, values);
        if errs.count > errors_before {
            return;
        }
        let values = &values[..];
        let (amount, currency) = self.check_values(si, step, values, line, errs);
        if errs.count > errors_before {
            return;
        }
        if step.kind == StepKind::Payin
            && let (Some(a), Some(ccy)) = (
                amount,
                currency.and_then(|c| <[u8; 3]>::try_from(c.as_bytes()).ok()),
            )
        {
            super::check::add_to(&mut errs.out.payin_subtotals, ccy, a);
        }
        if step.kind == StepKind::Payout
            && let (Some(a), Some(ccy)) = (
                amount,
                currency.and_then(|c| <[u8; 3]>::try_from(c.as_bytes()).ok()),
            )
        {
            errs.out.payouts.push((errs.slot, si, a, ccy));
            // Checked when the file is validated (a plan validates it first): not again
            // while the items are built.
            if !self.build
                && !self.job.guards.shared_accounts
                && let Some(account) = self.rules[si].account(values)
            {
                errs.out
                    .accounts
                    .push(account ^ (si as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            }
        }
        if let Some(hasher) = &self.key {
            match build_item(
                self.job,
                (si, step),
                key,
                values,
                amount,
                &self.csv_dir,
                (self.keep_full, hasher),
            ) {
                Ok(item) => items.push(item),
                Err(message) => errs.push(InputError {
                    path: self.job.csv_path(),
                    line: Some(line),
                    column: None,
                    message,
                }),
            }
        }
    }

    /// Whether the step's `when` lets the row in; a row it keeps out gets a skipped item,
    /// a `when` that renders neither true nor false is the row's error.
    #[inline]
    fn when_allows(
        &self,
        si: usize,
        step: &Step,
        record: Row<'_>,
        line: u64,
        errs: &mut RowErrors,
        items: &mut Vec<ItemPlan>,
    ) -> bool {
        if let Some((t, uses)) = &step.when {
            let label = Label(&step.id, "when", None);
            let Some(v) = self.render(errs, line, &label, t, uses, record, String::new()) else {
                return false;
            };
            match v.trim() {
                "true" | "True" => {}
                "false" | "False" | "" => {
                    if let Some(key) = &self.key {
                        items.push(skipped_item(si, key));
                    }
                    return false;
                }
                other => {
                    let msg = format!("'when' must render to true or false, not '{other}'");
                    self.field_error(errs, line, &label, uses, &msg, None, false);
                    return false;
                }
            }
        }

        true
    }

    /// Renders the step's fields into `values`, reusing the last row's storage.
    #[inline]
    fn render_fields<'r>(
        &self,
        step: &'r Step,
        record: Row<'r>,
        line: u64,
        errs: &mut RowErrors,
        values: &mut Vec<Rendered<'r>>,
    ) {
        // Inline storage: no allocation per row for the usual number of fields.
        if values.len() != step.fields.len() {
            values.clear();
            values.resize_with(step.fields.len(), || Rendered::Text(Cow::Borrowed("")));
        }
        // Each case writes its own value, and a constant or a column as it is takes no
        // call: a value that may come from a call is built on the stack and copied, and
        // that copy stalls the CPU on every field of every row.
        for (field, slot) in step.fields.iter().zip(values.iter_mut()) {
            match &field.value {
                FieldValue::One(t, uses) => {
                    if let Some(plain) = self.job.templates.plain(t, record) {
                        *slot = Rendered::Text(Cow::Borrowed(plain));
                        continue;
                    }
                    let label = Label(&step.id, field.spec.name, None);
                    let text = self
                        .render(errs, line, &label, t, uses, record, take_text(slot))
                        .unwrap_or_default();
                    *slot = Rendered::Text(text);
                }
                FieldValue::Map(entries) => {
                    // The last row's map, emptied: no allocation per row.
                    let mut map = match std::mem::replace(slot, Rendered::Text(Cow::Borrowed(""))) {
                        Rendered::Map(mut map) => {
                            map.clear();
                            map
                        }
                        Rendered::Text(_) => Vec::with_capacity(entries.len()),
                    };
                    for (k, t, uses) in entries {
                        if let Some(plain) = self.job.templates.plain(t, record) {
                            map.push((k.as_str(), Cow::Borrowed(plain)));
                            continue;
                        }
                        let label = Label(&step.id, field.spec.name, Some(k));
                        let buf = String::new();
                        if let Some(v) = self.render(errs, line, &label, t, uses, record, buf) {
                            map.push((k.as_str(), v));
                        }
                    }
                    *slot = Rendered::Map(map);
                }
            }
        }
    }

    /// Checks the rendered values (each, then across fields) and reports each problem at
    /// its field; the payout amount and currency when they are good.
    #[inline]
    fn check_values<'v>(
        &self,
        si: usize,
        step: &Step,
        values: &'v [Rendered<'v>],
        line: u64,
        errs: &mut RowErrors,
    ) -> (Option<Decimal>, Option<&'v str>) {
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
        for (fi, (field, value)) in step.fields.iter().zip(values).enumerate() {
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
                    let method = rules.method(values);
                    let slots = match &rules.param_slots {
                        Some((f, slots)) if *f == fi => Some(slots.as_slice()),
                        _ => None,
                    };
                    for (sub, msg, got) in check_params(entries, method, slots) {
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
        cross_checks(step, rules, values, amount, self.today, &mut problems);
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
        (amount, currency)
    }
}
