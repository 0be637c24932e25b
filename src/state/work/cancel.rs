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
pub fn sent_batches(conn: &Conn, plan_id: i64) -> SqlResult<Vec<SentBatch>> {
    let mut batches = conn.all(
        "SELECT b.id, b.step, b.external_id, b.state, b.provider_ref,
                (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id)
         FROM batches b WHERE b.plan_id = ?1 AND b.state != 'open' ORDER BY b.step, b.seq",
        args![plan_id],
        |r| {
            Ok(SentBatch {
                id: r.get(0)?,
                step: r.get(1)?,
                external_id: r.get(2)?,
                state: r.get(3)?,
                provider_ref: r.get(4)?,
                rows: r.get(5)?,
                amount: rust_decimal::Decimal::ZERO,
            })
        },
    )?;
    // Amounts are exact decimal text: summed as decimals, never in SQL's floats.
    for b in &mut batches {
        conn.each(
            "SELECT amount FROM items WHERE batch_id = ?1 AND amount IS NOT NULL",
            args![b.id],
            |r| {
                b.amount += r
                    .text(0)?
                    .unwrap_or_default()
                    .parse::<rust_decimal::Decimal>()
                    .unwrap_or_default();
                Ok(())
            },
        )?;
    }
    Ok(batches)
}

/// Records a batch recalled with `payrun cancel`: it and its rows are `cancelled`, in one
/// transaction (a row counts as sent once the provider took its batch, so "sent" rows are
/// cancelled too; a transaction the provider completed never is). Returns how many rows.
pub fn mark_cancelled(conn: &Conn, batch_id: i64) -> SqlResult<usize> {
    let t = now();
    let why = format!("recalled with payrun cancel at {t}");
    conn.transaction(|conn| {
        conn.execute(
            "UPDATE batches SET state = 'cancelled', provider_status = 'expired', error_code = 'CANCELLED',
                    error_message = ?2 WHERE id = ?1",
            args![batch_id, why],
        )?;
        conn.execute(
            "UPDATE items SET state = 'cancelled', provider_status = 'cancelled', error_code = 'CANCELLED',
                    error_message = ?2, updated_at = ?3
             WHERE batch_id = ?1 AND COALESCE(provider_status, '') != 'completed'",
            args![batch_id, why, t],
        )
    })
}

/// A payin the payer may still pay: its item, row and the provider's uuid.
#[derive(Debug, Clone)]
pub struct PendingPayin {
    pub id: i64,
    pub step: String,
    pub row_key: String,
    pub uuid: String,
    pub amount: Option<String>,
    pub currency: Option<String>,
}

/// The plan's payins of `steps` the provider last showed pending, in file order.
pub fn pending_payins(conn: &Conn, plan_id: i64, steps: &[String]) -> SqlResult<Vec<PendingPayin>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id, step, row_key, provider_ref, amount, currency FROM items
         WHERE plan_id = ?1 AND step IN ({}) AND state IN ('succeeded', 'blocked')
           AND provider_status = 'pending' AND provider_ref IS NOT NULL
         ORDER BY row_line, row_key, id",
        placeholders(2, steps.len())
    );
    let mut all: Vec<&dyn Arg> = vec![&plan_id];
    all.extend(steps.iter().map(|s| s as &dyn Arg));
    conn.all(&sql, &all, |r| {
        Ok(PendingPayin {
            id: r.get(0)?,
            step: r.get(1)?,
            row_key: r.get(2)?,
            uuid: r.get(3)?,
            amount: r.get(4)?,
            currency: r.get(5)?,
        })
    })
}

/// Records a payin cancelled with `payrun cancel`: its row is `cancelled` and the payin
/// `expired` (the provider's status for it now).
pub fn mark_payin_cancelled(conn: &Conn, id: i64) -> SqlResult<()> {
    let t = now();
    let why = format!("cancelled with payrun cancel at {t}");
    conn.execute(
        "UPDATE items SET state = 'cancelled', provider_status = 'expired', error_code = 'CANCELLED',
                error_message = ?2, updated_at = ?3 WHERE id = ?1",
        args![id, why, t],
    )?;
    Ok(())
}
