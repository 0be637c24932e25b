//! `payrun validate`: the job file and every row checked, nothing sent, no state written.

use super::output::{Problems, plural, print_totals};
use super::{Error, load};
use crate::cli::JobArgs;
use crate::exit;

pub(super) fn validate(args: &JobArgs) -> Result<i32, Error> {
    let job = load(args)?;
    let started = std::time::Instant::now();
    let mut problems = Problems::default();
    let checked = crate::plan::validate(&job, &mut |e| problems.print(e));
    problems.finish();
    let mut summary = checked?;
    if job.input.is_some() {
        let state = super::state_location(None, &job)?;
        let known = super::methods::known(&job, &state, false, false);
        let mut methods = Problems::default();
        summary.errors += super::methods::check(&job, known, &mut |e| methods.print(e));
        summary.errors += super::methods::check_payins(&job, &state, &mut |e| methods.print(e));
    }
    let secs = started.elapsed().as_secs_f64();
    if job.input.is_none() {
        println!(
            "{}: {} export step(s): no problems",
            job.path.display(),
            job.exports.len()
        );
        return Ok(exit::SUCCESS);
    }
    let steps = job.steps.len() as u64;
    println!(
        "{}: {} {} × {steps} {} checked in {secs:.2}s: {}",
        job.path.display(),
        summary.rows,
        plural(summary.rows, "row", "rows"),
        plural(steps, "step", "steps"),
        match summary.errors {
            0 => "no problems".to_string(),
            n => format!("{n} {}", plural(n, "problem", "problems")),
        }
    );
    print_totals(&summary);
    super::output::print_payin_totals(&summary);
    Ok(if summary.errors == 0 {
        exit::SUCCESS
    } else {
        exit::INVALID_INPUT
    })
}
