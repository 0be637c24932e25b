//! Fault injection: latency, 5xx before applying, 429 above a rate, dropped connections
//! before applying (reset), after applying (lost response), replies held past any client
//! timeout, requests applied only after the client gave up (late apply), and listings that
//! show new records late. Every decision draws from one seeded generator, so a run with the
//! same seed and the same request order sees the same faults.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which faults to inject; all off by default.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added before each request is handled: uniform in [min, max].
    pub latency: Option<(Duration, Duration)>,
    /// Share of requests answered 500/502/503 before anything is applied.
    pub error_rate: f64,
    /// Requests per second over all endpoints; above it, 429 with `Retry-After`.
    pub rate_limit: Option<u32>,
    /// Share of requests whose connection is dropped before anything is applied.
    pub reset_rate: f64,
    /// Share of requests applied, then dropped without a reply.
    pub lost_response_rate: f64,
    /// Share of requests applied, then answered only after `timeout_delay`.
    pub timeout_rate: f64,
    pub timeout_delay: Duration,
    /// Share of requests that change something (not reads) held for `late_apply_delay`
    /// before they are applied — and then applied whether or not the client is still
    /// waiting: what a gateway does with a request its client timed out on.
    pub late_apply_rate: f64,
    pub late_apply_delay: Duration,
    /// Share of requests that change something applied, then answered 200 with a body
    /// that is not JSON (a proxy's page in front of a provider that did the work).
    pub garbled_rate: f64,
    /// How long after it exists a new payout, payin, contact or FinHub customer appears in
    /// listings (lookups by key see it at once).
    pub listing_lag: Duration,
    /// List pages with the metadata the reference leaves open: shape A pages without
    /// `total`/`total_page`, shape B's last page with `next_page` pointing past the end.
    pub inconsistent_pages: bool,
    /// Records that "arrive" before each list page after the first (card payments and PayTo
    /// agreements), dated at the start of the requested window so they shift the pages.
    pub arrivals: usize,
}

/// What to do with one request, decided before it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    Proceed,
    /// 429 with this many seconds in `Retry-After`.
    RateLimited(u64),
    ServerError(u16),
    Reset,
    /// Applied after `late_apply_delay`, whatever became of the client.
    LateApply,
}

/// What to do with a handled request's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Reply,
    Lose,
    Delay,
    /// 200 with a body that is not JSON.
    Garble,
}

/// The injector: configuration, generator and the rate window.
pub struct Injector {
    pub faults: Faults,
    rng: Mutex<SplitMix64>,
    window: Mutex<(Instant, u32)>,
}

impl Injector {
    pub fn new(faults: Faults, seed: u64) -> Injector {
        Injector {
            faults,
            rng: Mutex::new(SplitMix64(seed)),
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    fn chance(&self, rate: f64) -> bool {
        rate > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_f64()
                < rate
    }

    /// The latency to add to this request.
    pub fn latency(&self) -> Option<Duration> {
        let (min, max) = self.faults.latency?;
        let span = max.saturating_sub(min).as_micros() as u64;
        let extra = if span == 0 {
            0
        } else {
            self.rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_u64()
                % (span + 1)
        };
        Some(min + Duration::from_micros(extra))
    }

    /// Decides, before handling, whether the request goes through; `changes` says whether
    /// it would change anything (only those are applied late).
    pub fn before(&self, changes: bool) -> Before {
        if let Some(limit) = self.faults.rate_limit {
            // A fixed one-second window: simple, and exact about "N per second".
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if now.duration_since(w.0) >= Duration::from_secs(1) {
                *w = (now, 0);
            }
            if w.1 >= limit {
                return Before::RateLimited(1);
            }
            w.1 += 1;
        }
        if self.chance(self.faults.error_rate) {
            let code = [500, 502, 503][(self
                .rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_u64()
                % 3) as usize];
            return Before::ServerError(code);
        }
        if self.chance(self.faults.reset_rate) {
            return Before::Reset;
        }
        if changes && self.chance(self.faults.late_apply_rate) {
            return Before::LateApply;
        }
        Before::Proceed
    }

    /// Decides, after handling, what becomes of the reply (`changes`: the request changed
    /// something; only those are garbled).
    pub fn after(&self, changes: bool) -> After {
        if self.chance(self.faults.lost_response_rate) {
            After::Lose
        } else if self.chance(self.faults.timeout_rate) {
            After::Delay
        } else if changes && self.chance(self.faults.garbled_rate) {
            After::Garble
        } else {
            After::Reply
        }
    }

    /// Draws a number from the shared generator (seed data, ids).
    pub fn next_u64(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_u64()
    }
}

/// SplitMix64: tiny, fast, and plenty for choosing faults reproducibly.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Parses `20ms..200ms` (or a single `50ms`).
pub fn parse_latency(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let a = crate::job::parse_duration(a)?;
    let b = crate::job::parse_duration(b)?;
    if b < a {
        return Err(format!("latency range '{s}' runs backwards"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_seed() {
        let faults = Faults {
            error_rate: 0.1,
            ..Faults::default()
        };
        let count = |seed| {
            let inj = Injector::new(faults.clone(), seed);
            (0..10_000)
                .filter(|_| matches!(inj.before(true), Before::ServerError(_)))
                .count()
        };
        let a = count(7);
        assert_eq!(a, count(7), "same seed, same faults");
        assert!((850..1150).contains(&a), "{a} errors in 10000 at 10%");
    }

    #[test]
    fn rate_limit_allows_exactly_n_per_window() {
        let inj = Injector::new(
            Faults {
                rate_limit: Some(5),
                ..Faults::default()
            },
            1,
        );
        let outcomes: Vec<_> = (0..8).map(|_| inj.before(false)).collect();
        assert_eq!(
            outcomes.iter().filter(|o| **o == Before::Proceed).count(),
            5
        );
        assert_eq!(outcomes[7], Before::RateLimited(1));
    }

    #[test]
    fn latency_ranges() {
        assert_eq!(
            parse_latency("20ms..200ms").unwrap(),
            (Duration::from_millis(20), Duration::from_millis(200))
        );
        assert_eq!(parse_latency("5ms").unwrap().1, Duration::from_millis(5));
        assert!(parse_latency("200ms..20ms").is_err());
        let inj = Injector::new(
            Faults {
                latency: Some((Duration::from_millis(20), Duration::from_millis(30))),
                ..Faults::default()
            },
            3,
        );
        for _ in 0..100 {
            let l = inj.latency().unwrap();
            assert!(l >= Duration::from_millis(20) && l <= Duration::from_millis(30));
        }
    }
}
