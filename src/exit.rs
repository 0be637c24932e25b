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
/// The provider holds one of this job's external ids in more than one batch that can still
/// pay: a payment was (or will be) made twice. Takes precedence over every other code.
pub const DUPLICATE: i32 = 7;
