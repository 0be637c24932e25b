//! The duplicate-payroll guard: does a plan about to pay mostly repeat what another scope
//! of the same job paid recently? Payouts are compared by their keyed hash of account and
//! amount (`items.payee_hash`), never by the account itself.

use super::*;

/// Another scope's payouts that a plan repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    /// The other scope, and the run of it that paid last among those payouts.
    pub scope: String,
    pub run_id: Option<i64>,
    /// When the last of those payouts was first sent.
    pub paid_at: String,
    /// This plan's payouts still to send that the other scope paid, and all of them.
    pub matching: u64,
    pub planned: u64,
}

/// The scope of `job` whose payouts sent since `since` the unsent payouts of plan
/// `plan_id` mostly (more than half) repeat, by account and amount. `None` when none does,
/// or when this plan has sent payouts already (whoever ran it decided then).
pub fn repeated_payroll(
    conn: &Conn,
    plan_id: i64,
    job: &str,
    since: &str,
) -> SqlResult<Option<Repeat>> {
    let began: bool = conn.one(
        "SELECT EXISTS (SELECT 1 FROM items WHERE plan_id = ?1 AND payee_hash IS NOT NULL AND first_attempt_at IS NOT NULL)",
        args![plan_id],
        |r| r.get(0),
    )?;
    if began {
        return Ok(None);
    }
    let planned: u64 = conn.one(
        "SELECT COUNT(*) FROM items WHERE plan_id = ?1 AND payee_hash IS NOT NULL AND state = 'pending'",
        args![plan_id],
        |r| r.get(0),
    )?;
    if planned == 0 {
        return Ok(None);
    }
    let best = conn.optional(
        "SELECT o.plan_id, p.scope, COUNT(DISTINCT i.id), MAX(o.first_attempt_at)
         FROM items i
         JOIN items o ON o.payee_hash = i.payee_hash AND o.plan_id <> i.plan_id
         JOIN plans p ON p.id = o.plan_id
         WHERE i.plan_id = ?1 AND i.state = 'pending' AND i.payee_hash IS NOT NULL
           AND p.job = ?2 AND o.first_attempt_at >= ?3
           AND o.state NOT IN ('pending', 'skipped', 'failed', 'cancelled')
         GROUP BY o.plan_id, p.scope
         ORDER BY 3 DESC, 4 DESC",
        args![plan_id, job, since],
        |r| {
            Ok((
                r.get::<i64>(0)?,
                r.get::<String>(1)?,
                r.get::<u64>(2)?,
                r.get::<String>(3)?,
            ))
        },
    )?;
    let Some((other, scope, matching, paid_at)) = best else {
        return Ok(None);
    };
    if matching * 2 <= planned {
        return Ok(None);
    }
    let run_id = conn.optional(
        "SELECT id FROM runs WHERE plan_id = ?1 AND started_at <= ?2 ORDER BY started_at DESC, id DESC",
        args![other, paid_at],
        |r| r.get(0),
    )?;
    Ok(Some(Repeat {
        scope,
        run_id,
        paid_at,
        matching,
        planned,
    }))
}
