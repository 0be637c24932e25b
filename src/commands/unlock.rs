//! `payrun unlock`: clears the recorded lock of a run whose process is gone.

use super::{Error, job_and_state, no_state_yet};
use crate::cli::PlanArgs;
use crate::exit;

/// `payrun unlock`: clears the recorded lock of a run whose process is gone. The OS lock
/// decides: while the holder lives it holds it, and nothing is cleared.
pub(super) fn unlock(args: &PlanArgs) -> Result<i32, Error> {
    use crate::state::lock;
    let (job, path) = job_and_state(args, false)?;
    if let Some(why) = no_state_yet(&job, args, &path, None) {
        println!("{why}; nothing to unlock");
        return Ok(exit::SUCCESS);
    }
    {
        let st = crate::state::State::open(&path)?;
        let conn = st.connection();
        let err = |e| st.err(e);
        let plan = crate::state::work::plan_id(conn, &job.name, &job.scope).map_err(err)?;
        let taken = lock::try_take(&path, &job.name, &job.scope).map_err(|e| {
            crate::state::StateError::Db {
                path: path.clone(),
                message: format!("cannot take the lock: {e}"),
            }
        })?;
        let recorded = plan
            .map(|p| lock::holder(conn, p))
            .transpose()
            .map_err(err)?
            .flatten();
        let Some(taken) = taken else {
            let held = lock::Held::read(conn, plan);
            let why = if held.leased {
                format!(
                    "its lease has not run out: the run may be alive; it is not cleared (a run whose process is gone is taken over once its lease runs out, {}s without a heartbeat)",
                    crate::state::pg::lease().as_secs()
                )
            } else {
                "it is not cleared (stop that run, or let it finish)".into()
            };
            return Err(Error::Locked(format!(
                "the lock of '{}' scope '{}' is held by {}: {held}; {why}",
                job.name,
                job.scope,
                if held.leased {
                    "a run"
                } else {
                    "a live process"
                },
            )));
        };
        let (Some(plan), Some((holder, heartbeat))) = (plan, recorded) else {
            println!("'{}' scope '{}' is not locked", job.name, job.scope);
            return Ok(exit::SUCCESS);
        };
        if !taken.by_kernel() && !lock::expired(&heartbeat) {
            return Err(Error::Locked(format!(
                "run {} wrote its heartbeat at {heartbeat}, less than {}s ago: it may be alive; it is not cleared",
                holder.run_id,
                lock::LEASE.as_secs()
            )));
        }
        lock::clear_dead(conn, plan, &holder).map_err(err)?;
        println!(
            "cleared the lock of run {} (pid {} on {}, started {}, last alive {heartbeat}): its process is gone; what it left in flight is settled by the next run",
            holder.run_id, holder.pid, holder.host, holder.started_at
        );
        Ok(exit::SUCCESS)
    }
}
