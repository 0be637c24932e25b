//! The payrun binary: parse the command line, run the command, exit with its code.

use clap::Parser;

/// mimalloc: payrun allocates many small, short-lived values per row (rendered fields,
/// JSON bodies), where glibc's malloc is slow (ARCHITECTURE.md, dependency notes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Everything payrun writes holds personal data: owner-only, whatever the caller's umask
    // (the places that create files set it too).
    // SAFETY: umask only sets this process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let cli = payrun::cli::Cli::parse();
    use payrun::cli::Command;
    if matches!(
        cli.command,
        Some(Command::Validate(_) | Command::Plan(_) | Command::Status(_)) | None
    ) {
        end_quietly_when_stdout_closes();
    }
    std::process::exit(payrun::commands::run(cli));
}

/// `payrun status JOB | head`: when the reader stops early, the command ends quietly, as
/// `grep` would, instead of panicking at its next line. Only for commands that print and
/// hold no connection: a run must see a connection the provider closed as an error
/// (EPIPE) to handle, never die of the signal.
fn end_quietly_when_stdout_closes() {
    // SAFETY: sets the default action of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
