//! Metadata input: finding the CSVs, the year each belongs to, and reading
//! their rows.
//!
//! Input is never trusted to be clean. Problems are collected as
//! [`InputIssue`]s naming the file and line, reported by the caller, and the
//! rest of the input is still read: one bad row must not hold back a year of
//! papers, and no problem is ever swallowed silently.

mod reader;
pub mod record;

use std::fmt;
use std::path::{Path, PathBuf};

pub use reader::read_columns;
pub use reader::{FileSummary, REQUIRED_COLUMNS, Row, read_rows, read_rows_while};
pub use record::{PaperRecord, read_records, write_records};

/// A four-digit year, the unit of the store (one Parquet file per year).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Year(u16);

impl Year {
    /// Parses exactly four ASCII digits.
    pub fn parse(text: &str) -> Option<Year> {
        if text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().ok().map(Year)
        } else {
            None
        }
    }

    /// The year as a number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Year {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

/// One metadata CSV that feeds the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Path relative to the data root (absolute when outside it): the
    /// backlog's `origin`.
    pub origin: String,
    /// Year its papers' vectors are filed under.
    pub year: Year,
}

/// A problem with the input, tied to a place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputIssue {
    /// File the problem is in.
    pub path: PathBuf,
    /// 1-based line, when the problem is a row.
    pub line: Option<u64>,
    /// What is wrong and what happens to the data.
    pub message: String,
}

impl InputIssue {
    /// A problem with the whole file at `path`.
    pub fn file(path: &Path, message: impl Into<String>) -> InputIssue {
        InputIssue {
            path: path.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }

    /// A problem with the row of `path` that starts on `line`.
    pub fn row(path: &Path, line: u64, message: impl Into<String>) -> InputIssue {
        InputIssue {
            path: path.to_path_buf(),
            line: Some(line),
            message: message.into(),
        }
    }
}

impl fmt::Display for InputIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Why the metadata directory could not be listed at all.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The directory is missing or unreadable.
    #[error(
        "cannot read metadata directory {}: {source}; check data_root and [ingestion].output_dir in the config",
        .path.display()
    )]
    Unreadable {
        /// The metadata directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The metadata files found, and the files passed over with a reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Input files sorted by year, then path: the order in which later rows
    /// win over earlier ones.
    pub files: Vec<MetadataFile>,
    /// Files skipped (no year in the name).
    pub issues: Vec<InputIssue>,
}

impl Discovery {
    /// The years that have at least one input file, ascending.
    pub fn years(&self) -> Vec<Year> {
        let mut years: Vec<Year> = self.files.iter().map(|f| f.year).collect();
        years.dedup();
        years
    }

    /// The files of one year, in precedence order.
    pub fn files_of(&self, year: Year) -> impl Iterator<Item = &MetadataFile> {
        self.files.iter().filter(move |f| f.year == year)
    }
}

/// Year of a metadata file: its parent directory's name when that is four
/// digits, else the first four-digit token of the file stem split on `-`
/// and `_` (contract, "Metadata CSV").
pub fn year_of(path: &Path) -> Option<Year> {
    let parent_year = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|name| name.to_str())
        .and_then(Year::parse);
    parent_year.or_else(|| {
        let stem = path.file_stem()?.to_str()?;
        stem.split(['-', '_']).find_map(Year::parse)
    })
}

