//! The payrun binary: parse the command line, run the command, exit with its code.

use clap::Parser;

fn main() {
    let cli = payrun::cli::Cli::parse();
    std::process::exit(payrun::commands::run(cli));
}
