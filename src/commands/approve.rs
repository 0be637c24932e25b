//! `payrun approve`: a listed approver approves the current plan of a job with `approval:`,
//! by its digest. The approval is bound to that digest: a plan that changes gets a new one,
//! which needs approving again.

use super::{Error, job_and_state, no_state_yet};
use crate::cli::ApproveArgs;
use crate::exit;
use crate::job::Job;
use crate::plan::approval::standing;
use crate::state::{Conn, SqlResult};

pub(super) fn approve(args: &ApproveArgs) -> Result<i32, Error> {
    let (job, path) = job_and_state(&args.plan, args.sandbox)?;
    let Some(approval) = &job.approval else {
        return Err(Error::Invalid(format!(
            "job '{}' has no approval: section; its payouts need no approval",
            job.name
        )));
    };
    let me = args.by.as_str();
    if !approval.approvers.iter().any(|a| a == me) {
        return Err(Error::Invalid(format!(
            "'{me}' is not an approver of job '{}' (approval.approvers: {})",
            job.name,
            approval.approvers.join(", ")
        )));
    }
    if let Some(why) = no_state_yet(&job, &args.plan, &path, None) {
        return Err(Error::Invalid(format!(
            "{why}: there is no plan to approve"
        )));
    }
    let st = crate::state::State::open(&path)?;
    let conn = st.connection();
    let err = |e| st.err(e);
    let now = chrono::Utc::now();
    let current = match crate::state::work::plan_id(conn, &job.name, &job.scope).map_err(err)? {
        Some(plan) => standing(conn, approval, plan, now).map_err(err)?,
        None => None,
    };
    let Some(current) = current else {
        return Err(Error::Invalid(format!(
            "'{}' scope '{}' has no plan with a digest yet: `payrun plan {}` makes one",
            job.name,
            job.scope,
            args.plan.job.job.display()
        )));
    };
    let d = &current.digest;
    let given = args.digest.trim().to_ascii_lowercase();
    let given = given.strip_prefix("sha256:").unwrap_or(&given);
    if Some(given) != d.digest.strip_prefix("sha256:") {
        return Err(Error::Invalid(format!(
            "sha256:{given} is not the digest of the current plan of '{}' scope '{}', which is {} (planned by {} at {}): check that one, then approve it",
            job.name, job.scope, d.digest, d.planned_by, d.planned_at
        )));
    }
    if me == d.planned_by && !approval.preparer_may_approve {
        return Err(Error::Invalid(format!(
            "{me} made this plan ({}) and cannot approve it: it needs approvers other than its preparer (approval.preparer_may_approve)",
            d.digest
        )));
    }
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let added =
        crate::state::approvals::approve(conn, d.id, me, args.note.as_deref(), &at).map_err(err)?;
    if !added {
        let when = current
            .approvals
            .iter()
            .find(|a| a.approver == me)
            .map_or("", |a| a.approved_at.as_str());
        return Err(Error::Invalid(format!(
            "{me} approved {} already (at {when}): each approver counts once",
            d.digest
        )));
    }
    println!("approved {} as {me}", d.digest);
    print_standing(&job, conn).map_err(err)?;
    Ok(exit::SUCCESS)
}

/// Prints where the current plan of `job` stands with its approvals, from the state
/// `conn` is on (nothing without `approval:` or a digest).
pub(super) fn print_standing(job: &Job, conn: &Conn) -> SqlResult<()> {
    let Some(approval) = &job.approval else {
        return Ok(());
    };
    let Some(plan) = crate::state::work::plan_id(conn, &job.name, &job.scope)? else {
        return Ok(());
    };
    let Some(s) = standing(conn, approval, plan, chrono::Utc::now())? else {
        return Ok(());
    };
    for line in s.lines() {
        println!("  {line}");
    }
    if s.approved() {
        println!(
            "  approved: `payrun run {}` sends exactly this plan",
            job.path.display()
        );
    } else {
        println!(
            "  approve with: payrun approve {} --digest {} --as NAME",
            job.path.display(),
            s.digest.digest
        );
    }
    Ok(())
}
