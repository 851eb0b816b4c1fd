//! One year's metadata against its year file: which papers wait, and why.

use std::collections::{BTreeMap, BTreeSet};

use super::index::MetadataPaper;
use crate::metadata::{MetadataFile, Year};
use crate::store::backlog::{BacklogRow, MissingReason};
use crate::store::year_file::YearIds;

/// Compares a year's metadata with its year file.
pub(crate) fn diff_year(
    year: Year,
    papers: &[MetadataPaper],
    files: &[&MetadataFile],
    stored: Option<&YearIds>,
    failed: &BTreeSet<&str>,
) -> Vec<BacklogRow> {
    let mut rows = Vec::new();
    let mut j = 0;
    for paper in papers {
        let reason = match stored {
            None if paper.empty => Some(MissingReason::EmptyText),
            None => Some(MissingReason::MissingEmbeddingFile),
            Some(stored) => {
                while j < stored.ids.len() && stored.ids[j].as_str() < &*paper.paper_id {
                    j += 1;
                }
                let present = j < stored.ids.len() && stored.ids[j].as_str() == &*paper.paper_id;
                if !present {
                    Some(if paper.empty {
                        MissingReason::EmptyText
                    } else {
                        MissingReason::MissingEmbedding
                    })
                } else {
                    match stored.hashes[j] {
                        // An empty text cannot be embedded again: keep the old vector.
                        Some(hash) if hash != paper.hash && !paper.empty => {
                            Some(MissingReason::StaleEmbedding)
                        }
                        _ => None,
                    }
                }
            }
        };
        if let Some(mut reason) = reason {
            if reason.is_embeddable() && failed.contains(&*paper.paper_id) {
                reason = MissingReason::EmbeddingFailed;
            }
            rows.push(BacklogRow {
                paper_id: paper.paper_id.to_string(),
                reason,
                origin: files[paper.origin].origin.clone(),
                year,
            });
        }
    }
    rows
}

pub(crate) fn count_reasons(rows: &[BacklogRow]) -> BTreeMap<MissingReason, u64> {
    let mut waiting = BTreeMap::new();
    for row in rows {
        *waiting.entry(row.reason).or_insert(0) += 1;
    }
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::TextHash;

    fn paper(id: &str, text: &str) -> MetadataPaper {
        MetadataPaper {
            paper_id: id.into(),
            hash: TextHash::of_text("", text),
            empty: text.is_empty(),
            origin: 0,
            updated: crate::store::cache::NO_UPDATED_AT,
        }
    }

    fn reasons(rows: &[BacklogRow]) -> Vec<(&str, MissingReason)> {
        rows.iter().map(|r| (r.paper_id.as_str(), r.reason)).collect()
    }

    #[test]
    fn every_reason_is_given_where_it_applies() {
        let year = Year::parse("2024").unwrap();
        let file = MetadataFile {
            path: "m.csv".into(),
            origin: "metadata/m.csv".into(),
            year,
        };
        let papers = [
            paper("1", "current"),
            paper("2", "edited"),
            paper("3", "missing"),
            paper("4", ""),
            paper("5", "failed before"),
            paper("6", "no hash stored"),
        ];
        let stored = YearIds {
            ids: vec!["1".into(), "2".into(), "6".into()],
            hashes: vec![
                Some(TextHash::of_text("", "current")),
                Some(TextHash::of_text("", "original")),
                None,
            ],
        };
        let failed: BTreeSet<&str> = ["5"].into();
        let rows = diff_year(year, &papers, &[&file], Some(&stored), &failed);
        assert_eq!(
            reasons(&rows),
            [
                ("2", MissingReason::StaleEmbedding),
                ("3", MissingReason::MissingEmbedding),
                ("4", MissingReason::EmptyText),
                ("5", MissingReason::EmbeddingFailed),
            ]
        );
        assert!(
            rows.iter()
                .all(|r| r.origin == "metadata/m.csv" && r.year == year)
        );

        let without_file = diff_year(year, &papers[..4], &[&file], None, &BTreeSet::new());
        assert_eq!(
            reasons(&without_file),
            [
                ("1", MissingReason::MissingEmbeddingFile),
                ("2", MissingReason::MissingEmbeddingFile),
                ("3", MissingReason::MissingEmbeddingFile),
                ("4", MissingReason::EmptyText),
            ]
        );
        let counts = count_reasons(&without_file);
        assert_eq!(counts[&MissingReason::MissingEmbeddingFile], 3);
        assert_eq!(counts[&MissingReason::EmptyText], 1);
    }
}
