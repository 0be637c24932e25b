//! Where a plan stands with its approvals: which of the approvals recorded for its digest
//! count (given by a listed approver, not by who made the plan unless the job allows it,
//! not expired), how many more it needs, and what changed since the digest approved last.

use crate::job::Approval;
use crate::state::Conn;
use crate::state::SqlResult;
use crate::state::approvals::{self, ApprovalRecord, Changes, DigestRecord};

/// An approval that does not count, and why.
#[derive(Debug, Clone)]
pub struct NotCounted {
    pub approver: String,
    pub why: &'static str,
}

/// A plan's digest and its approvals.
#[derive(Debug, Clone)]
pub struct Standing {
    pub digest: DigestRecord,
    pub required: u32,
    /// Every approval recorded for the digest, oldest first.
    pub approvals: Vec<ApprovalRecord>,
    /// The approvers whose approval counts.
    pub counted: Vec<String>,
    pub not_counted: Vec<NotCounted>,
    /// The listed approvers who may still approve it.
    pub may_approve: Vec<String>,
    /// The digest approved last before this one, and what changed since.
    pub since: Option<(DigestRecord, Changes)>,
}

impl Standing {
    pub fn approved(&self) -> bool {
        self.counted.len() as u64 >= u64::from(self.required)
    }

    /// How many more approvals it needs.
    pub fn needed(&self) -> u64 {
        u64::from(self.required).saturating_sub(self.counted.len() as u64)
    }

    /// Says where it stands, a line each: the digest, its approvals, what it still needs
    /// and what changed since the last approved digest.
    pub fn lines(&self) -> Vec<String> {
        let d = &self.digest;
        let mut out = vec![format!(
            "digest {} (planned by {} at {})",
            d.digest, d.planned_by, d.planned_at
        )];
        let given: Vec<String> = self
            .approvals
            .iter()
            .map(|a| {
                let why = self
                    .not_counted
                    .iter()
                    .find(|n| n.approver == a.approver)
                    .map(|n| format!(", not counted: {}", n.why))
                    .unwrap_or_default();
                format!("{} at {}{why}", a.approver, a.approved_at)
            })
            .collect();
        out.push(format!(
            "approvals: {} of {}{}",
            self.counted.len(),
            self.required,
            if given.is_empty() {
                String::new()
            } else {
                format!(" ({})", given.join("; "))
            }
        ));
        if !self.approved() {
            out.push(format!(
                "needs {} more from: {}",
                self.needed(),
                if self.may_approve.is_empty() {
                    "nobody listed can still approve it".to_string()
                } else {
                    self.may_approve.join(", ")
                }
            ));
        }
        if let Some((last, c)) = &self.since {
            out.push(format!(
                "since {} (approved last): {} added, {} removed, {} changed; totals {} → {}",
                last.digest,
                rows(c.added),
                rows(c.removed),
                rows(c.changed),
                totals(&last.totals),
                totals(&d.totals)
            ));
        }
        out
    }
}

fn rows(n: u64) -> String {
    format!("{n} {}", if n == 1 { "row" } else { "rows" })
}

