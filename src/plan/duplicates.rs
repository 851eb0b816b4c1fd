//! One paper, one year. A paper whose metadata has rows in several years
//! (another tool filed it twice, or a move left a copy behind) belongs to
//! exactly one of them: the year of its newest row, by `updated_at`
//! compared as instants (empty or unreadable is the oldest), the later year
//! on a tie. That year's row gives the text and that year's file holds the
//! paper's one vector; the other years' rows are not used, and the paper is
//! planned, counted and warned about once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use super::index::{MetadataPaper, year_metadata};
use crate::metadata::{Discovery, InputIssue, MetadataFile, Year};
use crate::store::cache::CrossYearPaper;

/// Papers named in a warning before "and N more".
const NAMED_IN_WARNING: usize = 5;

/// One year's de-duplicated metadata.
pub(crate) struct YearMetadata {
    /// The year.
    pub(crate) year: Year,
    /// Its papers, sorted by id, unique (the last row of an id wins).
    pub(crate) papers: Vec<MetadataPaper>,
    /// Rows read.
    pub(crate) rows: u64,
    /// Rows naming a paper already seen in the year.
    pub(crate) duplicates: u64,
    /// Problems found while reading.
    pub(crate) issues: Vec<InputIssue>,
}

impl YearMetadata {
    /// Reads (or loads from the metadata index) the metadata of `year`.
    pub(crate) fn load(
        index_dir: &Path,
        discovery: &Discovery,
        year: Year,
        prefix: &str,
        save: bool,
    ) -> Self {
        let files: Vec<&MetadataFile> = discovery.files_of(year).collect();
        let (papers, rows, duplicates, issues) = year_metadata(index_dir, &files, prefix, save);
        YearMetadata {
            year,
            papers,
            rows,
            duplicates,
            issues,
        }
    }
}

/// The metadata of every year (read in parallel) with papers that belong
/// to another year taken out, and those papers.
pub(crate) fn load_all(
    index_dir: &Path,
    discovery: &Discovery,
    prefix: &str,
    save: bool,
) -> (Vec<YearMetadata>, Vec<CrossYearPaper>) {
    let mut years: Vec<YearMetadata> = discovery
        .years()
        .par_iter()
        .map(|&year| YearMetadata::load(index_dir, discovery, year, prefix, save))
        .collect();
    let cross = resolve(discovery, &mut years);
    (years, cross)
}

/// Finds the papers present in more than one of `years` (ascending), keeps
/// each only in the year it belongs to, and returns them sorted by id.
pub(crate) fn resolve(discovery: &Discovery, years: &mut [YearMetadata]) -> Vec<CrossYearPaper> {
    let mut cross = Vec::new();
    let mut drop: Vec<Vec<usize>> = vec![Vec::new(); years.len()];
    {
        // A k-way merge of the sorted id lists: each step takes the smallest
        // id and every year that holds it.
        let mut next = vec![0usize; years.len()];
        let mut heap: BinaryHeap<Reverse<(&str, usize)>> = years
            .iter()
            .enumerate()
            .filter_map(|(i, y)| y.papers.first().map(|p| Reverse((&*p.paper_id, i))))
            .collect();
        let mut group: Vec<usize> = Vec::new();
        while let Some(Reverse((id, first))) = heap.pop() {
            group.clear();
            group.push(first);
            while let Some(&Reverse((other, j))) = heap.peek()
                && other == id
            {
                heap.pop();
                group.push(j);
            }
            for &i in &group {
                next[i] += 1;
                if let Some(p) = years[i].papers.get(next[i]) {
                    heap.push(Reverse((&*p.paper_id, i)));
                }
            }
            if group.len() < 2 {
                continue;
            }
            group.sort_unstable();
            let at = |i: usize| &years[i].papers[next[i] - 1];
            // Newest row; on a tie the later year (years are ascending).
            let Some(&owner) = group.iter().max_by_key(|&&i| (at(i).updated, i)) else {
                continue;
            };
            let origin = |i: usize| {
                discovery
                    .files_of(years[i].year)
                    .nth(at(i).origin)
                    .map(|f| f.origin.clone())
                    .unwrap_or_default()
            };
            cross.push(CrossYearPaper {
                paper_id: id.to_string(),
                owner: years[owner].year.to_string(),
                owner_origin: origin(owner),
                others: group
                    .iter()
                    .filter(|&&i| i != owner)
                    .map(|&i| (years[i].year.to_string(), origin(i)))
                    .collect(),
            });
            for &i in group.iter().filter(|&&i| i != owner) {
                drop[i].push(next[i] - 1);
            }
        }
    }
    for (year, positions) in years.iter_mut().zip(drop) {
        if positions.is_empty() {
            continue;
        }
        let mut position = 0;
        let mut gone = positions.into_iter().peekable();
        year.papers.retain(|_| {
            let keep = gone.next_if_eq(&position).is_none();
            position += 1;
            keep
        });
    }
    cross
}

