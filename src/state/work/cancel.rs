//! `payrun cancel`: the job's payout batches as the provider holds them, and a recalled
//! batch recorded with its rows.

use super::*;

/// A payout batch that reached the provider (or may have), with its rows and amounts.
#[derive(Debug, Clone)]
pub struct SentBatch {
    pub id: i64,
    pub step: String,
    pub external_id: String,
    pub state: BatchState,
    /// The provider's uuid: none while its request is in doubt.
    pub provider_ref: Option<String>,
    pub rows: u64,
    /// The sum of its rows' amounts (one currency per batch).
    pub amount: rust_decimal::Decimal,
}

/// The plan's payout batches that left payrun (every state but `open`), oldest first.
pub fn sent_batches(conn: &Conn, plan_id: i64) -> rusqlite::Result<Vec<SentBatch>> {
    let mut stmt = conn.0.prepare(
        "SELECT b.id, b.step, b.external_id, b.state, b.provider_ref,
                (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id)
         FROM batches b WHERE b.plan_id = ?1 AND b.state != 'open' ORDER BY b.step, b.seq",
    )?;
    let mut batches: Vec<SentBatch> = stmt
        .query_map([plan_id], |r| {
            Ok(SentBatch {
                id: r.get(0)?,
                step: r.get(1)?,
                external_id: r.get(2)?,
                state: r.get(3)?,
                provider_ref: r.get(4)?,
                rows: r.get::<_, i64>(5)? as u64,
                amount: rust_decimal::Decimal::ZERO,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Amounts are exact decimal text: summed as decimals, never in SQL's floats.
    let mut amounts = conn
        .0
        .prepare("SELECT amount FROM items WHERE batch_id = ?1 AND amount IS NOT NULL")?;
    for b in &mut batches {
        let texts = amounts.query_map([b.id], |r| r.get::<_, String>(0))?;
        for t in texts {
            b.amount += t?.parse::<rust_decimal::Decimal>().unwrap_or_default();
        }
    }
    Ok(batches)
}

/// Records a batch recalled with `payrun cancel`: it and its rows are `cancelled`, in one
/// transaction (a row counts as sent once the provider took its batch, so "sent" rows are
/// cancelled too; a transaction the provider completed never is). Returns how many rows.
pub fn mark_cancelled(conn: &Conn, batch_id: i64) -> rusqlite::Result<usize> {
    let t = now();
    let why = format!("recalled with payrun cancel at {t}");
    let tx = conn.0.unchecked_transaction()?;
    tx.execute(
        "UPDATE batches SET state = 'cancelled', provider_status = 'expired', error_code = 'CANCELLED',
                error_message = ?2 WHERE id = ?1",
        params![batch_id, why],
    )?;
    let rows = tx.execute(
        "UPDATE items SET state = 'cancelled', provider_status = 'cancelled', error_code = 'CANCELLED',
                error_message = ?2, updated_at = ?3
         WHERE batch_id = ?1 AND COALESCE(provider_status, '') != 'completed'",
        params![batch_id, why, t],
    )?;
    tx.commit()?;
    Ok(rows)
}