/// Lists the input files under `metadata_dir`: the flat layout
/// (`metadata-*.csv`) when any such file exists, else the nested layout
/// (`*/*.csv`). `latest.csv` is a convenience view and never an input.
/// `data_root` anchors the `origin` of each file. CSVs that are not read
/// (another name at the top, a directory of CSVs beside flat files) are
/// named in the issues, with what to rename, so no paper is left out
/// silently.
pub fn discover(metadata_dir: &Path, data_root: &Path) -> Result<Discovery, DiscoveryError> {
    let unreadable = |source| DiscoveryError::Unreadable {
        path: metadata_dir.to_path_buf(),
        source,
    };
    let mut flat = Vec::new();
    let mut subdirs = Vec::new();
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(metadata_dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Follows symlinks on purpose: metadata is only read, and users link
        // in CSVs kept elsewhere.
        if path.is_dir() {
            subdirs.push(path);
        } else if name.starts_with("metadata-") && name.ends_with(".csv") && name != "latest.csv" {
            flat.push(path);
        } else if name.ends_with(".csv") && name != "latest.csv" && !name.starts_with('.') {
            stray.push(path);
        }
    }
    // What to rename depends on the layout in use: a metadata-YYYY.csv
    // beside nested files would switch to the flat layout and hide them.
    let advice = if flat.is_empty() {
        "not read: with the nested layout the inputs are YYYY/*.csv; move it into the directory of its \
         year if its papers should be embedded"
    } else {
        "not read: the inputs are metadata-YYYY.csv files; rename it metadata-YYYY.csv if its papers \
         should be embedded"
    };
    let mut passed_over: Vec<InputIssue> = stray
        .into_iter()
        .map(|path| InputIssue {
            path,
            line: None,
            message: advice.into(),
        })
        .collect();
    if !flat.is_empty() {
        for dir in &subdirs {
            let hidden = dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && holds_csv(dir) {
                passed_over.push(InputIssue {
                    path: dir.clone(),
                    line: None,
                    message: "directory not read: metadata-*.csv files exist, so the nested layout \
                              (YYYY/*.csv) is ignored; rename its CSVs to metadata-YYYY.csv files beside \
                              the others (or remove the metadata-*.csv files to use the nested layout)"
                        .into(),
                });
            }
        }
    }
    let candidates = if flat.is_empty() {
        let mut nested = Vec::new();
        for dir in subdirs {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(_) => continue,
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let is_csv = path.extension().is_some_and(|e| e == "csv");
                let is_latest = path.file_name().is_some_and(|n| n == "latest.csv");
                if is_csv && !is_latest && path.is_file() {
                    nested.push(path);
                }
            }
        }
        nested
    } else {
        flat
    };

    let mut discovery = Discovery {
        issues: passed_over,
        ..Discovery::default()
    };
    for path in candidates {
        match year_of(&path) {
            Some(year) => discovery.files.push(MetadataFile {
                origin: origin_of(&path, data_root),
                path,
                year,
            }),
            None => discovery.issues.push(InputIssue {
                path,
                line: None,
                message: "no four-digit year in the file name or its directory; file skipped (name it metadata-YYYY.csv or put it in a YYYY/ directory)".into(),
            }),
        }
    }
    discovery
        .files
        .sort_by(|a, b| (a.year, &a.path).cmp(&(b.year, &b.path)));
    discovery.issues.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(discovery)
}

/// Whether `dir` holds a CSV that could be an input (not `latest.csv`).
fn holds_csv(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".csv") && name != "latest.csv"
        })
    })
}

