//! Duplicates found at the provider, as the last check recorded them.

use super::*;

/// A duplicate found at the provider: an external id of this plan carried by more than
/// one batch that can still pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub external_id: String,
    /// The row whose transaction it is; `None` for a batch's own external id.
    pub row_key: Option<String>,
    /// The provider's batches carrying it, oldest first.
    pub uuids: Vec<String>,
}

/// Replaces a step's recorded duplicates with what the last check found.
pub fn record_duplicates(
    conn: &Conn,
    plan_id: i64,
    step: &str,
    run_id: i64,
    found: &[Duplicate],
) -> SqlResult<()> {
    conn.execute(
        "DELETE FROM duplicates WHERE plan_id = ?1 AND step = ?2",
        args![plan_id, step],
    )?;
    for d in found {
        conn.execute(
            "INSERT INTO duplicates (plan_id, step, external_id, row_key, uuids, found_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            args![plan_id, step, d.external_id, d.row_key, d.uuids.join(","), now(), run_id],
        )?;
    }
    Ok(())
}

/// The duplicates recorded for a plan: (step, duplicate).
pub fn duplicates_of(conn: &Conn, plan_id: i64) -> SqlResult<Vec<(String, Duplicate)>> {
    conn.all(
        "SELECT step, external_id, row_key, uuids FROM duplicates WHERE plan_id = ?1 ORDER BY step, external_id",
        args![plan_id],
        |r| {
            let uuids: String = r.get(3)?;
            Ok((
                r.get(0)?,
                Duplicate {
                    external_id: r.get(1)?,
                    row_key: r.get(2)?,
                    uuids: uuids.split(',').map(str::to_string).collect(),
                },
            ))
        },
    )
}

/// The provider reference (a FinHub customer id) of each row whose item in one of `steps`
/// succeeded.
pub fn refs_of(conn: &Conn, plan_id: i64, steps: &[String]) -> SqlResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    for step in steps {
        conn.each(
            "SELECT row_key, provider_ref FROM items WHERE plan_id = ?1 AND step = ?2 AND state = 'succeeded' AND provider_ref IS NOT NULL",
            args![plan_id, step],
            |r| {
                out.insert(r.get(0)?, r.get(1)?);
                Ok(())
            },
        )?;
    }
    Ok(out)
}
