//! `payrun cancel`: recalls the job's scheduled payout batches and cancels its pending
//! payins (all, or those named) through the provider, and records their rows as
//! `cancelled`.

use super::output::plural;
use super::{Error, job_and_state, no_state_yet, run_error, runtime, take_lock};
use crate::cli::CancelArgs;
use crate::exec::Recall;
use crate::exit;
use crate::state::BatchState;
use crate::state::work::{self, SentBatch};

pub(super) fn cancel(args: &CancelArgs) -> Result<i32, Error> {
    let (job, state_path) = job_and_state(&args.plan, false)?;
    if let Some(why) = no_state_yet(&job, &args.plan, &state_path, None) {
        return Err(Error::Invalid(why));
    }
    // Nothing is cancelled under a run that may be sending or recording the same batches.
    let _lock = take_lock(&job, &state_path, "cancel when it ends")?;
    let st = crate::state::State::open(&state_path)?;
    let conn = st.connection();
    let sql = |e: crate::state::SqlError| Error::Fatal(format!("state database: {e}"));
    let Some(plan) = work::plan_id(conn, &job.name, &job.scope).map_err(sql)? else {
        return Err(Error::Invalid(format!(
            "'{}' scope '{}' has sent nothing: nothing to cancel",
            job.name, job.scope
        )));
    };
    // Names given for one kind only: the other kind is left alone.
    let want_batches = args.payins.is_empty() || !args.batches.is_empty();
    let want_payins = args.batches.is_empty() || !args.payins.is_empty();
    let batches = work::sent_batches(conn, plan).map_err(sql)?;
    let (targets, refused) = if want_batches {
        choose(&batches, &args.batches)?
    } else {
        (Vec::new(), Vec::new())
    };
    for (b, why) in &refused {
        say!("not cancelled: batch {} {why}", name(b));
    }
    let payin_steps: Vec<String> = job
        .steps
        .iter()
        .filter(|s| s.kind == crate::job::steps::StepKind::Payin)
        .map(|s| s.id.clone())
        .collect();
    let payins = if want_payins {
        let pending = work::pending_payins(conn, plan, &payin_steps).map_err(sql)?;
        choose_payins(pending, &args.payins)?
    } else {
        Vec::new()
    };
    if targets.is_empty() && payins.is_empty() {
        say!(
            "nothing to cancel: '{}' scope '{}' has no sent batch that may still be scheduled{}",
            job.name,
            job.scope,
            if payin_steps.is_empty() {
                ""
            } else {
                " and no payin its payer may still pay"
            }
        );
        return Ok(exit::ROWS_FAILED);
    }
    if !targets.is_empty() {
        let rows: u64 = targets.iter().map(|b| b.rows).sum();
        println!(
            "{} payout {} of '{}' scope '{}' ({rows} {}) to recall if still scheduled:",
            targets.len(),
            plural(targets.len() as u64, "batch", "batches"),
            job.name,
            job.scope,
            plural(rows, "row", "rows"),
        );
        for b in &targets {
            println!(
                "  {}  step {}, {} rows, {}",
                name(b),
                b.step,
                b.rows,
                b.amount
            );
        }
    }
    if !payins.is_empty() {
        println!(
            "{} {} of '{}' scope '{}' to cancel if still pending:",
            payins.len(),
            plural(payins.len() as u64, "payin", "payins"),
            job.name,
            job.scope,
        );
        for p in &payins {
            println!(
                "  {}  step {}, row {}, {} {}",
                p.uuid,
                p.step,
                crate::redact::printable(&p.row_key),
                p.amount.as_deref().unwrap_or(""),
                p.currency.as_deref().unwrap_or("")
            );
        }
    }
    if !args.yes && !confirmed()? {
        say!("nothing was cancelled");
        return Ok(exit::ROWS_FAILED);
    }
    let opts = super::methods::options(&state_path);
    let mut all = refused.is_empty();
    if !targets.is_empty() {
        let uuids: Vec<String> = targets
            .iter()
            .filter_map(|b| b.provider_ref.clone())
            .collect();
        let recalled = runtime()?
            .block_on(crate::exec::recall_scheduled(&job, &opts, &uuids))
            .map_err(|e| run_error(&job, e))?;
        for (b, outcome) in targets.iter().zip(recalled) {
            match outcome {
                Recall::Cancelled(status) => {
                    let n = work::mark_cancelled(conn, b.id).map_err(sql)?;
                    println!(
                        "cancelled {}: {n} {} recorded as cancelled (the provider shows it {status})",
                        name(b),
                        plural(n as u64, "row", "rows")
                    );
                }
                Recall::NotScheduled(status) => {
                    all = false;
                    say!(
                        "not cancelled: batch {} is {status}, not scheduled (only a batch waiting \
                         for its scheduled time can be recalled)",
                        name(b)
                    );
                }
                Recall::Failed(why) => {
                    all = false;
                    say!("not cancelled: batch {}: {why}", name(b));
                }
            }
        }
    }
    if !payins.is_empty() {
        let uuids: Vec<String> = payins.iter().map(|p| p.uuid.clone()).collect();
        let cancelled = runtime()?
            .block_on(crate::exec::cancel_payins(&job, &opts, &uuids))
            .map_err(|e| run_error(&job, e))?;
        for (p, outcome) in payins.iter().zip(cancelled) {
            match outcome {
                Recall::Cancelled(status) => {
                    work::mark_payin_cancelled(conn, p.id).map_err(sql)?;
                    println!(
                        "cancelled payin {} (row {}): recorded as cancelled (the provider shows it {status})",
                        p.uuid,
                        crate::redact::printable(&p.row_key)
                    );
                }
                Recall::NotScheduled(status) => {
                    all = false;
                    say!(
                        "not cancelled: payin {} is {status}, not pending (`payrun reconcile` records it)",
                        p.uuid
                    );
                }
                Recall::Failed(why) => {
                    all = false;
                    say!("not cancelled: payin {}: {why}", p.uuid);
                }
            }
        }
    }
    Ok(if all {
        exit::SUCCESS
    } else {
        exit::ROWS_FAILED
    })
}