/// Per year, the ids of its papers that belong to another year (sorted).
pub(crate) fn elsewhere(cross: &[CrossYearPaper]) -> BTreeMap<Year, Vec<&str>> {
    let mut out: BTreeMap<Year, Vec<&str>> = BTreeMap::new();
    for paper in cross {
        for (year, _) in &paper.others {
            if let Some(year) = Year::parse(year) {
                out.entry(year).or_default().push(&paper.paper_id);
            }
        }
    }
    for ids in out.values_mut() {
        ids.sort_unstable();
    }
    out
}

/// A fingerprint of a year's papers that belong elsewhere.
pub(crate) fn fingerprint(ids: &[&str]) -> u64 {
    let mut hasher = Xxh3::new();
    for id in ids {
        hasher.update(id.as_bytes());
        hasher.update(b"\n");
    }
    hasher.digest()
}

/// One warning per pair of files (the one whose rows are not used, the one
/// that wins), naming the first few papers and the count.
pub(crate) fn warnings(discovery: &Discovery, cross: &[CrossYearPaper]) -> Vec<InputIssue> {
    let mut pairs: BTreeMap<(&str, &str, &str), Vec<&str>> = BTreeMap::new();
    for paper in cross {
        for (_, origin) in &paper.others {
            pairs
                .entry((origin.as_str(), paper.owner_origin.as_str(), paper.owner.as_str()))
                .or_default()
                .push(&paper.paper_id);
        }
    }
    let path_of = |origin: &str| {
        discovery
            .files
            .iter()
            .find(|f| f.origin == origin)
            .map_or_else(|| PathBuf::from(origin), |f| f.path.clone())
    };
    pairs
        .into_iter()
        .map(|((loser, winner, year), ids)| {
            let named: Vec<&str> = ids.iter().take(NAMED_IN_WARNING).copied().collect();
            let more = match ids.len() - named.len() {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            InputIssue {
                path: path_of(loser),
                line: None,
                message: format!(
                    "{} paper(s) here also have a row in {winner} ({}{more}); a paper belongs to one year, \
                     the one of its newest row (updated_at, then the later year), so these rows are not used \
                     and each paper's one vector lives in {year}.parquet",
                    ids.len(),
                    named.join(", ")
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::TextHash;

    fn paper(id: &str, updated: i64) -> MetadataPaper {
        MetadataPaper {
            paper_id: id.into(),
            hash: TextHash::of_text("", id),
            empty: false,
            origin: 0,
            updated,
        }
    }

    fn year(y: &str, papers: Vec<MetadataPaper>) -> YearMetadata {
        YearMetadata {
            year: Year::parse(y).unwrap(),
            rows: papers.len() as u64,
            papers,
            duplicates: 0,
            issues: Vec::new(),
        }
    }

    fn ids(year: &YearMetadata) -> Vec<&str> {
        year.papers.iter().map(|p| &*p.paper_id).collect()
    }

    #[test]
    fn the_newest_row_decides_and_a_tie_goes_to_the_later_year() {
        let none = crate::store::cache::NO_UPDATED_AT;
        let mut years = vec![
            year("2022", vec![paper("a", 5), paper("c", none), paper("d", 1)]),
            year(
                "2023",
                vec![paper("a", 9), paper("b", 1), paper("c", none), paper("d", 7)],
            ),
            year("2024", vec![paper("a", 3), paper("d", 7), paper("e", 1)]),
        ];
        let cross = resolve(&Discovery::default(), &mut years);
        let owners: Vec<(&str, &str, usize)> = cross
            .iter()
            .map(|c| (c.paper_id.as_str(), c.owner.as_str(), c.others.len()))
            .collect();
        assert_eq!(
            owners,
            [("a", "2023", 2), ("c", "2023", 1), ("d", "2024", 2)],
            "a: newest row; c: both empty, later year; d: a tie, later year"
        );
        assert_eq!(ids(&years[0]), Vec::<&str>::new());
        assert_eq!(ids(&years[1]), ["a", "b", "c"]);
        assert_eq!(ids(&years[2]), ["d", "e"]);
        let elsewhere = elsewhere(&cross);
        assert_eq!(elsewhere[&Year::parse("2022").unwrap()], ["a", "c", "d"]);
        assert_eq!(elsewhere[&Year::parse("2023").unwrap()], ["d"]);
        assert_eq!(elsewhere[&Year::parse("2024").unwrap()], ["a"]);
    }

    #[test]
    fn a_warning_per_pair_of_files_names_the_first_papers_and_the_count() {
        let cross: Vec<CrossYearPaper> = (0..7)
            .map(|i| CrossYearPaper {
                paper_id: format!("p{i}"),
                owner: "2024".into(),
                owner_origin: "metadata/metadata-2024.csv".into(),
                others: vec![("2023".into(), "metadata/metadata-2023.csv".into())],
            })
            .collect();
        let issues = warnings(&Discovery::default(), &cross);
        assert_eq!(issues.len(), 1);
        let message = &issues[0].message;
        assert_eq!(issues[0].path, PathBuf::from("metadata/metadata-2023.csv"));
        assert!(
            message.starts_with("7 paper(s)")
                && message.contains("metadata/metadata-2024.csv (p0, p1, p2, p3, p4 and 2 more)")
                && message.contains("2024.parquet"),
            "{message}"
        );
    }
}
