//! What a run shows while it works: progress bars per step on a terminal; on anything
//! else (cron, CI) nothing here — the `tracing` lines say what happened.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;

pub struct Progress {
    bars: MultiProgress,
    current: Mutex<Option<ProgressBar>>,
}

impl Progress {
    /// Bars on stderr, when it is a terminal.
    pub fn for_terminal() -> Option<Progress> {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal().then(|| Progress {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            current: Mutex::new(None),
        })
    }

    /// A bar for a step with `total` items to work on.
    pub fn start(&self, step: &str, total: u64) {
        let style =
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let bar = self.bars.add(
            ProgressBar::new(total)
                .with_style(style)
                .with_prefix(step.to_string()),
        );
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }

    /// Sets the current bar's total (when it becomes known).
    pub fn set_total(&self, total: u64) {
        if let Some(bar) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            bar.set_length(total);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(bar) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            bar.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            bar.finish();
        }
    }
}
