//! The row checker: streams the CSV once, renders every step's fields for every row,
//! validates them, and enforces the guardrails. `validate` runs it alone; `plan` runs it
//! first (nothing is written unless it is clean) and again to build the items it stores.

use super::external_id;
use crate::input::{CsvSource, InputError};
use crate::job::steps::{FieldKind, StepKind};
use crate::job::{Field, FieldValue, Job, Step};
use crate::provider::helloclever::methods;
use crate::template::{Template, Uses};
use crate::validate;
use chrono::NaiveDate;
use csv::StringRecord;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
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

/// Where a guardrail was first crossed.
#[derive(Debug, Clone)]
struct Offender {
    line: u64,
    key: String,
    column: Option<String>,
}

/// A rendered field value.
enum Rendered<'r> {
    Text(Cow<'r, str>),
    Map(Vec<(&'r str, Cow<'r, str>)>),
}

/// Checks every row of the job's input. Row problems go to `on_error` (all of them, in
/// file order, guardrails last); with `build`, each clean row's items go to `on_row`.
/// An `Err` is an input that cannot be read at all.
pub fn check_rows(
    job: &Job,
    build: bool,
    on_error: &mut dyn FnMut(InputError),
    on_row: &mut dyn FnMut(RowPlan),
) -> Result<CheckSummary, InputError> {
    let mut src = CsvSource::open(&job.input.csv, job.input.delimiter, &job.input.key)?;
    let csv_dir = job
        .input
        .csv
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut ctx = RowContext {
        job,
        csv_dir,
        today: chrono::Utc::now().date_naive(),
        build,
        errors: 0,
        on_error,
    };
    let mut summary = CheckSummary::default();
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut seen_keys: HashSet<u64, BuildHasherDefault<NoHash>> = HashSet::default();
    let mut suspects: Vec<(String, u64)> = Vec::new();
    let mut over_total: BTreeMap<String, Offender> = BTreeMap::new();
    let mut over_rows: Option<Offender> = None;
    let mut record = StringRecord::new();

    loop {
        let raw = match src.next_row(&mut record) {
            Ok(None) => break,
            Ok(Some(raw)) => raw,
            Err(e) if e.line.is_none() => return Err(e),
            Err(e) => {
                ctx.report(e);
                continue;
            }
        };
        summary.rows += 1;
        if job.limits.max_rows.is_some_and(|max| summary.rows > max) && over_rows.is_none() {
            over_rows = Some(Offender {
                line: raw.line,
                key: raw.key.clone(),
                column: None,
            });
        }
        // Keys are remembered as 64-bit hashes to keep memory flat; a hit is confirmed
        // against the real key text after the pass, so a hash collision is never reported.
        if !seen_keys.insert(hasher.hash_one(&raw.key)) {
            suspects.push((raw.key.clone(), raw.line));
        }
        let errors_before = ctx.errors;
        let mut items = Vec::with_capacity(job.steps.len());
        for (si, step) in job.steps.iter().enumerate() {
            if let Some(item) = ctx.check_step(si, step, &record, &raw.line, &raw.key) {
                if let (false, Some(amount), Some(ccy)) =
                    (item.skipped, item.amount, item.currency.as_ref())
                {
                    let entry = summary
                        .totals
                        .entry(ccy.clone())
                        .or_insert((Decimal::ZERO, 0));
                    entry.0 += amount;
                    entry.1 += 1;
                    if job
                        .limits
                        .max_total
                        .get(ccy)
                        .is_some_and(|max| entry.0 > *max)
                        && !over_total.contains_key(ccy)
                    {
                        let column = single_column(step, "amount");
                        over_total.insert(
                            ccy.clone(),
                            Offender {
                                line: raw.line,
                                key: raw.key.clone(),
                                column,
                            },
                        );
                    }
                }
                items.push(item);
            }
        }
        if build && ctx.errors == errors_before {
            on_row_wrapper(
                on_row,
                RowPlan {
                    line: raw.line,
                    key: raw.key,
                    items,
                },
            );
        }
    }

    if !suspects.is_empty() {
        for (key, line, first) in confirm_duplicates(job, &suspects)? {
            ctx.report(InputError {
                path: job.input.csv.clone(),
                line: Some(line),
                column: Some(job.input.key.join("+")),
                message: format!("duplicate key '{key}' (first used on line {first})"),
            });
        }
    }
    if let (Some(max), Some(o)) = (job.limits.max_rows, over_rows) {
        ctx.report(InputError {
            path: job.input.csv.clone(),
            line: Some(o.line),
            column: None,
            message: format!("limits.max_rows is {max} but the input has {} rows; row '{}' is the first over the limit", summary.rows, o.key),
        });
    }
    for (ccy, o) in over_total {
        let max = job.limits.max_total[&ccy];
        let total = summary.totals[&ccy].0;
        ctx.report(InputError {
            path: job.input.csv.clone(),
            line: Some(o.line),
            column: o.column,
            message: format!("limits.max_total for {ccy} is {max} but the planned total is {total}; row '{}' is the first to pass the limit", o.key),
        });
    }
    summary.errors = ctx.errors;
    Ok(summary)
}

