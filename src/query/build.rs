//! The rows of a year's segment: read from the year file and the year's
//! metadata from nothing, or from the previous segment and only what
//! changed since.
//!
//! A refresh reuses what it can prove unchanged, by content, not by time:
//! - vectors: per row group of the year file, an xxh3 of its `paper_id` and
//!   `embedding` column chunks as stored (with its row count and codec).
//!   papersys writes a year file in row groups of a fixed number of rows,
//!   so a merge that adds papers at the end (arXiv ids grow) leaves the
//!   earlier groups byte for byte as they were: only the last ones are
//!   decoded again; the others' rows are copied from the old segment;
//! - metadata: the size and xxh3 of each metadata file. When the year has
//!   one file and its old bytes are a prefix of the new ones (rows were
//!   appended), only the new bytes are parsed; when it did not change, the
//!   old segment's titles, dates and categories are reused.
//!
//! Whatever cannot be proven unchanged is read again from the files, so a
//! refreshed segment holds exactly what a segment built from nothing would.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::QueryError;
use super::catalog::{self, ContentKey, PaperMeta};
use super::segment::{Rows, Segment, Stamps, Writer};
use crate::metadata::{MetadataFile, Year};
use crate::store::parquet_input;
use crate::store::year_file::{self, YearFileError};

/// What the content of a segment's inputs was, for the next refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    /// Per row group of the year file, in file order: its fingerprint and
    /// row count; empty when the file's rows were not sorted and unique.
    pub row_groups: Vec<(u64, u64)>,
    /// Per metadata file (as in the stamps): its [`ContentKey`], `None`
    /// when it could not be read completely.
    pub metadata: Vec<Option<ContentKey>>,
    /// Set on a delta segment: the year's segment it amends.
    #[serde(default)]
    pub delta_of: Option<DeltaOf>,
}

/// What a delta segment amends: its rows are the papers of a year that are
/// new or changed since the year's segment (the base) was built; the base
/// rows they replace, or whose papers left the year file, are dead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaOf {
    /// The base segment's footer checksum (identifies that very file).
    pub base: u64,
    /// Base rows that no longer count, ascending.
    pub dead: Vec<u32>,
}

/// How a year's rows were obtained, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reuse {
    /// Rows copied from the previous segment.
    pub rows_reused: usize,
    /// Rows decoded from the year file.
    pub rows_decoded: usize,
    /// Whether the metadata files were parsed in full.
    pub metadata_parsed: bool,
}

/// Fingerprints of the row groups of a year file (see the module doc);
/// `None` when the file cannot be read so.
fn fingerprints(path: &Path) -> Option<Vec<(u64, u64)>> {
    let builder = parquet_input::open_arrow(path).ok()?;
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: read-only map of a year file, which papersys only ever
    // replaces by rename; only a hand truncation during these few
    // milliseconds could fault. Mapped, not read: no copy of the file.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let mut out = Vec::new();
    for group in builder.metadata().row_groups() {
        let mut hasher = Xxh3::new();
        hasher.update(&group.num_rows().to_le_bytes());
        for column in group.columns() {
            let name = column.column_path().string();
            if !(name == "paper_id" || name.starts_with("embedding.")) {
                continue;
            }
            hasher.update(name.as_bytes());
            hasher.update(format!("{:?} {:?}", column.column_type(), column.compression()).as_bytes());
            let (start, length) = column.byte_range();
            let start = usize::try_from(start).ok()?;
            hasher.update(map.get(start..start.checked_add(usize::try_from(length).ok()?)?)?);
        }
        out.push((hasher.digest(), u64::try_from(group.num_rows()).ok()?));
    }
    Some(out)
}

