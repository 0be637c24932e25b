//! The payrun binary: parse the command line, run the command, exit with its code.

use clap::Parser;

/// mimalloc: payrun allocates many small, short-lived values per row (rendered fields,
/// JSON bodies); glibc's malloc spent a fifth of the send loop's time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = payrun::cli::Cli::parse();
    std::process::exit(payrun::commands::run(cli));
}
