//! report.html: one self-contained page (no external assets; works offline): headline
//! totals per currency, status counts with an inline SVG chart, the rows that need a look
//! first, then every row in a table that filters as you type.

use super::{Report, StepResult};
use crate::redact;
use crate::state::{ExportState, Status};
use std::borrow::Cow;
use std::fmt::Write;

/// HTML-escaped text; borrowed when there is nothing to escape (most of a report).
fn esc(s: &str) -> Cow<'_, str> {
    super::escape_markup(s, "&#39;", false)
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f4f4f4}.succeeded{color:#176b2c}.failed,.conflict{color:#b00020;font-weight:bold}\
.blocked,.pending,.in_doubt,.awaiting_funds,.cancelled{color:#8a5a00}.skipped{color:#777}input{padding:4px;width:20em}.num{text-align:right;font-variant-numeric:tabular-nums}";

const COLOURS: [(Status, &str); 8] = [
    (Status::Succeeded, "#2e9e4f"),
    (Status::Failed, "#d33"),
    (Status::Conflict, "#a0c"),
    (Status::InDoubt, "#e07000"),
    (Status::AwaitingFunds, "#c08000"),
    (Status::Blocked, "#e0a030"),
    (Status::Pending, "#ccb000"),
    (Status::Skipped, "#bbb"),
];

const SCRIPT: &str = "document.getElementById('filter').addEventListener('input',function(e){var q=e.target.value.toLowerCase();\
var rows=document.querySelectorAll('#rows tbody tr');for(var i=0;i<rows.length;i++){rows[i].style.display=rows[i].textContent.toLowerCase().indexOf(q)>=0?'':'none';}});";

fn chart(r: &Report) -> String {
    let counts = r.counts();
    let total_rows = r.row_count.max(1) as f64;
    let mut svg = String::new();
    let height = 28 * r.steps.len() + 10;
    let _ = write!(
        svg,
        "<svg width=\"640\" height=\"{height}\" role=\"img\" aria-label=\"rows by step and status\">"
    );
    for (i, (step, _)) in r.steps.iter().enumerate() {
        let y = 5 + i * 28;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>",
            y + 15,
            esc(step)
        );
        let mut x = 100.0;
        if let Some(by) = counts.get(step) {
            for (status, colour) in COLOURS {
                let n = by.get(&status).copied().unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let w = 520.0 * n as f64 / total_rows;
                let _ = write!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"20\" fill=\"{colour}\"><title>{status}: {n}</title></rect>"
                );
                x += w;
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

fn cell(s: &Option<StepResult>) -> String {
    match s {
        None => "<td></td>".into(),
        Some(s) => {
            let detail = s
                .provider_status
                .clone()
                .or_else(|| s.provider_ref.clone())
                .unwrap_or_default();
            format!(
                "<td class=\"{}\">{}{}</td>",
                s.status,
                s.status,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" <small>{}</small>", esc(&detail))
                }
            )
        }
    }
}

pub fn report_html(r: &Report, h: &mut super::Out) {
    let title = format!("payrun: {} {} run {}", r.job, r.scope, r.run.id);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p>Started {} — ended {} — exit code {}</p>",
        esc(&title),
        esc(&r.run.started_at),
        esc(r.run.ended_at.as_deref().unwrap_or("(running)")),
        r.run.exit_code.map_or("-".into(), |c| c.to_string())
    );
    if let Some(why) = &r.run.error {
        let _ = write!(h, "<p class=\"failed\">The run stopped: {}</p>", esc(why));
    }
    if !r.duplicates.is_empty() {
        duplicates(r, h);
    }
    if let Some(a) = &r.approval {
        approval(a, h);
    }
    // A job of exports only has no rows: no totals, counts or row tables.
    if !r.steps.is_empty() {
        totals_and_counts(r, h);
    }
    if !r.exports.is_empty() {
        exports(r, h);
    }
    if !r.steps.is_empty() {
        all_rows(r, h);
    }
    h.push_str("</body></html>\n");
}

/// Duplicates at the provider: what to do, and each external id with its batches.
fn duplicates(r: &Report, h: &mut super::Out) {
    let _ = write!(
        h,
        "<h2 class=\"failed\">Paid twice: {} duplicate(s) at the provider</h2><p>Keep the first batch; cancel the others if still scheduled, else recover the money; then run <code>payrun reconcile</code>.</p><table id=\"duplicates\"><thead><tr><th>Step</th><th>External id</th><th>Row</th><th>Batches</th></tr></thead><tbody>",
        r.duplicates.len()
    );
    for (step, d) in &r.duplicates {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(step),
            esc(&d.external_id),
            esc(d.row_key.as_deref().unwrap_or("(the batch)")),
            esc(&d.uuids.join(", "))
        );
    }
    h.push_str("</tbody></table>");
}