/// `AUD 12000.00 (12 payouts)`, currencies joined by commas; `none` for no payout.
pub fn totals(t: &[(String, rust_decimal::Decimal, u64)]) -> String {
    if t.is_empty() {
        return "none".into();
    }
    t.iter()
        .map(|(c, total, n)| format!("{c} {total} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the current plan of `plan_id` stands with `job`'s approval (`None`: no plan has
/// recorded a digest yet). `now` as stored times are (RFC 3339, UTC).
pub fn standing(
    conn: &Conn,
    approval: &Approval,
    plan_id: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> SqlResult<Option<Standing>> {
    let Some(digest) = approvals::current(conn, plan_id)? else {
        return Ok(None);
    };
    let recorded = approvals::of_digest(conn, digest.id)?;
    let since = match approvals::last_approved(conn, plan_id, digest.id)? {
        Some(last) => {
            let c = approvals::changes(conn, last.id, digest.id)?;
            Some((last, c))
        }
        None => None,
    };
    Ok(Some(judge(approval, digest, recorded, since, now)))
}

/// [`standing`]'s verdict from what is recorded.
fn judge(
    approval: &Approval,
    digest: DigestRecord,
    recorded: Vec<ApprovalRecord>,
    since: Option<(DigestRecord, Changes)>,
    now: chrono::DateTime<chrono::Utc>,
) -> Standing {
    let mut counted = Vec::new();
    let mut not_counted = Vec::new();
    for a in &recorded {
        let why = if !approval.approvers.contains(&a.approver) {
            Some("no longer an approver")
        } else if a.approver == digest.planned_by && !approval.preparer_may_approve {
            Some("made the plan")
        } else if let Some(ttl) = approval.expires
            && chrono::DateTime::parse_from_rfc3339(&a.approved_at)
                .ok()
                .and_then(|at| chrono::Duration::from_std(ttl).ok().map(|d| at + d))
                .is_none_or(|end| end <= now)
        {
            Some("expired")
        } else {
            None
        };
        match why {
            Some(why) => not_counted.push(NotCounted {
                approver: a.approver.clone(),
                why,
            }),
            None => counted.push(a.approver.clone()),
        }
    }
    let may_approve = approval
        .approvers
        .iter()
        .filter(|name| !recorded.iter().any(|a| &a.approver == *name))
        .filter(|name| approval.preparer_may_approve || **name != digest.planned_by)
        .cloned()
        .collect();
    Standing {
        digest,
        required: approval.required,
        approvals: recorded,
        counted,
        not_counted,
        may_approve,
        since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(approver: &str, at: &str) -> ApprovalRecord {
        ApprovalRecord {
            approver: approver.into(),
            approved_at: at.into(),
            note: None,
        }
    }

    #[test]
    fn only_listed_unexpired_approvals_by_others_than_the_preparer_count() {
        let approval = Approval {
            required: 2,
            approvers: vec!["alice".into(), "bob".into(), "carol".into()],
            expires: Some(std::time::Duration::from_secs(72 * 3600)),
            preparer_may_approve: false,
            hold_other_steps: false,
        };
        let digest = DigestRecord {
            id: 1,
            digest: "sha256:00".into(),
            planned_by: "carol".into(),
            planned_at: "2026-12-01T00:00:00.000Z".into(),
            rows: 3,
            totals: Vec::new(),
        };
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .to_utc();
        let s = judge(
            &approval,
            digest.clone(),
            vec![
                record("alice", "2026-12-01T11:00:00.000Z"), // 73 h ago
                record("carol", "2026-12-04T10:00:00.000Z"), // made the plan
                record("dave", "2026-12-04T10:00:00.000Z"),  // not listed
                record("bob", "2026-12-04T11:00:00.000Z"),
            ],
            None,
            now,
        );
        assert_eq!(s.counted, ["bob"]);
        let why: Vec<_> = s
            .not_counted
            .iter()
            .map(|n| (n.approver.as_str(), n.why))
            .collect();
        assert_eq!(
            why,
            [
                ("alice", "expired"),
                ("carol", "made the plan"),
                ("dave", "no longer an approver")
            ]
        );
        assert!(!s.approved());
        assert_eq!(s.needed(), 1);
        // Each listed approver approves a digest once; the preparer cannot.
        assert!(s.may_approve.is_empty());

        let allowed = Approval {
            preparer_may_approve: true,
            expires: None,
            ..approval
        };
        let s = judge(
            &allowed,
            digest,
            vec![
                record("carol", "2026-12-04T10:00:00.000Z"),
                record("alice", "2026-01-01T00:00:00.000Z"),
            ],
            None,
            now,
        );
        assert!(s.approved());
        assert_eq!(s.may_approve, ["bob"]);
    }
}
