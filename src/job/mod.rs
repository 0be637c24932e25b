//! Job files: loading (`${VAR}` interpolation, YAML, unknown-key checks), static validation
//! and the typed [`Job`] the rest of payrun works from.
//!
//! Loading is raw → validated: `config` mirrors the YAML; [`load`] checks everything it can
//! without sending a request — including every template against the CSV header — and
//! reports all problems at once, each with `file:line:col`.

mod build;
pub mod config;
pub mod diag;
pub mod env;
pub mod export;
mod marks;
mod parse;
pub mod steps;

pub use diag::Diagnostic;
pub use parse::{parse_duration, parse_rate};

use crate::input::Header;
use crate::provider::ProviderKind;
use crate::template::{Template, Templates, Uses};
use config::JobConfig;
use env::{Env, Interpolated};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use steps::{FieldSpec, StepKind};

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
    /// `None` for a job of exports only.
    pub input: Option<Input>,
    /// The steps that work on rows, in order.
    pub steps: Vec<Step>,
    /// The export steps, in order; they run after the row steps.
    pub exports: Vec<export::Export>,
    pub report: Report,
    pub notify: Option<Notify>,
    /// `approval:`, when the job's payouts need approving.
    pub approval: Option<Approval>,
    pub guards: Guards,
    pub header: Arc<Header>,
    pub templates: Templates,
    /// Set for `run --sandbox`: state, reports and exports go to their sandbox places.
    pub sandbox: bool,
}

/// A provider setting as the job gives it: not written (`None`), its value, or the
/// diagnostic of the variable it needs that is not set (only `run` needs credentials, so
/// `validate` and `plan` work without them).
pub type Setting = Option<Result<String, Box<Diagnostic>>>;

/// The provider and its settings, typed per provider.
pub struct Provider {
    pub kind: ProviderKind,
    pub settings: ProviderSettings,
}

/// What each provider is configured with; a key of the other provider is refused at load.
pub enum ProviderSettings {
    HelloClever {
        base_url: Setting,
        app_id: Setting,
        secret_key: Setting,
        /// `provider.callbacks`, when written.
        callbacks: Option<Callbacks>,
    },
    FinHub {
        base_url: Setting,
        tenant_id: Setting,
        token: Setting,
        token_url: Setting,
        client_id: Setting,
        client_secret: Setting,
        /// The customer API's path on the gateway (default `/customer/2.0.0`).
        base_path: Setting,
        /// Where kycConfirmation is posted (`{customerId}` is replaced).
        kyc_confirmation_path: Setting,
    },
}

/// Where Hello Clever posts status changes: the URL, and the `Authorization` header it
/// sends with them (a secret: never shown, logged or stored by payrun).
pub struct Callbacks {
    pub endpoint_url: Setting,
    pub authorization_header: Setting,
}

impl ProviderSettings {
    /// The keys a provider of `kind` takes, besides `kind`.
    pub fn keys(kind: ProviderKind) -> &'static [&'static str] {
        match kind {
            ProviderKind::HelloClever => &["base_url", "app_id", "secret_key", "callbacks"],
            ProviderKind::FinHub => &[
                "base_url",
                "tenant_id",
                "token",
                "token_url",
                "client_id",
                "client_secret",
                "base_path",
                "kyc_confirmation_path",
            ],
        }
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials never appear in Debug output.
        f.debug_struct("Provider")
            .field("kind", &self.kind)
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
    /// How long after a request in doubt was sent the provider may still apply it: no
    /// lookup before then counts as proof that it did not.
    pub settle: Duration,
    /// How far apart the two lookups that prove a request absent must be (listings lag).
    pub settle_recheck: Duration,
    /// How far back payrun looks at the provider's payouts for this job's external ids
    /// before a batch's first send (the state may be new) and when checking for duplicates.
    pub lookback: Duration,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub csv: PathBuf,
    pub key: Vec<String>,
    pub delimiter: u8,
    /// The folder KYC image paths are relative to, and must stay inside
    /// (`input.files_root`, default the CSV's folder).
    pub files_root: PathBuf,
    /// The largest a CSV record may be (`input.max_record_bytes`).
    pub max_record_bytes: u64,
}

