//! Static checks of a parsed job file: every value's meaning, every template against the
//! CSV header. All problems are collected, each pointing at its place in the file.

use super::config::{self, FieldConfig, JobConfig, KeyColumns, ProviderConfig};
use super::diag::{self, Diagnostic};
use super::export::{Export, Format, Resource, When};
use super::marks::{Marks, Seg};
use super::steps::{FieldKind, Required, StepKind};
use super::{
    DEFAULT_BATCH_SIZE, Field, FieldValue, Input, Job, Limits, LoadOptions, Provider,
    ProviderSettings, REPORT_FORMATS, Rate, Report, Retry, Setting, Step, Wait, parse_duration,
    parse_rate,
};
use crate::input::CsvSource;
use crate::provider::ProviderKind;
use crate::template::Templates;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Builder<'a> {
    path: &'a Path,
    source: &'a str,
    /// Where each key of the file is, for diagnostics.
    marks: Marks,
    diags: Vec<Diagnostic>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(path: &'a Path, source: &'a str) -> Builder<'a> {
        Builder {
            path,
            source,
            marks: Marks::of(source),
            diags: Vec::new(),
        }
    }

    fn err(&mut self, keys: &[&str], message: impl Into<String>) {
        let path: Vec<Seg> = keys.iter().map(|k| Seg::Key(k)).collect();
        let d = self.locate(Diagnostic::new(self.path, message), &path);
        self.diags.push(d);
    }

    /// Points a diagnostic at the key at `path`, or at the deepest part of it in the file.
    fn locate(&self, d: Diagnostic, path: &[Seg]) -> Diagnostic {
        match self.marks.deepest(path.iter().copied()) {
            Some((place, n)) => {
                let width = match path[n - 1] {
                    Seg::Key(k) => k.chars().count(),
                    Seg::Index(_) => 1,
                };
                d.at(self.source, place.key.0, place.key.1, width)
            }
            None => d,
        }
    }

    /// Points a diagnostic at `needle` in the value at `path` (e.g. a misspelt step type).
    fn locate_value(&self, d: Diagnostic, path: &[Seg], needle: &str) -> Diagnostic {
        match self.marks.get(path.iter().copied()) {
            Some(place) => d.near(self.source, place.value.0, needle),
            None => self.locate(d, path),
        }
    }

    /// The path of `keys` under the step at index `step` of `steps`.
    fn step_path<'k>(step: usize, keys: &[&'k str]) -> Vec<Seg<'k>> {
        let mut path = vec![Seg::Key("steps"), Seg::Index(step)];
        path.extend(keys.iter().map(|k| Seg::Key(k)));
        path
    }

    /// An error at `keys` of the step at index `step`; at the step's id when none of the
    /// keys is written in the file.
    fn err_in_step(&mut self, step: usize, keys: &[&str], message: impl Into<String>) {
        let mut path = Self::step_path(step, keys);
        if self
            .marks
            .deepest(path.iter().copied())
            .is_none_or(|(_, n)| n <= 2)
        {
            path.truncate(2);
            path.push(Seg::Key("id"));
        }
        let d = self.locate(Diagnostic::new(self.path, message), &path);
        self.diags.push(d);
    }

    pub(super) fn build(
        mut self,
        c: JobConfig,
        dir: PathBuf,
        opts: &LoadOptions,
        deferred: Vec<(String, Diagnostic)>,
    ) -> Result<Job, Vec<Diagnostic>> {
        if c.version != 1 {
            self.err(
                &["version"],
                format!(
                    "unsupported job file version {} (this payrun reads version 1)",
                    c.version
                ),
            );
        }
        let name_ok = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name
                .starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            self.err(
                &["name"],
                format!(
                    "job name '{}' must be 1-64 lower-case letters, digits, '-' or '_'",
                    c.name
                ),
            );
        }

        let mut vars: BTreeMap<String, String> = c
            .vars
            .into_iter()
            .map(|(k, v)| (k, v.into_text()))
            .collect();
        for (k, v) in &opts.vars {
            vars.insert(k.clone(), v.clone());
        }

        let provider = self.provider(&c.provider, deferred);
        let limits = self.limits(c.limits);
        let (row_configs, export_configs): (Vec<_>, Vec<_>) = c
            .steps
            .iter()
            .cloned()
            .enumerate()
            .map(|(index, s)| config::StepConfig { index, ..s })
            .partition(|s| s.kind != "export");
        if c.steps.is_empty() {
            self.err(&["steps"], "the job has no steps");
        }
        let input = match &c.input {
            Some(i) => self.input(i, &dir),
            None => {
                if !row_configs.is_empty() {
                    self.err(&["steps"], format!("step '{}' reads rows, but the job has no input (input: {{ csv: ..., key: ... }})", row_configs[0].id));
                }
                None
            }
        };
        let report = self.report(c.report, &dir);
        let notify = c.notify.as_ref().and_then(|n| self.notify(n));

        // The scope partitions state: render it before the step templates that may use it.
        let scope = match &c.scope {
            None => "default".to_string(),
            Some(src) => match render_scope(src, &c.name, &vars) {
                Ok(s) if scope_ok(&s) => s,
                Ok(s) => {
                    self.err(&["scope"], format!("scope renders to '{}'; it must be 1-64 characters, not '.' or '..', without '/', '\\' or control characters (it names folders)", s.escape_debug()));
                    String::new()
                }
                Err(e) => {
                    self.err(&["scope"], format!("scope: {e}"));
                    String::new()
                }
            },
        };

        // Templates are checked against the CSV header, so the header is read now.
        let header = match &input {
            None if c.input.is_none() => Some(Arc::new(crate::input::Header::new(Vec::new()))),
            Some(input) => match CsvSource::open(&input.csv, input.delimiter, &input.key) {
                Ok(src) => Some(src.header().clone()),
                Err(e) => {
                    let mut d = Diagnostic::new(
                        &e.path,
                        match &e.column {
                            Some(col) => format!("column '{col}': {}", e.message),
                            None => e.message.clone(),
                        },
                    );
                    d.pos = e.line.map(|l| (l as usize, 0));
                    self.diags.push(d);
                    None
                }
            },
            None => None,
        };

        let mut steps = Vec::new();
        let templates = header.as_ref().map(|h| {
            let job_map = BTreeMap::from([
                ("name".to_string(), c.name.clone()),
                ("scope".to_string(), scope.clone()),
            ]);
            let mut templates = Templates::new(h.clone(), &vars, &job_map);
            if !row_configs.is_empty() && c.input.is_some() {
                steps = self.steps(
                    &row_configs,
                    &mut templates,
                    limits.max_batch_size,
                    provider.kind,
                );
            }
            templates
        });
        let mut exports: Vec<Export> = Vec::new();
        for sc in &export_configs {
            if row_configs.iter().any(|r| r.id == sc.id) || exports.iter().any(|e| e.id == sc.id) {
                self.err_in_step(
                    sc.index,
                    &["id"],
                    format!("step id '{}' is used twice", sc.id),
                );
                continue;
            }
            if let Some(e) = self.export(sc, &dir, &c.name, &scope, &vars, provider.kind) {
                if let Some(other) = exports.iter().find(|o| o.path == e.path) {
                    self.err_in_step(
                        sc.index,
                        &["output", "path"],
                        format!(
                            "step '{}' writes {}, as step '{}' does: give each export its own file",
                            e.id,
                            e.path.display(),
                            other.id
                        ),
                    );
                }
                exports.push(e);
            }
        }

        if !self.diags.is_empty() {
            return Err(self.diags);
        }
        let (Some(header), Some(templates)) = (header, templates) else {
            unreachable!("every None above pushed a diagnostic")
        };
        Ok(Job {
            path: self.path.to_path_buf(),
            dir,
            name: c.name,
            scope,
            vars,
            provider,
            limits,
            input,
            steps,
            exports,
            report,
            notify,
            header,
            templates,
            sandbox: false,
        })
    }

    /// The provider: its kind, and the settings that kind takes, each with its value or
    /// the diagnostic of its unset variable (kept for `run`).
    fn provider(&mut self, p: &ProviderConfig, deferred: Vec<(String, Diagnostic)>) -> Provider {
        let kind = ProviderKind::parse(&p.kind).unwrap_or_else(|| {
            let hint = diag::did_you_mean(&p.kind, ProviderKind::NAMES);
            self.diags.push(
                self.locate(
                    Diagnostic::new(
                        self.path,
                        format!(
                            "unknown provider kind '{}' (expected helloclever or finhub)",
                            p.kind
                        ),
                    ),
                    &[Seg::Key("provider"), Seg::Key("kind")],
                )
                .with_hint(hint),
            );
            ProviderKind::HelloClever
        });
        let written = [
            ("base_url", &p.base_url),
            ("app_id", &p.app_id),
            ("secret_key", &p.secret_key),
            ("tenant_id", &p.tenant_id),
            ("token", &p.token),
            ("token_url", &p.token_url),
            ("client_id", &p.client_id),
            ("client_secret", &p.client_secret),
            ("base_path", &p.base_path),
            ("kyc_confirmation_path", &p.kyc_confirmation_path),
        ];
        let takes = ProviderSettings::keys(kind);
        for (name, value) in &written {
            if value.is_some() && !takes.contains(name) {
                let d = Diagnostic::new(
                    self.path,
                    format!(
                        "provider.{name} is not a {} setting (it takes kind, {})",
                        kind.as_str(),
                        takes.join(", ")
                    ),
                );
                let d = self.locate(d, &[Seg::Key("provider"), Seg::Key(name)]);
                self.diags.push(d);
            }
        }
        let mut deferred = deferred;
        let mut setting = |name: &str| -> Setting {
            let (_, value) = written.iter().find(|(n, _)| *n == name)?;
            let value = (*value).clone()?;
            let key = format!("provider.{name}");
            Some(match deferred.iter().position(|(path, _)| *path == key) {
                Some(i) => Err(Box::new(deferred.swap_remove(i).1)),
                None => Ok(value),
            })
        };
        let settings = match kind {
            ProviderKind::HelloClever => ProviderSettings::HelloClever {
                base_url: setting("base_url"),
                app_id: setting("app_id"),
                secret_key: setting("secret_key"),
            },
            ProviderKind::FinHub => ProviderSettings::FinHub {
                base_url: setting("base_url"),
                tenant_id: setting("tenant_id"),
                token: setting("token"),
                token_url: setting("token_url"),
                client_id: setting("client_id"),
                client_secret: setting("client_secret"),
                base_path: setting("base_path"),
                kyc_confirmation_path: setting("kyc_confirmation_path"),
            },
        };
        Provider { kind, settings }
    }

    fn duration(&mut self, keys: &[&str], value: Option<&str>, default: Duration) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.err(keys, e);
                default
            }
        }
    }

    fn decimal(&mut self, keys: &[&str], value: config::Scalar) -> Option<Decimal> {
        let text = value.into_text();
        match crate::validate::amount(&text, None) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(keys, format!("{e} (got '{text}')"));
                None
            }
        }
    }

    fn limits(&mut self, l: config::LimitsConfig) -> Limits {
        let rate = match l.rate.as_deref().map(parse_rate) {
            None => Rate {
                count: 10,
                per: Duration::from_secs(1),
            },
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                self.err(&["limits", "rate"], e);
                Rate {
                    count: 1,
                    per: Duration::from_secs(1),
                }
            }
        };
        let positive = |b: &mut Self, key: &str, v: Option<u32>, default: u32| match v {
            Some(0) => {
                b.err(&["limits", key], format!("limits.{key} must be at least 1"));
                default
            }
            Some(n) => n,
            None => default,
        };
        let burst = positive(self, "burst", l.burst, 5);
        let concurrency = positive(self, "concurrency", l.concurrency, 4);
        let max_batch_size = positive(self, "max_batch_size", l.max_batch_size, 1000);
        let timeout = self.duration(
            &["limits", "timeout"],
            l.timeout.as_deref(),
            Duration::from_secs(30),
        );
        let retry = match l.retry {
            None => Retry {
                attempts: 5,
                base: Duration::from_millis(500),
                max: Duration::from_secs(30),
                max_elapsed: Duration::from_secs(300),
            },
            Some(r) => Retry {
                attempts: r.attempts.unwrap_or(5),
                base: self.duration(
                    &["limits", "retry", "base"],
                    r.base.as_deref(),
                    Duration::from_millis(500),
                ),
                max: self.duration(
                    &["limits", "retry", "max"],
                    r.max.as_deref(),
                    Duration::from_secs(30),
                ),
                max_elapsed: self.duration(
                    &["limits", "retry", "max_elapsed"],
                    r.max_elapsed.as_deref(),
                    Duration::from_secs(300),
                ),
            },
        };
        let mut max_total = BTreeMap::new();
        for (ccy, v) in l.max_total {
            if let Err(e) = crate::validate::currency(&ccy) {
                self.err(
                    &["limits", "max_total", &ccy],
                    format!("max_total: {e} (got '{ccy}')"),
                );
                continue;
            }
            if let Some(d) = self.decimal(&["limits", "max_total", &ccy], v) {
                max_total.insert(ccy, d);
            }
        }
        let max_amount = l
            .max_amount
            .and_then(|v| self.decimal(&["limits", "max_amount"], v));
        // Long enough for real gateways to give up on a request themselves.
        let settle = self.duration(
            &["limits", "settle"],
            l.settle.as_deref(),
            (timeout * 2).max(Duration::from_secs(120)),
        );
        let settle_recheck = self.duration(
            &["limits", "settle_recheck"],
            l.settle_recheck.as_deref(),
            Duration::from_secs(10),
        );
        let lookback = self.duration(
            &["limits", "lookback"],
            l.lookback.as_deref(),
            Duration::from_secs(90 * 86_400),
        );
        if l.max_rows == Some(0) {
            self.err(
                &["limits", "max_rows"],
                "limits.max_rows must be at least 1",
            );
        }
        Limits {
            rate,
            burst,
            concurrency,
            timeout,
            retry,
            max_total,
            max_amount,
            max_rows: l.max_rows,
            max_batch_size,
            settle,
            settle_recheck,
            lookback,
        }
    }

    /// Whether a step id is letters, digits, '-' or '_' (else says so).
    fn step_id_ok(&mut self, id: &str, at: usize) -> bool {
        let ok = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            self.err_in_step(
                at,
                &["id"],
                format!("step id '{id}' must be letters, digits, '-' or '_'"),
            );
        }
        ok
    }

    /// An export step: its resource, window, filters and output file.
    fn export(
        &mut self,
        sc: &config::StepConfig,
        dir: &Path,
        name: &str,
        scope: &str,
        vars: &BTreeMap<String, String>,
        provider: ProviderKind,
    ) -> Option<Export> {
        let id = sc.id.clone();
        if !self.step_id_ok(&id, sc.index) {
            return None;
        }
        if sc.when.is_some() || !sc.fields.is_empty() || sc.batch.is_some() || sc.wait.is_some() {
            self.err_in_step(sc.index, &["type"], format!("step '{id}': export steps take resource, from, to, filter and output (not when, fields, batch or wait)"));
        }
        let Some(resource_name) = &sc.resource else {
            self.err_in_step(
                sc.index,
                &["type"],
                format!(
                    "step '{id}': an export step needs a resource ({})",
                    Resource::NAMES.join(", ")
                ),
            );
            return None;
        };
        let Some(resource) = Resource::parse(resource_name) else {
            let hint = diag::did_you_mean(resource_name, Resource::NAMES);
            let d = Diagnostic::new(
                self.path,
                format!(
                    "unknown resource '{resource_name}' (expected {})",
                    Resource::NAMES.join(", ")
                ),
            );
            let d = self.locate_value(d, &Self::step_path(sc.index, &["resource"]), resource_name);
            self.diags.push(d.with_hint(hint));
            return None;
        };
        let job = BTreeMap::from([
            ("name".to_string(), name.to_string()),
            ("scope".to_string(), scope.to_string()),
        ]);
        if resource.provider() != provider {
            self.err_in_step(
                sc.index,
                &["resource"],
                format!(
                    "step '{id}': {} is exported from {}, but the job's provider is {}",
                    resource.as_str(),
                    resource.provider().as_str(),
                    provider.as_str()
                ),
            );
            return None;
        }
        if !resource.has_window() && (sc.from.is_some() || sc.to.is_some()) {
            self.err_in_step(
                sc.index,
                &["from"],
                format!(
                    "step '{id}': {} has no date filter; leave out from and to",
                    resource.as_str()
                ),
            );
            return None;
        }
        if sc.from.is_none() && resource.has_window() {
            self.err_in_step(sc.index, &["type"], format!("step '{id}': an export step needs from (e.g. -1d, yesterday, 2026-11-01, or 'last_run or -7d')"));
            return None;
        }
        let when = |b: &mut Self, key: &str, v: Option<&config::Scalar>, default: &str| {
            let text = v
                .cloned()
                .map_or(default.to_string(), config::Scalar::into_text);
            match render_static(&text, &job, vars).and_then(|t| When::parse(&t)) {
                Ok(w) => Some(w),
                Err(e) => {
                    b.err_in_step(sc.index, &[key], format!("step '{id}' {key}: {e}"));
                    None
                }
            }
        };
        let (from, to) = if resource.has_window() {
            (
                when(self, "from", sc.from.as_ref(), ""),
                when(self, "to", sc.to.as_ref(), "now"),
            )
        } else {
            (Some(When::Now), Some(When::Now))
        };
        if matches!(to, Some(When::LastRun(_))) {
            self.err_in_step(
                sc.index,
                &["to"],
                format!("step '{id}' to: last_run is for 'from'"),
            );
        }
        if let (Some(When::At(f)), Some(When::At(t))) = (&from, &to)
            && f > t
        {
            self.err_in_step(
                sc.index,
                &["to"],
                format!("step '{id}': 'to' ({t}) is before 'from' ({f})"),
            );
        }
        let mut filter = Vec::new();
        for (k, v) in &sc.filter {
            let v = v.clone().into_text();
            if !resource.filters().contains(&k.as_str()) {
                let allowed = match resource.filters() {
                    [] => format!("{} takes no filter", resource.as_str()),
                    f => format!("{} takes: {}", resource.as_str(), f.join(", ")),
                };
                self.err_in_step(
                    sc.index,
                    &["filter", k],
                    format!("step '{id}': unknown filter '{k}' ({allowed})"),
                );
                continue;
            }
            let statuses: Option<(&str, &[&str])> = match resource {
                Resource::CardPayments => {
                    Some(("card payment", &crate::provider::helloclever::CARD_STATUSES))
                }
                Resource::CustomersByStatus => {
                    Some(("customer", &crate::provider::finhub::CUSTOMER_STATUSES))
                }
                _ => None,
            };
            if let Some((what, allowed)) = statuses
                && k == "status"
                && !allowed.contains(&v.as_str())
            {
                let hint = diag::did_you_mean(&v, allowed.iter().copied());
                let d = self.locate(
                    Diagnostic::new(
                        self.path,
                        format!(
                            "step '{id}': {what} status '{v}' is not one of {}",
                            allowed.join(", ")
                        ),
                    ),
                    &Self::step_path(sc.index, &["filter", k]),
                );
                self.diags.push(d.with_hint(hint));
                continue;
            }
            filter.push((k.clone(), v));
        }
        let Some(output) = &sc.output else {
            self.err_in_step(
                sc.index,
                &["type"],
                format!("step '{id}': an export step needs output: {{ path: ..., format: csv }}"),
            );
            return None;
        };
        for var in vars_used(&output.path) {
            if let Some(why) = vars.get(&var).and_then(|v| path_value_problem(v)) {
                self.err_in_step(
                    sc.index,
                    &["output", "path"],
                    format!("step '{id}': output.path uses vars.{var}, which holds {why}: a value that names a file must not move it"),
                );
                return None;
            }
        }
        let path = match render_static(&output.path, &job, vars) {
            Ok(p) if !p.trim().is_empty() => lexical_clean(&dir.join(p)),
            Ok(_) => {
                self.err_in_step(
                    sc.index,
                    &["output", "path"],
                    format!("step '{id}': output.path is empty"),
                );
                return None;
            }
            Err(e) => {
                self.err_in_step(
                    sc.index,
                    &["output", "path"],
                    format!("step '{id}' output.path: {e}"),
                );
                return None;
            }
        };
        let format = match output.format.as_deref() {
            Some(f) => {
                match Format::parse(f) {
                    Some(f) => f,
                    None => {
                        self.err_in_step(sc.index, &["output", "format"], format!("step '{id}': unknown output format '{f}' (expected csv, jsonl or json)"));
                        return None;
                    }
                }
            }
            None => path
                .extension()
                .and_then(|e| Format::parse(&e.to_string_lossy()))
                .unwrap_or(Format::Csv),
        };
        Some(Export {
            id,
            resource,
            from: from?,
            to: to?,
            filter,
            path,
            format,
        })
    }

    fn input(&mut self, i: &config::InputConfig, dir: &Path) -> Option<Input> {
        let key = match &i.key {
            KeyColumns::One(k) => vec![k.clone()],
            KeyColumns::Many(ks) => ks.clone(),
        };
        if key.is_empty() || key.iter().any(String::is_empty) {
            self.err(&["input", "key"], "input.key must name at least one column");
            return None;
        }
        let delimiter = match i.delimiter.as_deref() {
            None => b',',
            Some("\\t" | "\t" | "tab") => b'\t',
            Some(d) if d.len() == 1 && d.is_ascii() && d != "\"" && d != "\n" => d.as_bytes()[0],
            Some(d) => {
                self.err(
                    &["input", "delimiter"],
                    format!("delimiter must be one ASCII character or 'tab' (got '{d}')"),
                );
                return None;
            }
        };
        if i.csv.is_empty() {
            self.err(&["input", "csv"], "input.csv must name a file");
            return None;
        }
        let csv = dir.join(&i.csv);
        let files_root = match i.files_root.as_deref() {
            Some(r) => lexical_clean(&dir.join(r)),
            None => csv.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let max_record_bytes = match i.max_record_bytes {
            Some(0) => {
                self.err(
                    &["input", "max_record_bytes"],
                    "input.max_record_bytes must be at least 1",
                );
                return None;
            }
            Some(n) => n,
            None => crate::job::MAX_RECORD_BYTES,
        };
        Some(Input {
            csv,
            key,
            delimiter,
            files_root,
            max_record_bytes,
        })
    }

    fn report(&mut self, r: Option<config::ReportConfig>, dir: &Path) -> Report {
        let r = r.unwrap_or(config::ReportConfig {
            dir: None,
            formats: None,
        });
        let formats = r
            .formats
            .unwrap_or_else(|| REPORT_FORMATS.iter().map(|s| s.to_string()).collect());
        for (i, f) in formats.iter().enumerate() {
            if !REPORT_FORMATS.contains(&f.as_str()) {
                let hint = diag::did_you_mean(f, REPORT_FORMATS);
                let d = self
                    .locate_value(
                        Diagnostic::new(
                            self.path,
                            format!(
                                "unknown report format '{f}' (expected csv, json, junit or html)"
                            ),
                        ),
                        &[Seg::Key("report"), Seg::Key("formats"), Seg::Index(i)],
                        f,
                    )
                    .with_hint(hint);
                self.diags.push(d);
            }
        }
        Report {
            dir: dir.join(r.dir.as_deref().unwrap_or("reports")),
            formats,
        }
    }

    fn notify(&mut self, n: &config::NotifyConfig) -> Option<super::Notify> {
        let always = match n.when.as_deref() {
            None | Some("failures") => false,
            Some("always") => true,
            Some(other) => {
                self.err(
                    &["notify", "when"],
                    format!("notify.when must be failures or always (got '{other}')"),
                );
                return None;
            }
        };
        let unresolved = n.webhook_url.contains("${");
        let url_ok = unresolved
            || n.webhook_url.starts_with("https://")
            || n.webhook_url.starts_with("http://");
        if !url_ok {
            self.err(
                &["notify", "webhook_url"],
                "notify.webhook_url must be an http:// or https:// URL",
            );
            return None;
        }
        Some(super::Notify {
            url: n.webhook_url.clone(),
            always,
            unresolved,
        })
    }

    fn steps(
        &mut self,
        configs: &[config::StepConfig],
        templates: &mut Templates,
        max_batch: u32,
        provider: ProviderKind,
    ) -> Vec<Step> {
        if configs.is_empty() {
            self.err(&["steps"], "the job has no steps");
        }
        let mut steps: Vec<Step> = Vec::new();
        for sc in configs {
            let id = sc.id.clone();
            if !self.step_id_ok(&id, sc.index) {
                continue;
            }
            if steps.iter().any(|s| s.id == id) {
                self.err_in_step(sc.index, &["id"], format!("step id '{id}' is used twice"));
                continue;
            }
            if sc.resource.is_some()
                || sc.from.is_some()
                || sc.to.is_some()
                || sc.output.is_some()
                || !sc.filter.is_empty()
            {
                self.err_in_step(
                    sc.index,
                    &["type"],
                    format!("step '{id}': resource, from, to, filter and output belong to export steps (type: export)"),
                );
            }
            let Some(kind) = StepKind::parse(&sc.kind) else {
                let hint =
                    diag::did_you_mean(&sc.kind, StepKind::NAMES.iter().copied().chain(["export"]));
                let d = Diagnostic::new(
                    self.path,
                    format!(
                        "unknown step type '{}' (expected {}, or export)",
                        sc.kind,
                        StepKind::names_for(provider).join(", ")
                    ),
                );
                let d = self.locate_value(d, &Self::step_path(sc.index, &["type"]), &sc.kind);
                self.diags.push(d.with_hint(hint));
                continue;
            };
            if kind.provider() != provider {
                self.err_in_step(
                    sc.index,
                    &["type"],
                    format!(
                        "step '{id}': '{}' is a {} step, but the job's provider is {} (its steps: {}, export)",
                        kind.as_str(),
                        kind.provider().as_str(),
                        provider.as_str(),
                        StepKind::names_for(provider).join(", ")
                    ),
                );
                continue;
            }
            if let Some(prev) = steps.last()
                && prev.kind.rank() > kind.rank()
            {
                let order = match provider {
                    ProviderKind::HelloClever => "contact, then kyc, then payout",
                    ProviderKind::FinHub => {
                        "customer (or customers_bulk), then documents, then customer_status and kyc_confirmation"
                    }
                };
                self.err_in_step(
                    sc.index,
                    &["type"],
                    format!(
                        "step '{id}' ({}) cannot come after step '{}' ({}): steps run {order}",
                        kind.as_str(),
                        prev.id,
                        prev.kind.as_str()
                    ),
                );
            }
            let when = sc.when.as_ref().and_then(|src| {
                match templates.compile(&format!("{id}.when"), src) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.err_in_step(sc.index, &["when"], format!("step '{id}' when: {e}"));
                        None
                    }
                }
            });
            let fields = self.fields(&id, sc.index, kind, &sc.fields, templates);
            let batch_size = match (&sc.batch, kind) {
                (None, _) => DEFAULT_BATCH_SIZE.min(max_batch),
                (Some(b), StepKind::Payout | StepKind::CustomersBulk) => match b.size {
                    None => DEFAULT_BATCH_SIZE.min(max_batch),
                    Some(n) if n >= 1 && n <= max_batch => n,
                    Some(n) => {
                        self.err_in_step(sc.index, &["batch", "size"], format!("batch.size must be 1 to {max_batch} (limits.max_batch_size), not {n}"));
                        0
                    }
                },
                (Some(_), _) => {
                    self.err_in_step(
                        sc.index,
                        &["batch"],
                        format!(
                            "step '{id}': batch applies to payout and customers_bulk steps only"
                        ),
                    );
                    0
                }
            };
            let wait = sc.wait.as_ref().and_then(|w| {
                let expected = match kind {
                    StepKind::Kyc => "approved",
                    StepKind::Payout => "completed",
                    other => {
                        self.err_in_step(
                            sc.index,
                            &["wait"],
                            format!(
                                "step '{id}': {} steps have nothing to wait for",
                                other.as_str()
                            ),
                        );
                        return None;
                    }
                };
                if w.until != expected {
                    self.err_in_step(
                        sc.index,
                        &["wait", "until"],
                        format!(
                            "step '{id}': wait.until must be '{expected}' for a {} step (got '{}')",
                            kind.as_str(),
                            w.until
                        ),
                    );
                }
                let timeout = w
                    .timeout
                    .as_deref()
                    .map_or(Ok(Duration::from_secs(1800)), parse_duration);
                let poll = w
                    .poll
                    .as_deref()
                    .map_or(Ok(Duration::from_secs(10)), parse_duration);
                match (timeout, poll) {
                    (Ok(timeout), Ok(poll)) => Some(Wait {
                        until: w.until.clone(),
                        timeout,
                        poll,
                    }),
                    (Err(e), _) => {
                        self.err_in_step(sc.index, &["wait", "timeout"], e);
                        None
                    }
                    (_, Err(e)) => {
                        self.err_in_step(sc.index, &["wait", "poll"], e);
                        None
                    }
                }
            });
            steps.push(Step {
                id,
                kind,
                when,
                fields,
                batch_size,
                wait,
            });
        }
        steps
    }

    fn fields(
        &mut self,
        id: &str,
        at: usize,
        kind: StepKind,
        configs: &BTreeMap<String, FieldConfig>,
        templates: &mut Templates,
    ) -> Vec<Field> {
        let by_token = configs.contains_key("token");
        let mut fields = Vec::new();
        for (name, value) in configs {
            let Some(spec) = kind.field(name) else {
                let hint = diag::did_you_mean(name, kind.fields().iter().map(|f| f.name));
                let d = Diagnostic::new(
                    self.path,
                    format!("unknown field '{name}' for a {} step", kind.as_str()),
                );
                let d = self.locate(d, &Self::step_path(at, &["fields", name]));
                self.diags.push(d.with_hint(hint));
                continue;
            };
            if by_token && spec.required == Required::DocumentKyc {
                self.err_in_step(at, &["fields", name], format!("step '{id}': field '{name}' is for KYC by documents; with 'token' only email and token are sent"));
                continue;
            }
            let label = format!("{id}.{name}");
            let compiled = match (value, spec.kind) {
                (FieldConfig::Map(map), FieldKind::Map) => {
                    let mut entries = Vec::new();
                    for (k, v) in map {
                        match templates.compile(&format!("{label}.{k}"), &v.clone().into_text()) {
                            Ok((t, u)) => entries.push((k.clone(), t, u)),
                            Err(e) => self.err_in_step(
                                at,
                                &["fields", name, k],
                                format!("field '{label}.{k}': {e}"),
                            ),
                        }
                    }
                    Some(FieldValue::Map(entries))
                }
                (FieldConfig::Map(_), _) => {
                    self.err_in_step(
                        at,
                        &["fields", name],
                        format!("field '{label}' takes a single value, not a map"),
                    );
                    None
                }
                (FieldConfig::Value(_), FieldKind::Map) => {
                    self.err_in_step(
                        at,
                        &["fields", name],
                        format!("field '{label}' takes a map of names to values"),
                    );
                    None
                }
                (FieldConfig::Value(v), _) => match templates
                    .compile(&label, &v.clone().into_text())
                {
                    Ok((t, u)) => Some(FieldValue::One(t, u)),
                    Err(e) => {
                        self.err_in_step(at, &["fields", name], format!("field '{label}': {e}"));
                        None
                    }
                },
            };
            if let Some(value) = compiled {
                let line = self
                    .marks
                    .get(Self::step_path(at, &["fields", name]))
                    .map(|p| p.key.0);
                fields.push(Field { spec, value, line });
            }
        }
        for spec in kind.fields() {
            let needed = match spec.required {
                Required::Always => true,
                Required::DocumentKyc => !by_token,
                Required::Optional => false,
            };
            if needed && !configs.contains_key(spec.name) {
                let alt = if spec.required == Required::DocumentKyc {
                    " (or use 'token' for KYC by share token)"
                } else {
                    ""
                };
                self.err_in_step(
                    at,
                    &["fields"],
                    format!(
                        "step '{id}' ({}) is missing required field '{}'{alt}",
                        kind.as_str(),
                        spec.name
                    ),
                );
            }
        }
        fields
    }
}

