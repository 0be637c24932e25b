//! `--metrics-file PATH`: Prometheus text format for node_exporter's textfile collector
//! (write to a temporary name, rename into place, so the collector never reads half a file).

use super::Report;
use std::fmt::Write;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn metrics(r: &Report) -> String {
    // Not `job`: Prometheus sets that label itself when it scrapes, and renames this one.
    let job = format!(
        "payrun_job=\"{}\",scope=\"{}\"",
        label(&r.job),
        label(&r.scope)
    );
    let ts = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.timestamp_millis() as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    let mut m = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, lines: Vec<(String, String)>| {
        let _ = writeln!(
            m,
            "# HELP payrun_{name} {help}\n# TYPE payrun_{name} {kind}"
        );
        for (labels, value) in lines {
            let _ = writeln!(m, "payrun_{name}{{{labels}}} {value}");
        }
    };
    metric(
        "last_run_start_timestamp_seconds",
        "When the last run started.",
        "gauge",
        vec![(job.clone(), ts(&r.run.started_at).to_string())],
    );
    metric(
        "last_run_end_timestamp_seconds",
        "When the last run ended.",
        "gauge",
        vec![(
            job.clone(),
            r.run.ended_at.as_deref().map_or(0.0, ts).to_string(),
        )],
    );
    let success = if r.run.exit_code == Some(0) { 1 } else { 0 };
    metric(
        "last_run_success",
        "1 when the last run ended with every row done.",
        "gauge",
        vec![(job.clone(), success.to_string())],
    );
    metric(
        "last_run_exit_code",
        "Exit code of the last run.",
        "gauge",
        vec![(job.clone(), r.run.exit_code.unwrap_or(-1).to_string())],
    );
    let duration = match (
        chrono::DateTime::parse_from_rfc3339(&r.run.started_at),
        r.run
            .ended_at
            .as_deref()
            .map(chrono::DateTime::parse_from_rfc3339),
    ) {
        (Ok(a), Some(Ok(b))) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    metric(
        "last_run_duration_seconds",
        "Duration of the last run.",
        "gauge",
        vec![(job.clone(), duration.to_string())],
    );
    let mut rows = Vec::new();
    for (step, by) in r.counts() {
        for (status, n) in by {
            rows.push((
                format!("{job},step=\"{}\",status=\"{status}\"", label(&step)),
                n.to_string(),
            ));
        }
    }
    metric(
        "rows",
        "Rows by step and status after the last run.",
        "gauge",
        rows,
    );
    let mut amounts = Vec::new();
    for (ccy, t) in &r.totals {
        for (kind, v) in [
            ("planned", t.planned),
            ("sent", t.sent),
            ("completed", t.completed),
            ("failed", t.failed),
        ] {
            amounts.push((
                format!("{job},currency=\"{ccy}\",kind=\"{kind}\""),
                v.to_string(),
            ));
        }
    }
    metric("amount", "Payout amounts per currency.", "gauge", amounts);
    if !r.collected.is_empty() {
        let mut collected = Vec::new();
        for (ccy, c) in &r.collected {
            for (kind, v) in [
                ("requested", c.requested),
                ("collected", c.collected),
                ("pending", c.pending),
                ("expired", c.expired),
                ("refunded", c.refunded),
            ] {
                collected.push((
                    format!("{job},currency=\"{ccy}\",kind=\"{kind}\""),
                    v.to_string(),
                ));
            }
        }
        metric(
            "collected_amount",
            "Payin amounts per currency: asked of payers, paid, pending, expired, refunded.",
            "gauge",
            collected,
        );
    }
    metric(
        "duplicates",
        "External ids the provider holds in more than one batch that can pay (0 is right).",
        "gauge",
        vec![(job.clone(), r.duplicates.len().to_string())],
    );
    m
}
