//! The metadata a query shows and filters by: title, categories and
//! publication date per paper, read from a year's metadata CSVs when its
//! segment is built, so that a query never parses CSV.

use std::collections::HashMap;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::metadata::{InputIssue, MetadataFile};

/// What the catalog keeps of one paper.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaperMeta {
    /// Title on one line (arXiv's hard wraps collapsed).
    pub title: String,
    /// Categories, primary first.
    pub categories: Vec<String>,
    /// `published_at` as in the CSV.
    pub published_at: String,
}

/// `text` with every run of whitespace made one space, trimmed.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn meta_of(title: &str, categories: &str, primary: &str, published_at: &str) -> PaperMeta {
    let mut list: Vec<String> = categories
        .split([';', ' '])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let primary = primary.trim();
    if !primary.is_empty() {
        list.retain(|c| c != primary);
        list.insert(0, primary.to_string());
    }
    PaperMeta {
        title: one_line(title),
        categories: list,
        published_at: published_at.trim().to_string(),
    }
}

/// The papers of one year's metadata files (given in precedence order: a
/// later row of the same paper wins), with the rows and files that could
/// not be read. Only the columns shown are decoded (the rows are read as
/// bytes, as `read_records` would split them), so a year's gigabyte of
/// abstracts costs little more than reading it.
pub fn read_year<'a>(
    files: impl IntoIterator<Item = &'a MetadataFile>,
) -> (HashMap<String, PaperMeta>, Vec<InputIssue>) {
    let mut papers = HashMap::new();
    let mut issues = Vec::new();
    for file in files {
        if let Err(issue) = read_file(&file.path, &mut papers, &mut issues) {
            issues.push(issue);
        }
    }
    (papers, issues)
}

fn read_file(
    path: &Path,
    papers: &mut HashMap<String, PaperMeta>,
    issues: &mut Vec<InputIssue>,
) -> Result<(), InputIssue> {
    let issue = |line: Option<u64>, message: String| InputIssue {
        path: path.to_path_buf(),
        line,
        message,
    };
    let file = File::open(path).map_err(|e| issue(None, format!("cannot open: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(BufReader::with_capacity(1 << 20, file));
    let headers = reader
        .byte_headers()
        .map_err(|e| issue(None, format!("cannot read the header: {e}")))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.strip_prefix("\u{feff}".as_bytes()).unwrap_or(h) == name.as_bytes())
    };
    let id_column = column("paper_id").ok_or_else(|| issue(None, "no `paper_id` column".into()))?;
    let [title, categories, primary, published] =
        ["title", "categories", "primary_category", "published_at"].map(column);
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line());
                let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                issues.push(issue(line, format!("row skipped: {e}")));
                if io {
                    break;
                }
                continue;
            }
        }
        let field = |c: Option<usize>| {
            c.and_then(|c| record.get(c))
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        };
        let id = field(Some(id_column));
        let id = id.trim();
        if id.is_empty() {
            continue;
        }
        let meta = meta_of(
            &field(title),
            &field(categories),
            &field(primary),
            &field(published),
        );
        papers.insert(id.to_string(), meta);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_like_read_records_and_later_rows_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        std::fs::write(
            &path,
            "\u{feff}paper_id,title,abstract,categories\n1,\"Old\",a,cs.CL\n2,t\n1,\"New,\n title\",a,cs.AI;cs.CL\n",
        )
        .unwrap();
        let file = MetadataFile {
            path: path.clone(),
            origin: "metadata/metadata-2024.csv".into(),
            year: crate::metadata::Year::parse("2024").unwrap(),
        };
        let (papers, issues) = read_year([&file]);
        assert_eq!(papers.len(), 1);
        assert_eq!(papers["1"].title, "New, title");
        assert_eq!(papers["1"].categories, ["cs.AI", "cs.CL"]);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].line, Some(3));
    }

    #[test]
    fn primary_category_comes_first_and_titles_are_one_line() {
        let meta = meta_of(
            "A title,\n  wrapped ",
            "cs.AI;cs.CL",
            "cs.CL",
            " 2024-01-02T00:00:00Z",
        );
        assert_eq!(meta.title, "A title, wrapped");
        assert_eq!(meta.categories, ["cs.CL", "cs.AI"]);
        assert_eq!(meta.published_at, "2024-01-02T00:00:00Z");
    }
}
