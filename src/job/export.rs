//! Export steps: which resource to pull, over which window, into which file.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use std::path::PathBuf;

/// What an export step pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Contacts,
    Payouts,
    Payins,
    PaymentAgreements,
    CardPayments,
    /// FinHub: customers, by `customerStatus` (every status unless filtered).
    CustomersByStatus,
}

impl Resource {
    pub const NAMES: [&'static str; 6] = [
        "contacts",
        "payouts",
        "payins",
        "payment_agreements",
        "card_payments",
        "customers_by_status",
    ];

    pub fn parse(s: &str) -> Option<Resource> {
        Some(match s {
            "contacts" => Resource::Contacts,
            "payouts" => Resource::Payouts,
            "payins" => Resource::Payins,
            "payment_agreements" => Resource::PaymentAgreements,
            "card_payments" => Resource::CardPayments,
            "customers_by_status" => Resource::CustomersByStatus,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Contacts => "contacts",
            Resource::Payouts => "payouts",
            Resource::Payins => "payins",
            Resource::PaymentAgreements => "payment_agreements",
            Resource::CardPayments => "card_payments",
            Resource::CustomersByStatus => "customers_by_status",
        }
    }

    /// The provider whose API holds the resource.
    pub fn provider(self) -> crate::provider::ProviderKind {
        match self {
            Resource::CustomersByStatus => crate::provider::ProviderKind::FinHub,
            _ => crate::provider::ProviderKind::HelloClever,
        }
    }

    /// Whether the endpoint filters by creation time (FinHub's by-status list does not).
    pub fn has_window(self) -> bool {
        self != Resource::CustomersByStatus
    }

    /// The filters the resource's endpoint takes (beyond the window).
    pub fn filters(self) -> &'static [&'static str] {
        match self {
            Resource::CardPayments | Resource::CustomersByStatus => &["status"],
            _ => &[],
        }
    }
}

/// A point in time as the job file writes it, resolved when the export runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    At(DateTime<Utc>),
    /// `-7d`: this long before now.
    Ago(Duration),
    /// The start of yesterday (UTC).
    Yesterday,
    /// The start of today (UTC).
    Today,
    Now,
    /// The end of the previous complete export of this step; `fallback` on the first run.
    LastRun(Option<Box<When>>),
}

impl When {
    /// Parses `now`, `today`, `yesterday`, `last_run`, `last_run or -30d`, `-7d`/`-12h`/`-30m`,
    /// `2026-11-01T00:00:00` (optionally with `Z` or fractions), `2026-11-01` or `01/11/26`
    /// (DD/MM/YY) — all UTC.
    pub fn parse(s: &str) -> Result<When, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("last_run") {
            let rest = rest.trim();
            if rest.is_empty() {
                return Ok(When::LastRun(None));
            }
            let fallback = rest
                .strip_prefix("or ")
                .ok_or_else(|| format!("'{s}': write 'last_run' or 'last_run or <time>'"))?;
            return match When::parse(fallback)? {
                When::LastRun(_) => Err(format!(
                    "'{s}': the fallback of last_run cannot be last_run"
                )),
                w => Ok(When::LastRun(Some(Box::new(w)))),
            };
        }
        match s {
            "now" => return Ok(When::Now),
            "today" => return Ok(When::Today),
            "yesterday" => return Ok(When::Yesterday),
            _ => {}
        }
        if let Some(ago) = s.strip_prefix('-') {
            let d = super::parse_duration(ago)
                .map_err(|_| format!("'{s}' is not a time: expected e.g. -7d, -12h or -30m"))?;
            return Duration::from_std(d)
                .map(When::Ago)
                .map_err(|_| format!("'{s}' is too far back"));
        }
        absolute(s).map(When::At).ok_or_else(|| {
            format!(
                "'{s}' is not a time: expected now, today, yesterday, last_run, a relative time \
                 like -7d, or a UTC date like 2026-11-01T00:00:00, 2026-11-01 or 01/11/26"
            )
        })
    }

    /// The instant this stands for, given the run's `now` and the step's watermark.
    pub fn resolve(
        &self,
        now: DateTime<Utc>,
        watermark: Option<DateTime<Utc>>,
    ) -> Result<DateTime<Utc>, String> {
        let midnight = |t: DateTime<Utc>| t.date_naive().and_hms_opt(0, 0, 0).map(|d| d.and_utc());
        Ok(match self {
            When::At(t) => *t,
            When::Ago(d) => now - *d,
            When::Now => now,
            When::Today => midnight(now).unwrap_or(now),
            When::Yesterday => midnight(now - Duration::days(1)).unwrap_or(now),
            When::LastRun(fallback) => match (watermark, fallback) {
                (Some(w), _) => w,
                (None, Some(f)) => f.resolve(now, None)?,
                (None, None) => {
                    return Err("'last_run': this step has not completed an export yet; \
                         write 'last_run or <time>' (e.g. 'last_run or -7d') for the first run"
                        .into());
                }
            },
        })
    }
}

/// `2026-11-01T00:00:00[.fff][Z]`, `2026-11-01` or `01/11/26`, UTC.
fn absolute(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%d/%m/%y") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    let t = s.strip_suffix('Z').unwrap_or(s);
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// How an export file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "csv" => Format::Csv,
            "jsonl" => Format::Jsonl,
            "json" => Format::Json,
            _ => return None,
        })
    }
}

/// A validated export step.
#[derive(Debug, Clone)]
pub struct Export {
    pub id: String,
    pub resource: Resource,
    pub from: When,
    pub to: When,
    /// Query filters, by the endpoint's own names (`status`).
    pub filter: Vec<(String, String)>,
    /// Rendered, relative to the job file's directory when written relative.
    pub path: PathBuf,
    pub format: Format,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn times_parse_and_resolve() {
        let now = at("2026-11-21T10:30:00Z");
        let r = |s: &str, w| When::parse(s).unwrap().resolve(now, w).unwrap();
        assert_eq!(r("now", None), now);
        assert_eq!(r("-1d", None), at("2026-11-20T10:30:00Z"));
        assert_eq!(r("-12h", None), at("2026-11-20T22:30:00Z"));
        assert_eq!(r("yesterday", None), at("2026-11-20T00:00:00Z"));
        assert_eq!(r("today", None), at("2026-11-21T00:00:00Z"));
        assert_eq!(r("01/11/26", None), at("2026-11-01T00:00:00Z"));
        assert_eq!(r("2026-11-01", None), at("2026-11-01T00:00:00Z"));
        assert_eq!(r("2026-11-01T08:00:00", None), at("2026-11-01T08:00:00Z"));
        assert_eq!(
            r("2026-11-01T08:00:00.5Z", None),
            at("2026-11-01T08:00:00.5Z")
        );
        let w = at("2026-11-20T00:00:00Z");
        assert_eq!(r("last_run", Some(w)), w);
        assert_eq!(r("last_run or -1d", Some(w)), w);
        assert_eq!(r("last_run or -1d", None), at("2026-11-20T10:30:00Z"));
        assert!(When::parse("last_run").unwrap().resolve(now, None).is_err());
        for bad in [
            "tomorrow",
            "-7x",
            "2026-13-01",
            "last_run or last_run",
            "last_run -1d",
        ] {
            assert!(When::parse(bad).is_err(), "{bad}");
        }
    }
}
