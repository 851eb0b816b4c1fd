//! One arXiv paper as the sources parse it, and the rule that turns it into
//! a contract metadata row. Every source (OAI-PMH `arXiv`/`arXivRaw`, the
//! Kaggle snapshot) goes through [`to_record`], so the same paper yields the
//! same row whichever way it arrived.
//!
//! The rule, column by column:
//! - `title`, `abstract`, `doi`, `comment`, `journal_ref`, `license`: exactly
//!   as sent (hard wraps, leading spaces and TeX kept; nothing trimmed).
//! - `categories`: split on whitespace, duplicates dropped, `;`-joined in the
//!   source's order; `primary_category` is the first.
//! - `authors`: when the source carries the author *string* (arXivRaw, the
//!   snapshot's `authors`), it is split by [`split_author_string`]; only when
//!   it carries structured authors alone (the `arXiv` format, a snapshot line
//!   with `authors_parsed` only) are those written as "forenames keyname
//!   suffix". The string wins because it is the one thing the snapshot and
//!   arXivRaw share verbatim: the snapshot's `authors_parsed` is a lossy
//!   re-parse of it (TeX turned into Unicode, `C.-P.` split into `C. -P.`).
//! - `published_at`: the first version's date, `updated_at` the last
//!   version's (the same for a paper with one version), both
//!   `YYYY-MM-DDTHH:MM:SSZ`, see [`normalize_date`].

use jiff::Timestamp;

use crate::metadata::PaperRecord;

/// `source` of rows imported from the Kaggle snapshot.
pub const SOURCE_SNAPSHOT: &str = "papersys.ingest.snapshot";

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
    /// The authors as one string, when the source gives it (arXivRaw, the
    /// snapshot). When non-empty it wins over `authors`.
    pub authors_text: String,
    /// Dates of the versions, oldest first: ISO-8601, RFC 2822
    /// (`Mon, 2 Apr 2007 19:18:42 GMT`) or day-only (`2007-04-02`);
    /// [`to_record`] normalises them.
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

/// The contract row of `paper`; `source` names papersys and the format
/// (e.g. [`SOURCE_SNAPSHOT`], `papersys.ingest.oai:arXivRaw`).
pub fn to_record(paper: &ArxivPaper, source: &str) -> PaperRecord {
    into_record(paper.clone(), source)
}

/// [`to_record`], consuming the paper (no copies of its text).
pub fn into_record(paper: ArxivPaper, source: &str) -> PaperRecord {
    let categories = join_categories(paper.categories.iter().map(String::as_str));
    let primary_category = categories.split(';').next().unwrap_or("").to_string();
    let authors = if paper.authors_text.trim().is_empty() {
        join_structured_authors(&paper.authors)
    } else {
        split_author_string(&paper.authors_text)
    };
    let dates: Vec<String> = paper
        .version_dates
        .iter()
        .filter(|d| !d.trim().is_empty())
        .map(|d| normalize_date(d).unwrap_or_else(|| d.trim().to_string()))
        .collect();
    let published_at = dates.first().cloned().unwrap_or_default();
    let updated_at = dates.last().cloned().unwrap_or_default();
    PaperRecord {
        paper_id: paper.id.trim().to_string(),
        title: paper.title,
        abstract_text: paper.abstract_text,
        categories,
        primary_category,
        authors,
        published_at,
        updated_at,
        doi: paper.doi,
        comment: paper.comment,
        journal_ref: paper.journal_ref,
        license: paper.license,
        source: source.to_string(),
    }
}

/// Categories `;`-joined in order, each entry split further on whitespace
/// (arXiv sends `"math.CO cs.CG"` as one string), duplicates dropped.
pub fn join_categories<'a>(categories: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    join_categories_into(categories, &mut out);
    out
}

/// [`join_categories`] into `out` (its content replaced).
pub fn join_categories_into<'a>(categories: impl IntoIterator<Item = &'a str>, out: &mut String) {
    out.clear();
    for entry in categories {
        for c in entry.split(|ch: char| ch.is_whitespace() || ch == ';' || ch == ',') {
            if !c.is_empty() && !out.split(';').any(|seen| seen == c) {
                if !out.is_empty() {
                    out.push(';');
                }
                out.push_str(c);
            }
        }
    }
}

