//! Test helpers: a temp directory holding a job file and its CSV, and a runner for the real
//! `payrun` binary with a clean environment.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PAYOUT_HEADER: &str =
    "employee_id,first_name,last_name,email,country,dob,net_pay,bsb,account_number";

/// A small payout job over `payroll.csv`, with contact and payout steps.
pub const JOB: &str = r#"version: 1
name: testpay
scope: "{{ vars.period }}"
vars:
  period: "2026-11"
provider:
  kind: helloclever
  base_url: ${HC_TEST_BASE_URL:-http://127.0.0.1:9}
  app_id: ${HC_TEST_APP_ID}
  secret_key: ${HC_TEST_SECRET_KEY}
limits:
  rate: 20/s
  concurrency: 4
  max_total: { AUD: "10000.00" }
  max_amount: "5000.00"
input:
  csv: payroll.csv
  key: employee_id
steps:
  - id: contact
    type: contact
    fields:
      email: "{{ row.email | lower }}"
      first_name: "{{ row.first_name }}"
      last_name: "{{ row.last_name }}"
      type: individual
      dob: "{{ row.dob }}"
      phone: "+61412345678"
      gender: female
      street: 1 George Street
      city: Sydney
      postal_code: "2000"
      state: NSW
      country: "{{ row.country }}"
  - id: pay
    type: payout
    batch: { size: 2 }
    fields:
      currency: AUD
      payout_method_name: au_bank_aud
      description: "Salary {{ vars.period }}"
      first_name: "{{ row.first_name }}"
      last_name: "{{ row.last_name }}"
      email: "{{ row.email | lower }}"
      amount: "{{ row.net_pay }}"
      payout_method_params:
        bsb: "{{ row.bsb }}"
        account_number: "{{ row.account_number }}"
        account_name: "{{ row.first_name }} {{ row.last_name }}"
"#;

/// Good rows for `JOB`.
pub fn rows() -> Vec<String> {
    vec![
        "E1,Ann,Lee,ann@example.com,AU,1990-01-02,1500.00,062000,12345678".into(),
        "E2,Bob,Ng,bob@example.com,AU,1985-05-06,2500.50,062-000,87654321".into(),
        "E3,Cat,Wu,cat@example.com,AU,1979-12-31,999,033000,11223344".into(),
    ]
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Fixture {
    /// A job (with `job` as its text) over a CSV of `PAYOUT_HEADER` and `rows`.
    pub fn new(job: &str, rows: &[String]) -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write("job.yaml", job.as_bytes());
        f.write_csv(rows);
        f
    }

    pub fn standard() -> Fixture {
        Fixture::new(JOB, &rows())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, bytes).unwrap();
    }

    pub fn write_csv(&self, rows: &[String]) {
        let mut text = format!("{PAYOUT_HEADER}\n");
        for r in rows {
            text.push_str(r);
            text.push('\n');
        }
        self.write("payroll.csv", text.as_bytes());
    }

    pub fn payrun(&self, args: &[&str]) -> Output {
        payrun_in(self.dir.path(), args)
    }

    pub fn state_db(&self) -> PathBuf {
        self.path(".payrun/testpay.db")
    }
}

/// Runs the real binary in `dir` with an environment free of payrun's variables.
pub fn payrun_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("HELLOCLEVER_")
            || k.starts_with("HC_TEST_")
            || k == "PERIOD"
            || k == "PAYRUN_STATE"
        {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run payrun");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The repository root (for the example jobs).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Asserts a summary.json (its text) holds to docs/summary.schema.json, the schema the
/// reports documentation promises.
pub fn assert_summary_schema(text: &str) {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/summary.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let summary: serde_json::Value = serde_json::from_str(text).unwrap();
    let problems: Vec<String> = validator
        .iter_errors(&summary)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
}
