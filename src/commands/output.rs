//! What commands print: messages for the user on stderr (as they are, or as JSON log
//! lines), row problems counted rather than repeated, and the small helpers of their text.

use crate::input::InputError;
use crate::plan::CheckSummary;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether stderr takes one JSON object a line (`--log-format json`).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes one message for the user on stderr: the line as it is, or with `--log-format
/// json` one JSON object like every log line (level from an `error: `/`warning: ` prefix;
/// the lines after the first, such as a diagnostic's source and carets, as `detail`).
pub(crate) fn say(text: &str) {
    if !JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
        return;
    }
    match (text.strip_prefix("error: "), text.strip_prefix("warning: ")) {
        (Some(t), _) => say_as(tracing::Level::ERROR, t),
        (_, Some(t)) => say_as(tracing::Level::WARN, t),
        _ => say_as(tracing::Level::INFO, text),
    }
}

/// A problem with the input (file, line, column, what): as it is, or one JSON object.
fn say_problem(text: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        say_as(tracing::Level::ERROR, text);
    } else {
        say(text);
    }
}

/// One JSON log object on stderr, at `level`.
fn say_as(level: tracing::Level, text: &str) {
    let (first, detail) = text.split_once('\n').unwrap_or((text, ""));
    match (level, detail.is_empty()) {
        (tracing::Level::ERROR, true) => tracing::error!("{first}"),
        (tracing::Level::ERROR, false) => tracing::error!(detail, "{first}"),
        (tracing::Level::WARN, true) => tracing::warn!("{first}"),
        (tracing::Level::WARN, false) => tracing::warn!(detail, "{first}"),
        (_, true) => tracing::info!("{first}"),
        (_, false) => tracing::info!(detail, "{first}"),
    }
}

/// Sets up log lines on stderr. On a terminal, `run` shows progress bars instead of info
/// lines; colour only on a terminal and never with NO_COLOR set.
pub(super) fn init_logging(format: crate::cli::LogFormat, quiet: bool) -> bool {
    JSON_LOGS.store(
        format == crate::cli::LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    if format == crate::cli::LogFormat::Json {
        // Even a bug's last words are one JSON object.
        std::panic::set_hook(Box::new(|info| {
            say_as(
                tracing::Level::ERROR,
                &format!("payrun failed (a bug): {info}"),
            );
        }));
    }
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bars = terminal && !quiet && format == crate::cli::LogFormat::Text;
    let level = if quiet || bars {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    let _ = match format {
        crate::cli::LogFormat::Text => builder.with_ansi(colour).try_init(),
        crate::cli::LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    bars
}

/// Row problems, printed as they are found, one per line on stderr. The same problem on
/// many rows — the same column and message but for the value — is printed for its first
/// [`SHOWN`] rows, then counted, and the count said at the end ([`Problems::finish`]): one
/// template mistake must not print a line per row of a million-row file.
#[derive(Default)]
pub(super) struct Problems {
    seen: std::collections::HashMap<(Option<String>, String), u64>,
}

/// Rows shown of one problem.
const SHOWN: u64 = 3;

impl Problems {
    pub(super) fn print(&mut self, e: InputError) {
        // The value a message quotes varies by row: `… (got '1,000.00')`.
        let kind = match e.message.rfind(" (got ") {
            Some(at) if e.message.ends_with(')') => e.message[..at].to_string(),
            _ => e.message.clone(),
        };
        let n = self.seen.entry((e.column.clone(), kind)).or_default();
        *n += 1;
        if *n <= SHOWN {
            say_problem(&crate::redact::printable(&e.to_string()));
        }
    }

    /// Says how many more rows each problem shown [`SHOWN`] times had.
    pub(super) fn finish(&self) {
        let mut more: Vec<_> = self.seen.iter().filter(|(_, n)| **n > SHOWN).collect();
        more.sort();
        for ((column, kind), n) in more {
            let n = n - SHOWN;
            say_problem(&format!(
                "… and {n} more {} with: {}{kind}",
                plural(n, "row", "rows"),
                column
                    .as_deref()
                    .map(|c| format!("column '{c}': "))
                    .unwrap_or_default()
            ));
        }
    }
}

pub(super) fn print_totals(summary: &CheckSummary) {
    for (ccy, (total, n)) in &summary.totals {
        println!("  {ccy} {total} in {n} {}", plural(*n, "payout", "payouts"));
    }
}

/// What a file's payins ask of payers, per currency.
pub(super) fn print_payin_totals(summary: &CheckSummary) {
    for (ccy, (total, n)) in &summary.payin_totals {
        println!(
            "  {ccy} {total} asked in {n} {}",
            plural(*n, "payin", "payins")
        );
    }
}

/// `one` or `many` as `n` asks.
pub(crate) fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// Says, on standard output too, each external id the provider holds twice.
pub(super) fn print_duplicates(duplicates: &[(String, crate::state::work::Duplicate)]) {
    for (step, d) in duplicates {
        println!(
            "  DUPLICATE {step} {}{}: batches {} at the provider can pay it; keep the first, cancel the others if still scheduled (POST /v2/payouts/cancel_scheduled), else recover the money; then `payrun reconcile`",
            d.external_id,
            d.row_key
                .as_deref()
                .map(|k| format!(" (row '{k}')"))
                .unwrap_or_default(),
            d.uuids.join(", ")
        );
    }
}

/// A directory payrun wrote, as a user would type it: relative to the current directory
/// when it is under it (`reports/payroll/…`, not `jobs/../reports/payroll/…`), else in full.
/// Resolved through the file system, so a symbolic link in the way is followed as it was.
pub(super) fn shown(dir: &Path) -> PathBuf {
    let Ok(full) = std::fs::canonicalize(dir) else {
        return dir.to_path_buf();
    };
    std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .ok()
        .and_then(|cwd| full.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(full)
}