/// Structured authors as `forenames keyname suffix`, `;`-joined; each name
/// has its whitespace collapsed to single spaces.
pub fn join_structured_authors(authors: &[Author]) -> String {
    let names: Vec<String> = authors
        .iter()
        .map(|a| {
            collapse_whitespace(&format!("{} {} {}", a.forenames, a.keyname, a.suffix)).replace(';', ",")
        })
        .filter(|n| !n.is_empty())
        .collect();
    names.join(";")
}

/// Name suffixes that arXiv authors write after a comma (`Smith, Jr.`);
/// they stay with the name before them.
const SUFFIXES: [&str; 8] = ["Jr", "Jr.", "Sr", "Sr.", "II", "III", "IV", "V"];

/// Splits an arXiv author string into names, `;`-joined.
///
/// Whitespace runs (hard wraps) become one space; parenthesised groups
/// (affiliations, `(1) ((1) MIT)`) are removed when the parentheses balance;
/// names are separated by `,`, `;`, ` and ` and ` & `; a lone suffix
/// (`Jr.`, `III`) after a comma joins the name before it.
/// `"D.V. Shetty, S.J. Yennello, and G.A. Souliotis"` gives
/// `"D.V. Shetty;S.J. Yennello;G.A. Souliotis"`.
pub fn split_author_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    split_author_string_into(text, &mut out);
    out
}

/// [`split_author_string`] into `out` (its content replaced). Strings
/// without parentheses, nearly all of them, are split in one pass without
/// intermediate strings.
pub fn split_author_string_into(text: &str, out: &mut String) {
    out.clear();
    if text.contains(['(', ')']) {
        out.push_str(&split_author_string_general(text));
        return;
    }
    let mut have_name = false;
    for part in text.split([',', ';']) {
        let mut words = part.split_whitespace();
        let Some(first) = words.next() else { continue };
        let mut rest = words.peekable();
        if rest.peek().is_none() && have_name && SUFFIXES.contains(&first) {
            out.push(' ');
            out.push_str(first);
            continue;
        }
        let mut in_name = false;
        for word in std::iter::once(first).chain(rest) {
            if word == "and" || word == "&" {
                in_name = false;
            } else {
                if in_name {
                    out.push(' ');
                } else {
                    if have_name {
                        out.push(';');
                    }
                    have_name = true;
                    in_name = true;
                }
                out.push_str(word);
            }
        }
    }
}

/// [`split_author_string`] by the rule as stated, for every string.
fn split_author_string_general(text: &str) -> String {
    let collapsed = collapse_whitespace(text);
    let without_groups = strip_parenthesised(&collapsed).unwrap_or(collapsed);
    let mut names: Vec<String> = Vec::new();
    for part in without_groups.split([',', ';']) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        if SUFFIXES.contains(&part)
            && let Some(last) = names.last_mut()
        {
            last.push(' ');
            last.push_str(part);
            continue;
        }
        for name in split_on_conjunctions(part) {
            names.push(name);
        }
    }
    names.join(";")
}

fn split_on_conjunctions(part: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for word in part.split(' ') {
        if word == "and" || word == "&" {
            if !current.is_empty() {
                names.push(current.join(" "));
            }
            current.clear();
        } else if !word.is_empty() {
            current.push(word);
        }
    }
    if !current.is_empty() {
        names.push(current.join(" "));
    }
    names
}

