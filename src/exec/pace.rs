//! Pacing: one GCRA limiter per provider credential (a permit for every attempt, retries
//! and polls included), a cap on requests in flight, and retry timing — exponential with
//! full jitter from `backon`, never shorter than a `Retry-After`. After a 429 every sender
//! holds off until the provider's `Retry-After` has passed, then the limiter's pace resumes.

use crate::job::{Rate, Retry};
use backon::{BackoffBuilder, ExponentialBuilder};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Counters a run records.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub in_doubt_resolved: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> crate::state::work::RunStats {
        crate::state::work::RunStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            in_doubt_resolved: self.in_doubt_resolved.load(Ordering::Relaxed),
        }
    }
}

/// A wait for the limiter's next permit ends this early and spins the rest: a sleeping
/// task wakes 0.2–0.4 ms late, and every permit granted late is time lost for good (the
/// next one is due a full period after it): at 50/s, 2% of the rate.
const SPIN: Duration = Duration::from_micros(500);

pub struct Pacer {
    limiter: DefaultDirectRateLimiter,
    /// One task at a time waits for the limiter (so one at most spins), in the order
    /// they came.
    pace: tokio::sync::Mutex<()>,
    in_flight: Semaphore,
    retry: Retry,
    hold_until: Mutex<Option<Instant>>,
    pub stats: Stats,
}

impl Pacer {
    pub fn new(rate: &Rate, burst: u32, concurrency: u32, retry: Retry) -> Pacer {
        // A permit every period and a hundredth: paced exactly at a provider's limit,
        // requests that leave a little late and then on time (the network, the scheduler)
        // would put one too many in a window now and then, and a 429 holds every sender.
        let period = rate.per / rate.count.max(1);
        let period = period + period / 100;
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a positive period")
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least one"));
        Pacer {
            limiter: RateLimiter::direct(quota),
            pace: tokio::sync::Mutex::new(()),
            in_flight: Semaphore::new(concurrency.max(1) as usize),
            retry,
            hold_until: Mutex::new(None),
            stats: Stats::default(),
        }
    }

    /// Waits for a rate-limit permit and a free slot; hold the slot while the request runs.
    pub async fn permit(&self) -> SemaphorePermit<'_> {
        let slot = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        loop {
            let hold = *self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
            match hold {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        if self.limiter.check().is_err() {
            let _turn = self.pace.lock().await;
            while let Err(not_until) = self.limiter.check() {
                let wait = not_until.wait_time_from(std::time::Instant::now());
                if wait > SPIN {
                    futures_timer::Delay::new(wait - SPIN).await;
                } else {
                    let due = std::time::Instant::now() + wait;
                    while std::time::Instant::now() < due {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        Stats::add(&self.stats.requests);
        slot
    }

    /// After a 429: nobody sends again before `retry_after` (1 s when the provider gave none).
    pub fn rate_limited(&self, retry_after: Option<Duration>) {
        Stats::add(&self.stats.rate_limited);
        let until = Instant::now() + retry_after.unwrap_or(Duration::from_secs(1));
        let mut hold = self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        if hold.is_none_or(|h| h < until) {
            *hold = Some(until);
        }
    }

    pub fn attempts(&self) -> u32 {
        self.retry.attempts.max(1)
    }

    pub fn max_elapsed(&self) -> Duration {
        self.retry.max_elapsed
    }

    /// The wait before retry number `attempt` (1-based): uniform in [0, cap] where cap is the
    /// exponential step from `backon`, and never less than the provider's `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        Stats::add(&self.stats.retries);
        let cap = ExponentialBuilder::default()
            .with_min_delay(self.retry.base)
            .with_max_delay(self.retry.max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.retry.max);
        let jittered = Duration::from_nanos(fastrand::u64(
            0..=cap.as_nanos().min(u128::from(u64::MAX)) as u64,
        ));
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer() -> Pacer {
        let retry = Retry {
            attempts: 6,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(60),
        };
        Pacer::new(
            &Rate {
                count: 1000,
                per: Duration::from_secs(1),
            },
            10,
            4,
            retry,
        )
    }

    #[test]
    fn delays_are_jittered_under_an_exponential_cap_and_honour_retry_after() {
        let p = pacer();
        for attempt in 1..8 {
            let cap =
                Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(Duration::from_secs(2));
            for _ in 0..50 {
                assert!(p.delay(attempt, None) <= cap, "attempt {attempt}");
            }
        }
        assert!(
            p.delay(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7),
            "Retry-After is never undercut"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permits_come_no_faster_than_the_rate() {
        let p = std::sync::Arc::new(Pacer::new(
            &Rate {
                count: 200,
                per: Duration::from_secs(1),
            },
            1,
            8,
            pacer().retry,
        ));
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        drop(p.permit().await);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // With a burst of 1, the 40th permit comes 39 periods (of 5 ms) after the first at
        // the earliest; noise can only make it later.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(39 * 5),
            "40 permits at 200/s in {took:?}"
        );
        assert_eq!(p.stats.snapshot().requests, 40);
    }

    #[tokio::test]
    async fn rate_limited_holds_everyone() {
        let p = pacer();
        p.rate_limited(Some(Duration::from_millis(120)));
        let t = Instant::now();
        drop(p.permit().await);
        assert!(t.elapsed() >= Duration::from_millis(110));
    }
}
