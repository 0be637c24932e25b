//! `payrun reconcile`: asks the provider what became of everything sent, and records it.

use super::output::{plural, print_duplicates, shown};
use super::{Error, job_and_state, no_state_yet, run_error, runtime};

pub(super) fn reconcile(args: &crate::cli::ReconcileArgs, quiet: bool) -> Result<i32, Error> {
    if args.sandbox {
        return Err(Error::Invalid(format!(
            "a --sandbox rehearsal's provider ended with its run: there is nothing to reconcile it with (`payrun status {} --sandbox` shows what it did)",
            args.plan.job.job.display()
        )));
    }
    let (only_run, args) = (args.run, &args.plan);
    let (job, state_path) = job_and_state(args, false)?;
    // A rehearsal's sandbox is gone with its run: there is nothing to reconcile it with.
    if let Some(why) = no_state_yet(&job, args, &state_path, None) {
        return Err(Error::Invalid(why));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opts = crate::exec::RunOptions {
            stop,
            ..crate::exec::RunOptions::at(&state_path)
        };
        match crate::exec::reconcile(&job, opts, only_run).await {
            Ok((report, changes)) => {
                if !quiet {
                    println!(
                        "reconciled '{}' scope '{}' (run {}): {} {}",
                        job.name,
                        job.scope,
                        report.run_id,
                        changes.len(),
                        plural(changes.len() as u64, "change", "changes")
                    );
                    for c in &changes {
                        println!(
                            "  {} row '{}': {}",
                            c.step,
                            crate::redact::printable(&c.row_key),
                            c.what
                        );
                    }
                    print_duplicates(&report.duplicates);
                }
                match crate::report::write(&job, &state_path, Some(report.run_id)) {
                    Ok(dir) if !quiet => println!("  reports: {}", shown(&dir).display()),
                    Ok(_) => {}
                    Err(e) => say!("warning: reports not written ({e})"),
                }
                Ok(report.exit_code)
            }
            Err(e) => Err(run_error(&job, e)),
        }
    })
}