/// `text` with parenthesised groups removed (each replaced by a space and
/// whitespace collapsed again); `None` when the parentheses do not balance.
fn strip_parenthesised(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for ch in text.chars() {
        match ch {
            '(' => {
                if depth == 0 {
                    out.push(' ');
                }
                depth += 1;
            }
            ')' => depth = depth.checked_sub(1)?,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    (depth == 0).then(|| collapse_whitespace(&out).replace(" ,", ","))
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical form of a date: `YYYY-MM-DDTHH:MM:SSZ` in UTC. Accepts
/// RFC 2822 (`Mon, 2 Apr 2007 19:18:42 GMT`, a wrong weekday tolerated),
/// ISO-8601/RFC 3339 with an offset or `Z`, and a day alone (`2007-04-02`,
/// read as midnight UTC). `None` when it is none of these.
pub fn normalize_date(text: &str) -> Option<String> {
    if let Some(iso) = rfc2822_gmt(text.trim()) {
        return std::str::from_utf8(&iso).ok().map(str::to_string);
    }
    parse_instant(text).map(format_instant)
}

/// [`normalize_date`] of the one form arXiv's snapshot uses,
/// `Mon, 2 Apr 2007 19:18:42 GMT`, without the general parser (a snapshot
/// import normalises millions of them). `None` for anything else, or for
/// a date this fast path does not vouch for (then the general parser
/// decides); when `Some`, the bytes are what the general parser gives.
pub fn rfc2822_gmt(text: &str) -> Option<[u8; 20]> {
    const WEEKDAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
    ];
    let b = text.as_bytes();
    if !(28..=29).contains(&b.len()) || !WEEKDAYS.contains(&&b[..3]) || &b[3..5] != b", " {
        return None;
    }
    let digits = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (day_text, rest) = if b.len() == 28 {
        (&b[5..6], &b[6..])
    } else {
        (&b[5..7], &b[7..])
    };
    // rest: " Apr 2007 19:18:42 GMT"
    if rest[0] != b' '
        || rest[4] != b' '
        || rest[9] != b' '
        || rest[12] != b':'
        || rest[15] != b':'
        || &rest[18..] != b" GMT"
    {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == &rest[1..4])? as u32 + 1;
    let (day, year) = (digits(day_text)?, digits(&rest[5..9])?);
    let (hour, minute, second) = (
        digits(&rest[10..12])?,
        digits(&rest[13..15])?,
        digits(&rest[16..18])?,
    );
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1900..=2099).contains(&year)
        || !(1..=month_days).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut n: u32| {
        for k in (at..at + width).rev() {
            out[k] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, hour);
    put(14, 2, minute);
    put(17, 2, second);
    Some(out)
}

/// The instant a date names, for comparing dates as times rather than
/// strings (same forms as [`normalize_date`]).
pub fn parse_instant(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts);
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return date.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp());
    }
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp());
    }
    jiff::fmt::rfc2822::DateTimeParser::new()
        .relaxed_weekday(true)
        .parse_timestamp(text)
        .ok()
}