/// Ids and vectors of some row groups of a year file (all when `None`);
/// `None` for the ids when they are not sorted and unique.
fn decode(
    path: &Path,
    dimension: usize,
    groups: Option<Vec<usize>>,
) -> Result<(Vec<String>, Vec<f32>, bool), QueryError> {
    // Sized up front from the footer: no reallocation of a year's vectors.
    let expected = match &groups {
        None => year_file::row_count(path).unwrap_or(0) as usize,
        Some(_) => 0,
    };
    let mut ids = Vec::with_capacity(expected);
    let mut vectors = Vec::with_capacity(expected * dimension);
    let mut without_vector = None;
    let scan = year_file::for_each_vector_of(path, dimension, groups, |id, v| match v {
        Some(v) => {
            ids.push(id.to_string());
            vectors.extend_from_slice(v);
        }
        None => {
            without_vector.get_or_insert_with(|| id.to_string());
        }
    })?;
    if let Some(id) = without_vector {
        return Err(YearFileError::Damaged {
            path: path.to_path_buf(),
            message: format!("paper {id} has no vector, or one with null elements"),
        }
        .into());
    }
    Ok((ids, vectors, scan.sorted_unique))
}

/// Ids (sorted, unique, newest row kept) and vectors of a year file whose
/// rows are not sorted and unique.
fn read_unsorted(path: &Path, dimension: usize) -> Result<(Vec<String>, Vec<f32>), QueryError> {
    // Another tool's file: rows in any order, maybe repeated; the newest
    // row of a paper wins, as the rest of papersys reads it.
    let mut rows = year_file::read_rows(path, dimension)?;
    year_file::sort_and_dedup(&mut rows);
    let mut vectors = Vec::with_capacity(rows.len() * dimension);
    let ids = rows
        .into_iter()
        .map(|r| {
            vectors.extend_from_slice(&r.embedding);
            r.paper_id
        })
        .collect();
    Ok((ids, vectors))
}

/// Category table and per-row codes of `metas`.
fn rows_of(ids: Vec<String>, vectors: Vec<f32>, metas: Vec<Option<PaperMeta>>) -> Rows {
    let mut table: HashMap<String, u16> = HashMap::new();
    let mut categories: Vec<String> = Vec::new();
    let mut rows = Rows {
        titles: Vec::with_capacity(ids.len()),
        dates: Vec::with_capacity(ids.len()),
        cats: Vec::with_capacity(ids.len()),
        ..Rows::default()
    };
    for meta in metas {
        match meta {
            Some(meta) => {
                let mut list = Vec::with_capacity(meta.categories.len());
                for category in meta.categories {
                    let code = match table.get(&category) {
                        Some(&code) => code,
                        None if categories.len() < usize::from(u16::MAX) => {
                            let code = categories.len() as u16;
                            table.insert(category.clone(), code);
                            categories.push(category);
                            code
                        }
                        None => continue,
                    };
                    list.push(code);
                }
                rows.titles.push(meta.title);
                rows.dates.push(meta.published_at);
                rows.cats.push(list);
            }
            None => {
                rows.titles.push(String::new());
                rows.dates.push(String::new());
                rows.cats.push(Vec::new());
            }
        }
    }
    rows.categories = categories;
    rows.ids = ids;
    rows.vectors = vectors;
    rows
}

/// The ids of a year file, its vectors streamed into a [`Writer`] for
/// `target`; `None` when its rows are not sorted and unique (another
/// tool's file: see [`read_unsorted`]).
fn stream(
    path: &Path,
    dimension: usize,
    target: Option<&Path>,
) -> Result<Option<(Writer, Vec<String>)>, QueryError> {
    let rows = usize::try_from(year_file::row_count(path)?).unwrap_or(usize::MAX);
    let mut writer = Writer::new(rows, dimension, target)?;
    let mut ids = Vec::with_capacity(rows);
    let mut failed = None;
    let scan = year_file::for_each_vector_batch_of(path, dimension, None, |batch_ids, vectors| {
        if failed.is_none() {
            ids.extend(batch_ids.iter().map(|id| id.to_string()));
            if let Err(e) = writer.push(vectors) {
                failed = Some(e);
            }
        }
    })?;
    if !scan.sorted_unique {
        return Ok(None);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Some((writer, ids))),
    }
}

