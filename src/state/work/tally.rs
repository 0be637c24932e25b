//! The counts of a plan's items by step and name, and the rows that need a look.

use super::*;

/// A row of a step that needs a look: its key, its name, and why (see [`Status::reason`]).
pub type LookRow = (String, Status, Option<String>, Option<String>);

/// The rows of a step that need a look, in file order, and how many more are only not
/// sent yet (counted, not listed: a stopped run would list them all).
pub fn needing_a_look(conn: &Conn, plan_id: i64, step: &str) -> SqlResult<(Vec<LookRow>, u64)> {
    let (mut rows, mut pending) = (Vec::new(), 0);
    conn.each(
        "SELECT row_key, state, conflict_hash IS NOT NULL, error_code, error_message FROM items
         WHERE plan_id = ?1 AND step = ?2 AND (state NOT IN ('succeeded', 'skipped') OR conflict_hash IS NOT NULL)
         ORDER BY row_line",
        args![plan_id, step],
        |r| {
            let name = Status::of(r.get(1)?, r.get(2)?);
            if name == Status::Pending {
                pending += 1;
                return Ok(());
            }
            let (code, message) = name.reason(r.get(3)?, r.get(4)?);
            rows.push((r.get(0)?, name, code, message));
            Ok(())
        },
    )?;
    Ok((rows, pending))
}

/// A plan's items counted by step (in step order) and [`Status`] (in name order), in one
/// pass over the plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    steps: Vec<(String, Vec<(Status, u64)>)>,
}

impl Tally {
    pub fn of(conn: &Conn, plan_id: i64) -> SqlResult<Tally> {
        // Counted here rather than by GROUP BY: the items come in the order of their
        // (plan, step, key) index, and a step's states mostly repeat, so no sort is needed.
        // (step index, step, state, count), the last one touched at the end.
        let mut seen: Vec<(i64, String, Status, u64)> = Vec::new();
        conn.each(
            "SELECT step_index, step, state, conflict_hash IS NOT NULL FROM items WHERE plan_id = ?1",
            args![plan_id],
            |r| {
                let (si, step) = (r.get::<i64>(0)?, r.text(1)?.unwrap_or_default());
                let state = Status::of(r.get(2)?, r.get(3)?);
                let same = |e: &(i64, String, Status, u64)| e.1 == step && e.2 == state;
                match seen.last_mut() {
                    Some(e) if same(e) => e.3 += 1,
                    _ => match seen.iter_mut().find(|e| same(e)) {
                        Some(e) => e.3 += 1,
                        None => seen.push((si, step.to_string(), state, 1)),
                    },
                }
                Ok(())
            },
        )?;
        // Step order is that of the job (a step's lowest index), states by name.
        let mut first: Vec<(i64, &str)> = Vec::new();
        for (si, step, _, _) in &seen {
            match first.iter_mut().find(|f| f.1 == step) {
                Some(f) => f.0 = f.0.min(*si),
                None => first.push((*si, step)),
            }
        }
        first.sort();
        let steps = first
            .iter()
            .map(|(_, step)| {
                let mut states: Vec<(Status, u64)> = seen
                    .iter()
                    .filter(|e| e.1 == *step)
                    .map(|e| (e.2, e.3))
                    .collect();
                states.sort();
                (step.to_string(), states)
            })
            .collect();
        Ok(Tally { steps })
    }

    /// Whether any item needs a look ([`Status::needs_a_look`]): failed, blocked, in
    /// doubt, waiting for funds, in conflict or still pending.
    pub fn needs_a_look(&self) -> bool {
        self.steps
            .iter()
            .flat_map(|(_, s)| s)
            .any(|(state, n)| *n > 0 && state.needs_a_look())
    }

    /// The counts: each step (in job order) with its state names and counts.
    pub fn steps(&self) -> &[(String, Vec<(Status, u64)>)] {
        &self.steps
    }

    /// As JSON: `{"contact": {"succeeded": 20}, ...}` (also its `Display`).
    pub fn json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (step, states) in &self.steps {
            let counts = states
                .iter()
                .map(|(state, n)| (state.to_string(), serde_json::json!(n)))
                .collect();
            map.insert(step.clone(), serde_json::Value::Object(counts));
        }
        serde_json::Value::Object(map).to_string()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.json())
    }
}
