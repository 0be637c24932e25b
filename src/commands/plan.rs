//! `payrun plan`: the job's work written to state (what is new, unchanged, changed, in
//! conflict), under the run's lock; nothing is sent.

use super::output::{Problems, plural, print_totals};
use super::{Error, job_and_state, plan_error};
use crate::cli::PlanCmdArgs;
use crate::exit;
use crate::job::steps::StepKind;

pub(super) fn plan(cmd: &PlanCmdArgs) -> Result<i32, Error> {
    let args = &cmd.plan;
    let opts = super::plan_options(&cmd.control, cmd.by.as_deref());
    let (job, state_path) = job_and_state(args, false)?;
    if job.input.is_none() {
        println!(
            "nothing to plan: '{}' holds only export steps; `payrun run` runs them",
            job.name
        );
        return Ok(exit::SUCCESS);
    }
    // Planning changes items: not while a run of this job and scope may be sending them,
    // so it holds the run's lock (a first plan has no run to wait for).
    let _lock = if crate::state::exists(&state_path) {
        Some(super::take_lock(
            &job,
            &state_path,
            "plan again when it ends",
        )?)
    } else {
        None
    };
    let mut problems = Problems::default();
    let known = super::methods::known(&job, &state_path, false, true);
    if super::methods::check(&job, known, &mut |e| problems.print(e)) > 0 {
        say!("nothing was planned: the job's payout methods need the fields above");
        return Ok(exit::INVALID_INPUT);
    }
    if super::methods::check_payins(&job, &state_path, &mut |e| problems.print(e)) > 0 {
        say!("nothing was planned: the job's payin methods need the fields above");
        return Ok(exit::INVALID_INPUT);
    }
    let planned = crate::plan::plan(&job, &state_path, &opts, &mut |e| problems.print(e));
    problems.finish();
    match planned {
        Err(e) => Err(plan_error(&job, e)),
        Ok(outcome) => {
            println!(
                "plan for job '{}', scope '{}' ({} rows) in {}",
                job.name,
                job.scope,
                outcome.summary.rows,
                crate::state::shown(&outcome.state_path)
            );
            println!();
            let w = job
                .steps
                .iter()
                .map(|s| s.id.chars().count())
                .max()
                .unwrap_or(0)
                .max(12);
            println!(
                "{:<w$} {:<8} {:>8} {:>10} {:>8} {:>9} {:>6} {:>8} {:>8}",
                "step",
                "type",
                "new",
                "unchanged",
                "changed",
                "conflict",
                "done",
                "skipped",
                "batches"
            );
            for (step, c) in job.steps.iter().zip(&outcome.counts.steps) {
                let batches = if step.kind == StepKind::Payout {
                    format!("{} (+{})", c.batches, c.new_batches)
                } else {
                    "-".to_string()
                };
                println!(
                    "{:<w$} {:<8} {:>8} {:>10} {:>8} {:>9} {:>6} {:>8} {:>8}",
                    step.id,
                    step.kind.as_str(),
                    c.new,
                    c.unchanged,
                    c.changed,
                    c.conflict,
                    c.done,
                    c.skipped,
                    batches
                );
            }
            if !outcome.summary.totals.is_empty() {
                println!();
                println!("payout totals:");
                print_totals(&outcome.summary);
            }
            if !outcome.summary.payin_totals.is_empty() {
                println!();
                println!("payin totals:");
                super::output::print_payin_totals(&outcome.summary);
            }
            println!();
            println!("digest: {}", outcome.counts.digest);
            let st = crate::state::State::open(&outcome.state_path)?;
            let err = |e| st.err(e);
            warn_of_a_repeat(&job, st.connection()).map_err(err)?;
            super::approve::print_standing(&job, st.connection()).map_err(err)?;
            let conflicts = &outcome.counts.conflicts;
            if !conflicts.is_empty() {
                println!();
                println!(
                    "{} {}: these rows changed after they were sent and will not be re-sent:",
                    conflicts.len(),
                    plural(conflicts.len() as u64, "conflict", "conflicts")
                );
                for (line, key, step) in conflicts.iter().take(50) {
                    println!(
                        "  {}:{line}: key '{key}', step '{step}'",
                        job.csv_path().display()
                    );
                }
                if conflicts.len() > 50 {
                    println!("  … and {} more", conflicts.len() - 50);
                }
            }
            Ok(exit::SUCCESS)
        }
    }
}

/// Says when the plan repeats what another scope of the job paid within
/// `guards.duplicate_window`: `payrun run` will refuse it (unless `--allow-duplicates`).
fn warn_of_a_repeat(
    job: &crate::job::Job,
    conn: &crate::state::Conn,
) -> crate::state::SqlResult<()> {
    let window = job.guards.duplicate_window;
    let Some(since) = crate::state::work::guard_since(chrono::Utc::now(), window) else {
        return Ok(());
    };
    let Some(plan) = crate::state::work::plan_id(conn, &job.name, &job.scope)? else {
        return Ok(());
    };
    if let Some(r) = crate::state::work::repeated_payroll(conn, plan, &job.name, &since)? {
        say!(
            "warning: {}: `payrun run` refuses it as a duplicate payroll unless --allow-duplicates",
            r.said(&job.scope, window)
        );
    }
    Ok(())
}