/// The pending payins to cancel: all of them when none is named, else those named (by
/// uuid or row key; a name that is no pending payin of the job is an error).
fn choose_payins(
    pending: Vec<work::PendingPayin>,
    named: &[String],
) -> Result<Vec<work::PendingPayin>, Error> {
    if named.is_empty() {
        return Ok(pending);
    }
    let mut picked = Vec::new();
    for n in named {
        match pending.iter().find(|p| p.uuid == *n || p.row_key == *n) {
            Some(p) => picked.push(p.clone()),
            None => {
                return Err(Error::Invalid(format!(
                    "no pending payin '{n}' in this job and scope (name a payin by the provider's \
                     uuid or its row's key, as results.csv shows them; one paid, expired or in \
                     doubt cannot be cancelled)"
                )));
            }
        }
    }
    Ok(picked)
}

/// A batch as the user knows it: the provider's uuid, and payrun's external id.
fn name(b: &SentBatch) -> String {
    match &b.provider_ref {
        Some(uuid) => format!("{uuid} ({})", b.external_id),
        None => b.external_id.clone(),
    }
}

/// The batches to ask the provider about, and those refused with why.
type Chosen<'b> = (Vec<&'b SentBatch>, Vec<(&'b SentBatch, String)>);

/// The batches to ask the provider about, and those refused with why: all sent batches
/// when none is named, else the named ones (by uuid or external id; an unknown name is an
/// error).
fn choose<'b>(batches: &'b [SentBatch], named: &[String]) -> Result<Chosen<'b>, Error> {
    let picked: Vec<&SentBatch> = if named.is_empty() {
        batches
            .iter()
            .filter(|b| b.state == BatchState::Sent)
            .collect()
    } else {
        let mut picked = Vec::new();
        for n in named {
            let found = batches
                .iter()
                .find(|b| b.provider_ref.as_deref() == Some(n.as_str()) || b.external_id == *n);
            match found {
                Some(b) => picked.push(b),
                None => {
                    return Err(Error::Invalid(format!(
                        "no batch '{n}' in this job and scope (name a batch by the provider's \
                         uuid or payrun's external id, as results.csv and status show them)"
                    )));
                }
            }
        }
        picked
    };
    let mut targets = Vec::new();
    let mut refused = Vec::new();
    for b in picked {
        let why = match b.state {
            BatchState::Sent if b.provider_ref.is_some() => {
                targets.push(b);
                continue;
            }
            BatchState::Cancelled => "was cancelled already",
            BatchState::Completed => "completed: it has paid",
            BatchState::Expired => "expired at the provider: it pays nothing",
            BatchState::Failed => "never reached the provider",
            BatchState::InFlight | BatchState::Sent => {
                "is in doubt (whether the provider holds it is not known yet): run \
                 `payrun reconcile`, or the next run, first"
            }
            BatchState::Open => "was never sent",
        };
        refused.push((b, why.to_string()));
    }
    Ok((targets, refused))
}

/// Asks on a terminal; elsewhere `--yes` is required.
fn confirmed() -> Result<bool, Error> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(Error::Invalid(
            "not on a terminal: add --yes to cancel these".into(),
        ));
    }
    eprint!("cancel them? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Fatal(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
