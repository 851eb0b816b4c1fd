//! An embed run: texts → batches → backend → store, with checkpoints.
//!
//! Three kinds of threads, joined by bounded channels so memory stays flat:
//!
//! * the **producer** reads the texts of the work list from the CSVs,
//!   sorts each window by length (similar lengths batch well), cuts
//!   batches and prepares them (tokenisation overlaps inference);
//! * **workers** (one per batch the backend takes at once) embed, retry a
//!   failed batch once, and check every vector (count, dimension, finite);
//! * the **committer** (the calling thread) buffers vectors, makes them
//!   durable every `checkpoint_interval` papers as per-year checkpoints, and
//!   folds a year's checkpoints into its year file once the year is done.
//!
//! A crash at any point loses at most the vectors since the last
//! checkpoint; the next writer folds what was committed.

mod progress;
pub mod source;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use papersys_backend_core::{EmbedError, Embedder, Embeddings, PreparedBatch};
use serde::Serialize;

use crate::metadata::{Discovery, Year};
use crate::store::manifest::now_iso;
use crate::store::year_file::{SOURCE, VectorRow};
use crate::store::{StoreError, StoreWriter};
use crate::text::TextHash;
pub use progress::ProgressMode;
pub use source::WorkItem;

/// Texts sorted by length together before being cut into batches.
const SORT_WINDOW: usize = 1024;

/// How a run behaves.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Papers between durable commits.
    pub checkpoint_interval: usize,
    /// How progress is shown.
    pub progress: ProgressMode,
}

/// What happened to one year in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct YearOutcome {
    /// Papers given a vector.
    pub embedded: u64,
    /// Papers the backend failed on.
    pub failed: u64,
    /// Papers whose row was gone from the CSV when the run read it.
    pub not_found: u64,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    /// Per year.
    pub years: BTreeMap<Year, YearOutcome>,
    /// Ids the backend failed on (they wait as `embedding_failed`).
    pub failed_ids: BTreeSet<String>,
    /// The first few backend errors, for the summary.
    pub errors: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Stopped early by SIGINT/SIGTERM: what was embedded is checkpointed
    /// (folded into the year files by the next writer), the rest waits.
    pub interrupted: bool,
}

impl RunOutcome {
    /// Papers given a vector.
    pub fn embedded(&self) -> u64 {
        self.years.values().map(|y| y.embedded).sum()
    }

    /// Papers the backend failed on.
    pub fn failed(&self) -> u64 {
        self.years.values().map(|y| y.failed).sum()
    }
}

struct BatchItem {
    work: usize,
    hash: TextHash,
}

struct Batch {
    items: Vec<BatchItem>,
    prepared: PreparedBatch,
}

enum Event {
    Embedded(Vec<BatchItem>, Embeddings),
    Failed(Vec<BatchItem>, String),
    /// The producer queued every paper of this year it will queue.
    YearQueued(Year, usize),
    /// Work items whose rows were not found.
    NotFound(Vec<usize>),
}

/// Embeds `work` with `embedder` into the store behind `writer`.
///
/// Returns once every paper is embedded or failed; a store error (disk
/// full, permissions) stops the run at once, with everything committed so
/// far kept. After [`crate::interrupt::requested`] no new batch is taken:
/// the batches in flight finish, everything embedded is checkpointed, and
/// the outcome says `interrupted`.
pub fn run(
    writer: &StoreWriter,
    embedder: &dyn Embedder,
    discovery: &Discovery,
    work: &[WorkItem],
    years_with_repeats: &BTreeSet<Year>,
    options: RunOptions,
) -> Result<RunOutcome, StoreError> {
    let started = Instant::now();
    let hint = embedder.batching();
    let workers = hint.max_in_flight.max(1);
    let batch_size = hint.batch_size.max(1);
    let (batch_tx, batch_rx) = bounded::<Batch>(workers + 1);
    let (event_tx, event_rx) = bounded::<Event>(workers * 4 + 16);
    let stop = AtomicBool::new(false);
    let identity = embedder.identity();

    std::thread::scope(|scope| {
        let producer_events = event_tx.clone();
        let stop_ref = &stop;
        scope.spawn(move || {
            produce(
                discovery,
                work,
                years_with_repeats,
                embedder,
                batch_size,
                stop_ref,
                &batch_tx,
                &producer_events,
            )
        });
        for _ in 0..workers {
            let batch_rx = batch_rx.clone();
            let event_tx = event_tx.clone();
            scope.spawn(move || embed_batches(embedder, &batch_rx, &event_tx, stop_ref));
        }
        drop(event_tx);
        drop(batch_rx);
        let result = commit(writer, identity, work, &event_rx, options, &stop);
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
            // Unblock the other threads so the scope can end.
            while event_rx.recv().is_ok() {}
        }
        result.map(|mut outcome| {
            outcome.elapsed = started.elapsed();
            outcome
        })
    })
}

