//! Static checks of a parsed job file: every value's meaning, every template against the
//! CSV header. All problems are collected, each pointing at its place in the file.

use super::config::{self, FieldConfig, JobConfig, KeyColumns, ProviderConfig};
use super::diag::{self, Diagnostic};
use super::export::{Export, Format, Resource, When};
use super::marks::{Marks, Seg};
use super::steps::{CUSTOMER_ID, ContactMode, FieldKind, FieldSpec, Required, StepKind};
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

mod export;
mod settings;
mod steps;

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
        self.version_and_name(c.version, &c.name);

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
        let approval = c.approval.as_ref().and_then(|a| self.approval(a));
        let guards = self.guards(c.guards.as_ref());

        // The scope partitions state: render it before the step templates that may use it.
        let scope = self.scope(c.scope.as_deref(), &c.name, &vars);
        // Templates are checked against the CSV header, so the header is read now.
        let header = match &input {
            None if c.input.is_none() => Some(Arc::new(crate::input::Header::new(Vec::new()))),
            Some(input) => self.header(input),
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
        let names = (c.name.as_str(), scope.as_str());
        let exports = self.exports(
            &export_configs,
            &row_configs,
            &dir,
            names,
            &vars,
            provider.kind,
        );

        // What is approved is money out: payouts, and refunds to payers.
        let money_out = |s: &Step| matches!(s.kind, StepKind::Payout | StepKind::Refund);
        if approval.is_some() && !steps.iter().any(money_out) {
            self.err(
                &["approval"],
                "approval: the job has no payout or refund step to approve",
            );
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
            approval,
            guards,
            header,
            templates,
            sandbox: false,
        })
    }

    /// The file's version (1) and the job's name (it keys state and external ids).
    fn version_and_name(&mut self, version: u32, name: &str) {
        if version != 1 {
            self.err(
                &["version"],
                format!("unsupported job file version {version} (this payrun reads version 1)"),
            );
        }
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            self.err(
                &["name"],
                format!("job name '{name}' must be 1-64 lower-case letters, digits, '-' or '_'"),
            );
        }
    }

    /// The scope, rendered (`default` when not given); it names folders, so it must not
    /// climb or hold a separator.
    fn scope(&mut self, src: Option<&str>, name: &str, vars: &BTreeMap<String, String>) -> String {
        let Some(src) = src else {
            return "default".to_string();
        };
        match render_scope(src, name, vars) {
            Ok(s) if scope_ok(&s) => s,
            Ok(s) => {
                self.err(&["scope"], format!("scope renders to '{}'; it must be 1-64 characters, not '.' or '..', without '/', '\\' or control characters (it names folders)", s.escape_debug()));
                String::new()
            }
            Err(e) => {
                self.err(&["scope"], format!("scope: {e}"));
                String::new()
            }
        }
    }

    /// The CSV header, read to check templates against it; its problem, with its place.
    fn header(&mut self, input: &Input) -> Option<Arc<crate::input::Header>> {
        match CsvSource::open(&input.csv, input.delimiter, &input.key) {
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
        }
    }

    /// The export steps: ids unique among all steps, each writing its own file.
    fn exports(
        &mut self,
        configs: &[config::StepConfig],
        row_configs: &[config::StepConfig],
        dir: &Path,
        (name, scope): (&str, &str),
        vars: &BTreeMap<String, String>,
        provider: ProviderKind,
    ) -> Vec<Export> {
        let mut exports: Vec<Export> = Vec::new();
        for sc in configs {
            if row_configs.iter().any(|r| r.id == sc.id) || exports.iter().any(|e| e.id == sc.id) {
                self.err_in_step(
                    sc.index,
                    &["id"],
                    format!("step id '{}' is used twice", sc.id),
                );
                continue;
            }
            if let Some(e) = self.export(sc, dir, name, scope, vars, provider) {
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
        exports
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
