//! One arXiv paper as the sources parse it, and the rule that turns it into
//! a contract metadata row. Every source (OAI-PMH `arXiv`/`arXivRaw`, the
//! Kaggle snapshot) goes through [`to_record`], so the same paper yields the
//! same row whichever way it arrived.

use crate::metadata::PaperRecord;

/// An author as arXiv structures it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Author {
    /// Family name.
    pub keyname: String,
    /// Given names.
    pub forenames: String,
    /// Suffix (`Jr`, `III`), often empty.
    pub suffix: String,
}

/// One paper, as parsed from a source, before it becomes a row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArxivPaper {
    /// arXiv id without version or `oai:arXiv.org:` prefix.
    pub id: String,
    /// Title exactly as sent (entities decoded, wraps kept).
    pub title: String,
    /// Abstract exactly as sent.
    pub abstract_text: String,
    /// Categories, primary first.
    pub categories: Vec<String>,
    /// Structured authors, when the source gives them.
    pub authors: Vec<Author>,
    /// The authors as one string, when the source gives only that (arXivRaw).
    pub authors_text: String,
    /// Dates of the versions, oldest first, as ISO-8601 UTC.
    pub version_dates: Vec<String>,
    /// DOI(s) as sent.
    pub doi: String,
    /// Comments.
    pub comment: String,
    /// Journal reference.
    pub journal_ref: String,
    /// License URL.
    pub license: String,
}

/// The contract row of `paper`; `source` names papersys and the format.
pub fn to_record(paper: &ArxivPaper, source: &str) -> PaperRecord {
    todo_placeholder(paper, source)
}

fn todo_placeholder(paper: &ArxivPaper, source: &str) -> PaperRecord {
    PaperRecord {
        paper_id: paper.id.clone(),
        source: source.to_string(),
        ..PaperRecord::default()
    }
}