#[allow(clippy::too_many_arguments)]
fn produce(
    discovery: &Discovery,
    work: &[WorkItem],
    years_with_repeats: &BTreeSet<Year>,
    embedder: &dyn Embedder,
    batch_size: usize,
    stop: &AtomicBool,
    batch_tx: &Sender<Batch>,
    events: &Sender<Event>,
) {
    let prefix = embedder.identity().document_prefix.clone();
    // Both callbacks below touch the window and the counts, one at a time.
    let window: RefCell<Vec<(usize, String)>> = RefCell::new(Vec::with_capacity(SORT_WINDOW));
    let queued: RefCell<HashMap<Year, usize>> = RefCell::new(HashMap::new());
    let send_window = |window: &mut Vec<(usize, String)>| {
        // Longest first, like sentence-transformers: similar lengths share a batch.
        window.sort_by_key(|(_, text)| std::cmp::Reverse(text.len()));
        let mut drained = std::mem::take(window).into_iter().peekable();
        while drained.peek().is_some() {
            let chunk: Vec<(usize, String)> = drained.by_ref().take(batch_size).collect();
            let items: Vec<BatchItem> = chunk
                .iter()
                .map(|(work, text)| BatchItem {
                    work: *work,
                    hash: TextHash::of_text(&prefix, text),
                })
                .collect();
            let texts: Vec<String> = chunk.into_iter().map(|(_, text)| text).collect();
            let sent = match embedder.prepare(texts) {
                Ok(prepared) => batch_tx.send(Batch { items, prepared }).is_ok(),
                Err(e) => events.send(Event::Failed(items, e.to_string())).is_ok(),
            };
            if !sent || stop.load(Ordering::Relaxed) || crate::interrupt::requested() {
                return;
            }
        }
    };
    let (missing, issues) = source::read_texts(
        discovery,
        work,
        years_with_repeats,
        &|| stop.load(Ordering::Relaxed) || crate::interrupt::requested(),
        |index, text| {
            *queued.borrow_mut().entry(work[index].year).or_insert(0) += 1;
            let mut window = window.borrow_mut();
            window.push((index, text));
            if window.len() >= SORT_WINDOW {
                send_window(&mut window);
            }
        },
        |year| {
            send_window(&mut window.borrow_mut());
            let count = queued.borrow().get(&year).copied().unwrap_or(0);
            let _ = events.send(Event::YearQueued(year, count));
        },
    );
    for issue in issues {
        tracing::debug!("{issue}");
    }
    if !missing.is_empty() {
        let _ = events.send(Event::NotFound(missing));
    }
}

fn embed_batches(
    embedder: &dyn Embedder,
    batches: &Receiver<Batch>,
    events: &Sender<Event>,
    stop: &AtomicBool,
) {
    let dimension = embedder.identity().dimension;
    for batch in batches.iter() {
        if stop.load(Ordering::Relaxed) || crate::interrupt::requested() {
            return;
        }
        let attempt = || -> Result<Embeddings, EmbedError> {
            // A backend bug on one odd batch must cost that batch, not the run.
            let vectors =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| embedder.embed(&batch.prepared)))
                    .unwrap_or_else(|panic| {
                        let what = crate::panic_message(panic.as_ref());
                        Err(EmbedError::Inference(format!("the backend panicked: {what}")))
                    })?;
            vectors.validate(batch.items.len(), dimension)?;
            Ok(vectors)
        };
        let event = match attempt() {
            Ok(vectors) => {
                crate::fault::point("embed.after_batch");
                Event::Embedded(batch.items, vectors)
            }
            Err(first) => {
                tracing::warn!(
                    "a batch of {} papers failed ({first}); retrying once",
                    batch.items.len()
                );
                match attempt() {
                    Ok(vectors) => Event::Embedded(batch.items, vectors),
                    Err(second) => Event::Failed(batch.items, second.to_string()),
                }
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// The committer's bookkeeping.
struct Committer<'a> {
    writer: &'a StoreWriter,
    identity: &'a papersys_backend_core::ModelIdentity,
    work: &'a [WorkItem],
    buffers: BTreeMap<Year, Vec<VectorRow>>,
    buffered: usize,
    checkpoint_interval: usize,
    run_tag: String,
    checkpoints: u64,
    /// Papers queued per year (known once the producer is done with it).
    queued: HashMap<Year, usize>,
    settled: HashMap<Year, usize>,
    folded: BTreeSet<Year>,
    outcome: RunOutcome,
}

impl Committer<'_> {
    fn checkpoint(&mut self, only: Option<Year>) -> Result<(), StoreError> {
        let years: Vec<Year> = match only {
            Some(year) => vec![year],
            None => self.buffers.keys().copied().collect(),
        };
        for year in years {
            let Some(rows) = self.buffers.remove(&year) else {
                continue;
            };
            if rows.is_empty() {
                continue;
            }
            self.buffered -= rows.len();
            self.checkpoints += 1;
            let tag = format!("{}-{:06}", self.run_tag, self.checkpoints);
            self.writer.write_checkpoint(year, &tag, rows, self.identity)?;
            crate::fault::point("checkpoint.after_write");
        }
        Ok(())
    }

    fn settle(&mut self, year: Year, n: usize) -> Result<(), StoreError> {
        *self.settled.entry(year).or_insert(0) += n;
        self.fold_if_done(year)
    }

    fn fold_if_done(&mut self, year: Year) -> Result<(), StoreError> {
        let done = self
            .queued
            .get(&year)
            .is_some_and(|&queued| self.settled.get(&year).copied().unwrap_or(0) >= queued);
        if done && !self.folded.contains(&year) {
            self.checkpoint(Some(year))?;
            self.writer.fold_year(year, Some(self.identity))?;
            self.folded.insert(year);
        }
        Ok(())
    }
}

