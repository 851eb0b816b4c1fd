//! One paper, one year. A paper whose metadata has rows in several years
//! (another tool filed it twice, or a move left a copy behind) belongs to
//! exactly one of them: the year of its newest row, by `updated_at`
//! compared as instants (empty or unreadable is the oldest), the later year
//! on a tie. That year's row gives the text and that year's file holds the
//! paper's one vector; the other years' rows are not used, and the paper is
//! planned, counted and warned about once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use super::index::{MetadataPaper, updated_micros, year_metadata};
use crate::metadata::{Discovery, InputIssue, MetadataFile, Year};
use crate::store::cache::{CrossYearPaper, FileStamp, IdHashes};

/// Papers named in a warning before "and N more".
const NAMED_IN_WARNING: usize = 5;

/// A year's claim on a paper it has rows of: the `updated_at` of its row
/// there (the last one in the year's files) and the year. The paper belongs
/// to the year of the greatest claim: the newest row, then the later year.
/// The one rule, for the plan and for every reader of the metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Claim {
    /// `updated_at` as [`updated_micros`] gives it (compared first).
    updated: i64,
    /// The year (breaks ties).
    year: Year,
}

impl Claim {
    /// The claim of `year` whose row has `updated` (from [`updated_micros`]).
    pub(crate) fn new(updated: i64, year: Year) -> Claim {
        Claim { updated, year }
    }

    /// The claim of `year` whose row's `updated_at` reads `updated_at`.
    pub(crate) fn of_row(updated_at: &str, year: Year) -> Claim {
        Claim::new(updated_micros(updated_at), year)
    }
}

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

/// The stamps of each metadata year's files, in precedence order.
pub(crate) type YearStamps = BTreeMap<Year, Vec<(String, FileStamp)>>;

/// What a previous refresh resolved, and from which files.
pub(crate) struct Previous<'a> {
    /// The stamps of each year's files (four-digit year) it read.
    pub(crate) stamps: &'a BTreeMap<String, Vec<(String, FileStamp)>>,
    /// The papers it found in several years.
    pub(crate) cross: &'a [CrossYearPaper],
}

/// The papers in several years after some years' files changed.
pub(crate) struct Resolution {
    /// The years read. Papers found to belong elsewhere are taken out, but a
    /// year read only to check candidates may still hold some: filter by
    /// [`elsewhere`] of `cross` before use.
    pub(crate) loaded: BTreeMap<Year, YearMetadata>,
    /// Every paper in several years, sorted by id.
    pub(crate) cross: Vec<CrossYearPaper>,
    /// The id hashes of the years read, to save for the next refresh.
    pub(crate) hashes: Vec<(Year, IdHashes)>,
}

