//! Pacing: one GCRA limiter per provider credential (a permit for every attempt, retries
//! and polls included) under a sliding window that never lets more than the rate's count
//! through in its span, a cap on requests in flight, and retry timing — exponential with
//! full jitter from `backon`, never shorter than a `Retry-After`. After a 429 every sender
//! holds off until the provider's `Retry-After` has passed, then the pace resumes a
//! twentieth slower and recovers over ten seconds.

use crate::job::{Rate, Retry};
use backon::{BackoffBuilder, ExponentialBuilder};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::VecDeque;
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
    /// Time spent waiting for requests in doubt to settle, in milliseconds.
    pub settle_ms: AtomicU64,
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
            settle_ms: self.settle_ms.load(Ordering::Relaxed),
        }
    }
}

/// A wait for the limiter's next permit ends this early and spins the rest: a sleeping
/// task wakes 0.2–0.4 ms late, and with a burst of 1 every permit granted late is time
/// lost for good (the next one is due a full period after it): at 50/s, 2% of the rate.
/// A larger burst lets the permits after a late one catch up.
const SPIN: Duration = Duration::from_micros(500);

/// A span and a hundredth: the pacer's margin under a provider's limit (see `Pacer::new`).
fn with_margin(d: Duration) -> Duration {
    d + d / 100
}

/// The most grants the window keeps; a rate with a larger count is checked over a
/// proportionally shorter span.
const MAX_WINDOW: u32 = 10_000;

/// After a 429 the window's span is this much longer (the pace this much slower)...
const SLOWDOWN: f64 = 0.05;
/// ...at most this much, when 429s keep coming (each one during a recovery doubles it)...
const MAX_SLOWDOWN: f64 = 0.5;
/// ...and it recovers evenly over this long.
const RECOVERY: Duration = Duration::from_secs(10);
/// 429s this close to the last one answer the same requests (those in flight when the
/// provider's window filled): they slow the pace once.
const SAME_429: Duration = Duration::from_secs(1);

/// The times of the last `count` grants, so that no span of `span` holds more than `count`.
struct Window {
    span: Duration,
    count: usize,
    grants: VecDeque<std::time::Instant>,
    /// The last 429 and how much it lengthened the span then.
    slowed: Option<(std::time::Instant, f64)>,
}

impl Window {
    /// `count` grants per `per`, with the pacer's 1% margin on the span.
    fn new(rate: &Rate) -> Window {
        let count = rate.count.clamp(1, MAX_WINDOW);
        let span = rate
            .per
            .mul_f64(f64::from(count) / f64::from(rate.count.max(1)));
        Window {
            span: with_margin(span),
            count: count as usize,
            grants: VecDeque::with_capacity(count as usize),
            slowed: None,
        }
    }

    /// How much longer than `span` the span is at `now`: what is left of a 429's slowdown.
    fn slowdown(&self, now: std::time::Instant) -> f64 {
        let Some((at, by)) = self.slowed else {
            return 0.0;
        };
        let left = 1.0 - now.saturating_duration_since(at).as_secs_f64() / RECOVERY.as_secs_f64();
        by * left.max(0.0)
    }

    /// A 429: the provider counts more than the pace lets through (its window, the
    /// network's delays). The pace slows by a twentieth, or by twice what is left of the
    /// last slowdown, and recovers over [`RECOVERY`].
    fn slow_down(&mut self, now: std::time::Instant) {
        if let Some((at, _)) = self.slowed
            && now.saturating_duration_since(at) < SAME_429
        {
            return;
        }
        let by = (2.0 * self.slowdown(now)).clamp(SLOWDOWN, MAX_SLOWDOWN);
        self.slowed = Some((now, by));
    }

