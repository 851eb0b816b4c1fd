//! Telling the user how a run goes: a progress bar on a terminal, a plain
//! log line every 30 s otherwise (nightly jobs log to files), nothing with
//! `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::metadata::Year;

/// Time between plain progress lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, periodic lines otherwise.
    Auto,
    /// Nothing but warnings.
    Quiet,
}

/// Progress of one model's run.
pub(crate) struct Progress {
    alias: String,
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
    year: Option<Year>,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    pub(crate) fn new(alias: &str, total: u64, mode: ProgressMode) -> Progress {
        let quiet = mode == ProgressMode::Quiet;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} papers  {rate}  ETA {left}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate_text(state.pos(), state.elapsed()));
            })
            .with_key("left", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let total = state.len().unwrap_or(0);
                let _ = w.write_str(&eta_text(state.pos(), total, state.elapsed()));
            })
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(alias.to_string());
            bar
        });
        Progress {
            alias: alias.to_string(),
            total,
            done: 0,
            started: Instant::now(),
            last_log: Instant::now(),
            year: None,
            bar,
            quiet,
        }
    }

    /// `n` more papers settled; `year` is the year being worked on.
    pub(crate) fn advance(&mut self, n: u64, year: Option<Year>) {
        self.done += n;
        if let Some(year) = year
            && self.year != Some(year)
        {
            self.year = Some(year);
            if let Some(bar) = &self.bar {
                bar.set_message(format!("year {year}"));
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        } else if !self.quiet && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let elapsed = self.started.elapsed();
            let rate = rate_text(self.done, elapsed);
            let eta = eta_text(self.done, self.total, elapsed);
            let year = self.year.map(|y| format!(", year {y}")).unwrap_or_default();
            tracing::info!(
                "{}: {}/{} papers ({rate}, ETA {eta}{year})",
                self.alias,
                self.done,
                self.total
            );
        }
    }

    /// A warning that must not garble the bar.
    pub(crate) fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| tracing::warn!("{}: {message}", self.alias)),
            None => tracing::warn!("{}: {message}", self.alias),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Papers per second, rounded for reading: one decimal below 100/s.
fn rate_text(done: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if done == 0 || seconds <= 0.0 {
        return "-- papers/s".into();
    }
    let rate = done as f64 / seconds;
    if rate < 100.0 {
        format!("{rate:.1} papers/s")
    } else {
        format!("{rate:.0} papers/s")
    }
}

/// Time left at the average rate so far; unknown until a paper is done.
fn eta_text(done: u64, total: u64, elapsed: Duration) -> String {
    if done == 0 {
        return "unknown".into();
    }
    let left = total.saturating_sub(done) as f64 * elapsed.as_secs_f64() / done as f64;
    let left = left.round() as u64;
    match left {
        0..60 => format!("{left} s"),
        60..3600 => format!("{} min {:02} s", left / 60, left % 60),
        _ => format!("{} h {:02} min", left / 3600, left % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_rounded_and_eta_is_unknown_before_the_first_paper() {
        assert_eq!(rate_text(0, Duration::from_secs(3)), "-- papers/s");
        assert_eq!(rate_text(10, Duration::from_secs(3)), "3.3 papers/s");
        assert_eq!(rate_text(1000, Duration::from_secs(3)), "333 papers/s");
        assert_eq!(eta_text(0, 100, Duration::ZERO), "unknown");
        assert_eq!(eta_text(0, 100, Duration::from_secs(5)), "unknown");
        assert_eq!(eta_text(50, 100, Duration::from_secs(10)), "10 s");
        assert_eq!(eta_text(10, 100, Duration::from_secs(10)), "1 min 30 s");
        assert_eq!(eta_text(1, 1000, Duration::from_secs(10)), "2 h 46 min");
        assert_eq!(eta_text(100, 100, Duration::from_secs(10)), "0 s");
    }
}