/// Finds the papers in several years, reading as little as it can: with
/// what the previous refresh resolved, only the years whose files changed
/// are read, plus the unchanged years that share an id hash with them (or
/// took part in a previous answer involving them, or whose hashes are not
/// at hand). The answer is the one [`load_all`] would give: a paper found
/// in a changed year is resolved over every year holding it, and a paper
/// only in unchanged years keeps its previous answer unless a changed year
/// was part of it. `hashes` gives the saved id hashes of an unchanged year
/// (`None` when missing or stale), `load` reads a year.
pub(crate) fn resolve_changed(
    discovery: &Discovery,
    current: &YearStamps,
    previous: Option<Previous<'_>>,
    hashes: impl Fn(Year, &[(String, FileStamp)]) -> Option<IdHashes> + Sync,
    load: impl Fn(Year) -> YearMetadata + Sync,
) -> Resolution {
    let changed: BTreeSet<String> = match &previous {
        None => current.keys().map(Year::to_string).collect(),
        Some(previous) => current
            .iter()
            .filter(|(year, files)| previous.stamps.get(&year.to_string()) != Some(*files))
            .map(|(year, _)| year.to_string())
            .chain(
                previous
                    .stamps
                    .keys()
                    .filter(|y| Year::parse(y).is_none_or(|y| !current.contains_key(&y)))
                    .cloned(),
            )
            .collect(),
    };
    let involves =
        |c: &CrossYearPaper| changed.contains(&c.owner) || c.others.iter().any(|(y, _)| changed.contains(y));
    let old: &[CrossYearPaper] = previous.as_ref().map_or(&[], |p| p.cross);
    let touched: Vec<&CrossYearPaper> = old.iter().filter(|c| involves(c)).collect();

    let unchanged: Vec<(Year, Option<IdHashes>)> = current
        .iter()
        .filter(|(year, _)| !changed.contains(&year.to_string()))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(&year, files)| (year, hashes(year, files)))
        .collect();
    let first: Vec<Year> = current
        .keys()
        .filter(|y| changed.contains(&y.to_string()))
        .copied()
        .chain(unchanged.iter().filter(|(_, h)| h.is_none()).map(|(y, _)| *y))
        .collect();
    let mut years: Vec<YearMetadata> = first.par_iter().map(|&year| load(year)).collect();
    let computed: Vec<(Year, IdHashes)> = years
        .iter()
        .map(|m| {
            let files = current.get(&m.year).cloned().unwrap_or_default();
            (m.year, IdHashes::of(m.papers.iter().map(|p| &*p.paper_id), files))
        })
        .collect();
    let mut fresh: Vec<u64> = computed
        .iter()
        .filter(|(year, _)| changed.contains(&year.to_string()))
        .flat_map(|(_, h)| h.hashes.iter().copied())
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    let was_involved: BTreeSet<&str> = touched
        .iter()
        .flat_map(|c| std::iter::once(&c.owner).chain(c.others.iter().map(|(y, _)| y)))
        .map(String::as_str)
        .collect();
    let candidates: Vec<Year> = unchanged
        .iter()
        .filter_map(|(year, h)| {
            let h = h.as_ref()?;
            (was_involved.contains(year.to_string().as_str()) || h.shares_any(&fresh)).then_some(*year)
        })
        .collect();
    years.extend(candidates.par_iter().map(|&year| load(year)).collect::<Vec<_>>());
    years.sort_unstable_by_key(|m| m.year);

    let touched_ids: HashSet<&str> = touched.iter().map(|c| c.paper_id.as_str()).collect();
    let mut cross = resolve(discovery, &mut years);
    // A group only of unchanged years may be partial here (not every year
    // holding the paper was read): the previous answer stands for it.
    cross.retain(|c| involves(c) || touched_ids.contains(c.paper_id.as_str()));
    let found: HashSet<&str> = cross.iter().map(|c| c.paper_id.as_str()).collect();
    let kept: Vec<CrossYearPaper> = old
        .iter()
        .filter(|c| !involves(c) && !found.contains(c.paper_id.as_str()))
        .cloned()
        .collect();
    cross.extend(kept);
    cross.sort_unstable_by(|a, b| a.paper_id.cmp(&b.paper_id));
    Resolution {
        loaded: years.into_iter().map(|m| (m.year, m)).collect(),
        cross,
        hashes: computed,
    }
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
            let Some(&owner) = group
                .iter()
                .max_by_key(|&&i| Claim::new(at(i).updated, years[i].year))
            else {
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

    /// Years of papers (id, updated_at) as CSV contents, each with a
    /// version that stands for its file's stamp.
    type Contents = BTreeMap<Year, (u64, Vec<(String, i64)>)>;

    fn stamps(contents: &Contents) -> YearStamps {
        contents
            .iter()
            .map(|(year, (version, _))| {
                let stamp = FileStamp {
                    size: *version,
                    mtime_ns: 0,
                };
                (*year, vec![(format!("metadata/metadata-{year}.csv"), stamp)])
            })
            .collect()
    }

    fn reader(contents: &Contents, reads: &std::sync::Mutex<Vec<Year>>, y: Year) -> YearMetadata {
        reads.lock().unwrap().push(y);
        let papers = contents[&y]
            .1
            .iter()
            .map(|(id, updated)| paper(id, *updated))
            .collect();
        year(&y.to_string(), papers)
    }

    /// The incremental answer, given the previous run's.
    fn update(
        contents: &Contents,
        before: &(YearStamps, Resolution),
        saved: &BTreeMap<Year, IdHashes>,
    ) -> (Resolution, Vec<Year>) {
        let reads = std::sync::Mutex::new(Vec::new());
        let recorded: BTreeMap<String, Vec<(String, FileStamp)>> =
            before.0.iter().map(|(y, f)| (y.to_string(), f.clone())).collect();
        let previous = Previous {
            stamps: &recorded,
            cross: &before.1.cross,
        };
        let resolution = resolve_changed(
            &Discovery::default(),
            &stamps(contents),
            Some(previous),
            |y, files| saved.get(&y).filter(|h| h.files == files).cloned(),
            |y| reader(contents, &reads, y),
        );
        let mut reads = reads.into_inner().unwrap();
        reads.sort();
        (resolution, reads)
    }

    fn full(contents: &Contents) -> Resolution {
        let reads = std::sync::Mutex::new(Vec::new());
        resolve_changed(
            &Discovery::default(),
            &stamps(contents),
            None,
            |_, _| None,
            |y| reader(contents, &reads, y),
        )
    }

    fn kept(resolution: &Resolution) -> BTreeMap<Year, Vec<String>> {
        let gone = elsewhere(&resolution.cross);
        resolution
            .loaded
            .iter()
            .map(|(y, m)| {
                let away = gone.get(y).cloned().unwrap_or_default();
                let ids = m
                    .papers
                    .iter()
                    .map(|p| p.paper_id.to_string())
                    .filter(|id| !away.contains(&id.as_str()))
                    .collect();
                (*y, ids)
            })
            .collect()
    }

    fn y(text: &str) -> Year {
        Year::parse(text).unwrap()
    }

    #[test]
    fn a_changed_year_is_checked_against_the_hashes_of_the_others_without_reading_them_all() {
        let mut contents: Contents = BTreeMap::from([
            (y("2021"), (1, vec![("a".to_string(), 1)])),
            (y("2022"), (1, vec![("b".to_string(), 5), ("c".to_string(), 1)])),
            (y("2023"), (1, vec![("d".to_string(), 1)])),
        ]);
        let first = (stamps(&contents), full(&contents));
        assert!(first.1.cross.is_empty());
        let saved: BTreeMap<Year, IdHashes> = first.1.hashes.iter().cloned().collect();
        // Only 2023 changes: it now also holds b (newer) and c (older).
        contents.insert(
            y("2023"),
            (
                2,
                vec![("b".to_string(), 9), ("c".to_string(), 0), ("d".to_string(), 1)],
            ),
        );
        let (now, reads) = update(&contents, &first, &saved);
        assert_eq!(
            reads,
            [y("2022"), y("2023")],
            "2021 shares no id with 2023: not read"
        );
        let owners: Vec<(&str, &str)> = now
            .cross
            .iter()
            .map(|c| (c.paper_id.as_str(), c.owner.as_str()))
            .collect();
        assert_eq!(owners, [("b", "2023"), ("c", "2022")]);
        assert_eq!(now.cross, full(&contents).cross);
        let hashed: Vec<Year> = now.hashes.iter().map(|(y, _)| *y).collect();
        assert_eq!(hashed, [y("2023")], "2022's saved hashes still hold");
    }

    /// A small xorshift generator: the same cases on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn year(&mut self, version: u64) -> (u64, Vec<(String, i64)>) {
            let mut papers = Vec::new();
            for id in ["a", "b", "c", "d", "e", "f"] {
                if self.below(3) == 0 {
                    papers.push((id.to_string(), self.below(4) as i64 - 1));
                }
            }
            (version, papers)
        }
    }

    /// Years appear, change and disappear at random, the saved hashes are
    /// sometimes lost: the answer from the previous one and the changed
    /// years is the answer from everything.
    #[test]
    fn the_incremental_answer_is_always_the_full_one() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let years = ["2020", "2021", "2022", "2023"];
        for _ in 0..300 {
            let mut contents = Contents::new();
            for t in years {
                if rng.below(5) != 0 {
                    contents.insert(y(t), rng.year(1));
                }
            }
            let mut before = (stamps(&contents), full(&contents));
            let mut saved: BTreeMap<Year, IdHashes> = before.1.hashes.iter().cloned().collect();
            for step in 2..6 {
                for t in years {
                    match rng.below(6) {
                        0 | 1 => {
                            let changed = rng.year(step);
                            contents.insert(y(t), changed);
                        }
                        2 => {
                            contents.remove(&y(t));
                        }
                        _ => {}
                    }
                }
                if rng.below(4) == 0 {
                    saved.clear();
                }
                let (now, _) = update(&contents, &before, &saved);
                let expected = full(&contents);
                assert_eq!(now.cross, expected.cross, "{contents:?}");
                let expected_kept = kept(&expected);
                for (year, ids) in kept(&now) {
                    assert_eq!(ids, expected_kept[&year], "{year} of {contents:?}");
                }
                saved.extend(now.hashes.iter().cloned());
                before = (stamps(&contents), now);
            }
        }
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
