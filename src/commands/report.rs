//! `payrun report`: a run's reports written again from state.

use super::output::shown;
use super::{Error, job_and_state, no_state_yet, running_run};
use crate::exit;

pub(super) fn report(args: &crate::cli::ReportArgs) -> Result<i32, Error> {
    let (job, state_path) = job_and_state(&args.plan, args.sandbox)?;
    if let Some(why) = no_state_yet(&job, &args.plan, &state_path, Some("report")) {
        return Err(Error::Invalid(why));
    }
    // A run still going has no reports yet: they would show it half done.
    if let Some(running) = running_run(&job, &state_path, args.run) {
        return Err(Error::Locked(format!(
            "run {running} of '{}' scope '{}' is still running: its reports are written when it ends",
            job.name, job.scope
        )));
    }
    let dir = crate::report::write(&job, &state_path, args.run)?;
    println!("reports written to {}", shown(&dir).display());
    Ok(exit::SUCCESS)
}
