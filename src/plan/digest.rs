//! What a plan would send, as one SHA-256 (the digest approvals are bound to), and the
//! control totals given from outside the file (`--expect-total`, `--expect-rows`).
//!
//! The digest covers the job's name and scope, every payout item in file order (its step,
//! row key, external id, the SHA-256 of its full fields as they are sent — payee, method,
//! amount, currency and the rest — and the external id of the batch it goes out in), then
//! the rows read and the payout totals per currency. No key goes into it: the same inputs
//! give the same digest on any machine. Only the digest of the whole plan leaves memory
//! (an item's own SHA-256 is never stored or shown).

use super::check::{CheckSummary, ItemPlan};
use crate::input::InputError;
use crate::job::Job;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// What a plan is asked to be besides valid: who makes it, and the totals it must come to.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Who makes the plan (`--as`, default the OS user): recorded with a new digest.
    pub by: String,
    /// `--expect-total CCY=AMOUNT`, each currency once.
    pub expect_totals: Vec<(String, Decimal)>,
    /// `--expect-rows N`.
    pub expect_rows: Option<u64>,
}

impl PlanOptions {
    /// A plan made by `by` with no control totals.
    pub fn by(by: impl Into<String>) -> PlanOptions {
        PlanOptions {
            by: by.into(),
            ..PlanOptions::default()
        }
    }
}

/// The name a plan or an approval is made under when `--as` is not given: the OS user.
pub fn os_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(var)
            && crate::job::approver_name_ok(&name)
        {
            return name;
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid out-parameter; getpwuid_r writes the entry's
    // strings into `buf` (of the length given) and sets `found` to `pwd` or null.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_string_lossy();
        if crate::job::approver_name_ok(&name) {
            return name.into_owned();
        }
    }
    format!("uid-{uid}")
}

/// One payout item as a digest recorded it (kept only for a job with `approval:`, to say
/// what changed between two digests): its keyed content hash, never its values.
#[derive(Debug, Clone)]
pub struct DigestRow {
    pub step: String,
    pub key: String,
    pub hash: String,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub batch: String,
}

/// A finished plan digest.
#[derive(Debug, Clone, Default)]
pub struct PlanDigest {
    /// `sha256:` and 64 hex digits.
    pub digest: String,
    /// Rows read.
    pub rows: u64,
    /// Per currency: the payouts' total and count.
    pub totals: Vec<(String, Decimal, u64)>,
    /// The payout items, when kept.
    pub items: Vec<DigestRow>,
}

/// Builds a [`PlanDigest`] from the payout items as the plan writer assigns their batches.
pub struct Digester {
    sha: Sha256,
    items: Option<Vec<DigestRow>>,
}

impl Digester {
    /// A digest of `job`'s plan; `keep_items` keeps each payout's row for [`DigestRow`].
    pub fn new(job: &Job, keep_items: bool) -> Digester {
        let mut d = Digester {
            sha: Sha256::new(),
            items: keep_items.then(Vec::new),
        };
        d.field(b"payrun plan digest 1");
        d.field(job.name.as_bytes());
        d.field(job.scope.as_bytes());
        d
    }

    /// A length-prefixed field: no two sequences of fields hash the same text.
    fn field(&mut self, bytes: &[u8]) {
        self.sha.update((bytes.len() as u64).to_le_bytes());
        self.sha.update(bytes);
    }

    /// Adds one payout item of step `step`, row `key`, going out in batch `batch` (its
    /// external id). Items without content (skipped) are not sent, and not added.
    pub fn payout(&mut self, step: &str, key: &str, item: &ItemPlan, batch: &str) {
        self.money_out(b"payout", step, key, item, batch);
    }

    /// Adds one refund item of step `step`, row `key`: money back to a payer, approved
    /// like a payout.
    pub fn refund(&mut self, step: &str, key: &str, item: &ItemPlan) {
        self.money_out(b"refund", step, key, item, "");
    }

    fn money_out(&mut self, kind: &[u8], step: &str, key: &str, item: &ItemPlan, batch: &str) {
        let Some(content) = item.digest else { return };
        self.field(kind);
        self.field(step.as_bytes());
        self.field(key.as_bytes());
        self.field(item.external_id.as_deref().unwrap_or("").as_bytes());
        self.field(&content);
        self.field(batch.as_bytes());
        if let Some(items) = &mut self.items {
            items.push(DigestRow {
                step: step.to_string(),
                key: key.to_string(),
                hash: item.hash.clone(),
                amount: item.amount.map(|a| a.to_string()),
                currency: item.currency.clone(),
                batch: batch.to_string(),
            });
        }
    }

    /// The digest, with the rows read and the payout totals of `summary`.
    pub fn finish(mut self, summary: &CheckSummary) -> PlanDigest {
        self.field(b"totals");
        self.field(&summary.rows.to_le_bytes());
        let totals: Vec<(String, Decimal, u64)> = summary
            .totals
            .iter()
            .map(|(c, (t, n))| (c.clone(), *t, *n))
            .collect();
        for (ccy, total, n) in &totals {
            self.field(ccy.as_bytes());
            // 100 and 100.00 are the same total.
            self.field(total.normalize().to_string().as_bytes());
            self.field(&n.to_le_bytes());
        }
        PlanDigest {
            digest: format!("sha256:{}", super::hex(&self.sha.finalize())),
            rows: summary.rows,
            totals,
            items: self.items.unwrap_or_default(),
        }
    }
}

/// The SHA-256 of an item's full fields, as the digest takes it.
pub(super) fn content(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Where the plan's totals differ from `--expect-total` and `--expect-rows`: one problem
/// each, both figures shown. With any `--expect-total`, every payout currency of the file
/// must be among them (a control total covers the whole file).
pub fn control_totals(job: &Job, summary: &CheckSummary, opts: &PlanOptions) -> Vec<InputError> {
    let problem = |message: String| InputError {
        path: job.csv_path(),
        line: None,
        column: None,
        message,
    };
    let mut out = Vec::new();
    if let Some(n) = opts.expect_rows
        && n != summary.rows
    {
        out.push(problem(format!(
            "--expect-rows {n}, but the file has {} rows",
            summary.rows
        )));
    }
    for (ccy, expected) in &opts.expect_totals {
        let (total, n) = summary
            .totals
            .get(ccy)
            .copied()
            .unwrap_or((Decimal::ZERO, 0));
        if total != *expected {
            out.push(problem(format!(
                "--expect-total {ccy}={expected}, but the file's payouts come to {ccy} {total} ({n} {})",
                payouts(n)
            )));
        }
    }
    if !opts.expect_totals.is_empty() {
        for (ccy, (total, n)) in &summary.totals {
            if !opts.expect_totals.iter().any(|(c, _)| c == ccy) {
                out.push(problem(format!(
                    "the file pays {ccy} {total} ({n} {}) but no --expect-total {ccy}=… was given",
                    payouts(*n)
                )));
            }
        }
    }
    out
}

fn payouts(n: u64) -> &'static str {
    if n == 1 { "payout" } else { "payouts" }
}
