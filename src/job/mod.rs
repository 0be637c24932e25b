//! Job files: loading (`${VAR}` interpolation, YAML, unknown-key checks), static validation
//! and the typed [`Job`] the rest of payrun works from.
//!
//! Loading is raw → validated: `config` mirrors the YAML; [`load`] checks everything it can
//! without sending a request — including every template against the CSV header — and
//! reports all problems at once, each with `file:line:col`.

pub mod config;
pub mod diag;
pub mod env;
mod parse;
pub mod steps;

pub use diag::Diagnostic;
pub use parse::{parse_duration, parse_rate};

use crate::input::{CsvSource, Header};
use crate::provider::ProviderKind;
use crate::template::{Template, Templates, Uses};
use config::{FieldConfig, JobConfig, KeyColumns, ProviderConfig};
use env::{Env, Interpolated};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use steps::{FieldKind, FieldSpec, Required, StepKind};

/// A loaded, validated job.
#[derive(Debug)]
pub struct Job {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub name: String,
    pub scope: String,
    pub vars: BTreeMap<String, String>,
    pub provider: Provider,
    pub limits: Limits,
    pub input: Input,
    pub steps: Vec<Step>,
    pub report: Report,
    pub header: Arc<Header>,
    pub templates: Templates,
}

/// Provider settings. Credentials whose variables are unset are kept unresolved, with the
/// diagnostics that `run` reports; `validate` and `plan` never need them.
pub struct Provider {
    pub kind: ProviderKind,
    pub settings: BTreeMap<&'static str, String>,
    pub unresolved: Vec<Diagnostic>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials never appear in Debug output.
        f.debug_struct("Provider")
            .field("kind", &self.kind)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub max_elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub rate: Rate,
    pub burst: u32,
    pub concurrency: u32,
    pub timeout: Duration,
    pub retry: Retry,
    pub max_total: BTreeMap<String, Decimal>,
    pub max_amount: Option<Decimal>,
    pub max_rows: Option<u64>,
    pub max_batch_size: u32,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub csv: PathBuf,
    pub key: Vec<String>,
    pub delimiter: u8,
}

#[derive(Debug)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    pub when: Option<(Template, Uses)>,
    pub fields: Vec<Field>,
    pub batch_size: u32,
    pub wait: Option<Wait>,
}

#[derive(Debug)]
pub struct Field {
    pub spec: &'static FieldSpec,
    pub value: FieldValue,
    /// The job-file line that sets this field (for problems with constant values).
    pub line: Option<usize>,
}

#[derive(Debug)]
pub enum FieldValue {
    One(Template, Uses),
    Map(Vec<(String, Template, Uses)>),
}

#[derive(Debug, Clone)]
pub struct Wait {
    pub until: String,
    pub timeout: Duration,
    pub poll: Duration,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub dir: PathBuf,
    pub formats: Vec<String>,
}

/// How to load a job.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// `--var k=v` overrides, applied over the file's `vars`.
    pub vars: Vec<(String, String)>,
    /// Where `${VAR}` values come from; the process environment and `.env` when `None`.
    pub env: Option<Env>,
}

pub const DEFAULT_BATCH_SIZE: u32 = 100;
const REPORT_FORMATS: [&str; 4] = ["csv", "json", "junit", "html"];

/// Loads and validates a job file, returning every problem found.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Job, Vec<Diagnostic>> {
    let one = |m: String| vec![Diagnostic::new(path, m)];
    let source =
        std::fs::read_to_string(path).map_err(|e| one(format!("cannot read job file: {e}")))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let env = match &opts.env {
        Some(env) => env.clone(),
        None => Env::load(&dir).map_err(one)?,
    };

    // Structure first, on the text as written, so errors carry line and column.
    if let Err(e) = yaml_serde::from_str::<JobConfig>(&source) {
        return Err(vec![yaml_diagnostic(path, &source, &e)]);
    }
    let mut tree: yaml_serde::Value =
        yaml_serde::from_str(&source).map_err(|e| vec![yaml_diagnostic(path, &source, &e)])?;
    let mut diags = Vec::new();
    let mut deferred = Vec::new();
    interpolate_tree(
        &mut tree,
        &mut Vec::new(),
        &env,
        path,
        &source,
        &mut diags,
        &mut deferred,
    );
    if !diags.is_empty() {
        return Err(diags);
    }
    let config: JobConfig = yaml_serde::from_value(tree)
        .map_err(|e| one(format!("after ${{VAR}} interpolation: {e}")))?;
    Builder {
        path,
        source: &source,
        diags: Vec::new(),
    }
    .build(config, dir, opts, deferred)
}

