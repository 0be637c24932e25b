//! Plan digests and the approvals bound to them: each digest a plan of a job and scope came
//! to (who made it first, when, its totals), the plan's current one, the payout and refund
//! rows of each (jobs with `approval:`; their keyed hashes, never values) and who approved
//! which.

use super::Conn;
use super::sql::{Arg, Kind, SqlResult, args};
use crate::plan::digest::PlanDigest;
use rust_decimal::Decimal;

/// A digest as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecord {
    pub id: i64,
    pub digest: String,
    pub planned_by: String,
    pub planned_at: String,
    pub rows: u64,
    /// (currency, total, payouts).
    pub totals: Vec<(String, Decimal, u64)>,
}

/// One approval of a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    pub approver: String,
    pub approved_at: String,
    pub note: Option<String>,
}

/// What changed between two digests' payout and refund rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: u64,
    pub removed: u64,
    /// Rows in both whose content, amount or batch differ.
    pub changed: u64,
}

/// Records `digest` as the current digest of plan `plan_id` (a new one made by `by` at
/// `now`; one seen before keeps its first maker), with its payout and refund rows when it
/// has them and none are kept yet. Part of the plan's transaction.
pub fn record_plan(
    conn: &Conn,
    plan_id: i64,
    digest: &PlanDigest,
    by: &str,
    now: &str,
) -> SqlResult<()> {
    let totals = serde_json::to_string(
        &digest
            .totals
            .iter()
            .map(|(c, t, n)| (c, t.to_string(), n))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    conn.execute(
        "INSERT INTO digests (plan_id, digest, planned_by, planned_at, rows, totals) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (plan_id, digest) DO NOTHING",
        args![plan_id, digest.digest, by, now, digest.rows as i64, totals],
    )?;
    let id: i64 = conn.one(
        "SELECT id FROM digests WHERE plan_id = ?1 AND digest = ?2",
        args![plan_id, digest.digest],
        |r| r.get(0),
    )?;
    conn.execute(
        "UPDATE plans SET digest_id = ?2 WHERE id = ?1",
        args![plan_id, id],
    )?;
    let kept: bool = conn.one(
        "SELECT EXISTS (SELECT 1 FROM digest_rows WHERE digest_id = ?1)",
        args![id],
        |r| r.get(0),
    )?;
    if kept {
        return Ok(());
    }
    let rows: Vec<[&dyn Arg; 7]> = digest
        .items
        .iter()
        .map(|row| {
            [
                &id as &dyn Arg,
                &row.step,
                &row.key,
                &row.hash,
                &row.amount,
                &row.currency,
                &row.batch,
            ]
        })
        .collect();
    let rows: Vec<&[&dyn Arg]> = rows.iter().map(|r| &r[..]).collect();
    conn.insert_rows(
        "digest_rows",
        &[
            ("digest_id", Kind::Int),
            ("step", Kind::Text),
            ("row_key", Kind::Text),
            ("content_hash", Kind::Text),
            ("amount", Kind::Text),
            ("currency", Kind::Text),
            ("batch", Kind::Text),
        ],
        &rows,
    )?;
    Ok(())
}

fn digest_of(r: &super::sql::Row) -> SqlResult<DigestRecord> {
    let totals: String = r.get(5)?;
    let totals: Vec<(String, String, u64)> = serde_json::from_str(&totals).unwrap_or_default();
    Ok(DigestRecord {
        id: r.get(0)?,
        digest: r.get(1)?,
        planned_by: r.get(2)?,
        planned_at: r.get(3)?,
        rows: r.get(4)?,
        totals: totals
            .into_iter()
            .map(|(c, t, n)| (c, t.parse().unwrap_or_default(), n))
            .collect(),
    })
}

const DIGEST_COLUMNS: &str = "d.id, d.digest, d.planned_by, d.planned_at, d.rows, d.totals";

/// The plan's current digest: its last plan's.
pub fn current(conn: &Conn, plan_id: i64) -> SqlResult<Option<DigestRecord>> {
    conn.optional(
        &format!("SELECT {DIGEST_COLUMNS} FROM digests d JOIN plans p ON p.digest_id = d.id WHERE p.id = ?1"),
        args![plan_id],
        digest_of,
    )
}

/// The digest of the plan that was approved last, other than `except`: the one whose
/// latest approval is the newest.
pub fn last_approved(conn: &Conn, plan_id: i64, except: i64) -> SqlResult<Option<DigestRecord>> {
    conn.optional(
        &format!(
            "SELECT {DIGEST_COLUMNS} FROM digests d JOIN approvals a ON a.digest_id = d.id
             WHERE d.plan_id = ?1 AND d.id <> ?2
             GROUP BY {DIGEST_COLUMNS} ORDER BY MAX(a.approved_at) DESC, d.id DESC"
        ),
        args![plan_id, except],
        digest_of,
    )
}

/// The approvals of a digest, oldest first.
pub fn of_digest(conn: &Conn, digest_id: i64) -> SqlResult<Vec<ApprovalRecord>> {
    conn.all(
        "SELECT approver, approved_at, note FROM approvals WHERE digest_id = ?1 ORDER BY approved_at, approver",
        args![digest_id],
        |r| {
            Ok(ApprovalRecord {
                approver: r.get(0)?,
                approved_at: r.get(1)?,
                note: r.get(2)?,
            })
        },
    )
}

/// Records `approver`'s approval of digest `digest_id`; `false` when they had approved it
/// already (nothing changes).
pub fn approve(
    conn: &Conn,
    digest_id: i64,
    approver: &str,
    note: Option<&str>,
    now: &str,
) -> SqlResult<bool> {
    let n = conn.execute(
        "INSERT INTO approvals (digest_id, approver, note, approved_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (digest_id, approver) DO NOTHING",
        args![digest_id, approver, note, now],
    )?;
    Ok(n == 1)
}

/// What changed from digest `from` to digest `to`, by their payout and refund rows (step
/// and key).
pub fn changes(conn: &Conn, from: i64, to: i64) -> SqlResult<Changes> {
    let count = |sql: &str| -> SqlResult<u64> { conn.one(sql, args![from, to], |r| r.get(0)) };
    Ok(Changes {
        added: count(
            "SELECT COUNT(*) FROM digest_rows t WHERE t.digest_id = ?2 AND NOT EXISTS
             (SELECT 1 FROM digest_rows f WHERE f.digest_id = ?1 AND f.step = t.step AND f.row_key = t.row_key)",
        )?,
        removed: count(
            "SELECT COUNT(*) FROM digest_rows f WHERE f.digest_id = ?1 AND NOT EXISTS
             (SELECT 1 FROM digest_rows t WHERE t.digest_id = ?2 AND f.step = t.step AND f.row_key = t.row_key)",
        )?,
        changed: count(
            "SELECT COUNT(*) FROM digest_rows f JOIN digest_rows t ON f.step = t.step AND f.row_key = t.row_key
             WHERE f.digest_id = ?1 AND t.digest_id = ?2
               AND (f.content_hash <> t.content_hash OR f.batch <> t.batch
                    OR COALESCE(f.amount, '') <> COALESCE(t.amount, '') OR COALESCE(f.currency, '') <> COALESCE(t.currency, ''))",
        )?,
    })
}