/// `ts` as `YYYY-MM-DDTHH:MM:SSZ` (sub-seconds dropped).
pub fn format_instant(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Year of a row's `published_at`, the year file it belongs to.
pub fn year_of_date(text: &str) -> Option<u16> {
    let ts = parse_instant(text)?;
    u16::try_from(ts.to_zoned(jiff::tz::TimeZone::UTC).year()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_every_arxiv_form_become_iso_utc() {
        assert_eq!(
            normalize_date("Mon, 2 Apr 2007 19:18:42 GMT").as_deref(),
            Some("2007-04-02T19:18:42Z")
        );
        assert_eq!(
            normalize_date("Tue, 2 Apr 2007 19:18:42 GMT").as_deref(),
            Some("2007-04-02T19:18:42Z"),
            "a wrong weekday is tolerated"
        );
        assert_eq!(
            normalize_date("2007-04-02").as_deref(),
            Some("2007-04-02T00:00:00Z")
        );
        assert_eq!(
            normalize_date("2025-05-01T17:59:59Z").as_deref(),
            Some("2025-05-01T17:59:59Z")
        );
        assert_eq!(
            normalize_date("2025-05-01T19:59:59.5+02:00").as_deref(),
            Some("2025-05-01T17:59:59Z")
        );
        assert_eq!(normalize_date("yesterday"), None);
        assert_eq!(normalize_date(""), None);
        assert_eq!(year_of_date("Mon, 31 Dec 2007 23:59:59 GMT"), Some(2007));
    }

    proptest::proptest! {
        #[test]
        fn the_snapshot_date_fast_path_agrees_with_the_general_parser(
            weekday in proptest::sample::select(vec!["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Xyz"]),
            day in 0u32..33,
            padded in proptest::bool::ANY,
            month in proptest::sample::select(vec!["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Foo"]),
            year in 1890u32..2110,
            hour in 0u32..25,
            minute in 0u32..61,
            second in 0u32..61,
        ) {
            let day_text = if padded { format!("{day:02}") } else { day.to_string() };
            let text = format!("{weekday}, {day_text} {month} {year} {hour:02}:{minute:02}:{second:02} GMT");
            let general = parse_instant(&text).map(format_instant);
            match rfc2822_gmt(&text) {
                Some(fast) => proptest::prop_assert_eq!(
                    Some(std::str::from_utf8(&fast).unwrap().to_string()),
                    general.clone()
                ),
                None => proptest::prop_assert!(
                    // A leap second (`:60`), read as `:59`, is left to the
                    // general parser.
                    general.is_none() || !(1900..=2099).contains(&year) || second == 60,
                    "{text}: the fast path refused a date the general parser reads: {general:?}"
                ),
            }
            proptest::prop_assert_eq!(normalize_date(&text), general);
        }
    }

    #[test]
    fn author_strings_split_into_names() {
        assert_eq!(
            split_author_string("D.V. Shetty, S.J. Yennello, and G.A. Souliotis"),
            "D.V. Shetty;S.J. Yennello;G.A. Souliotis"
        );
        assert_eq!(
            split_author_string("Ileana Streinu and Louis Theran"),
            "Ileana Streinu;Louis Theran"
        );
        assert_eq!(
            split_author_string("C. Bal\\'azs, E. L. Berger,\n  P. M. Nadolsky, C.-P. Yuan"),
            "C. Bal\\'azs;E. L. Berger;P. M. Nadolsky;C.-P. Yuan"
        );
        assert_eq!(
            split_author_string("A. Smith (1), B. Jones (1 and 2) ((1) MIT, (2) CERN)"),
            "A. Smith;B. Jones"
        );
        assert_eq!(
            split_author_string("John Smith, Jr., Ann Lee & Bo Wu"),
            "John Smith Jr.;Ann Lee;Bo Wu"
        );
        assert_eq!(split_author_string("ATLAS Collaboration"), "ATLAS Collaboration");
        assert_eq!(split_author_string("A. Smith (MIT"), "A. Smith (MIT");
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_author_split_agrees_with_the_rule(
            words in proptest::collection::vec(
                proptest::sample::select(vec![
                    "Ann", "B.", "Lee", "and", "&", "Jr.", "III", " ", "  ", "\n ", ",", ", ", ";", "\u{a0}", "(1)", "(", ")", "é",
                ]),
                0..12,
            ),
        ) {
            let text: String = words.concat();
            proptest::prop_assert_eq!(split_author_string(&text), split_author_string_general(&text), "{:?}", text);
        }
    }

    #[test]
    fn structured_authors_are_forenames_keyname_suffix() {
        let authors = [
            Author {
                keyname: "Smith".into(),
                forenames: "John".into(),
                suffix: "Jr".into(),
            },
            Author {
                keyname: "ATLAS Collaboration".into(),
                ..Author::default()
            },
        ];
        assert_eq!(
            join_structured_authors(&authors),
            "John Smith Jr;ATLAS Collaboration"
        );
    }

    #[test]
    fn a_paper_becomes_the_contract_row() {
        let paper = ArxivPaper {
            id: "0704.0716".into(),
            title: "Limit distributions\n  and scaling".into(),
            abstract_text: "  We discuss.\n".into(),
            categories: vec!["math-ph math.MP".into(), "math-ph".into()],
            authors: vec![Author {
                keyname: "Ignored".into(),
                ..Author::default()
            }],
            authors_text: "Christoph Richard".into(),
            version_dates: vec![
                "Thu, 5 Apr 2007 12:45:03 GMT".into(),
                "Fri, 14 Nov 2008 09:07:25 GMT".into(),
            ],
            doi: "10.1/a 10.1/b".into(),
            comment: "54 pages; v3 changes in\n  some proofs".into(),
            journal_ref: "LNP 775".into(),
            license: "http://arxiv.org/licenses/nonexclusive-distrib/1.0/".into(),
        };
        let row = to_record(&paper, SOURCE_SNAPSHOT);
        assert_eq!(row.paper_id, "0704.0716");
        assert_eq!(row.title, "Limit distributions\n  and scaling");
        assert_eq!(row.abstract_text, "  We discuss.\n");
        assert_eq!(row.categories, "math-ph;math.MP");
        assert_eq!(row.primary_category, "math-ph");
        assert_eq!(row.authors, "Christoph Richard");
        assert_eq!(row.published_at, "2007-04-05T12:45:03Z");
        assert_eq!(row.updated_at, "2008-11-14T09:07:25Z");
        assert_eq!(row.doi, "10.1/a 10.1/b");
        assert_eq!(row.comment, "54 pages; v3 changes in\n  some proofs");
        assert_eq!(row.journal_ref, "LNP 775");
        assert_eq!(row.license, "http://arxiv.org/licenses/nonexclusive-distrib/1.0/");
        assert_eq!(row.source, "papersys.ingest.snapshot");

        let one_version = ArxivPaper {
            authors_text: String::new(),
            version_dates: vec!["2007-04-05".into()],
            ..paper
        };
        let row = to_record(&one_version, "papersys.ingest.oai:arXiv");
        assert_eq!(row.authors, "Ignored");
        assert_eq!(row.published_at, "2007-04-05T00:00:00Z");
        assert_eq!(row.updated_at, row.published_at);
    }
}