/// The plan's digest and who approved it.
fn approval(a: &crate::plan::approval::Standing, h: &mut super::Out) {
    let d = &a.digest;
    let _ = write!(
        h,
        "<h2 id=\"approval\" class=\"{}\">Approval: {} of {} — {}</h2><p>Plan digest <code>{}</code>, planned by {} at {}.</p>",
        if a.approved() { "succeeded" } else { "failed" },
        a.counted.len(),
        a.required,
        if a.approved() {
            "approved"
        } else {
            "awaiting approval: no payout or refund was sent"
        },
        esc(&d.digest),
        esc(&d.planned_by),
        esc(&d.planned_at)
    );
    if a.approvals.is_empty() {
        return;
    }
    h.push_str("<table id=\"approvals\"><thead><tr><th>Approver</th><th>Approved at</th><th>Counted</th><th>Note</th></tr></thead><tbody>");
    for x in &a.approvals {
        let counted = match a.not_counted.iter().find(|n| n.approver == x.approver) {
            Some(n) => format!("no: {}", n.why),
            None => "yes".into(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&x.approver),
            esc(&x.approved_at),
            esc(&counted),
            esc(x.note.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table>");
}

/// Totals per currency, rows by step and status (with the chart), and the rows that need
/// a look with their reasons.
fn totals_and_counts(r: &Report, h: &mut super::Out) {
    h.push_str("<h2>Totals</h2><table id=\"totals\"><thead><tr><th>Currency</th><th>Planned</th><th>Sent</th><th>Completed</th><th>Failed</th></tr></thead><tbody>");
    for (ccy, t) in &r.totals {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(ccy),
            t.planned,
            t.sent,
            t.completed,
            t.failed
        );
    }
    h.push_str("</tbody></table>");
    if !r.collected.is_empty() {
        h.push_str("<h2>Collected</h2><table id=\"collected\"><thead><tr><th>Currency</th><th>Requested</th><th>Collected</th><th>Pending</th><th>Expired</th><th>Refunded</th></tr></thead><tbody>");
        for (ccy, c) in &r.collected {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(ccy),
                c.requested,
                c.collected,
                c.pending,
                c.expired,
                c.refunded
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("<h2>Rows by step and status</h2><table id=\"counts\"><thead><tr><th>Step</th>");
    for (status, _) in COLOURS {
        let _ = write!(h, "<th>{status}</th>");
    }
    h.push_str("</tr></thead><tbody>");
    let counts = r.counts();
    for (step, _) in &r.steps {
        let _ = write!(h, "<tr><td>{}</td>", esc(step));
        for (status, _) in COLOURS {
            let n = counts
                .get(step)
                .and_then(|b| b.get(&status))
                .copied()
                .unwrap_or(0);
            let _ = write!(h, "<td class=\"num\">{n}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
    h.push_str(&chart(r));
    let _ = write!(h, "<h2>Needs a look ({})</h2>", r.attention);
    if r.attention > 0 {
        h.push_str("<table id=\"attention\"><thead><tr><th>Row</th><th>Line</th><th>Step</th><th>Status</th><th>Reason</th></tr></thead><tbody>");
        let scanned = r.each_row(&mut |row| {
            if !super::needs_attention(row) {
                return;
            }
            for ((step, _), s) in r.steps.iter().zip(&row.steps) {
                let Some(s) = s else { continue };
                if !s.status.needs_a_look() {
                    continue;
                }
                let reason = redact::scrub(s.error_message.as_deref().unwrap_or(""));
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                    esc(&row.key),
                    row.line,
                    esc(step),
                    s.status,
                    s.status,
                    esc(&reason)
                );
            }
        });
        if let Err(e) = scanned {
            h.fail(std::io::Error::other(e.to_string()));
        }
        h.push_str("</tbody></table>");
    }
}

/// Each export step's export.
fn exports(r: &Report, h: &mut super::Out) {
    h.push_str("<h2>Exports</h2><table id=\"exports\"><thead><tr><th>Step</th><th>Resource</th><th>From</th><th>To</th><th>Status</th><th>Rows</th><th>Pages</th><th>File</th></tr></thead><tbody>");
    for e in &r.exports {
        let status = match e.state {
            ExportState::Completed => Status::Succeeded,
            ExportState::Running | ExportState::Interrupted => Status::Pending,
            ExportState::Failed => Status::Failed,
        };
        let file = match &e.error {
            Some(err) => redact::scrub(err),
            None => e.path.clone(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{status}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&e.step),
            esc(&e.resource),
            esc(&e.from_at),
            esc(&e.to_at),
            e.state,
            e.rows,
            e.pages,
            esc(&file)
        );
    }
    h.push_str("</tbody></table>");
}

/// Every row, in a table the filter box searches.
fn all_rows(r: &Report, h: &mut super::Out) {
    h.push_str("<h2>All rows</h2><p><label>Filter: <input id=\"filter\" type=\"search\" placeholder=\"key, status, email…\"></label></p><table id=\"rows\"><thead><tr><th>Row</th><th>Line</th>");
    for (step, _) in &r.steps {
        let _ = write!(h, "<th>{}</th>", esc(step));
    }
    h.push_str("<th>Amount</th></tr></thead><tbody>");
    let scanned = r.each_row(&mut |row| {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td>",
            esc(&row.key),
            row.line
        );
        for s in &row.steps {
            h.push_str(&cell(s));
        }
        let amount = row
            .steps
            .iter()
            .flatten()
            .find_map(|s| {
                s.amount
                    .map(|a| format!("{a} {}", s.currency.clone().unwrap_or_default()))
            })
            .unwrap_or_default();
        let _ = write!(h, "<td class=\"num\">{}</td></tr>", esc(&amount));
    });
    if let Err(e) = scanned {
        h.fail(std::io::Error::other(e.to_string()));
    }
    let _ = write!(h, "</tbody></table><script>{SCRIPT}</script>");
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn text_from_rows_cannot_break_out_of_the_page() {
        assert_eq!(
            esc(r#"<script>alert('x & "y"')</script>"#),
            "&lt;script&gt;alert(&#39;x &amp; &quot;y&quot;&#39;)&lt;/script&gt;"
        );
        assert!(matches!(
            esc("E001 ünï"),
            std::borrow::Cow::Borrowed("E001 ünï")
        ));
    }
}