fn commit(
    writer: &StoreWriter,
    identity: &papersys_backend_core::ModelIdentity,
    work: &[WorkItem],
    events: &Receiver<Event>,
    options: RunOptions,
    stop: &AtomicBool,
) -> Result<RunOutcome, StoreError> {
    let mut committer = Committer {
        writer,
        identity,
        work,
        buffers: BTreeMap::new(),
        buffered: 0,
        checkpoint_interval: options.checkpoint_interval.max(1),
        run_tag: jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%S%.3fZ")
            .to_string()
            .replace('.', ""),
        checkpoints: 0,
        queued: HashMap::new(),
        settled: HashMap::new(),
        folded: BTreeSet::new(),
        outcome: RunOutcome::default(),
    };
    let mut progress = progress::Progress::new(writer.alias.as_str(), work.len() as u64, options.progress);
    for event in events.iter() {
        match event {
            Event::Embedded(items, vectors) => {
                let generated_at = now_iso();
                let mut per_year: HashMap<Year, usize> = HashMap::new();
                for (item, vector) in items.iter().zip(vectors.rows()) {
                    let paper = &committer.work[item.work];
                    committer.buffers.entry(paper.year).or_default().push(VectorRow {
                        paper_id: paper.paper_id.clone(),
                        embedding: vector.to_vec(),
                        generated_at: generated_at.clone(),
                        source: SOURCE.to_string(),
                        text_hash: Some(item.hash),
                    });
                    committer.outcome.years.entry(paper.year).or_default().embedded += 1;
                    *per_year.entry(paper.year).or_insert(0) += 1;
                }
                committer.buffered += items.len();
                progress.advance(
                    items.len() as u64,
                    items.first().map(|i| committer.work[i.work].year),
                );
                if committer.buffered >= committer.checkpoint_interval {
                    committer.checkpoint(None)?;
                }
                for (year, n) in per_year {
                    committer.settle(year, n)?;
                }
            }
            Event::Failed(items, error) => {
                progress.note(&format!("{} papers failed: {error}", items.len()));
                if committer.outcome.errors.len() < 5 {
                    committer.outcome.errors.push(error);
                }
                let mut per_year: HashMap<Year, usize> = HashMap::new();
                for item in &items {
                    let paper = &committer.work[item.work];
                    committer.outcome.failed_ids.insert(paper.paper_id.clone());
                    committer.outcome.years.entry(paper.year).or_default().failed += 1;
                    *per_year.entry(paper.year).or_insert(0) += 1;
                }
                progress.advance(items.len() as u64, None);
                for (year, n) in per_year {
                    committer.settle(year, n)?;
                }
            }
            Event::YearQueued(year, count) => {
                committer.queued.insert(year, count);
                committer.fold_if_done(year)?;
            }
            Event::NotFound(indices) => {
                for index in &indices {
                    committer
                        .outcome
                        .years
                        .entry(committer.work[*index].year)
                        .or_default()
                        .not_found += 1;
                }
                progress.note(&format!(
                    "{} papers were not found in their CSV any more (it changed during the run); they stay in the backlog",
                    indices.len()
                ));
                progress.advance(indices.len() as u64, None);
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    // Whatever is left (a year whose count never arrived because the
    // producer stopped early) is committed and folded all the same; after
    // an interrupt only committed, so that the process ends promptly (the
    // next writer folds the checkpoints).
    committer.checkpoint(None)?;
    committer.outcome.interrupted = crate::interrupt::requested();
    if !committer.outcome.interrupted {
        for year in crate::store::checkpoint::list(&writer.dir)?.into_keys() {
            writer.fold_year(year, Some(identity))?;
        }
        writer.clear_checkpoints()?;
    }
    progress.finish();
    Ok(committer.outcome)
}