/// A scope names folders (reports, exports) and state: it must not climb (`..`), hold a
/// separator or a control character.
fn scope_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= 64
        && !matches!(s, "." | "..")
        && !s.contains(['/', '\\'])
        && !s.chars().any(char::is_control)
}

/// Why a value that reaches a path (a var a scope or an export path uses) may not, if it
/// may not: a separator, `..`, or a control character would move or forge the path.
fn path_value_problem(v: &str) -> Option<&'static str> {
    if v.chars().any(char::is_control) {
        Some("a control character")
    } else if v.contains(['/', '\\']) {
        Some("a path separator")
    } else if v.contains("..") {
        Some("'..'")
    } else {
        None
    }
}

/// The `vars.<name>`s a template names.
fn vars_used(src: &str) -> Vec<String> {
    let env = minijinja::Environment::new();
    env.template_from_str(src)
        .map(|t| {
            t.undeclared_variables(true)
                .into_iter()
                .filter_map(|v| v.strip_prefix("vars.").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `jobs/../exports/x.csv` → `exports/x.csv`, without touching the file system.
fn lexical_clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn render_scope(src: &str, name: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    render_static(
        src,
        &BTreeMap::from([("name".to_string(), name.to_string())]),
        vars,
    )
}

/// Renders a template that sees `vars` and `job` but no row.
fn render_static(
    src: &str,
    job: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(
        src,
        minijinja::context! { vars => vars.clone(), job => job },
    )
    .map_err(|e| {
        e.detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string())
    })
}
