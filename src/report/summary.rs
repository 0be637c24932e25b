//! summary.json: the run in numbers, with a versioned schema (see docs/reports.md).

use super::{Report, SUMMARY_SCHEMA};
use serde_json::{Map, Value, json};

pub fn summary_json(r: &Report) -> String {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let duration = match (
        parse(&r.run.started_at),
        r.run.ended_at.as_deref().and_then(parse),
    ) {
        (Some(a), Some(b)) => ((b - a).num_milliseconds() as f64 / 1000.0).max(0.0),
        _ => 0.0,
    };
    let counts: Map<String, Value> = r
        .counts()
        .into_iter()
        .map(|(step, by)| (step, json!(by)))
        .collect();
    let totals: Map<String, Value> = r
        .totals
        .iter()
        .map(|(ccy, t)| {
            (ccy.clone(), json!({"planned": t.planned.to_string(), "sent": t.sent.to_string(), "completed": t.completed.to_string(), "failed": t.failed.to_string()}))
        })
        .collect();
    let rate = if duration > 0.0 {
        (r.run.requests as f64 / duration * 100.0).round() / 100.0
    } else {
        0.0
    };
    let v = json!({
        "schema": SUMMARY_SCHEMA,
        "run_id": r.run.id,
        "job": r.job,
        "scope": r.scope,
        "started_at": r.run.started_at,
        "ended_at": r.run.ended_at,
        "duration_seconds": duration,
        "exit_code": r.run.exit_code,
        // Why the run stopped, when it failed fatally (exit 5).
        "error": r.run.error,
        "rows": r.row_count,
        "counts": counts,
        "totals": totals,
        "requests": r.run.requests,
        "retries": r.run.retries,
        "rate_limited": r.run.rate_limited,
        "in_doubt_resolved": r.run.in_doubt_resolved,
        "settle_seconds": r.run.settle_ms as f64 / 1000.0,
        "achieved_request_rate": rate,
        // An external id the provider holds in more than one batch that can pay.
        "duplicates": r.duplicates.iter().map(|(step, d)| json!({
            "step": step, "external_id": d.external_id, "row": d.row_key, "uuids": d.uuids,
            "what_to_do": "keep the first batch; cancel the others if still scheduled (POST /v2/payouts/cancel_scheduled), else recover the money; then run `payrun reconcile`",
        })).collect::<Vec<_>>(),
    });
    let mut v = v;
    if !r.collected.is_empty() {
        let collected: Map<String, Value> = r
            .collected
            .iter()
            .map(|(ccy, c)| {
                (
                    ccy.clone(),
                    json!({
                        "requested": c.requested.to_string(), "collected": c.collected.to_string(),
                        "pending": c.pending.to_string(), "expired": c.expired.to_string(),
                        "refunded": c.refunded.to_string(),
                    }),
                )
            })
            .collect();
        v["collected"] = Value::Object(collected);
    }
    if let Some(a) = &r.approval {
        let d = &a.digest;
        v["approval"] = json!({
            "digest": d.digest,
            "planned_by": d.planned_by,
            "planned_at": d.planned_at,
            "required": a.required,
            "approved": a.approved(),
            "approvals": a.approvals.iter().map(|x| json!({
                "approver": x.approver,
                "approved_at": x.approved_at,
                "note": x.note,
                "counted": a.counted.contains(&x.approver),
            })).collect::<Vec<_>>(),
        });
    }
    if !r.exports.is_empty() {
        let mut exported: Map<String, Value> = Map::new();
        let mut steps: Map<String, Value> = Map::new();
        for e in &r.exports {
            let n = exported
                .get(&e.resource)
                .and_then(Value::as_u64)
                .unwrap_or(0);
            exported.insert(e.resource.clone(), json!(n + e.rows));
            steps.insert(
                e.step.clone(),
                json!({
                    "resource": e.resource, "state": e.state, "rows": e.rows, "pages": e.pages,
                    "duplicates_skipped": e.duplicates, "from": e.from_at, "to": e.to_at,
                    "path": e.path, "error": e.error,
                }),
            );
        }
        v["exported"] = Value::Object(exported);
        v["exports"] = Value::Object(steps);
    }
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}
