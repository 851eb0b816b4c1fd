//! A paper's one vector lives in the file of the year it belongs to (see
//! [`super::duplicates`]). When that year changes (a newer row of the paper
//! appeared in another year's CSV), its vector moves: the writer copies it
//! into the new year's file, then removes it from the old one. Each file is
//! replaced atomically, in that order, so a crash between the two leaves
//! the vector in both files (never in none), and the next refresh finishes
//! the move by removing the copy. A copy whose paper the new year's file
//! already holds is only removed.

use std::collections::{BTreeMap, BTreeSet};

use crate::metadata::Year;
use crate::store::cache::CrossYearPaper;
use crate::store::year_file::{self, YearFileError, YearIds};
use crate::store::{ModelStore, StoreError, StoreWriter, checkpoint};
use crate::text::TextHash;

/// One vector in the file of a year its paper does not belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Relocation {
    /// The paper.
    pub(crate) paper_id: String,
    /// The year file holding the vector.
    pub(crate) from: Year,
    /// The year the paper belongs to.
    pub(crate) to: Year,
    /// The vector goes into `to`'s file (else `to` already has one: the
    /// copy in `from` is only removed).
    pub(crate) moves: bool,
    /// The text hash stored with the vector.
    pub(crate) hash: Option<TextHash>,
}

/// The ids in a year's file.
fn in_file(store: &ModelStore, year: Year) -> Result<YearIds, StoreError> {
    let path = store.year_path(year);
    if !path.exists() {
        return Ok(YearIds::default());
    }
    match year_file::read_ids(&path, store.dimension) {
        Ok(ids) => Ok(ids),
        // The refresh of that year reports or moves the file aside.
        Err(YearFileError::Damaged { .. }) => Ok(YearIds::default()),
        Err(e) => Err(e.into()),
    }
}

/// Every vector of a paper in `cross` that sits in another year's file
/// than the paper's own.
pub(crate) fn find(store: &ModelStore, cross: &[CrossYearPaper]) -> Result<Vec<Relocation>, StoreError> {
    let years: BTreeSet<Year> = cross
        .iter()
        .flat_map(|c| std::iter::once(&c.owner).chain(c.others.iter().map(|(y, _)| y)))
        .filter_map(|y| Year::parse(y))
        .collect();
    let mut ids: BTreeMap<Year, YearIds> = BTreeMap::new();
    let mut checkpointed: BTreeMap<Year, Vec<String>> = BTreeMap::new();
    for year in years {
        ids.insert(year, in_file(store, year)?);
        checkpointed.insert(year, checkpoint::ids(&store.dir, year, store.dimension)?);
    }
    let lookup = |year: Year, id: &str| {
        let held = ids.get(&year)?;
        let at = held.ids.binary_search_by(|x| x.as_str().cmp(id)).ok()?;
        Some(held.hashes[at])
    };
    let mut found = Vec::new();
    for paper in cross {
        let Some(owner) = Year::parse(&paper.owner) else {
            continue;
        };
        // A vector of the paper committed in a checkpoint of its year counts.
        let mut owner_has = lookup(owner, &paper.paper_id).is_some()
            || checkpointed
                .get(&owner)
                .is_some_and(|ids| ids.binary_search(&paper.paper_id).is_ok());
        // The latest year's copy moves; any other is only removed.
        for (year, _) in paper.others.iter().rev() {
            let Some(from) = Year::parse(year) else {
                continue;
            };
            if let Some(hash) = lookup(from, &paper.paper_id) {
                found.push(Relocation {
                    paper_id: paper.paper_id.clone(),
                    from,
                    to: owner,
                    moves: !owner_has,
                    hash,
                });
                owner_has = true;
            }
        }
    }
    Ok(found)
}

/// Performs `relocations`: moved vectors are merged into their year's file,
/// then every copy is removed from the file it was in, and the manifest is
/// made true.
pub(crate) fn apply(writer: &StoreWriter, relocations: &[Relocation]) -> Result<(), StoreError> {
    let mut moves: BTreeMap<Year, BTreeMap<Year, Vec<&str>>> = BTreeMap::new();
    let mut copies: BTreeMap<Year, Vec<&str>> = BTreeMap::new();
    for r in relocations {
        if r.moves {
            moves
                .entry(r.to)
                .or_default()
                .entry(r.from)
                .or_default()
                .push(r.paper_id.as_str());
        }
        copies.entry(r.from).or_default().push(r.paper_id.as_str());
    }
    for (to, sources) in moves {
        let mut rows = Vec::new();
        let mut identity = None;
        for (from, mut ids) in sources {
            ids.sort_unstable();
            let path = writer.year_path(from);
            rows.extend(year_file::take_rows(&path, writer.dimension, &ids)?);
            identity = identity.or(year_file::footer(&path)?.identity);
        }
        let moved = rows.len();
        year_file::merge_as(&writer.year_path(to), rows, writer.dimension, identity.as_ref())?;
        tracing::info!("moved {moved} vector(s) into {to}.parquet, the year their papers belong to");
    }
    crate::fault::point("relocate.after_move");
    for (from, mut ids) in copies {
        ids.sort_unstable();
        ids.dedup();
        year_file::remove_ids(&writer.year_path(from), writer.dimension, &ids)?;
    }
    writer.sync_manifest(None)?;
    Ok(())
}

/// For a read-only plan: per year, the vectors a writer would move into it.
pub(crate) fn moved_in(relocations: &[Relocation]) -> BTreeMap<Year, Vec<(String, Option<TextHash>)>> {
    let mut out: BTreeMap<Year, Vec<(String, Option<TextHash>)>> = BTreeMap::new();
    for r in relocations.iter().filter(|r| r.moves) {
        out.entry(r.to).or_default().push((r.paper_id.clone(), r.hash));
    }
    out
}
