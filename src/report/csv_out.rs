//! results.csv: one line per input row, every step's status and provider ids, the money,
//! attempts and the first error. Safe to open in a spreadsheet: cells that would start a
//! formula are neutralised.

use super::{Report, StepResult};
use crate::job::steps::StepKind;
use crate::redact;
use crate::state::Status;

/// Prefixes a cell a spreadsheet would run as a formula (`= + - @`, tab, CR) with `'`.
pub fn neutralise(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

/// A payin's pay details as one cell: `pay_id: ann@payid.example`, each of the provider's
/// fields as `name: value`, `; ` between them.
pub(super) fn pay_details(details: Option<&str>) -> String {
    let Some(Ok(serde_json::Value::Object(m))) = details.map(serde_json::from_str) else {
        return String::new();
    };
    m.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn results_csv(r: &Report, out: &mut super::Out) {
    let mut header: Vec<String> = vec!["key".into(), "line".into()];
    for (id, kind) in &r.steps {
        header.push(format!("{id}_status"));
        match kind {
            StepKind::Contact => header.push(format!("{id}_email")),
            StepKind::Kyc => header.push(format!("{id}_kyc_status")),
            StepKind::Customer | StepKind::CustomersBulk => {
                header.push(format!("{id}_customer_id"))
            }
            StepKind::Documents => header.push(format!("{id}_document_id")),
            StepKind::CustomerStatus | StepKind::KycConfirmation => {
                header.push(format!("{id}_value"))
            }
            StepKind::Payout => {
                for col in ["batch_uuid", "transaction_uuid", "transaction_status"] {
                    header.push(format!("{id}_{col}"));
                }
            }
            StepKind::Payin => {
                for col in ["payin_uuid", "payin_status", "pay_details"] {
                    header.push(format!("{id}_{col}"));
                }
            }
            StepKind::Refund => {
                for col in ["payin_uuid", "payin_status", "refunded"] {
                    header.push(format!("{id}_{col}"));
                }
            }
        }
    }
    header.extend(
        [
            "amount",
            "currency",
            "attempts",
            "error_code",
            "error_message",
            "updated_at",
        ]
        .map(String::from),
    );
    let mut w = csv::Writer::from_writer(out.writer());
    let mut failed = w.write_record(&header).err();
    let scanned = r.each_row(&mut |row| {
        if failed.is_some() {
            return;
        }
        let mut rec: Vec<String> = vec![row.key.clone(), row.line.to_string()];
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut amount = (String::new(), String::new());
        let mut attempts = 0;
        let mut error: Option<(String, String)> = None;
        let mut updated = String::new();
        for ((id, kind), s) in r.steps.iter().zip(&row.steps) {
            let empty = StepResult {
                status: Status::Pending,
                provider_ref: None,
                provider_status: None,
                batch_ref: None,
                amount: None,
                currency: None,
                attempts: 0,
                error_code: None,
                error_message: None,
                updated_at: String::new(),
                details: None,
            };
            // A row without an item of the step shows an empty status.
            let (s, status) = match s {
                Some(s) => (s, s.status.to_string()),
                None => (&empty, String::new()),
            };
            rec.push(status);
            match kind {
                StepKind::Contact => rec.push(opt(&s.provider_ref)),
                StepKind::Kyc => rec.push(opt(&s.provider_status)),
                StepKind::Customer | StepKind::CustomersBulk | StepKind::Documents => {
                    rec.push(opt(&s.provider_ref))
                }
                StepKind::CustomerStatus | StepKind::KycConfirmation => {
                    rec.push(opt(&s.provider_status))
                }
                StepKind::Payout => {
                    rec.push(opt(&s.batch_ref));
                    rec.push(opt(&s.provider_ref));
                    rec.push(opt(&s.provider_status));
                    if let (Some(a), Some(c)) = (s.amount, &s.currency)
                        && amount.0.is_empty()
                    {
                        amount = (a.to_string(), c.clone());
                    }
                }
                StepKind::Payin => {
                    rec.push(opt(&s.provider_ref));
                    rec.push(opt(&s.provider_status));
                    rec.push(pay_details(s.details.as_deref()));
                    if let (Some(a), Some(c)) = (s.amount, &s.currency)
                        && amount.0.is_empty()
                    {
                        amount = (a.to_string(), c.clone());
                    }
                }
                StepKind::Refund => {
                    rec.push(opt(&s.provider_ref));
                    rec.push(opt(&s.provider_status));
                    rec.push(
                        super::refunded(s)
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                    );
                }
            }
            attempts += s.attempts;
            if error.is_none()
                && let Some(m) = &s.error_message
            {
                error = Some((opt(&s.error_code), format!("{id}: {m}")));
            }
            if s.updated_at > updated {
                updated = s.updated_at.clone();
            }
        }
        let (code, message) = error.unwrap_or_default();
        rec.extend([
            amount.0,
            amount.1,
            attempts.to_string(),
            code,
            redact::scrub(&message),
            updated,
        ]);
        failed = w.write_record(rec.iter().map(|c| neutralise(c))).err();
    });
    if let Err(e) = scanned {
        failed.get_or_insert(std::io::Error::other(e.to_string()).into());
    }
    if failed.is_none() {
        failed = w.flush().err().map(csv::Error::from);
    }
    drop(w);
    if let Some(e) = failed {
        out.fail(std::io::Error::other(e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::neutralise;

    #[test]
    fn formula_cells_are_neutralised() {
        for bad in ["=HYPERLINK(\"x\")", "+61", "-5", "@SUM(A1)", "\tx", "\rx"] {
            assert!(neutralise(bad).starts_with('\''), "{bad}");
        }
        for ok in ["E1001", "1500.00", "a=b", "ann@example.com"] {
            assert_eq!(neutralise(ok), ok);
        }
    }
}
