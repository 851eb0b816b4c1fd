//! Telling the user how a run goes: a progress bar on a terminal, a plain
//! log line every 30 s otherwise (nightly jobs log to files), nothing with
//! `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
                "{prefix} [{bar:30}] {pos}/{len} papers  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
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
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let eta = if rate > 0.0 {
                format!("{:.0} s", (self.total.saturating_sub(self.done)) as f64 / rate)
            } else {
                "unknown".into()
            };
            let year = self.year.map(|y| format!(", year {y}")).unwrap_or_default();
            tracing::info!(
                "{}: {}/{} papers ({rate:.1}/s, ETA {eta}{year})",
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
