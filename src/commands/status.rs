//! `payrun status`: where a job and scope stand, from state alone.

use super::output::plural;
use super::{Error, job_and_state, no_state_yet};
use crate::exit;
use crate::job::Job;
use crate::state::exports::ExportRecord;
use crate::state::{Status, work};
use std::path::Path;

pub(super) fn status(args: &crate::cli::StatusArgs) -> Result<i32, Error> {
    let (job, path) = job_and_state(&args.plan, args.sandbox)?;
    // Like report and reconcile: with no state, there is nothing to show (exit 2).
    if let Some(why) = no_state_yet(&job, &args.plan, &path, Some("status")) {
        return Err(Error::Invalid(why));
    }
    show(&job, &path)?;
    Ok(exit::SUCCESS)
}

/// Prints the plan's counts, latest exports, last runs, what is in doubt, duplicates and
/// the lock.
fn show(job: &Job, path: &Path) -> Result<(), crate::state::StateError> {
    let st = crate::state::State::open(path)?;
    let conn = st.connection();
    let err = |e| st.err(e);
    let Some(plan_id) = work::plan_id(conn, &job.name, &job.scope).map_err(err)? else {
        println!("'{}' scope '{}' has not been planned", job.name, job.scope);
        return Ok(());
    };
    let snap = work::Snapshot::of(conn, plan_id, 5, 50).map_err(err)?;
    println!(
        "job '{}' scope '{}' ({})",
        job.name,
        job.scope,
        crate::state::shown(path)
    );
    print_counts(&snap.tally);
    // What payers were asked and paid, for jobs that collect.
    let collects = job.steps.iter().any(|s| {
        matches!(
            s.kind,
            crate::job::steps::StepKind::Payin | crate::job::steps::StepKind::Refund
        )
    });
    if collects {
        let collected = crate::report::Report::collected_of(conn, job).map_err(err)?;
        for (ccy, c) in &collected {
            println!("  {}", c.said(ccy));
        }
    }
    if let Some(approval) = &job.approval
        && let Some(s) =
            crate::plan::approval::standing(conn, approval, plan_id, chrono::Utc::now())
                .map_err(err)?
    {
        println!(
            "approval: {}",
            if s.approved() {
                "approved: its payouts go out at the next run"
            } else {
                "awaiting: no payout or refund is sent until it is approved"
            }
        );
        for line in s.lines() {
            println!("  {line}");
        }
    }
    print_exports(&snap.exports);
    print_runs(&snap.runs);
    print_in_doubt(&snap.in_doubt);
    for (step, d) in &snap.duplicates {
        println!(
            "DUPLICATE {step} {}{}: batches {} at the provider can pay it (found by the last check; `payrun reconcile` checks again)",
            d.external_id,
            d.row_key
                .as_deref()
                .map(|k| format!(" (row '{k}')"))
                .unwrap_or_default(),
            d.uuids.join(", ")
        );
    }
    if let Some((h, heartbeat)) = &snap.holder {
        // The OS lock says whether the holder lives: free, its process is gone.
        let gone = crate::state::lock::try_take(path, &job.name, &job.scope)
            .is_ok_and(|l| l.is_some_and(|l| l.by_kernel()));
        println!(
            "locked by run {} (pid {} on {}, started {}, last alive {heartbeat}){}",
            h.run_id,
            h.pid,
            h.host,
            h.started_at,
            if gone {
                ": its process is gone; the next run takes the lock over (`payrun unlock` clears it now)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The same counts, by the same names, as the run's summary.
fn print_counts(tally: &work::Tally) {
    let rows: Vec<(&str, Status, u64)> = tally
        .steps()
        .iter()
        .flat_map(|(step, states)| states.iter().map(move |(s, n)| (step.as_str(), *s, *n)))
        .collect();
    let width = rows
        .iter()
        .map(|(step, ..)| step.len())
        .max()
        .unwrap_or(0)
        .max(12);
    for (step, s, n) in rows {
        println!("  {step:<width$} {s:<14} {n:>8}");
    }
}

fn print_exports(exports: &[(ExportRecord, Option<String>)]) {
    if !exports.is_empty() {
        println!("latest exports:");
    }
    for (e, mark) in exports {
        println!(
            "  {:<12} {} {} .. {}: {}, {} rows{}; last_run = {}",
            e.step,
            e.resource,
            e.from_at,
            e.to_at,
            e.state,
            e.rows,
            match e.error.as_deref() {
                None | Some("") => String::new(),
                Some(error) => format!(" ({error})"),
            },
            mark.as_deref().unwrap_or("none yet")
        );
    }
}

fn print_runs(runs: &[work::RunInfo]) {
    println!("last runs:");
    for run in runs {
        let code = run.exit_code.map_or("-".to_string(), |c| c.to_string());
        println!(
            "  run {}: {} → {}, exit {code}, {} {}, {} {}, {} in doubt resolved{}",
            run.id,
            run.started_at,
            run.ended_at.as_deref().unwrap_or("running"),
            run.requests,
            plural(run.requests, "request", "requests"),
            run.retries,
            plural(run.retries, "retry", "retries"),
            run.in_doubt_resolved,
            run.error
                .as_deref()
                .map(|e| format!("\n    stopped: {}", crate::redact::printable(e)))
                .unwrap_or_default()
        );
    }
}

fn print_in_doubt(doubt: &[work::InDoubt]) {
    if doubt.is_empty() {
        return;
    }
    println!(
        "in doubt (sent, outcome unknown; the next run waits limits.settle after the last send, then asks the provider before any resend):"
    );
    for d in doubt {
        println!(
            "  {} row '{}': {} attempt(s), first at {}, last sent at {}",
            d.step,
            crate::redact::printable(&d.row_key),
            d.attempts,
            d.first_attempt_at,
            d.since.as_deref().unwrap_or("not recorded")
        );
    }
}
