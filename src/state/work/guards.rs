//! The duplicate-payroll guard: does a plan about to pay mostly repeat what another scope
//! of the same job paid recently? Payouts are compared by their keyed hash of account and
//! amount (`items.payee_hash`), never by the account itself.

use super::*;
use std::collections::HashSet;

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

impl Repeat {
    /// Says it, of a plan of scope `scope` compared over `window`: "N of the M payouts of
    /// scope … pay the same accounts the same amounts as scope … did in run … (last sent …),
    /// within guards.duplicate_window (…)".
    pub fn said(&self, scope: &str, window: std::time::Duration) -> String {
        format!(
            "{} of the {} payouts of scope '{scope}' pay the same accounts the same amounts as scope '{}' did{} (last sent {}), within guards.duplicate_window ({})",
            self.matching,
            self.planned,
            self.scope,
            self.run_id
                .map(|id| format!(" in run {id}"))
                .unwrap_or_default(),
            self.paid_at,
            crate::job::show_duration(window)
        )
    }
}

/// Where the duplicate-payroll guard of a run starting at `now` looks back to (RFC 3339);
/// `None` when `window` is zero (the guard is off).
pub fn guard_since(
    now: chrono::DateTime<chrono::Utc>,
    window: std::time::Duration,
) -> Option<String> {
    (!window.is_zero()).then(|| {
        (now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    })
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
    // This plan's payouts still to send, by payee hash (a hash may pay more than one row).
    let mut mine: HashMap<u128, u64> = HashMap::new();
    conn.each(
        "SELECT payee_hash FROM items WHERE plan_id = ?1 AND payee_hash IS NOT NULL AND state = 'pending'",
        args![plan_id],
        |r| {
            if let Some(h) = r.text(0)?.and_then(payee) {
                *mine.entry(h).or_default() += 1;
            }
            Ok(())
        },
    )?;
    let planned: u64 = mine.values().sum();
    if planned == 0 {
        return Ok(None);
    }
    // The job's other plans that ran within the window: only they can have sent since.
    let others: Vec<(i64, String)> = conn.all(
        "SELECT p.id, p.scope FROM plans p WHERE p.job = ?1 AND p.id <> ?2
           AND EXISTS (SELECT 1 FROM runs r WHERE r.plan_id = p.id AND (r.ended_at IS NULL OR r.ended_at >= ?3))
         ORDER BY p.id",
        args![job, plan_id, since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    // Each one's payouts sent since then, compared with this plan's a hash at a time (an
    // index on hashes would slow every plan's writes for a check made once a run).
    let mut best: Option<(i64, String, u64, String)> = None;
    for (other, scope) in others {
        let mut seen: HashSet<u128> = HashSet::new();
        let mut last = String::new();
        conn.each(
            "SELECT payee_hash, first_attempt_at FROM items
             WHERE plan_id = ?1 AND payee_hash IS NOT NULL AND first_attempt_at >= ?2
               AND state NOT IN ('pending', 'skipped', 'failed', 'cancelled')",
            args![other, since],
            |r| {
                if let Some(h) = r.text(0)?.and_then(payee)
                    && mine.contains_key(&h)
                {
                    seen.insert(h);
                    let at: String = r.get(1)?;
                    if at > last {
                        last = at;
                    }
                }
                Ok(())
            },
        )?;
        let matching: u64 = seen.iter().map(|h| mine[h]).sum();
        if matching > 0
            && best
                .as_ref()
                .is_none_or(|b| (matching, &last) > (b.2, &b.3))
        {
            best = Some((other, scope, matching, last));
        }
    }
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

/// A stored payee hash (hex) as a number: 16 bytes in memory rather than a string's 56.
fn payee(hex: &str) -> Option<u128> {
    u128::from_str_radix(hex.get(..32)?, 16).ok()
}
