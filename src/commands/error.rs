//! Why a command could not do what it was asked, with the exit code that says so: every
//! command returns it, and [`super::run`] prints it once (see [`Error::print`]).

use super::output::{plural, say};
use crate::exit;
use crate::input::InputError;
use crate::job::diag::Diagnostic;
use crate::state::StateError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job file has problems, each with its place.
    #[error("{} {} in {}; nothing was done", .diags.len(), plural(.diags.len() as u64, "problem", "problems"), .file.display())]
    Job {
        file: PathBuf,
        diags: Vec<Diagnostic>,
    },
    /// The input cannot be read (its file, line and column).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The rows have problems, printed as they were found; this says how many.
    #[error("{0}")]
    Rows(String),
    /// The command cannot be done as asked (nothing was done).
    #[error("{0}")]
    Invalid(String),
    /// Another run of the job and scope holds the lock.
    #[error("{0}")]
    Locked(String),
    /// Stopped by a signal; what is recorded is consistent.
    #[error("{0}")]
    Interrupted(String),
    /// The state database failed, or is not payrun's.
    #[error(transparent)]
    State(#[from] StateError),
    /// Anything else that stops a command: the runtime, the disk, the provider.
    #[error("{0}")]
    Fatal(String),
}

impl Error {
    /// The documented exit code (see `exit`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Job { .. } | Error::Input(_) | Error::Rows(_) | Error::Invalid(_) => {
                exit::INVALID_INPUT
            }
            // `--state` naming a file that is not payrun's is a mistake in the command.
            Error::State(StateError::Foreign { .. }) => exit::INVALID_INPUT,
            Error::Locked(_) => exit::LOCKED,
            Error::Interrupted(_) => exit::INTERRUPTED,
            Error::State(_) | Error::Fatal(_) => exit::FATAL,
        }
    }

    /// Says the error on stderr, once: each of a job file's problems on its own line, then
    /// how many; a count of row problems and an interruption as they are; anything else
    /// as `error: …`.
    pub fn print(&self) {
        match self {
            Error::Job { diags, .. } => {
                for d in diags {
                    say(&format!("error: {d}"));
                }
                say(&self.to_string());
            }
            Error::Rows(m) | Error::Interrupted(m) => say(m),
            e => say(&format!("error: {e}")),
        }
    }
}

impl From<crate::report::ReportError> for Error {
    fn from(e: crate::report::ReportError) -> Self {
        match e {
            crate::report::ReportError::NotFound(m) => Error::Invalid(m),
            crate::report::ReportError::State(e) => Error::State(e),
            e => Error::Fatal(e.to_string()),
        }
    }
}
