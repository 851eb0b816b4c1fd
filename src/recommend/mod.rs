//! The recommender: learns from the user's likes and dislikes (and a
//! background sample) with a logistic regression over the stored vectors,
//! scores the recent papers and picks the few to show.
//!
//! Data flows one way: preferences + metadata -> who is needed
//! ([`features`] streams their vectors) -> [`logreg`] -> scores ->
//! [`select`] -> [`output`]. The command that strings them together is
//! `crate::commands::recommend`.

pub mod config;
pub mod features;
pub mod logreg;
pub mod output;
pub mod papers;
pub mod select;

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::prefs::PrefsError;

/// Why a recommendation run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    /// No likes recorded.
    #[error(
        "no liked papers in {} yet, so there is nothing to learn from; add some with \
         `papersys prefs add PAPER_ID... --like` or import your Zotero library with `papersys prefs import FILE.csv`",
        .dir.display()
    )]
    NoLikes {
        /// The preference directory.
        dir: PathBuf,
    },
    /// Likes exist but none has vectors in every model.
    #[error(
        "none of your {likes} liked papers has a usable vector in every model ({models}); \
         embed them first (`papersys embed --all-models`)"
    )]
    LikesWithoutVectors {
        /// Likes recorded.
        likes: usize,
        /// Aliases.
        models: String,
    },
    /// Nothing to learn against.
    #[error(
        "the training set has a single class: {likes} likes, but no dislikes and no background papers \
         (categories {categories}, dates from {since} on, not rated, with vectors); \
         widen `recommend_pipeline.data.categories`, lower `background_start_year`, or record some dislikes"
    )]
    SingleClass {
        /// Likes used.
        likes: usize,
        /// Configured categories.
        categories: String,
        /// First background year.
        since: i32,
    },
    /// No candidate in the window.
    #[error(
        "no papers to recommend in {window}: the metadata holds {in_window} papers dated in it, \
         {in_categories} of them in the categories {categories}, {rated} already rated, \
         {without_vectors} without a usable vector; choose another window (--last-n-days N, or --from/--until), \
         widen the categories, or ingest and embed newer papers"
    )]
    NoCandidates {
        /// The window, in words.
        window: String,
        /// Papers of any category dated in the window.
        in_window: usize,
        /// Of those, in the categories.
        in_categories: usize,
        /// Of those, rated.
        rated: usize,
        /// Of the rest, lacking vectors.
        without_vectors: usize,
        /// Configured categories.
        categories: String,
    },
    /// The config section.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The preference store.
    #[error(transparent)]
    Prefs(#[from] PrefsError),
    /// The vectors.
    #[error(transparent)]
    Features(#[from] features::FeatureError),
    /// The solver.
    #[error("training failed: {0}")]
    Fit(#[from] logreg::FitError),
    /// Writing the run failed.
    #[error("cannot write the run into {}: {source}", .dir.display())]
    Write {
        /// The output directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl RecommendError {
    /// The exit code: 2 for config and usage errors, 1 for everything the
    /// data or the machine caused.
    pub fn exit_code(&self) -> i32 {
        match self {
            RecommendError::Config(_) => crate::error::EXIT_USAGE,
            RecommendError::Prefs(e) if e.is_usage() => crate::error::EXIT_USAGE,
            _ => crate::error::EXIT_FAILURE,
        }
    }
}