fn on_row_wrapper(on_row: &mut dyn FnMut(RowPlan), row: RowPlan) {
    on_row(row)
}

/// Re-reads the input to find the first line of each suspected duplicate key.
fn confirm_duplicates(
    job: &Job,
    suspects: &[(String, u64)],
) -> Result<Vec<(String, u64, u64)>, InputError> {
    let wanted: HashSet<&str> = suspects.iter().map(|(k, _)| k.as_str()).collect();
    let mut first: HashMap<String, u64> = HashMap::new();
    let mut src = CsvSource::open(&job.input.csv, job.input.delimiter, &job.input.key)?;
    let mut record = StringRecord::new();
    loop {
        match src.next_row(&mut record) {
            Ok(None) => break,
            Ok(Some(raw)) if wanted.contains(raw.key.as_str()) => {
                first.entry(raw.key).or_insert(raw.line);
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

/// The one CSV column a field reads, if it reads exactly one.
fn single_column(step: &Step, field: &str) -> Option<String> {
    match &crate::job::field(step, field)?.value {
        FieldValue::One(_, uses) if uses.columns.len() == 1 => Some(uses.columns[0].clone()),
        _ => None,
    }
}

struct RowContext<'a, 'e> {
    job: &'a Job,
    csv_dir: PathBuf,
    today: NaiveDate,
    build: bool,
    errors: u64,
    on_error: &'e mut dyn FnMut(InputError),
}

impl RowContext<'_, '_> {
    fn report(&mut self, e: InputError) {
        self.errors += 1;
        (self.on_error)(e);
    }

    /// Reports a problem with a field's value, naming the CSV column it came from when it
    /// came from exactly one, and the step field otherwise.
    fn field_error(
        &mut self,
        line: u64,
        label: &str,
        uses: &Uses,
        message: &str,
        got: Option<&str>,
        sensitive: bool,
    ) {
        let got = got.map(|g| {
            let shown = if sensitive {
                crate::redact::mask_tail(g)
            } else {
                g.to_string()
            };
            let short: String = shown.chars().take(80).collect();
            if short.len() < shown.len() {
                format!("{short}…")
            } else {
                short
            }
        });
        let (column, prefix) = match uses.columns.as_slice() {
            [one] => (Some(one.clone()), String::new()),
            _ => (None, format!("field '{label}': ")),
        };
        self.report(InputError {
            path: self.job.input.csv.clone(),
            line: Some(line),
            column,
            message: match got {
                Some(g) => format!("{prefix}{message} (got '{g}')"),
                None => format!("{prefix}{message}"),
            },
        });
    }

    fn render<'r>(
        &mut self,
        line: u64,
        label: &str,
        t: &'r Template,
        uses: &Uses,
        record: &'r StringRecord,
    ) -> Option<Cow<'r, str>> {
        match self.job.templates.render(t, record) {
            Ok(v) => Some(v),
            Err(e) => {
                self.field_error(line, label, uses, &e, None, false);
                None
            }
        }
    }

    fn check_step(
        &mut self,
        si: usize,
        step: &Step,
        record: &StringRecord,
        line: &u64,
        key: &str,
    ) -> Option<ItemPlan> {
        let line = *line;
        if let Some((t, uses)) = &step.when {
            let label = format!("{}.when", step.id);
            let v = self.render(line, &label, t, uses, record)?;
            match v.trim().to_ascii_lowercase().as_str() {
                "true" => {}
                "false" | "" => {
                    return Some(ItemPlan {
                        step: si,
                        skipped: true,
                        payload: "{}".into(),
                        hash: if self.build {
                            hex(&Sha256::digest(b"skipped"))
                        } else {
                            String::new()
                        },
                        amount: None,
                        currency: None,
                        group: None,
                        external_id: None,
                    });
                }
                other => {
                    let msg = format!("'when' must render to true or false, not '{other}'");
                    self.field_error(line, &label, uses, &msg, None, false);
                    return None;
                }
            }
        }

        let errors_before = self.errors;
        let mut values: Vec<(&Field, Rendered)> = Vec::with_capacity(step.fields.len());
        for field in &step.fields {
            let label = format!("{}.{}", step.id, field.spec.name);
            match &field.value {
                FieldValue::One(t, uses) => {
                    if let Some(v) = self.render(line, &label, t, uses, record) {
                        values.push((field, Rendered::Text(v)));
                    }
                }
                FieldValue::Map(entries) => {
                    let mut out = Vec::with_capacity(entries.len());
                    for (k, t, uses) in entries {
                        if let Some(v) = self.render(line, &format!("{label}.{k}"), t, uses, record)
                        {
                            out.push((k.as_str(), v));
                        }
                    }
                    values.push((field, Rendered::Map(out)));
                }
            }
        }
        if self.errors > errors_before {
            return None;
        }
        let text = |name: &str| text_of(&values, name);

        // Values other fields depend on: the payout currency fixes the amount's decimals.
        let minor_units = text("currency").and_then(|c| validate::currency(c).ok());
        let mut amount = None;
        let mut file_hashes = Vec::new();
        for (field, value) in &values {
            let label = format!("{}.{}", step.id, field.spec.name);
            let FieldValue::One(_, uses) = &field.value else {
                if let Rendered::Map(entries) = value {
                    self.check_params(line, step, field, entries, text("payout_method_name"));
                }
                continue;
            };
            let Rendered::Text(v) = value else { continue };
            let v = v.as_ref();
            let sensitive = field.spec.sensitive;
            if v.is_empty() {
                let required = match field.spec.required {
                    crate::job::steps::Required::Always
                    | crate::job::steps::Required::DocumentKyc => true,
                    crate::job::steps::Required::Optional => false,
                };
                if required {
                    self.field_error(
                        line,
                        &label,
                        uses,
                        &format!("{} is required but empty", field.spec.name),
                        None,
                        false,
                    );
                }
                continue;
            }
            let result = match field.spec.kind {
                FieldKind::Text { min, max } => validate::length(v, min, max),
                FieldKind::Email => validate::email(v),
                FieldKind::PayeeName => validate::payee_name(v),
                FieldKind::Enum(allowed) => validate::one_of(v, allowed),
                FieldKind::Date => validate::date(v).map(drop),
                FieldKind::PastDate => validate::date_of_birth(v, self.today).map(drop),
                FieldKind::Timestamp => validate::timestamp(v).map(drop),
                FieldKind::Country => validate::country(v),
                FieldKind::Currency => validate::currency(v).map(drop),
                FieldKind::Phone => validate::phone(v),
                FieldKind::Amount => match validate::amount(v, minor_units) {
                    Ok(d) => {
                        amount = Some(d);
                        match self.job.limits.max_amount {
                            Some(max) if d > max => {
                                Err(format!("amount is over limits.max_amount {max}"))
                            }
                            _ => Ok(()),
                        }
                    }
                    Err(e) => Err(e),
                },
                FieldKind::Image(kinds) => {
                    let path = self.csv_dir.join(v);
                    match validate::check_image(&path, kinds) {
                        Ok(_) if self.build => match std::fs::read(&path) {
                            Ok(bytes) => {
                                file_hashes.push((field.spec.name, hex(&Sha256::digest(&bytes))));
                                Ok(())
                            }
                            Err(e) => {
                                Err(format!("image file {} cannot be read: {e}", path.display()))
                            }
                        },
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                FieldKind::PayoutMethod => {
                    methods::method_currency(v).and_then(|ccy| match text("currency") {
                        Some(c) if c != ccy => Err(format!(
                            "payout method {v} pays {ccy}, but the currency is {c}"
                        )),
                        _ => Ok(()),
                    })
                }
                FieldKind::Map => Ok(()),
            };
            if let Err(e) = result {
                self.field_error(line, &label, uses, &e, Some(v), sensitive);
            }
        }
        self.cross_checks(line, step, &values, amount);
        if self.errors > errors_before {
            return None;
        }
        if !self.build {
            return Some(ItemPlan {
                step: si,
                skipped: false,
                payload: String::new(),
                hash: String::new(),
                amount,
                currency: (step.kind == StepKind::Payout)
                    .then(|| text("currency").unwrap_or_default().to_string()),
                group: None,
                external_id: None,
            });
        }
        Some(self.build_item(si, step, key, &values, &file_hashes, amount))
    }

    fn check_params(
        &mut self,
        line: u64,
        step: &Step,
        field: &Field,
        entries: &[(&str, Cow<str>)],
        method: Option<&str>,
    ) {
        let FieldValue::Map(specs) = &field.value else {
            return;
        };
        let uses_of = |k: &str| {
            specs
                .iter()
                .find(|(n, _, _)| n == k)
                .map(|(_, _, u)| u.clone())
                .unwrap_or_default()
        };
        let label = format!("{}.{}", step.id, field.spec.name);
        let Some(m) = method.and_then(methods::payout_method) else {
            for (k, v) in entries {
                if v.trim().is_empty() {
                    self.field_error(
                        line,
                        &format!("{label}.{k}"),
                        &uses_of(k),
                        &format!("{k} is empty"),
                        None,
                        false,
                    );
                }
            }
            return;
        };
        for p in m.params {
            let Some((_, v)) = entries.iter().find(|(k, _)| *k == p.name) else {
                self.field_error(
                    line,
                    &label,
                    &Uses::default(),
                    &format!("payout method {} needs parameter '{}'", m.name, p.name),
                    None,
                    false,
                );
                continue;
            };
            if let Err(e) = (p.check)(v) {
                let sensitive = crate::redact::is_sensitive_name(p.name);
                self.field_error(
                    line,
                    &format!("{label}.{}", p.name),
                    &uses_of(p.name),
                    &e,
                    Some(v),
                    sensitive,
                );
            }
        }
    }

    fn cross_checks(
        &mut self,
        line: u64,
        step: &Step,
        values: &[(&Field, Rendered)],
        amount: Option<Decimal>,
    ) {
        let text = |name: &str| text_of(values, name);
        let uses = |name: &str| match crate::job::field(step, name).map(|f| &f.value) {
            Some(FieldValue::One(_, u)) => u.clone(),
            _ => Uses::default(),
        };
        match step.kind {
            StepKind::Contact => {
                if text("type") == Some("organization") && text("reg_no").is_none() {
                    let label = format!("{}.reg_no", step.id);
                    self.field_error(
                        line,
                        &label,
                        &uses("reg_no"),
                        "reg_no is required for an organization",
                        None,
                        false,
                    );
                }
            }
            StepKind::Kyc => {
                let issue = text("issue_date").and_then(|d| validate::date(d).ok());
                let expiry = text("expiry_date").and_then(|d| validate::date(d).ok());
                let label = format!("{}.expiry_date", step.id);
                if let (Some(i), Some(e)) = (issue, expiry)
                    && e <= i
                {
                    self.field_error(
                        line,
                        &label,
                        &uses("expiry_date"),
                        &format!("expiry_date must be after issue_date {i}"),
                        text("expiry_date"),
                        false,
                    );
                } else if let Some(e) = expiry
                    && e < self.today
                {
                    self.field_error(
                        line,
                        &label,
                        &uses("expiry_date"),
                        "the document has expired",
                        text("expiry_date"),
                        false,
                    );
                }
                if let Some(i) = issue
                    && i > self.today
                {
                    let label = format!("{}.issue_date", step.id);
                    self.field_error(
                        line,
                        &label,
                        &uses("issue_date"),
                        "issue_date is in the future",
                        text("issue_date"),
                        false,
                    );
                }
            }
            StepKind::Payout => {
                let method = text("payout_method_name").and_then(methods::payout_method);
                if let (Some(m), Some(a)) = (method, amount) {
                    let label = format!("{}.amount", step.id);
                    if m.min_amount.is_some_and(|min| a < Decimal::from(min))
                        || m.max_amount.is_some_and(|max| a > Decimal::from(max))
                    {
                        let msg = format!(
                            "amount must be between {} and {} {} for {}",
                            m.min_amount.unwrap_or(0),
                            m.max_amount.map_or("any".to_string(), |x| x.to_string()),
                            m.currency,
                            m.name
                        );
                        self.field_error(
                            line,
                            &label,
                            &uses("amount"),
                            &msg,
                            text("amount"),
                            false,
                        );
                    }
                }
            }
        }
    }

    fn build_item(
        &self,
        si: usize,
        step: &Step,
        key: &str,
        values: &[(&Field, Rendered)],
        file_hashes: &[(&str, String)],
        amount: Option<Decimal>,
    ) -> ItemPlan {
        let mut full = Map::new();
        let mut shown = Map::new();
        for (field, value) in values {
            let name = field.spec.name;
            match value {
                Rendered::Text(v) if v.is_empty() => {}
                Rendered::Text(v) => {
                    let v = if field.spec.kind == FieldKind::Amount {
                        amount.map_or(v.to_string(), |a| a.to_string())
                    } else {
                        v.to_string()
                    };
                    let masked = if field.spec.sensitive {
                        crate::redact::mask_tail(&v)
                    } else {
                        v.clone()
                    };
                    full.insert(name.into(), Value::String(v));
                    shown.insert(name.into(), Value::String(masked));
                }
                Rendered::Map(entries) => {
                    let mut f = Map::new();
                    let mut s = Map::new();
                    for (k, v) in entries {
                        f.insert((*k).into(), Value::String(v.to_string()));
                        s.insert((*k).into(), Value::String(crate::redact::for_display(k, v)));
                    }
                    full.insert(name.into(), Value::Object(f));
                    shown.insert(name.into(), Value::Object(s));
                }
            }
        }
        for (name, h) in file_hashes {
            full.insert(format!("{name}#sha256"), Value::String(h.clone()));
        }
        let get = |n: &str| {
            full.get(n)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (currency, group, ext) = if step.kind == StepKind::Payout {
            let group = crate::job::steps::BATCH_FIELDS
                .iter()
                .map(|f| get(f))
                .collect::<Vec<_>>()
                .join("\u{1f}");
            let ext = match full.get("external_id").and_then(Value::as_str) {
                Some(user) => user.to_string(),
                None => external_id(&[&self.job.name, &self.job.scope, &step.id, key]),
            };
            (Some(get("currency")), Some(group), Some(ext))
        } else {
            (None, None, None)
        };
        // serde_json's Map is ordered by key, so the JSON text is canonical.
        let full_text = Value::Object(full).to_string();
        ItemPlan {
            step: si,
            skipped: false,
            payload: Value::Object(shown).to_string(),
            hash: hex(&Sha256::digest(full_text.as_bytes())),
            amount,
            currency,
            group,
            external_id: ext,
        }
    }
}

/// The non-empty rendered text of a field, by name.
fn text_of<'v>(values: &'v [(&Field, Rendered)], name: &str) -> Option<&'v str> {
    values.iter().find_map(|(f, v)| match v {
        Rendered::Text(s) if f.spec.name == name && !s.is_empty() => Some(s.as_ref()),
        _ => None,
    })
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct NoHash(u64);

impl std::hash::Hasher for NoHash {
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