struct Builder<'a> {
    path: &'a Path,
    source: &'a str,
    diags: Vec<Diagnostic>,
}

impl Builder<'_> {
    fn err(&mut self, key_path: &[&str], message: impl Into<String>) {
        let d = self.locate(Diagnostic::new(self.path, message), key_path);
        self.diags.push(d);
    }

    /// Points a diagnostic at the last key of `key_path`, searching below its parents.
    fn locate(&self, d: Diagnostic, key_path: &[&str]) -> Diagnostic {
        let mut line = 1;
        let mut found = None;
        for key in key_path {
            match diag::find_key(self.source, line, key) {
                Some((l, c)) => {
                    line = l;
                    found = Some((l, c, key.chars().count()));
                }
                None => break,
            }
        }
        match found {
            Some((l, c, w)) => d.at(self.source, l, c, w),
            None => d,
        }
    }

    /// The line where the step with this id starts, to search its keys from there.
    fn step_line(&self, id: &str) -> usize {
        let start = diag::find_key(self.source, 1, "steps").map_or(1, |(l, _)| l);
        self.source
            .lines()
            .enumerate()
            .skip(start)
            .find(|(_, l)| l.contains("id:") && l.contains(id))
            .map_or(start, |(i, _)| i + 1)
    }

    fn err_in_step(&mut self, step_id: &str, keys: &[&str], message: impl Into<String>) {
        let mut line = self.step_line(step_id);
        let mut d = Diagnostic::new(self.path, message);
        let mut found = None;
        for key in keys {
            if let Some((l, c)) = diag::find_key(self.source, line, key) {
                line = l;
                found = Some((l, c, key.chars().count()));
            }
        }
        if let Some((l, c, w)) = found {
            d = d.at(self.source, l, c, w);
        } else if let Some((l, c)) = diag::find_key(self.source, line, "id") {
            d = d.at(self.source, l, c, 2);
        }
        self.diags.push(d);
    }

    fn build(
        mut self,
        c: JobConfig,
        dir: PathBuf,
        opts: &LoadOptions,
        deferred: Vec<Diagnostic>,
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
        let input = self.input(&c.input, &dir);
        let report = self.report(c.report, &dir);

        // The scope partitions state: render it before the step templates that may use it.
        let scope = match &c.scope {
            None => "default".to_string(),
            Some(src) => match render_scope(src, &c.name, &vars) {
                Ok(s) if scope_ok(&s) => s,
                Ok(s) => {
                    self.err(&["scope"], format!("scope renders to '{s}'; it must be 1-64 characters without '/' or control characters"));
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
            steps = self.steps(&c.steps, &mut templates, limits.max_batch_size);
            templates
        });

        if !self.diags.is_empty() {
            return Err(self.diags);
        }
        let (Some(input), Some(header), Some(templates)) = (input, header, templates) else {
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
            report,
            header,
            templates,
        })
    }

    fn provider(&mut self, p: &ProviderConfig, deferred: Vec<Diagnostic>) -> Provider {
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
                    &["provider", "kind"],
                )
                .with_hint(hint),
            );
            ProviderKind::HelloClever
        });
        let mut settings = BTreeMap::new();
        for (name, value) in [
            ("base_url", &p.base_url),
            ("app_id", &p.app_id),
            ("secret_key", &p.secret_key),
            ("tenant_id", &p.tenant_id),
            ("token", &p.token),
            ("token_url", &p.token_url),
            ("client_id", &p.client_id),
            ("client_secret", &p.client_secret),
        ] {
            if let Some(v) = value {
                settings.insert(name, v.clone());
            }
        }
        Provider {
            kind,
            settings,
            unresolved: deferred,
        }
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
        }
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
        Some(Input {
            csv: dir.join(&i.csv),
            key,
            delimiter,
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
        for f in &formats {
            if !REPORT_FORMATS.contains(&f.as_str()) {
                let hint = diag::did_you_mean(f, REPORT_FORMATS);
                let d = self
                    .locate(
                        Diagnostic::new(
                            self.path,
                            format!(
                                "unknown report format '{f}' (expected csv, json, junit or html)"
                            ),
                        ),
                        &["report", "formats"],
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

    fn steps(
        &mut self,
        configs: &[config::StepConfig],
        templates: &mut Templates,
        max_batch: u32,
    ) -> Vec<Step> {
        if configs.is_empty() {
            self.err(&["steps"], "the job has no steps");
        }
        let mut steps: Vec<Step> = Vec::new();
        for sc in configs {
            let id = sc.id.clone();
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                self.err_in_step(
                    &id,
                    &["id"],
                    format!("step id '{id}' must be letters, digits, '-' or '_'"),
                );
                continue;
            }
            if steps.iter().any(|s| s.id == id) {
                self.err_in_step(&id, &["id"], format!("step id '{id}' is used twice"));
                continue;
            }
            let Some(kind) = StepKind::parse(&sc.kind) else {
                let hint = diag::did_you_mean(&sc.kind, StepKind::NAMES);
                let mut line = self.step_line(&id);
                if let Some((l, _)) = diag::find_key(self.source, line, "type") {
                    line = l;
                }
                let d = Diagnostic::new(
                    self.path,
                    format!(
                        "unknown step type '{}' (expected contact, kyc or payout)",
                        sc.kind
                    ),
                )
                .near(self.source, line, &sc.kind);
                self.diags.push(d.with_hint(hint));
                continue;
            };
            if let Some(prev) = steps.last()
                && prev.kind.rank() > kind.rank()
            {
                self.err_in_step(&id, &["type"], format!("step '{id}' ({}) cannot come after step '{}' ({}): steps run contact, then kyc, then payout", kind.as_str(), prev.id, prev.kind.as_str()));
            }
            let when = sc.when.as_ref().and_then(|src| {
                match templates.compile(&format!("{id}.when"), src) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.err_in_step(&id, &["when"], format!("step '{id}' when: {e}"));
                        None
                    }
                }
            });
            let fields = self.fields(&id, kind, &sc.fields, templates);
            let batch_size = match (&sc.batch, kind) {
                (None, _) => DEFAULT_BATCH_SIZE.min(max_batch),
                (Some(_), StepKind::Contact | StepKind::Kyc) => {
                    self.err_in_step(
                        &id,
                        &["batch"],
                        format!("step '{id}': batch applies to payout steps only"),
                    );
                    0
                }
                (Some(b), StepKind::Payout) => match b.size {
                    None => DEFAULT_BATCH_SIZE.min(max_batch),
                    Some(n) if n >= 1 && n <= max_batch => n,
                    Some(n) => {
                        self.err_in_step(&id, &["batch", "size"], format!("batch.size must be 1 to {max_batch} (limits.max_batch_size), not {n}"));
                        0
                    }
                },
            };
            let wait = sc.wait.as_ref().and_then(|w| {
                let expected = match kind {
                    StepKind::Kyc => "approved",
                    StepKind::Payout => "completed",
                    StepKind::Contact => {
                        self.err_in_step(
                            &id,
                            &["wait"],
                            format!("step '{id}': contact steps have nothing to wait for"),
                        );
                        return None;
                    }
                };
                if w.until != expected {
                    self.err_in_step(
                        &id,
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
                        self.err_in_step(&id, &["wait", "timeout"], e);
                        None
                    }
                    (_, Err(e)) => {
                        self.err_in_step(&id, &["wait", "poll"], e);
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
        kind: StepKind,
        configs: &BTreeMap<String, FieldConfig>,
        templates: &mut Templates,
    ) -> Vec<Field> {
        let by_token = configs.contains_key("token");
        let mut fields = Vec::new();
        for (name, value) in configs {
            let Some(spec) = kind.field(name) else {
                let hint = diag::did_you_mean(name, kind.fields().iter().map(|f| f.name));
                let line = self.step_line(id);
                let d = Diagnostic::new(
                    self.path,
                    format!("unknown field '{name}' for a {} step", kind.as_str()),
                );
                let d = match diag::find_key(self.source, line, name) {
                    Some((l, c)) => d.at(self.source, l, c, name.chars().count()),
                    None => d,
                };
                self.diags.push(d.with_hint(hint));
                continue;
            };
            if by_token && spec.required == Required::DocumentKyc {
                self.err_in_step(id, &["fields", name], format!("step '{id}': field '{name}' is for KYC by documents; with 'token' only email and token are sent"));
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
                                id,
                                &["fields", name, k],
                                format!("field '{label}.{k}': {e}"),
                            ),
                        }
                    }
                    Some(FieldValue::Map(entries))
                }
                (FieldConfig::Map(_), _) => {
                    self.err_in_step(
                        id,
                        &["fields", name],
                        format!("field '{label}' takes a single value, not a map"),
                    );
                    None
                }
                (FieldConfig::Value(_), FieldKind::Map) => {
                    self.err_in_step(
                        id,
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
                        self.err_in_step(id, &["fields", name], format!("field '{label}': {e}"));
                        None
                    }
                },
            };
            if let Some(value) = compiled {
                let line = diag::find_key(self.source, self.step_line(id), name).map(|(l, _)| l);
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
                    id,
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

fn scope_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 64 && !s.contains('/') && !s.chars().any(char::is_control)
}

fn render_scope(src: &str, name: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let job = BTreeMap::from([("name".to_string(), name.to_string())]);
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

/// Turns a YAML error into a diagnostic with a place and, for unknown keys, a suggestion.
fn yaml_diagnostic(path: &Path, source: &str, e: &yaml_serde::Error) -> Diagnostic {
    let mut msg = e.to_string();
    // The place is shown as file:line:col already; drop libyaml's own " at line N column M".
    while let Some(i) = msg.find(" at line ") {
        let rest = &msg[i + " at line ".len()..];
        let end = rest
            .find(" column ")
            .map(|c| c + " column ".len())
            .map(|c| {
                c + rest[c..]
                    .find(|ch: char| !ch.is_ascii_digit())
                    .unwrap_or(rest.len() - c)
            })
            .unwrap_or(0);
        msg.replace_range(i..i + " at line ".len() + end, "");
    }
    for (from, to) in [
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
    ] {
        msg = msg.replace(from, to);
    }
    if let Some(start) = msg.find("missing field `")
        && let Some(len) = msg[start + 15..].find('`')
    {
        let name = msg[start + 15..start + 15 + len].to_string();
        msg.replace_range(
            start..start + 16 + len,
            &format!("missing required key '{name}'"),
        );
    }
    let mut hint = None;
    let mut width = 1;
    if let Some(start) = msg.find("unknown field `") {
        let rest = &msg[start + "unknown field `".len()..];
        if let Some(end) = rest.find('`') {
            let word = rest[..end].to_string();
            width = word.chars().count();
            let expected: Vec<&str> = rest[end..].split('`').skip(2).step_by(2).collect();
            hint = diag::did_you_mean(&word, expected.iter().copied());
            let place = msg[..start].trim_end_matches([':', ' ']).to_string();
            msg = if place.is_empty() {
                format!("unknown key '{word}' (allowed: {})", expected.join(", "))
            } else {
                format!(
                    "unknown key '{word}' in {place} (allowed: {})",
                    expected.join(", ")
                )
            };
        }
    }
    let d = Diagnostic::new(path, msg).with_hint(hint);
    match e.location() {
        Some(loc) => d.at(source, loc.line(), loc.column(), width),
        None => d,
    }
}

/// Interpolates `${VAR}` in every string of the tree. Missing variables under `provider`
/// (credentials) are left as written and noted in `deferred`; elsewhere they are errors.
fn interpolate_tree(
    v: &mut yaml_serde::Value,
    path: &mut Vec<String>,
    env: &Env,
    file: &Path,
    source: &str,
    diags: &mut Vec<Diagnostic>,
    deferred: &mut Vec<Diagnostic>,
) {
    use yaml_serde::Value;
    match v {
        Value::String(s) => match env::interpolate(s, env) {
            Ok(Interpolated::Done(out)) => *s = out,
            Ok(Interpolated::Missing(names)) => {
                let in_provider = path.first().is_some_and(|p| p == "provider")
                    && path.get(1).is_some_and(|k| k != "kind");
                for name in names {
                    let needle = format!("${{{name}");
                    let d = Diagnostic::new(
                        file,
                        format!(
                            "environment variable {name} is not set (used in {})",
                            path.join(".")
                        ),
                    )
                    .near(source, 1, &needle)
                    .with_hint(Some(format!(
                        "set it, put it in .env beside the job, or write ${{{name}:-default}}"
                    )));
                    if in_provider {
                        deferred.push(d)
                    } else {
                        diags.push(d)
                    }
                }
            }
            Err(e) => diags.push(
                Diagnostic::new(file, format!("{}: {e}", path.join("."))).near(source, 1, "${"),
            ),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate_tree(item, path, env, file, source, diags, deferred);
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                path.push(k.as_str().unwrap_or("?").to_string());
                interpolate_tree(item, path, env, file, source, diags, deferred);
                path.pop();
            }
        }
        Value::Tagged(t) => {
            interpolate_tree(&mut t.value, path, env, file, source, diags, deferred)
        }
        _ => {}
    }
}

/// The fields of a step by name, for lookups.
pub fn field<'a>(step: &'a Step, name: &str) -> Option<&'a Field> {
    step.fields.iter().find(|f| f.spec.name == name)
}
