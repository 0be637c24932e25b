//! `payrun methods`: the provider's payout methods and the fields each requires, read from
//! the provider and kept in state; and the check of a job's `payout_method_params` against
//! them, for `validate` and `plan`.

use super::output::plural;
use super::{Error, job_and_state, run_error, runtime};
use crate::cli::MethodsArgs;
use crate::exit;
use crate::input::InputError;
use crate::job::steps::StepKind;
use crate::job::{FieldValue, Job};
use crate::provider::helloclever::wire::MethodRecord;
use crate::template::Template;
use std::path::Path;

pub(super) fn methods(args: &MethodsArgs) -> Result<i32, Error> {
    let (job, state_path) = job_and_state(&args.plan, args.sandbox)?;
    let records = if args.sandbox {
        sandbox_methods()
    } else {
        let opts = options(&state_path);
        let (base, records) = runtime()?
            .block_on(crate::exec::payout_methods(&job, &opts))
            .map_err(|e| run_error(&job, e))?;
        let st = crate::state::State::open(&state_path).map_err(|e| Error::Fatal(e.to_string()))?;
        crate::state::methods::store(st.connection(), &base, &records)
            .map_err(|e| Error::Fatal(format!("state database: {e}")))?;
        println!(
            "{} payout {} of {base}, kept in {} for validate and plan:",
            records.len(),
            plural(records.len() as u64, "method", "methods"),
            crate::state::shown(&state_path)
        );
        records
    };
    for m in &records {
        let (mandatory, optional) = m.params();
        let range = match (m.min_amount, m.max_amount) {
            (Some(lo), Some(hi)) => format!(", {lo} to {hi}"),
            (None, Some(hi)) => format!(", up to {hi}"),
            (Some(lo), None) => format!(", from {lo}"),
            (None, None) => String::new(),
        };
        let mut needs = Vec::new();
        if m.require_contact {
            needs.push("a contact");
        }
        if m.require_kyc {
            needs.push("KYC");
        }
        if m.is_cancellable {
            needs.push("cancellable when scheduled");
        }
        println!();
        println!(
            "{}  {}{range}{}",
            m.payout_method_name,
            m.currency,
            if m.description.is_empty() {
                String::new()
            } else {
                format!("  ({})", m.description)
            }
        );
        println!("  required: {}", list(&mandatory));
        if !optional.is_empty() {
            println!("  optional: {}", list(&optional));
        }
        if !needs.is_empty() {
            println!("  {}", needs.join("; "));
        }
    }
    Ok(exit::SUCCESS)
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

pub(super) fn options(state_path: &Path) -> crate::exec::RunOptions {
    crate::exec::RunOptions::at(state_path)
}

/// The embedded sandbox's methods (a `--sandbox` rehearsal is checked against them).
fn sandbox_methods() -> Vec<MethodRecord> {
    crate::sandbox::payout_method_records()
        .into_iter()
        .filter_map(|r| serde_json::from_value(r).ok())
        .collect()
}

/// What `validate` and `plan` know of the provider's methods.
pub(super) enum Known {
    /// From state, read from the provider at that time.
    Cached(Vec<MethodRecord>, String),
    /// Read from the provider just now (stored in state by `plan`).
    Live(Vec<MethodRecord>),
    /// The embedded sandbox's.
    Sandbox(Vec<MethodRecord>),
    /// Not known, and why.
    Unknown(String),
}

/// The provider's methods for a check: from state when cached, else from the provider when
/// the job's credentials are set (stored in state when `store`), else not known.
pub(super) fn known(job: &Job, state_path: &Path, sandbox: bool, store: bool) -> Option<Known> {
    let pays = job.steps.iter().any(|s| s.kind == StepKind::Payout);
    if !pays {
        return None;
    }
    if sandbox {
        return Some(Known::Sandbox(sandbox_methods()));
    }
    let base = match crate::exec::provider_base(job) {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => return Some(Known::Unknown(e.to_string())),
    };
    if crate::state::exists(state_path)
        && let Ok(st) = crate::state::State::open(state_path)
        && let Ok(Some((records, at))) = crate::state::methods::cached(st.connection(), &base)
    {
        return Some(Known::Cached(records, at));
    }
    let fetched = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(crate::exec::payout_methods(job, &options(state_path)))
            .map_err(|e| match e {
                // An unset credential: its message, without place and hint.
                crate::exec::RunError::Setting(d) => d.message.clone(),
                e => first_line(&e.to_string()),
            })
    });
    Some(match fetched {
        Ok((base, records)) => {
            if store && let Ok(st) = crate::state::State::open(state_path) {
                let _ = crate::state::methods::store(st.connection(), &base, &records);
            }
            Known::Live(records)
        }
        Err(why) => Known::Unknown(why),
    })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// Checks each payout step whose method is written in the job against the provider's
