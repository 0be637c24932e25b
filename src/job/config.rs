//! The job file as written: serde types that mirror the YAML one to one. Every struct
//! denies unknown keys so a typo is an error, never silently ignored. Meaning is given to
//! these values in `job::build`, not here.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, Scalar>,
    pub provider: ProviderConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Optional: a job may hold only exports.
    #[serde(default)]
    pub input: Option<InputConfig>,
    pub steps: Vec<StepConfig>,
    #[serde(default)]
    pub report: Option<ReportConfig>,
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
    #[serde(default)]
    pub approval: Option<ApprovalConfig>,
    #[serde(default)]
    pub guards: Option<GuardsConfig>,
}

/// `approval:`: payouts go out only once the plan's digest has this many approvals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    pub required: u32,
    pub approvers: Vec<String>,
    /// How long an approval counts after it is given (default: until the plan changes).
    #[serde(default)]
    pub expires: Option<String>,
    /// Whether the person who made the plan may approve it (default false).
    #[serde(default)]
    pub preparer_may_approve: Option<bool>,
    /// What the steps before the payouts do while the plan awaits approval: `proceed`
    /// (default) or `wait`.
    #[serde(default)]
    pub other_steps: Option<String>,
}

/// `guards:`: checks against paying a payroll twice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardsConfig {
    /// How far back a run looks for the same payouts under another scope (`0s`: not at all).
    #[serde(default)]
    pub duplicate_window: Option<String>,
    /// `refuse` (default) or `allow` two row keys paying the same account in one file.
    #[serde(default)]
    pub shared_accounts: Option<String>,
}

/// Where to send the run's summary. The URL is resolved only when a run needs it (webhook
/// URLs often carry a token), like provider credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub webhook_url: String,
    /// `failures` (default) or `always`.
    #[serde(default)]
    pub when: Option<String>,
}

/// A YAML scalar accepted where payrun wants text (`period: 2026-11`, `count: 5`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn into_text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// Provider settings as written: every key either provider takes (a key the chosen provider
/// does not take is refused when the job is built, at its place). Credentials stay as
/// written (with `${VAR}` unresolved when the variable is missing): only `run` needs them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// FinHub: the customer API's path on the gateway (default `/customer/2.0.0`).
    #[serde(default)]
    pub base_path: Option<String>,
    /// FinHub: where kycConfirmation is posted (`{customerId}` is replaced).
    #[serde(default)]
    pub kyc_confirmation_path: Option<String>,
    /// Hello Clever: where it posts status changes of the KYC submissions and payouts this
    /// job makes, sent as each request's `webhook_notification`.
    #[serde(default)]
    pub callbacks: Option<CallbacksConfig>,
}

/// `provider.callbacks`: the URL Hello Clever posts to, and the `Authorization` header it
/// sends (a secret, resolved like credentials only when a run needs it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbacksConfig {
    pub endpoint_url: String,
    #[serde(default)]
    pub authorization_header: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    #[serde(default)]
    pub max_total: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub max_amount: Option<Scalar>,
    #[serde(default)]
    pub max_rows: Option<u64>,
    #[serde(default)]
    pub max_batch_size: Option<u32>,
    #[serde(default)]
    pub settle: Option<String>,
    #[serde(default)]
    pub settle_recheck: Option<String>,
    #[serde(default)]
    pub lookback: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub max: Option<String>,
    #[serde(default)]
    pub max_elapsed: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub csv: String,
    pub key: KeyColumns,
    #[serde(default)]
    pub delimiter: Option<String>,
    #[serde(default)]
    pub files_root: Option<String>,
    #[serde(default)]
    pub max_record_bytes: Option<u64>,
}

/// `key: employee_id` or `key: [company, employee_id]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeyColumns {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Where the step is in the file's `steps` (set after parsing), to place diagnostics.
    #[serde(skip)]
    pub index: usize,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub when: Option<String>,
    /// Contact steps: `upsert` (default), `create` or `update`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, FieldConfig>,
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    #[serde(default)]
    pub wait: Option<WaitConfig>,
    /// Export steps: what to pull, over which window, into which file.
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub from: Option<Scalar>,
    #[serde(default)]
    pub to: Option<Scalar>,
    #[serde(default)]
    pub filter: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub output: Option<OutputConfig>,
}

/// Where an export step writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub path: String,
    /// `csv` (default), `jsonl` or `json`.
    #[serde(default)]
    pub format: Option<String>,
}

/// A step field: a template, or (for `payout_method_params`) a map of templates.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FieldConfig {
    Value(Scalar),
    Map(BTreeMap<String, Scalar>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default)]
    pub size: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitConfig {
    pub until: String,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub poll: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub formats: Option<Vec<String>>,
}
