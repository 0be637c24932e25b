//! What a run shows while it works. Every run counts its step's rows and knows what it is
//! waiting on; on a terminal that is a bar per step (none for a step with nothing to do),
//! elsewhere (cron, CI) a log line every `--progress-every` while a step works, so a slow
//! run can be told from a hung one.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The current step's count, and what it waits on.
#[derive(Default)]
struct Step {
    name: String,
    total: u64,
    started: Option<Instant>,
    /// What the step waits on now (payouts to complete, requests in doubt to settle).
    waiting: Option<String>,
}

pub struct Progress {
    /// Bars on a terminal.
    bars: Option<(MultiProgress, Mutex<Option<ProgressBar>>)>,
    step: Mutex<Step>,
    done: AtomicU64,
}

impl Progress {
    /// A run's progress: with bars on stderr when `bars` (and stderr is a terminal).
    pub fn new(bars: bool) -> Progress {
        use std::io::IsTerminal;
        let bars = (bars && std::io::stderr().is_terminal()).then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(None),
            )
        });
        Progress {
            bars,
            step: Mutex::new(Step::default()),
            done: AtomicU64::new(0),
        }
    }

    /// Whether bars show the progress (else log lines do).
    pub fn has_bars(&self) -> bool {
        self.bars.is_some()
    }

    fn step(&self) -> std::sync::MutexGuard<'_, Step> {
        self.step.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A step with `total` rows to work on (a bar only when there are some).
    pub fn start(&self, step: &str, total: u64) {
        *self.step() = Step {
            name: step.to_string(),
            total,
            started: Some(Instant::now()),
            waiting: None,
        };
        self.done.store(0, Ordering::Relaxed);
        let Some((bars, current)) = &self.bars else {
            return;
        };
        let bar = (total > 0).then(|| {
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} rows {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bars.add(
                ProgressBar::new(total)
                    .with_style(style)
                    .with_prefix(step.to_string()),
            )
        });
        *current.lock().unwrap_or_else(|p| p.into_inner()) = bar;
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some((_, current)) = &self.bars
            && let Some(bar) = current.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            f(bar);
        }
    }

    /// Sets the current step's total (when it becomes known).
    pub fn set_total(&self, total: u64) {
        self.step().total = total;
        self.with_bar(|b| b.set_length(total));
    }

    /// `n` more rows done.
    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        self.with_bar(|b| b.inc(n));
    }

    /// What the step waits on now, or `None` when it works again.
    pub fn waiting(&self, what: Option<String>) {
        let msg = what.clone().unwrap_or_default();
        self.step().waiting = what;
        self.with_bar(|b| b.set_message(msg));
    }

    pub fn finish(&self) {
        self.step().waiting = None;
        if let Some((_, current)) = &self.bars
            && let Some(bar) = current.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            bar.finish();
        }
    }

    /// The line a log shows of the current step: rows done of its total, the rate, about
    /// how long is left, and what it waits on. `None` between steps and for a step with
    /// nothing to do.
    pub fn line(&self) -> Option<String> {
        let step = self.step();
        let started = step.started?;
        if step.total == 0 && step.waiting.is_none() {
            return None;
        }
        let done = self.done.load(Ordering::Relaxed).min(step.total);
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let mut line = format!("{}: {done}/{} rows done", step.name, step.total);
        if done < step.total && rate > 0.0 {
            let left = (step.total - done) as f64 / rate;
            line.push_str(&format!(", {rate:.1} rows/s, about {left:.0} s left"));
        }
        if let Some(w) = &step.waiting {
            line.push_str("; ");
            line.push_str(w);
        }
        Some(line)
    }
}
