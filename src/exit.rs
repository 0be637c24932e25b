//! Process exit codes. They are part of payrun's interface (cron and CI act on them), so
//! they live here, once, and never change meaning.

/// Everything succeeded (or, for `validate`/`plan`, the input is clean).
pub const SUCCESS: i32 = 0;
/// The run finished, but some rows failed.
pub const ROWS_FAILED: i32 = 1;
/// The job file or the input is invalid; nothing was sent.
pub const INVALID_INPUT: i32 = 2;
/// Another run of the same job and scope holds the lock.
pub const LOCKED: i32 = 3;
/// Interrupted by a signal; state is consistent and the next run resumes.
pub const INTERRUPTED: i32 = 4;
/// A fatal runtime error (state database, I/O, an internal bug).
pub const FATAL: i32 = 5;
/// The job's payouts need approving: the current plan's digest lacks the approvals its
/// `approval:` section requires, so no payout or refund was sent (`payrun approve`).
pub const AWAITING_APPROVAL: i32 = 6;
/// The provider holds one of this job's external ids in more than one batch that can still
/// pay: a payment was (or will be) made twice. Takes precedence over every other code.
pub const DUPLICATE: i32 = 7;

/// How a run (or reconcile) ended, before what its rows and the provider add: the one
/// input of its exit code besides them ([`of_run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Everything it set out to do was done (its rows may still need a look).
    Done,
    /// The rows' work was done; an export failed.
    ExportFailed,
    /// The input was invalid: nothing was sent.
    InvalidInput,
    /// Stopped by a signal.
    Interrupted,
    /// Stopped by a failure (credentials refused, the provider out of reach, the disk).
    Fatal,
    /// The payouts await approval: none was sent (what may go ahead did).
    AwaitingApproval,
}

impl Ended {
    fn code(self) -> i32 {
        match self {
            Ended::Done => SUCCESS,
            Ended::ExportFailed => ROWS_FAILED,
            Ended::InvalidInput => INVALID_INPUT,
            Ended::Interrupted => INTERRUPTED,
            Ended::Fatal => FATAL,
            Ended::AwaitingApproval => AWAITING_APPROVAL,
        }
    }
}

/// A run's exit code: how it `ended`, raised to 1 when rows need a look, and to 7 when the
/// provider holds a payout twice (which overrides every other code).
pub fn of_run(ended: Ended, rows_need_a_look: bool, duplicates: bool) -> i32 {
    if duplicates {
        return DUPLICATE;
    }
    let rows = if rows_need_a_look {
        ROWS_FAILED
    } else {
        SUCCESS
    };
    ended.code().max(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_s_code_is_the_worst_of_how_it_ended_and_what_it_left() {
        assert_eq!(of_run(Ended::Done, false, false), SUCCESS);
        assert_eq!(of_run(Ended::Done, true, false), ROWS_FAILED);
        assert_eq!(of_run(Ended::ExportFailed, false, false), ROWS_FAILED);
        assert_eq!(of_run(Ended::Interrupted, true, false), INTERRUPTED);
        assert_eq!(of_run(Ended::Fatal, true, false), FATAL);
        assert_eq!(of_run(Ended::Fatal, true, true), DUPLICATE);
        assert_eq!(
            of_run(Ended::AwaitingApproval, true, false),
            AWAITING_APPROVAL
        );
    }
}