/// The default of `input.max_record_bytes`: far above any real payroll row (a few hundred
/// bytes), far below what would strain memory.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;

#[derive(Debug)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    /// A contact step's mode (upsert for every other kind).
    pub mode: steps::ContactMode,
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

/// Who must approve a plan's digest before its payouts are sent.
#[derive(Debug, Clone)]
pub struct Approval {
    pub required: u32,
    pub approvers: Vec<String>,
    /// How long an approval counts after it is given; `None`: until the plan changes.
    pub expires: Option<Duration>,
    pub preparer_may_approve: bool,
    /// The steps before the payouts wait for approval too (`other_steps: wait`).
    pub hold_other_steps: bool,
}

/// The checks against paying a payroll twice.
#[derive(Debug, Clone)]
pub struct Guards {
    /// How far back a run compares its payouts with other scopes'; zero turns it off.
    pub duplicate_window: Duration,
    /// Two row keys may pay the same account in one file.
    pub shared_accounts: bool,
}

/// A duration as a job file writes it, in its largest whole unit: `5d`, `36h`, `90s`.
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    if d.subsec_millis() > 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    format!("{s}s")
}

/// The documented default of `guards.duplicate_window`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(5 * 24 * 3600);

impl Default for Guards {
    fn default() -> Guards {
        Guards {
            duplicate_window: DUPLICATE_WINDOW,
            shared_accounts: false,
        }
    }
}

/// A name `--as` may give: what an OS user or an e-mail address is made of.
pub fn approver_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Where a run's summary is posted, and when.
#[derive(Clone)]
pub struct Notify {
    /// As written when a variable in it was unset (then `run` warns and skips it).
    pub url: String,
    pub always: bool,
    pub unresolved: bool,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a token: never in Debug output.
        f.debug_struct("Notify")
            .field("always", &self.always)
            .finish_non_exhaustive()
    }
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
pub(crate) const REPORT_FORMATS: [&str; 4] = ["csv", "json", "junit", "html"];

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
    build::Builder::new(path, &source).build(config, dir, opts, deferred)
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
/// (credentials) and in the webhook URL are left as written and noted in `deferred` under
/// their dotted path; elsewhere they are errors.
fn interpolate_tree(
    v: &mut yaml_serde::Value,
    path: &mut Vec<String>,
    env: &Env,
    file: &Path,
    source: &str,
    diags: &mut Vec<Diagnostic>,
    deferred: &mut Vec<(String, Diagnostic)>,
) {
    use yaml_serde::Value;
    match v {
        Value::String(s) => match env::interpolate(s, env) {
            Ok(Interpolated::Done(out)) => *s = out,
            Ok(Interpolated::Missing(names)) => {
                // Credentials and the webhook URL are only needed by `run`.
                let in_provider = (path.first().is_some_and(|p| p == "provider")
                    && path.get(1).is_some_and(|k| k != "kind"))
                    || (path.first().is_some_and(|p| p == "notify")
                        && path.get(1).is_some_and(|k| k == "webhook_url"));
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
                        deferred.push((path.join("."), d))
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

impl Job {
    /// The input CSV's path (empty for a job of exports only, which reads no rows).
    /// The folder KYC files are read from (see [`Input::files_root`]).
    pub fn files_root(&self) -> PathBuf {
        self.input
            .as_ref()
            .map(|i| i.files_root.clone())
            .unwrap_or_default()
    }

    pub fn csv_path(&self) -> PathBuf {
        self.input
            .as_ref()
            .map(|i| i.csv.clone())
            .unwrap_or_default()
    }
}

/// The fields of a step by name, for lookups.
pub fn field<'a>(step: &'a Step, name: &str) -> Option<&'a Field> {
    step.fields.iter().find(|f| f.spec.name == name)
}
