//! `payrun run --dry-run`: plan into a throwaway copy of the state and list exactly what a
//! run would send, sensitive values masked. Nothing is sent and the real state is untouched.
//! The copy lives in memory only: nothing of it is left on disk, even if payrun is killed.

use super::RunError;
use crate::input::InputError;
use crate::job::Job;
use crate::job::steps::StepKind;
use crate::state::work;
use crate::state::{BatchState, ItemState, State};
use std::path::Path;

/// The requests a run would make now, one line per request (batches list their rows).
pub fn dry_run(
    job: &Job,
    state_path: &Path,
    on_error: &mut dyn FnMut(InputError),
) -> Result<Vec<String>, RunError> {
    let scratch = State::scratch_of(state_path)?;
    (|| {
        let summary = crate::plan::validate(job, on_error).map_err(crate::plan::PlanError::from)?;
        if summary.errors > 0 {
            return Err(crate::plan::PlanError::Invalid(summary).into());
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        crate::plan::plan_into(job, &scratch.state, on_error, &stop)?;
        let st = &scratch.state;
        let conn = st.connection();
        let err = |e| RunError::from(st.err(e));
        let plan_id = work::plan_id(conn, &job.name, &job.scope)
            .map_err(err)?
            .unwrap_or(0);
        let mut lines = Vec::new();
        for step in &job.steps {
            let items = work::items_in(
                conn,
                plan_id,
                &step.id,
                &[ItemState::Pending, ItemState::InFlight, ItemState::Blocked],
            )
            .map_err(err)?;
            match step.kind {
                StepKind::Payout => {}
                kind => {
                    let path = match kind {
                        StepKind::Contact => "POST /v2/contacts",
                        StepKind::Kyc => "POST /v2/contacts/submit_kyc",
                        StepKind::Customer => "POST /create",
                        StepKind::CustomersBulk => "POST /createBulk (in chunks)",
                        StepKind::Documents => "POST /createDocuments/{customerId}",
                        StepKind::CustomerStatus => "POST /update/{customerId}/status/{status}",
                        _ => "POST kycConfirmation",
                    };
                    for i in items {
                        let doubt = if i.state == ItemState::InFlight {
                            " (in doubt: the provider is asked first)"
                        } else {
                            ""
                        };
                        lines.push(format!(
                            "{} row '{}' (line {}): {path} {}{doubt}",
                            step.id,
                            i.row_key,
                            i.row_line,
                            work::item_payload(conn, i.id).map_err(err)?
                        ));
                    }
                }
            }
            if step.kind == StepKind::Payout {
                {
                    work::rebatch(
                        conn,
                        plan_id,
                        &step.id,
                        step.batch_size,
                        (&job.name, &job.scope),
                        &Default::default(),
                    )
                    .map_err(err)?;
                    for b in work::batches_in(
                        conn,
                        plan_id,
                        &step.id,
                        &[BatchState::Open, BatchState::InFlight],
                    )
                    .map_err(err)?
                    {
                        let members = work::batch_items(conn, b.id).map_err(err)?;
                        let total: rust_decimal::Decimal = members
                            .iter()
                            .filter_map(|m| work::item_amount(conn, m.id).ok().flatten())
                            .sum();
                        let doubt = if b.state == BatchState::InFlight {
                            " (in doubt: the provider's payouts are searched first)"
                        } else {
                            ""
                        };
                        lines.push(format!(
                            "{} batch {}: POST /v2/payouts, {} row(s), total {total}{doubt}",
                            step.id,
                            b.external_id,
                            members.len()
                        ));
                        for m in members {
                            lines.push(format!(
                                "    row '{}' (line {}), external_id {}: {}",
                                m.row_key,
                                m.row_line,
                                m.external_id.unwrap_or_default(),
                                work::item_payload(conn, m.id).map_err(err)?
                            ));
                        }
                    }
                }
            }
        }
        // Exports: the window each would pull now, and where it would write.
        let now = chrono::Utc::now();
        for e in &job.exports {
            let mark = crate::state::exports::watermark(conn, plan_id, &e.id)
                .map_err(err)?
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&chrono::Utc));
            let window = e
                .from
                .resolve(now, mark)
                .and_then(|f| Ok((f, e.to.resolve(now, mark)?)));
            lines.push(match window {
                Ok((f, t)) => format!(
                    "{} export: {} created {} .. {} → {}",
                    e.id,
                    e.resource.as_str(),
                    f.format("%Y-%m-%dT%H:%M:%SZ"),
                    t.format("%Y-%m-%dT%H:%M:%SZ"),
                    e.path.display()
                ),
                Err(why) => format!("{} export: cannot run: {why}", e.id),
            });
        }
        Ok(lines)
    })()
}