/// Builds one year's segment from nothing, into the cache file `target`
/// or memory: the vectors go straight from the decoder into the segment
/// while the metadata is read beside them.
pub(crate) fn full(
    year: Year,
    path: &Path,
    stamps: Stamps,
    files: &[MetadataFile],
    target: Option<&Path>,
) -> Result<Segment, QueryError> {
    let dimension = stamps.dimension;
    let expected = usize::try_from(year_file::row_count(path)?).unwrap_or(0);
    let ((streamed, groups), (mut catalog, issues, metadata)) = rayon::join(
        || rayon::join(|| stream(path, dimension, target), || fingerprints(path)),
        || catalog::read_year(files.iter(), expected),
    );
    if !issues.is_empty() {
        tracing::debug!(
            "{} unreadable metadata rows while building the vector cache",
            issues.len()
        );
    }
    match streamed? {
        Some((writer, ids)) => {
            let metas = ids.iter().map(|id| catalog.remove(id)).collect();
            let rows = rows_of(ids, Vec::new(), metas);
            let keys = Keys {
                row_groups: groups.unwrap_or_default(),
                metadata,
                delta_of: None,
            };
            writer.finish(year, stamps, keys, &rows)
        }
        None => {
            let (ids, vectors) = read_unsorted(path, dimension)?;
            let metas = ids.iter().map(|id| catalog.remove(id)).collect();
            let rows = rows_of(ids, vectors, metas);
            // No row-group keys: a refresh of such a file starts from nothing.
            let keys = Keys {
                row_groups: Vec::new(),
                metadata,
                delta_of: None,
            };
            Segment::build(year, stamps, keys, &rows, target)
        }
    }
}

/// Reads one year's rows reusing `old` (the previous segment, read from
/// `old_files`, keyed by `old_keys`) for what did not change; `None` when
/// too much changed to gain anything (the caller builds from nothing).
pub(crate) fn refresh(
    old: &Segment,
    old_keys: &Keys,
    old_files: &[(String, crate::store::cache::FileStamp)],
    path: &Path,
    dimension: usize,
    files: &[MetadataFile],
    new_stamps: &[(String, crate::store::cache::FileStamp)],
) -> Result<Option<(Rows, Keys, Reuse)>, QueryError> {
    if old_keys.row_groups.is_empty() || old.stamps.dimension != dimension {
        return Ok(None);
    }
    let Some(groups) = fingerprints(path) else {
        return Ok(None);
    };
    let Some(old_groups) = group_starts(&old_keys.row_groups, old.len()) else {
        return Ok(None);
    };
    let plan: Vec<Option<usize>> = groups.iter().map(|g| old_groups.get(g).copied()).collect();
    let fresh: Vec<usize> = (0..groups.len()).filter(|&g| plan[g].is_none()).collect();
    let (fresh_ids, fresh_vectors, sorted) = if fresh.is_empty() {
        (Vec::new(), Vec::new(), true)
    } else {
        decode(path, dimension, Some(fresh.clone()))?
    };
    if !sorted {
        return Ok(None);
    }
    let total: usize = groups.iter().map(|g| g.1 as usize).sum();
    let mut ids: Vec<String> = Vec::with_capacity(total);
    let mut vectors: Vec<f32> = Vec::with_capacity(total * dimension);
    // Per row: its row in the old segment, when copied from it.
    let mut origin: Vec<Option<usize>> = Vec::with_capacity(total);
    let mut fresh_at = 0usize;
    let mut reuse = Reuse::default();
    for (g, &(_, rows)) in groups.iter().enumerate() {
        let rows = rows as usize;
        match plan[g] {
            Some(start) => {
                for r in start..start + rows {
                    ids.push(old.id(r).to_string());
                    vectors.extend_from_slice(old.vector(r)?);
                    origin.push(Some(r));
                }
                reuse.rows_reused += rows;
            }
            None => {
                let end = fresh_at + rows;
                if end > fresh_ids.len() {
                    return Ok(None);
                }
                ids.extend(fresh_ids[fresh_at..end].iter().cloned());
                vectors.extend_from_slice(&fresh_vectors[fresh_at * dimension..end * dimension]);
                origin.extend(std::iter::repeat_n(None, rows));
                fresh_at = end;
                reuse.rows_decoded += rows;
            }
        }
    }
    if fresh_at != fresh_ids.len() || ids.windows(2).any(|w| w[0] >= w[1]) {
        return Ok(None);
    }
    // A row decoded again may still be an old paper: find it in the old segment.
    for (row, origin) in origin.iter_mut().enumerate() {
        if origin.is_none() {
            *origin = old.find(&ids[row]);
        }
    }
    let old_meta = |r: usize| -> Result<PaperMeta, QueryError> {
        Ok(PaperMeta {
            title: old.title(r)?.to_string(),
            categories: old
                .category_ids(r)
                .iter()
                .filter_map(|&c| old.categories().get(usize::from(c)).cloned())
                .collect(),
            published_at: old.published_at(r)?.to_string(),
        })
    };
    // Metadata: unchanged, only appended to, or read again.
    let mut metas: Option<Vec<Option<PaperMeta>>> = None;
    let mut metadata_keys = old_keys.metadata.clone();
    if new_stamps == old_files && origin.iter().all(Option::is_some) {
        metas = Some(
            origin
                .iter()
                .map(|o| o.map(old_meta).transpose())
                .collect::<Result<_, _>>()?,
        );
    } else if let ([file], [(origin_name, old_stamp)], [Some((old_size, old_hash))]) =
        (files, old_files, old_keys.metadata.as_slice())
        && *origin_name == file.origin
        && old_stamp.size <= new_stamps.first().map_or(0, |s| s.1.size)
        && let Some((tail, key)) = catalog::read_appended(file, *old_size, *old_hash)
    {
        let mut complete = true;
        let list = ids
            .iter()
            .zip(&origin)
            .map(|(id, origin)| match (tail.get(id), origin) {
                (Some(meta), _) => Ok(Some(meta.clone())),
                (None, Some(r)) => old_meta(*r).map(Some),
                (None, None) => {
                    // A paper that was in the file before but had no vector:
                    // its row is not in the old segment.
                    complete = false;
                    Ok(None)
                }
            })
            .collect::<Result<_, QueryError>>()?;
        if complete {
            metas = Some(list);
            metadata_keys = vec![Some(key)];
        }
    }
    let metas = match metas {
        Some(metas) => metas,
        None => {
            let (mut catalog, _, keys) = catalog::read_year(files.iter(), ids.len());
            metadata_keys = keys;
            reuse.metadata_parsed = true;
            ids.iter().map(|id| catalog.remove(id)).collect()
        }
    };
    Ok(Some((
        rows_of(ids, vectors, metas),
        Keys {
            row_groups: groups,
            metadata: metadata_keys,
            delta_of: None,
        },
        reuse,
    )))
}

