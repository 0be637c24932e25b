//! junit.xml: one test case per row and step, so CI dashboards show a run. Failures and
//! conflicts fail; blocked, pending and skipped rows are skipped with their reason.

use super::Report;
use crate::redact;
use std::fmt::Write;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

pub fn junit_xml(r: &Report) -> String {
    let mut suites = String::new();
    let (mut all_tests, mut all_failures, mut all_skipped) = (0, 0, 0);
    for (si, (step, _)) in r.steps.iter().enumerate() {
        let (mut tests, mut failures, mut skipped) = (0, 0, 0);
        let mut cases = String::new();
        for row in &r.rows {
            let Some(s) = &row.steps[si] else { continue };
            tests += 1;
            let name = esc(&format!("{} (line {})", row.key, row.line));
            let classname = esc(&format!("{}.{step}", r.job));
            let message = redact::scrub(s.error_message.as_deref().unwrap_or(""));
            let _ = write!(
                cases,
                "    <testcase classname=\"{classname}\" name=\"{name}\""
            );
            match s.status.as_str() {
                "succeeded" => cases.push_str("/>\n"),
                "failed" | "conflict" => {
                    failures += 1;
                    let kind = if s.status == "conflict" {
                        "CONFLICT".to_string()
                    } else {
                        s.error_code.clone().unwrap_or_else(|| "FAILED".into())
                    };
                    let text = if s.status == "conflict" {
                        "the row changed after it was sent; it is not sent again".to_string()
                    } else {
                        message
                    };
                    let _ = write!(
                        cases,
                        ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                        esc(&kind),
                        esc(&text),
                        esc(&text)
                    );
                }
                other => {
                    skipped += 1;
                    let text = if message.is_empty() {
                        other.to_string()
                    } else {
                        format!("{other}: {message}")
                    };
                    let _ = write!(
                        cases,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        esc(&text)
                    );
                }
            }
        }
        let _ = write!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">\n{cases}  </testsuite>\n",
            esc(step)
        );
        all_tests += tests;
        all_failures += failures;
        all_skipped += skipped;
    }
    // Exports: one suite, a test case per export step.
    if !r.exports.is_empty() {
        let (mut failures, mut skipped) = (0, 0);
        let mut cases = String::new();
        for e in &r.exports {
            let _ = write!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\"",
                esc(&format!("{}.exports", r.job)),
                esc(&format!("{} ({})", e.step, e.resource))
            );
            match e.state.as_str() {
                "completed" => cases.push_str("/>\n"),
                "failed" => {
                    failures += 1;
                    let text = redact::scrub(e.error.as_deref().unwrap_or("failed"));
                    let _ = write!(
                        cases,
                        ">\n      <failure type=\"EXPORT_FAILED\" message=\"{}\">{}</failure>\n    </testcase>\n",
                        esc(&text),
                        esc(&text)
                    );
                }
                other => {
                    skipped += 1;
                    let _ = write!(
                        cases,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        esc(other)
                    );
                }
            }
        }
        let tests = r.exports.len();
        let _ = write!(
            suites,
            "  <testsuite name=\"exports\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">\n{cases}  </testsuite>\n"
        );
        all_tests += tests;
        all_failures += failures;
        all_skipped += skipped;
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{}\" tests=\"{all_tests}\" failures=\"{all_failures}\" errors=\"0\" skipped=\"{all_skipped}\">\n{suites}</testsuites>\n",
        esc(&format!("{} {} run {}", r.job, r.scope, r.run.id))
    )
}
