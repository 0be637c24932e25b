//! junit.xml: one test case per row and step, so CI dashboards show a run. Failures and
//! conflicts fail; blocked, pending and skipped rows are skipped with their reason.

use super::Report;
use crate::redact;
use crate::state::{ExportState, Status};
use std::borrow::Cow;
use std::fmt::Write;

/// XML-escaped text; borrowed when there is nothing to escape (most of a report).
fn esc(s: &str) -> Cow<'_, str> {
    // Control characters are not allowed in XML 1.0.
    super::escape_markup(s, "&apos;", true)
}

/// (tests, failures, skipped) of a suite, by status: counted before anything is written,
/// because the XML gives the totals first.
fn tally(states: impl Iterator<Item = ExportState>) -> (usize, usize, usize) {
    states.fold((0, 0, 0), |(t, f, s), state| match state {
        ExportState::Completed => (t + 1, f, s),
        ExportState::Failed => (t + 1, f + 1, s),
        _ => (t + 1, f, s + 1),
    })
}

pub fn junit_xml(r: &Report, out: &mut super::Out) {
    // Per step, from the counts by status.
    let counts = r.counts();
    let steps: Vec<(usize, usize, usize)> = r
        .steps
        .iter()
        .map(|(step, _)| {
            counts.get(step).map_or((0, 0, 0), |by| {
                by.iter().fold((0, 0, 0), |(t, f, s), (status, n)| {
                    let n = *n as usize;
                    match status {
                        Status::Succeeded => (t + n, f, s),
                        s2 if s2.is_failure() => (t + n, f + n, s),
                        _ => (t + n, f, s + n),
                    }
                })
            })
        })
        .collect();
    let exports = tally(r.exports.iter().map(|e| e.state));
    let (mut all_tests, mut all_failures, mut all_skipped) = steps
        .iter()
        .fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
    all_tests += r.duplicates.len() + usize::from(r.run.error.is_some());
    all_failures += r.duplicates.len() + usize::from(r.run.error.is_some());
    if !r.exports.is_empty() {
        all_tests += exports.0;
        all_failures += exports.1;
        all_skipped += exports.2;
    }
    let _ = writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{}\" tests=\"{all_tests}\" failures=\"{all_failures}\" errors=\"0\" skipped=\"{all_skipped}\">",
        esc(&format!("{} {} run {}", r.job, r.scope, r.run.id))
    );
    for (si, (step, _)) in r.steps.iter().enumerate() {
        step_suite(r, si, step, steps[si], out);
    }
    // A run that stopped: one failing case with why.
    if let Some(why) = &r.run.error {
        let _ = writeln!(
            out,
            "  <testsuite name=\"run\" tests=\"1\" failures=\"1\" errors=\"0\" skipped=\"0\">\n    <testcase classname=\"{}\" name=\"run {}\">\n      <failure type=\"FATAL\" message=\"{}\">{}</failure>\n    </testcase>\n  </testsuite>",
            esc(&format!("{}.run", r.job)),
            r.run.id,
            esc(why),
            esc(why)
        );
    }
    // Duplicates at the provider: one failing case each.
    if !r.duplicates.is_empty() {
        duplicates_suite(r, out);
    }
    // Exports: one suite, a test case per export step.
    if !r.exports.is_empty() {
        exports_suite(r, exports, out);
    }
    out.push_str("</testsuites>\n");
}

/// A step's suite: a test case per row that has an item of the step.
fn step_suite(
    r: &Report,
    si: usize,
    step: &str,
    (tests, failures, skipped): (usize, usize, usize),
    out: &mut super::Out,
) {
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        esc(step)
    );
    let classname = esc(&format!("{}.{step}", r.job)).into_owned();
    let scanned = r.each_row(&mut |row| {
        let Some(s) = &row.steps[si] else { return };
        let name = esc(&format!("{} (line {})", row.key, row.line)).into_owned();
        let message = redact::scrub(s.error_message.as_deref().unwrap_or(""));
        let _ = write!(
            out,
            "    <testcase classname=\"{classname}\" name=\"{name}\""
        );
        match s.status {
            Status::Succeeded => out.push_str("/>\n"),
            Status::Failed | Status::Conflict => {
                let kind = if s.status == Status::Conflict {
                    "CONFLICT".to_string()
                } else {
                    s.error_code.clone().unwrap_or_else(|| "FAILED".into())
                };
                let text = message;
                let _ = writeln!(
                    out,
                    ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                    esc(&kind),
                    esc(&text),
                    esc(&text)
                );
            }
            other => {
                let text = if message.is_empty() {
                    other.to_string()
                } else {
                    format!("{other}: {message}")
                };
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    esc(&text)
                );
            }
        }
    });
    if let Err(e) = scanned {
        out.fail(std::io::Error::other(e.to_string()));
    }
    out.push_str("  </testsuite>\n");
}

/// Duplicates at the provider: one failing case each.
fn duplicates_suite(r: &Report, out: &mut super::Out) {
    let n = r.duplicates.len();
    let _ = writeln!(
        out,
        "  <testsuite name=\"duplicates\" tests=\"{n}\" failures=\"{n}\" errors=\"0\" skipped=\"0\">"
    );
    for (step, d) in &r.duplicates {
        let text = format!(
            "the provider holds external id {} in {} batches that can pay: {}",
            d.external_id,
            d.uuids.len(),
            d.uuids.join(", ")
        );
        let _ = writeln!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\">\n      <failure type=\"DUPLICATE\" message=\"{}\">{}</failure>\n    </testcase>",
            esc(&format!("{}.{step}", r.job)),
            esc(d.row_key.as_deref().unwrap_or(&d.external_id)),
            esc(&text),
            esc(&text)
        );
    }
    out.push_str("  </testsuite>\n");
}

/// Exports: one suite, a test case per export step.
fn exports_suite(r: &Report, exports: (usize, usize, usize), out: &mut super::Out) {
    let (tests, failures, skipped) = exports;
    let _ = writeln!(
        out,
        "  <testsuite name=\"exports\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">"
    );
    for e in &r.exports {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\"",
            esc(&format!("{}.exports", r.job)),
            esc(&format!("{} ({})", e.step, e.resource))
        );
        match e.state {
            ExportState::Completed => out.push_str("/>\n"),
            ExportState::Failed => {
                let text = redact::scrub(e.error.as_deref().unwrap_or("failed"));
                let _ = writeln!(
                    out,
                    ">\n      <failure type=\"EXPORT_FAILED\" message=\"{}\">{}</failure>\n    </testcase>",
                    esc(&text),
                    esc(&text)
                );
            }
            other => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    esc(other.as_str())
                );
            }
        }
    }
    out.push_str("  </testsuite>\n");
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn text_from_rows_is_well_formed_xml() {
        assert_eq!(
            esc("a<b>&'c'\"d\"\u{1}\te\n"),
            "a&lt;b&gt;&amp;&apos;c&apos;&quot;d&quot; \te\n"
        );
        // Not characters XML 1.0 allows, whatever a provider's message holds.
        assert_eq!(esc("x\u{FFFE}y\u{FFFF}"), "x y ");
        assert!(matches!(
            esc("E001 ünï"),
            std::borrow::Cow::Borrowed("E001 ünï")
        ));
    }
}