    /// How long from `now` until a grant leaves at most `count` in any span; zero if now.
    fn wait(&self, now: std::time::Instant) -> Duration {
        match self.grants.front() {
            Some(&oldest) if self.grants.len() >= self.count => {
                let span = self.span.mul_f64(1.0 + self.slowdown(now));
                (oldest + span).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    fn grant(&mut self, now: std::time::Instant) {
        if self.grants.len() >= self.count {
            self.grants.pop_front();
        }
        self.grants.push_back(now);
    }
}

/// How many items' intents are committed together: about 50 ms of sending at the job's
/// rate, at least two per request slot and at most 1,024.
///
/// One chunk is sent while the next one's intents are committed, so a chunk must outlast
/// a commit (an fsync). And after a crash, up to two chunks may be in flight without
/// having been sent, each to be looked up before it is sent again: at a low rate, a fixed
/// large chunk would cost minutes of lookups. Without a rate limit, many items share each
/// fsync (bench/README.md has what that saves).
pub fn intent_chunk(rate: &Rate, concurrency: u32) -> usize {
    let per_second = f64::from(rate.count) / rate.per.as_secs_f64().max(1e-9);
    let floor = 2 * concurrency.max(1) as usize;
    // Saturating: a huge rate gives the cap.
    ((per_second * 0.05) as usize).clamp(floor.min(1024), 1024)
}

pub struct Pacer {
    limiter: DefaultDirectRateLimiter,
    window: Mutex<Window>,
    /// One task at a time waits for the limiter (so one at most spins), in the order
    /// they came.
    pace: tokio::sync::Mutex<()>,
    in_flight: Semaphore,
    intent_chunk: usize,
    retry: Retry,
    hold_until: Mutex<Option<Instant>>,
    pub stats: Stats,
}

impl Pacer {
    pub fn new(rate: &Rate, burst: u32, concurrency: u32, retry: Retry) -> Pacer {
        // A permit every period and a hundredth: paced exactly at a provider's limit,
        // requests that leave a little late and then on time (the network, the scheduler)
        // would put one too many in a window now and then, and a 429 holds every sender.
        //
        // The window makes the rate a hard cap, whatever the burst: never more than
        // `count` in any `per` (and the margin). The limiter alone would let a burst
        // come on top of a full window's worth (a burst of 5 at 50/s: 54 in a second).
        let period = rate.per / rate.count.max(1);
        let period = with_margin(period);
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a positive period")
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least one"));
        Pacer {
            limiter: RateLimiter::direct(quota),
            window: Mutex::new(Window::new(rate)),
            pace: tokio::sync::Mutex::new(()),
            in_flight: Semaphore::new(concurrency.max(1) as usize),
            intent_chunk: intent_chunk(rate, concurrency),
            retry,
            hold_until: Mutex::new(None),
            stats: Stats::default(),
        }
    }

    /// How many items' intents are committed at once (see [`intent_chunk`]).
    pub fn intent_chunk(&self) -> usize {
        self.intent_chunk
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
        if self.try_grant().is_err() {
            let _turn = self.pace.lock().await;
            while let Err(wait) = self.try_grant() {
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

    /// Takes a permit if the limiter and the window both have one now; else how long
    /// to wait before asking again.
    fn try_grant(&self) -> Result<(), Duration> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let wait = window.wait(now);
        if !wait.is_zero() {
            return Err(wait);
        }
        match self.limiter.check() {
            Ok(()) => {
                window.grant(now);
                Ok(())
            }
            Err(not_until) => Err(not_until.wait_time_from(now)),
        }
    }

    /// After a 429: nobody sends again before `retry_after` (1 s when the provider gave none).
    pub fn rate_limited(&self, retry_after: Option<Duration>) {
        Stats::add(&self.stats.rate_limited);
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slow_down(std::time::Instant::now());
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

    #[test]
    fn intents_are_committed_for_about_50_ms_of_sending() {
        let rate = |count, secs| Rate {
            count,
            per: Duration::from_secs(secs),
        };
        // No real limit: the cap, many intents to one fsync.
        assert_eq!(intent_chunk(&rate(1_000_000, 1), 8), 1024);
        assert_eq!(intent_chunk(&rate(10_000, 1), 8), 500);
        // A slow provider: two per request slot, so few rows are left in doubt by a crash.
        assert_eq!(intent_chunk(&rate(50, 1), 8), 16);
        assert_eq!(intent_chunk(&rate(100, 1), 32), 64);
        assert_eq!(intent_chunk(&rate(600, 60), 1), 2);
        // A concurrency beyond the cap keeps the cap.
        assert_eq!(intent_chunk(&rate(10, 1), 4000), 1024);
    }

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

    /// Takes `each` permits on each of `tasks` tasks at once; how long they all took.
    async fn take_permits(p: &std::sync::Arc<Pacer>, tasks: usize, each: usize) -> Duration {
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..tasks)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    for _ in 0..each {
                        drop(p.permit().await);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        started.elapsed()
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
        let took = take_permits(&p, 8, 5).await;
        // With a burst of 1, the 40th permit comes 39 periods (of 5 ms) after the first at
        // the earliest; noise can only make it later.
        assert!(
            took >= Duration::from_millis(39 * 5),
            "40 permits at 200/s in {took:?}"
        );
        assert_eq!(p.stats.snapshot().requests, 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_never_takes_the_count_over_the_rate() {
        // 10 per 200 ms with a burst of 5. The limiter alone would grant 5 at once and
        // then one every 20.2 ms: the 21st after 323 ms. No 200 ms may hold more than
        // 10 though, so the 11th waits for the span after the 1st, and the 21st for the
        // span after the 11th: 2 × 202 ms at the earliest.
        let rate = Rate {
            count: 10,
            per: Duration::from_millis(200),
        };
        let p = std::sync::Arc::new(Pacer::new(&rate, 5, 8, pacer().retry));
        let took = take_permits(&p, 3, 7).await;
        assert!(took >= Duration::from_millis(404), "21 permits in {took:?}");
        assert_eq!(p.stats.snapshot().requests, 21);
    }

    #[test]
    fn the_window_holds_at_most_count_grants_in_its_span() {
        let ms = Duration::from_millis;
        let rate = Rate {
            count: 3,
            per: Duration::from_secs(1),
        };
        let mut w = Window::new(&rate);
        let t0 = std::time::Instant::now();
        for at in [0, 100, 200] {
            assert_eq!(w.wait(t0 + ms(at)), Duration::ZERO);
            w.grant(t0 + ms(at));
        }
        // The span is a second and 1%: the 4th grant waits for 1010 ms after the 1st.
        assert_eq!(w.wait(t0 + ms(300)), ms(710));
        assert_eq!(w.wait(t0 + ms(1010)), Duration::ZERO);
        w.grant(t0 + ms(1010));
        assert_eq!(w.wait(t0 + ms(1020)), ms(90));
        // A large count is checked over a shorter span: 10,000 per 10.1 ms at 1M/s.
        let fast = Window::new(&Rate {
            count: 1_000_000,
            per: Duration::from_secs(1),
        });
        assert_eq!(
            (fast.count, fast.span),
            (10_000, Duration::from_micros(10_100))
        );
    }

    #[test]
    fn after_a_429_the_window_slows_by_a_twentieth_and_recovers() {
        let ms = Duration::from_millis;
        let mut w = Window::new(&Rate {
            count: 2,
            per: Duration::from_secs(1),
        });
        let t0 = std::time::Instant::now();
        w.grant(t0);
        w.grant(t0);
        assert_eq!(w.wait(t0), ms(1010));
        w.slow_down(t0);
        // 1010 ms and a twentieth.
        assert_eq!(w.wait(t0), ms(1060) + Duration::from_micros(500));
        // Half recovered after half the recovery time; whole after all of it.
        let half = t0 + RECOVERY / 2;
        assert_eq!(w.wait(half), Duration::ZERO);
        assert_eq!(w.slowdown(half), SLOWDOWN / 2.0);
        assert_eq!(w.slowdown(t0 + RECOVERY), 0.0);
        // 429s that come together (the requests in flight when the provider's window
        // filled) slow it once.
        w.slow_down(t0 + ms(300));
        assert!((w.slowdown(t0 + ms(300)) - SLOWDOWN * 0.97).abs() < 1e-12);
        // 429 after 429, a second or more apart: twice what is left each time, up to half
        // again as slow.
        let second = t0 + Duration::from_secs(1);
        w.slow_down(second);
        assert!((w.slowdown(second) - 2.0 * SLOWDOWN * 0.9).abs() < 1e-9);
        for s in 2..10 {
            w.slow_down(t0 + Duration::from_secs(s));
        }
        assert_eq!(w.slowdown(t0 + Duration::from_secs(9)), MAX_SLOWDOWN);
        // A 429 long after the last starts again from a twentieth.
        let later = t0 + RECOVERY * 4;
        w.slow_down(later);
        assert_eq!(w.slowdown(later), SLOWDOWN);
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