/// record of it: a method it does not offer, or a required parameter the job does not
/// give, is a problem at the step's line. Says on stdout what it checked against.
pub(super) fn check(job: &Job, known: Option<Known>, on_error: &mut dyn FnMut(InputError)) -> u64 {
    let Some(known) = known else { return 0 };
    let (records, source) = match known {
        Known::Cached(r, at) => (
            r,
            format!("the provider's, read {at} (`payrun methods` reads them again)"),
        ),
        Known::Live(r) => (r, "the provider's, read just now".to_string()),
        Known::Sandbox(r) => (r, "the embedded sandbox's".to_string()),
        Known::Unknown(why) => {
            println!(
                "payout methods: the provider's required fields could not be read ({why}); \
                 parameters were checked against payrun's own table only (`payrun methods` \
                 reads and keeps them where the credentials are set)"
            );
            return 0;
        }
    };
    let mut problems = 0;
    for step in job.steps.iter().filter(|s| s.kind == StepKind::Payout) {
        // A method rendered per row is checked by the provider as its batches go.
        let Some((method_line, FieldValue::One(Template::Literal(method), _))) =
            field(step, "payout_method_name")
        else {
            continue;
        };
        let mut problem = |line: Option<usize>, message: String| {
            problems += 1;
            on_error(at_line(job, line, message));
        };
        let Some(record) = records.iter().find(|r| &r.payout_method_name == method) else {
            let offered: Vec<&str> = records
                .iter()
                .map(|r| r.payout_method_name.as_str())
                .collect();
            problem(
                method_line,
                format!(
                    "step '{}': the provider offers no payout method '{method}' (it offers: {})",
                    step.id,
                    list(&offered)
                ),
            );
            continue;
        };
        let params = field(step, "payout_method_params");
        let missing = missing(record, params.map(|(_, v)| v));
        if !missing.is_empty() {
            problem(
                params.and_then(|(l, _)| l).or(method_line),
                format!(
                    "step '{}': payout method {method} requires {} in payout_method_params \
                     (the provider's required fields)",
                    step.id,
                    missing.join(", ")
                ),
            );
        }
    }
    if problems == 0 {
        println!("payout methods: parameters checked against {source}");
    }
    problems
}

/// The parameters `record` marks Mandatory that the job's `params` map does not give.
fn missing<'r>(record: &'r MethodRecord, params: Option<&FieldValue>) -> Vec<&'r str> {
    let given: Vec<&str> = match params {
        Some(FieldValue::Map(entries)) => entries.iter().map(|(k, _, _)| k.as_str()).collect(),
        _ => Vec::new(),
    };
    let (mandatory, _) = record.params();
    mandatory
        .into_iter()
        .filter(|p| !given.contains(p))
        .collect()
}

/// A problem with the job file at `line`.
fn at_line(job: &Job, line: Option<usize>, message: String) -> InputError {
    InputError {
        path: job.path.clone(),
        line: line.map(|l| l as u64),
        column: None,
        message,
    }
}

