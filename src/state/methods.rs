//! The provider's payout methods as it last described them, per provider URL: what
//! `validate` and `plan` check a job's method parameters against (`payrun methods`
//! refreshes them).

use super::Conn;
use super::sql::{SqlResult, args};
use crate::provider::helloclever::wire::MethodRecord;

/// The cached methods of the provider at `base`, with when they were read (`None`: never).
pub fn cached(conn: &Conn, base: &str) -> SqlResult<Option<(Vec<MethodRecord>, String)>> {
    let fetched: Option<String> = conn.one(
        "SELECT MAX(fetched_at) FROM payout_methods WHERE base = ?1",
        args![base],
        |r| r.get(0),
    )?;
    let Some(fetched) = fetched else {
        return Ok(None);
    };
    let records = conn.all(
        "SELECT record FROM payout_methods WHERE base = ?1 ORDER BY name",
        args![base],
        |r| r.get::<String>(0),
    )?;
    let records = records
        .iter()
        // A record a later payrun wrote in a shape this one cannot read is not used.
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    Ok(Some((records, fetched)))
}

/// Replaces the cached methods of the provider at `base` with `records`.
pub fn store(conn: &Conn, base: &str, records: &[MethodRecord]) -> SqlResult<()> {
    let now = super::work::now();
    conn.transaction(|conn| {
        conn.execute("DELETE FROM payout_methods WHERE base = ?1", args![base])?;
        for r in records {
            let json = serde_json::to_string(r).unwrap_or_default();
            conn.execute(
                "INSERT INTO payout_methods (base, name, record, fetched_at) VALUES (?1, ?2, ?3, ?4)",
                args![base, r.payout_method_name, json, now],
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_cached_per_provider_and_replaced_whole() {
        let st = crate::state::State::open_in_memory().unwrap();
        let c = st.connection();
        assert!(cached(c, "https://a").unwrap().is_none());
        let m = |name: &str| MethodRecord {
            payout_method_name: name.into(),
            currency: "AUD".into(),
            description: String::new(),
            payout_method_params: [("bsb".to_string(), "string:Mandatory BSB".into())].into(),
            min_amount: None,
            max_amount: Some(100_000.into()),
            is_cancellable: true,
            require_contact: false,
            require_kyc: false,
        };
        store(c, "https://a", &[m("x"), m("y")]).unwrap();
        store(c, "https://b", &[m("z")]).unwrap();
        store(c, "https://a", &[m("y")]).unwrap();
        let (a, _) = cached(c, "https://a").unwrap().unwrap();
        assert_eq!(a, vec![m("y")]);
        assert_eq!(cached(c, "https://b").unwrap().unwrap().0.len(), 1);
    }
}
