//! `payrun run --dry-run`: plan into a throwaway copy of the state and list exactly what a
//! run would send, sensitive values masked. Nothing is sent and the real state is untouched.
//! The copy lives in memory only: nothing of it is left on disk, even if payrun is killed.

use super::RunError;
use crate::input::InputError;
use crate::job::steps::StepKind;
use crate::job::{Job, Step};
use crate::state::work;
use crate::state::{BatchState, Conn, ItemState, State};
use std::path::Path;

/// The requests a run would make now, one line per request (batches list their rows).
pub fn dry_run(
    job: &Job,
    state_path: &Path,
    opts: &crate::plan::digest::PlanOptions,
    on_error: &mut dyn FnMut(InputError),
) -> Result<Vec<String>, RunError> {
    let scratch = State::scratch_of(state_path)?;
    let summary =
        crate::plan::checked(job, opts, on_error).map_err(crate::plan::PlanError::from)?;
    if summary.errors > 0 {
        return Err(crate::plan::PlanError::Invalid(summary).into());
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    crate::plan::plan_into(job, &scratch.state, opts, on_error, &stop)?;
    let st = &scratch.state;
    let lines = (|| {
        let conn = st.connection();
        let plan_id = work::plan_id(conn, &job.name, &job.scope)?.unwrap_or(0);
        let mut lines = Vec::new();
        for step in &job.steps {
            match step.kind {
                StepKind::Payout => batch_lines(conn, job, plan_id, step, &mut lines)?,
                kind => item_lines(conn, plan_id, step, path_of(kind), &mut lines)?,
            }
        }
        export_lines(conn, job, plan_id, &mut lines)?;
        Ok(lines)
    })();
    lines.map_err(|e: crate::state::SqlError| RunError::from(st.err(e)))
}

/// The request a step of this kind makes for an item.
fn path_of(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Contact => "POST /v2/contacts",
        StepKind::Kyc => "POST /v2/contacts/submit_kyc",
        StepKind::Customer => "POST /create",
        StepKind::CustomersBulk => "POST /createBulk (in chunks)",
        StepKind::Documents => "POST /createDocuments/{customerId}",
        StepKind::CustomerStatus => "POST /update/{customerId}/status/{status}",
        StepKind::KycConfirmation => "POST kycConfirmation",
        StepKind::Payout => "POST /v2/payouts",
        StepKind::Payin => "POST /v2/payins",
        StepKind::Refund => "POST /v2/payins/refund",
    }
}

/// One line per item a step would send.
fn item_lines(
    conn: &Conn,
    plan_id: i64,
    step: &Step,
    path: &str,
    lines: &mut Vec<String>,
) -> crate::state::SqlResult<()> {
    let states = [ItemState::Pending, ItemState::InFlight, ItemState::Blocked];
    for i in work::items_in(conn, plan_id, &step.id, &states)? {
        let doubt = if i.state == ItemState::InFlight {
            " (in doubt: the provider is asked first)"
        } else {
            ""
        };
        // A payin goes with its external id (how a payin in doubt is found again).
        let ext = match (&i.external_id, step.kind) {
            (Some(e), StepKind::Payin) => format!(" external_id {e}"),
            _ => String::new(),
        };
        lines.push(format!(
            "{} row '{}' (line {}): {path} {}{ext}{doubt}",
            step.id,
            i.row_key,
            i.row_line,
            work::item_payload(conn, i.id)?
        ));
    }
    Ok(())
}

/// One line per payout batch a step would send, then a line per row of it.
fn batch_lines(
    conn: &Conn,
    job: &Job,
    plan_id: i64,
    step: &Step,
    lines: &mut Vec<String>,
) -> crate::state::SqlResult<()> {
    let names = (job.name.as_str(), job.scope.as_str());
    work::rebatch(
        conn,
        plan_id,
        &step.id,
        step.batch_size,
        names,
        &Default::default(),
    )?;
    let states = [BatchState::Open, BatchState::InFlight];
    for b in work::batches_in(conn, plan_id, &step.id, &states)? {
        let members = work::batch_items(conn, b.id)?;
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
                work::item_payload(conn, m.id)?
            ));
        }
    }
    Ok(())
}

/// Exports: the window each would pull now, and where it would write.
fn export_lines(
    conn: &Conn,
    job: &Job,
    plan_id: i64,
    lines: &mut Vec<String>,
) -> crate::state::SqlResult<()> {
    let now = chrono::Utc::now();
    for e in &job.exports {
        let mark = crate::state::exports::watermark(conn, plan_id, &e.id)?
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
    Ok(())
}