/// A step's field `name`: its job-file line and value.
fn field<'s>(step: &'s crate::job::Step, name: &str) -> Option<(Option<usize>, &'s FieldValue)> {
    step.fields
        .iter()
        .find(|f| f.spec.name == name)
        .map(|f| (f.line, &f.value))
}

/// Checks each payin step whose method is written in the job against the provider's record
/// of it (`GET /v2/payins/payin_method/params`), where the job's credentials are set: a
/// method it does not offer, one of another currency, or a required parameter the job does
/// not give, is a problem at the step's line. Says on stdout what it checked against.
pub(super) fn check_payins(
    job: &Job,
    state_path: &Path,
    on_error: &mut dyn FnMut(InputError),
) -> u64 {
    let literal = |v: Option<(Option<usize>, &FieldValue)>| match v {
        Some((line, FieldValue::One(Template::Literal(s), _))) => Some((line, s.clone())),
        _ => None,
    };
    // A method rendered per row is checked by the provider as its payins go.
    let steps: Vec<(&crate::job::Step, Option<usize>, String)> = job
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::Payin)
        .filter_map(|s| literal(field(s, "payin_method_name")).map(|(line, name)| (s, line, name)))
        .collect();
    if steps.is_empty() || !matches!(crate::exec::provider_base(job), Ok(Some(_))) {
        return 0;
    }
    let names: Vec<String> = steps.iter().map(|(_, _, n)| n.clone()).collect();
    let fetched = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(crate::exec::payin_methods(
            job,
            &options(state_path),
            &names,
        ))
        .map_err(|e| match e {
            // An unset credential: its message, without place and hint.
            crate::exec::RunError::Setting(d) => d.message.clone(),
            e => first_line(&e.to_string()),
        })
    });
    let records = match fetched {
        Ok(r) => r,
        Err(why) => {
            println!(
                "payin methods: the provider's required fields could not be read ({why}); \
                 names, currencies and amounts were checked against payrun's own table only"
            );
            return 0;
        }
    };
    let mut problems = 0;
    let mut problem = |line: Option<usize>, message: String| {
        problems += 1;
        on_error(at_line(job, line, message));
    };
    let mut unread = Vec::new();
    for ((step, line, method), record) in steps.iter().zip(records) {
        let record = match record {
            Ok(r) => r,
            Err(crate::provider::error::CallError::Status {
                status: 400 | 404 | 422,
                message,
                ..
            }) => {
                problem(
                    *line,
                    format!(
                        "step '{}': the provider offers no payin method '{method}' ({message})",
                        step.id
                    ),
                );
                continue;
            }
            Err(e) => {
                unread.push(format!("{method}: {}", first_line(&e.to_string())));
                continue;
            }
        };
        if let Some((cline, ccy)) = literal(field(step, "currency"))
            && !record.currency.is_empty()
            && ccy != record.currency
        {
            problem(
                cline.or(*line),
                format!(
                    "step '{}': payin method {method} collects {}, but the currency is {ccy} \
                     (the provider's record)",
                    step.id, record.currency
                ),
            );
        }
        let missing = missing(&record, field(step, "payin_method_params").map(|(_, v)| v));
        if !missing.is_empty() {
            problem(
                field(step, "payin_method_params")
                    .and_then(|(l, _)| l)
                    .or(*line),
                format!(
                    "step '{}': payin method {method} requires {} in payin_method_params \
                     (the provider's required fields)",
                    step.id,
                    missing.join(", ")
                ),
            );
        }
    }
    if !unread.is_empty() {
        println!(
            "payin methods: the provider's required fields could not be read ({}); \
             names, currencies and amounts were checked against payrun's own table only",
            unread.join("; ")
        );
    } else if problems == 0 {
        println!("payin methods: parameters checked against the provider's, read just now");
    }
    problems
}
