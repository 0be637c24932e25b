//! The provider's payout listing (`GET /v2/payouts/all`), read for this plan's external ids:
//! before a batch's first send (the state may be new), to settle batches in doubt, and to
//! check that each external id is paid once. Where the reference is silent, the safe
//! reading:
//!
//! - every page is read: a full page is followed whatever `next_page` or `total_page` say
//!   (the reference's own example has `next_page: 2` with `total_page: 1`), and metadata
//!   that says "more" is followed too; only an empty page, or a short one the metadata does
//!   not contradict, ends a window;
//! - a window reaches [`SKEW`] before the earliest time of interest and past the latest
//!   (the provider's clock is not payrun's, and the reference does not say whether
//!   `from_date`/`to_date` filter on creation or on `scheduled_at`, so the window also
//!   reaches past the latest scheduled payout); one longer than the listing allows (a
//!   year) is read in pieces.

use super::Ctx;
use crate::provider::error::CallError;
use crate::provider::helloclever::client::HelloClever;
use crate::provider::helloclever::wire::PayoutBatch;
use crate::state::work;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::hash::BuildHasher;

/// How far a window reaches beyond the times of interest, both ways.
pub(super) const SKEW: chrono::Duration = chrono::Duration::days(1);

/// Records per page of the payout listing (documented: 20).
const PAGE: u64 = 20;

/// The longest window one listing request may ask for.
const MAX_WINDOW: chrono::Duration = chrono::Duration::days(365);

/// A span of creation (or schedule) times to list.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// From [`SKEW`] before `earliest` to [`SKEW`] after the later of now and `latest`.
    pub fn around(earliest: DateTime<Utc>, latest: Option<DateTime<Utc>>) -> Window {
        let now = Utc::now();
        Window {
            from: earliest.min(now) - SKEW,
            to: latest.map_or(now, |l| l.max(now)) + SKEW,
        }
    }
}

/// This plan's payout external ids (batches' and rows'), as hashes: what a scan keeps of
/// the provider's listing, without holding every id of a large plan as text.
pub(super) struct Ours {
    hasher: std::collections::hash_map::RandomState,
    ids: HashSet<u64>,
}

impl Ours {
    pub async fn load(ctx: &Ctx, step: &str) -> Result<Ours, crate::state::StateError> {
        let hasher = std::collections::hash_map::RandomState::new();
        let (plan_id, step, h) = (ctx.plan_id, step.to_string(), hasher.clone());
        let ids = ctx
            .db
            .read(move |c| {
                let mut ids = HashSet::new();
                work::each_payout_external_id(c, plan_id, &step, |id| {
                    ids.insert(h.hash_one(id));
                })?;
                Ok(ids)
            })
            .await?;
        Ok(Ours { hasher, ids })
    }

    pub fn has(&self, id: &str) -> bool {
        self.ids.contains(&self.hasher.hash_one(id))
    }

    /// Whether a provider batch carries one of this plan's external ids, as its own or as
    /// one of its transactions'.
    pub fn carried_by(&self, b: &PayoutBatch) -> bool {
        b.external_id.as_deref().is_some_and(|e| self.has(e))
            || b.payout_transactions
                .iter()
                .any(|t| t.external_id.as_deref().is_some_and(|e| self.has(e)))
    }
}

/// The window of this plan's payouts: `limits.lookback` back from now (or from the
/// plan's first batch sent, when earlier), to past the latest `scheduled_at` planned.
pub(super) async fn plan_window(ctx: &Ctx, step: &str) -> Result<Window, crate::state::StateError> {
    let (plan_id, step) = (ctx.plan_id, step.to_string());
    let (first, latest) = ctx
        .db
        .read(move |c| work::payout_span(c, plan_id, &step))
        .await?;
    let back = chrono::Duration::from_std(ctx.lookback).unwrap_or(chrono::Duration::days(90));
    let earliest = first
        .as_deref()
        .and_then(parse_time)
        .map_or(Utc::now() - back, |t| t.min(Utc::now() - back));
    Ok(Window::around(
        earliest,
        latest.as_deref().and_then(parse_time),
    ))
}

/// A time as payrun stores it (RFC 3339) or as a payout's `scheduled_at` is written
/// (`YYYY-MM-DDTHH:MM:SS`, UTC).
pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// Every batch the provider lists in `window` that `keep` wants, each once (by uuid), in
/// the order listed. An error means the listing could not be read to its end: nothing
/// may be concluded from what was read.
pub(super) async fn scan(
    ctx: &Ctx,
    hc: &HelloClever,
    window: Window,
    keep: impl Fn(&PayoutBatch) -> bool,
) -> Result<Vec<PayoutBatch>, CallError> {
    scan_records(
        ctx,
        hc,
        ("/v2/payouts/all", None),
        window,
        |b: &PayoutBatch| b.uuid.clone(),
        keep,
    )
    .await
}

/// [`scan`] of any of the provider's listings of shape A (`path`, asked for `per_page`
/// records a page, or the documented 20), its records read as `T`, each once by `uuid`.
pub(super) async fn scan_records<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    hc: &HelloClever,
    (path, per_page): (&str, Option<u64>),
    window: Window,
    uuid: impl Fn(&T) -> String,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>, CallError> {
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let mut seen: HashSet<String> = HashSet::new();
    let mut kept = Vec::new();
    for (from, to) in super::export::windows(window.from, window.to, Some(MAX_WINDOW)) {
        let mut page: u64 = 1;
        let mut stale = 0;
        loop {
            let mut query = vec![
                ("from_date", fmt(from)),
                ("to_date", fmt(to)),
                ("page", page.to_string()),
            ];
            if let Some(n) = per_page {
                query.push(("per_page", n.to_string()));
            }
            let reply = super::protocol::idempotent(ctx, || hc.list_page(path, &query)).await?;
            let p = super::export::parse_page(reply, page).map_err(CallError::Decode)?;
            let n = p.records.len() as u64;
            if n == 0 {
                break;
            }
            let mut fresh = 0;
            for record in p.records {
                let r: T = serde_json::from_value(record)
                    .map_err(|e| CallError::Decode(format!("a record of {path}: {e}")))?;
                if !seen.insert(uuid(&r)) {
                    continue;
                }
                fresh += 1;
                if keep(&r) {
                    kept.push(r);
                }
            }
            // A provider that ignores the page number would be read forever.
            stale = if fresh == 0 { stale + 1 } else { 0 };
            if stale >= 3 || page >= 100_000 {
                return Err(CallError::Decode(format!(
                    "the listing {path} repeats itself from page {}; it cannot be read to its end",
                    page.saturating_sub(2)
                )));
            }
            // Any page of the documented length or more is followed, whatever was asked
            // and whatever the metadata says: one empty page more at most.
            let full = n >= p.size.unwrap_or(PAGE).min(PAGE);
            if full || p.more == super::export::More::Yes {
                page += 1;
            } else {
                break;
            }
        }
    }
    Ok(kept)
}