/// Most rows a delta segment takes before the year is rebuilt whole: a
/// delta's rows are decoded and written at every refresh until then.
pub(crate) fn delta_limit(base_rows: usize) -> usize {
    (base_rows / 4).max(2 * 16_384)
}

/// The rows of a delta segment that amends `base` (a year's segment, not
/// itself a delta) to the year's current inputs: the rows of the year
/// file's row groups that are not in `base`, and the base rows whose
/// metadata was appended to. `None` when that cannot be proven equal to a
/// build from nothing (a metadata file changed other than by appending
/// rows, a new paper whose metadata row predates the base...) or the delta
/// would exceed [`delta_limit`]: the caller rebuilds the year.
pub(crate) fn delta(
    base: &Segment,
    path: &Path,
    dimension: usize,
    files: &[MetadataFile],
    new_stamps: &[(String, crate::store::cache::FileStamp)],
) -> Result<Option<(Rows, Keys, Reuse)>, QueryError> {
    let keys = &base.keys;
    if keys.row_groups.is_empty() || keys.delta_of.is_some() || base.stamps.dimension != dimension {
        return Ok(None);
    }
    let Some(groups) = fingerprints(path) else {
        return Ok(None);
    };
    let Some(old_groups) = group_starts(&keys.row_groups, base.len()) else {
        return Ok(None);
    };
    let mut live = vec![false; base.len()];
    let mut fresh = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        match old_groups.get(group) {
            Some(&start) => live[start..start + group.1 as usize].fill(true),
            None => fresh.push(g),
        }
    }
    let fresh_rows: usize = fresh.iter().map(|&g| groups[g].1 as usize).sum();
    if fresh_rows > delta_limit(base.len()) {
        return Ok(None);
    }
    let (ids, vectors, sorted) = if fresh.is_empty() {
        (Vec::new(), Vec::new(), true)
    } else {
        decode(path, dimension, Some(fresh))?
    };
    if !sorted || ids.len() != fresh_rows {
        return Ok(None);
    }
    // Where each new row was in the base, if it was; one still live there
    // would make the file's rows not unique.
    let mut origin = Vec::with_capacity(ids.len());
    for id in &ids {
        let r = base.find(id);
        if r.is_some_and(|r| live[r]) {
            return Ok(None);
        }
        origin.push(r);
    }
    // Metadata: unchanged, or only appended to since the base.
    let (tail, metadata) = if new_stamps == base.stamps.metadata.as_slice() {
        (catalog::Papers::default(), keys.metadata.clone())
    } else if let ([file], [Some((old_size, old_hash))]) = (files, keys.metadata.as_slice())
        && base
            .stamps
            .metadata
            .first()
            .is_some_and(|(origin, _)| *origin == file.origin)
        && let Some((tail, key)) = catalog::read_appended(file, *old_size, *old_hash)
    {
        (tail, vec![Some(key)])
    } else {
        return Ok(None);
    };
    let base_meta = |r: usize| -> Result<PaperMeta, QueryError> {
        Ok(PaperMeta {
            title: base.title(r)?.to_string(),
            categories: base
                .category_ids(r)
                .iter()
                .filter_map(|&c| base.categories().get(usize::from(c)).cloned())
                .collect(),
            published_at: base.published_at(r)?.to_string(),
        })
    };
    // (id, vector, metadata) of every delta row, by id.
    let mut rows: std::collections::BTreeMap<String, (Vec<f32>, Option<PaperMeta>)> = Default::default();
    for ((id, vector), origin) in ids.into_iter().zip(vectors.chunks(dimension.max(1))).zip(origin) {
        let meta = match (tail.get(&id), origin) {
            (Some(meta), _) => Some(meta.clone()),
            (None, Some(r)) => Some(base_meta(r)?),
            // Metadata written before the base, for a paper the base does not hold.
            (None, None) => return Ok(None),
        };
        rows.insert(id, (vector.to_vec(), meta));
    }
    // Base papers with a newer metadata row move to the delta.
    for (id, meta) in &tail {
        if let Some(r) = base.find(id)
            && live[r]
        {
            live[r] = false;
            rows.insert(id.clone(), (base.vector(r)?.to_vec(), Some(meta.clone())));
        }
    }
    let reuse = Reuse {
        rows_reused: live.iter().filter(|&&l| l).count(),
        rows_decoded: fresh_rows,
        metadata_parsed: false,
    };
    let dead: Vec<u32> = (0..base.len()).filter(|&r| !live[r]).map(|r| r as u32).collect();
    let mut ids = Vec::with_capacity(rows.len());
    let mut flat = Vec::with_capacity(rows.len() * dimension);
    let mut metas = Vec::with_capacity(rows.len());
    for (id, (vector, meta)) in rows {
        ids.push(id);
        flat.extend_from_slice(&vector);
        metas.push(meta);
    }
    Ok(Some((
        rows_of(ids, flat, metas),
        Keys {
            row_groups: groups,
            metadata,
            delta_of: Some(DeltaOf { base: base.sum, dead }),
        },
        reuse,
    )))
}

/// Where each row group (fingerprint, rows) of a segment starts in it; None
/// when the groups do not add up to the segment's `len` rows.
fn group_starts(row_groups: &[(u64, u64)], len: usize) -> Option<HashMap<(u64, u64), usize>> {
    let mut starts = HashMap::new();
    let mut at = 0usize;
    for &(print, rows) in row_groups {
        starts.entry((print, rows)).or_insert(at);
        at += rows as usize;
    }
    (at == len).then_some(starts)
}