/// `path` relative to `root` with `/` separators, or absolute when outside.
pub fn origin_of(path: &Path, root: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_comes_from_the_parent_directory_then_the_stem() {
        assert_eq!(year_of(Path::new("m/2024/part-1.csv")), Year::parse("2024"));
        assert_eq!(year_of(Path::new("m/metadata-2023.csv")), Year::parse("2023"));
        assert_eq!(year_of(Path::new("m/arxiv_2021_cs.csv")), Year::parse("2021"));
        assert_eq!(year_of(Path::new("m/metadata-20245.csv")), None);
        assert_eq!(year_of(Path::new("m/metadata-latest.csv")), None);
        assert_eq!(
            year_of(Path::new("m/x/metadata-1999-v2.csv")),
            Year::parse("1999")
        );
    }

    #[test]
    fn flat_layout_wins_and_latest_is_never_an_input() {
        let root = tempfile::tempdir().unwrap();
        let meta = root.path().join("metadata");
        std::fs::create_dir_all(meta.join("2020")).unwrap();
        for name in [
            "metadata-2024.csv",
            "metadata-2023.csv",
            "latest.csv",
            "notes.txt",
            "metadata-undated.csv",
        ] {
            std::fs::write(meta.join(name), "paper_id,title,abstract\n").unwrap();
        }
        std::fs::write(meta.join("2020/a.csv"), "paper_id,title,abstract\n").unwrap();
        let found = discover(&meta, root.path()).unwrap();
        let origins: Vec<_> = found.files.iter().map(|f| f.origin.as_str()).collect();
        assert_eq!(
            origins,
            ["metadata/metadata-2023.csv", "metadata/metadata-2024.csv"]
        );
        let named: Vec<String> = found.issues.iter().map(ToString::to_string).collect();
        assert_eq!(named.len(), 2, "{named:?}");
        assert!(
            named[0].contains("metadata/2020: directory not read"),
            "{named:?}"
        );
        assert!(named[1].contains("metadata-undated.csv"), "{named:?}");
    }

    #[test]
    fn csvs_that_are_not_inputs_are_named_with_what_to_rename() {
        let root = tempfile::tempdir().unwrap();
        let meta = root.path().join("metadata");
        std::fs::create_dir_all(meta.join("2024")).unwrap();
        std::fs::create_dir_all(meta.join("empty")).unwrap();
        for name in [
            "metadata-2023.csv",
            "notes.csv",
            "latest.csv",
            "README.md",
            "2024/a.csv",
        ] {
            std::fs::write(meta.join(name), "paper_id,title,abstract\n").unwrap();
        }
        let found = discover(&meta, root.path()).unwrap();
        assert_eq!(found.files.len(), 1);
        let named: Vec<String> = found.issues.iter().map(ToString::to_string).collect();
        assert_eq!(named.len(), 2, "{named:?}");
        assert!(
            named[0].contains("metadata/2024: directory not read") && named[0].contains("metadata-YYYY.csv"),
            "{named:?}"
        );
        assert!(
            named[1].contains("notes.csv: not read") && named[1].contains("rename it metadata-YYYY.csv"),
            "{named:?}"
        );

        // Nested layout: a CSV at the top is not read either.
        std::fs::remove_file(meta.join("metadata-2023.csv")).unwrap();
        let found = discover(&meta, root.path()).unwrap();
        assert_eq!(found.files.len(), 1, "2024/a.csv");
        let named: Vec<String> = found.issues.iter().map(ToString::to_string).collect();
        assert_eq!(named.len(), 1, "{named:?}");
        assert!(
            named[0].contains("notes.csv: not read")
                && named[0].contains("move it into the directory of its year"),
            "{named:?}"
        );
    }

    #[test]
    fn nested_layout_is_used_when_there_is_no_flat_file() {
        let root = tempfile::tempdir().unwrap();
        let meta = root.path().join("metadata");
        std::fs::create_dir_all(meta.join("2024")).unwrap();
        std::fs::create_dir_all(meta.join("misc")).unwrap();
        std::fs::write(meta.join("2024/test.csv"), "").unwrap();
        std::fs::write(meta.join("2024/latest.csv"), "").unwrap();
        std::fs::write(meta.join("misc/dump_2019.csv"), "").unwrap();
        std::fs::write(meta.join("latest.csv"), "").unwrap();
        let found = discover(&meta, root.path()).unwrap();
        let got: Vec<_> = found
            .files
            .iter()
            .map(|f| (f.year.to_string(), f.origin.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("2019".to_string(), "metadata/misc/dump_2019.csv".to_string()),
                ("2024".to_string(), "metadata/2024/test.csv".to_string()),
            ]
        );
    }

    #[test]
    fn a_missing_directory_says_which_config_keys_to_check() {
        let root = tempfile::tempdir().unwrap();
        let message = discover(&root.path().join("nope"), root.path())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("nope") && message.contains("[ingestion].output_dir"),
            "{message}"
        );
    }

    #[test]
    fn origin_outside_the_root_stays_absolute() {
        assert_eq!(origin_of(Path::new("/a/b/c.csv"), Path::new("/a")), "b/c.csv");
        assert_eq!(origin_of(Path::new("/x/c.csv"), Path::new("/a")), "/x/c.csv");
    }
}
