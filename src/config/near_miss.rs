//! "Did you mean" for config keys a small edit away from one papersys reads.
//!
//! Unknown top-level keys and sections cannot be errors (the file is shared
//! with the rest of the pipeline), but `dat_root` or `[embeding]` is almost
//! certainly a typo whose effect (a default data root, no models) would
//! otherwise be silent. Such keys get a warning with their line.

/// Top-level keys and sections papersys reads.
const TOP_LEVEL: [&str; 3] = ["data_root", "ingestion", "embedding"];

/// Keys papersys reads in `[ingestion]` (`output_dir` for every command,
/// the rest for `papersys ingest`); others belong to other tools.
const INGESTION: [&str; 14] = [
    "output_dir",
    "start_date",
    "end_date",
    "batch_size",
    "max_retries",
    "retry_delay",
    "oai_base_url",
    "metadata_prefix",
    "categories",
    "save_raw_responses",
    "request_interval",
    "contact",
    "window_days",
    "request_timeout",
];

/// A key that looks like a typo of a known one.
#[derive(Debug, PartialEq, Eq)]
pub struct NearMiss {
    /// 1-based line of the key, when found.
    pub line: Option<usize>,
    /// What to say.
    pub message: String,
}

/// The near-misses in config `text` (already known to be valid TOML).
pub fn find(text: &str) -> Vec<NearMiss> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (key, value) in &table {
        if let Some(known) = suggestion(key, &TOP_LEVEL) {
            let what = if value.is_table() { "section" } else { "key" };
            let shown = if value.is_table() {
                format!("[{key}]")
            } else {
                format!("`{key}`")
            };
            found.push(NearMiss {
                line: line_of(text, key, value.is_table()),
                message: format!(
                    "unknown {what} {shown} is ignored (the file is shared with other tools); did you mean `{known}`?"
                ),
            });
        }
    }
    found.extend(keys_of_section(text, &table, "ingestion", &[("", &INGESTION)]));
    found.sort_by_key(|n| n.line);
    found
}

/// The near-misses among the keys of the top-level table `section` of
/// config `text`: `known` gives, per table below it (`""` for the section
/// itself, `"a.b"` for `[section.a.b]`), the keys papersys reads there.
/// Every section papersys shares with other tools (`[ingestion]`,
/// `[recommend_pipeline]`) is checked by it, with the same words.
pub(crate) fn in_section(text: &str, section: &str, known: &[(&str, &[&str])]) -> Vec<NearMiss> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    keys_of_section(text, &table, section, known)
}

fn keys_of_section(
    text: &str,
    root: &toml::Table,
    section: &str,
    known: &[(&str, &[&str])],
) -> Vec<NearMiss> {
    let mut found = Vec::new();
    for (path, keys) in known {
        let mut table = root.get(section).and_then(toml::Value::as_table);
        for part in path.split('.').filter(|p| !p.is_empty()) {
            table = table.and_then(|t| t.get(part)).and_then(toml::Value::as_table);
        }
        let Some(table) = table else { continue };
        let prefix = if path.is_empty() {
            format!("{section}.")
        } else {
            format!("{section}.{path}.")
        };
        for key in table.keys() {
            if let Some(near) = suggestion(key, keys) {
                found.push(NearMiss {
                    line: line_of(text, key, false),
                    message: format!(
                        "`{prefix}{key}` is not read by papersys; did you mean `{prefix}{near}`?"
                    ),
                });
            }
        }
    }
    found.sort_by_key(|n| n.line);
    found
}

/// The known key `key` is a near miss of, if any: equal ignoring case and
/// `-`/`_`, or (for keys of four characters or more) at most two edits
/// away. The stages that own a section (`[recommend_pipeline]`) use it too.
pub(crate) fn suggestion<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    if known.contains(&key) {
        return None;
    }
    let fold = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let lowered = fold(key);
    known
        .iter()
        .copied()
        .filter(|k| lowered == fold(k) || (key.len() >= 4 && distance(&lowered, k) <= 2))
        .min_by_key(|k| distance(&lowered, &fold(k)))
}

/// Edit distance with adjacent transpositions (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Line of the first `key = ...` (or, for a table, `[key]`, `[[key...`,
/// `[key.sub]`) in `text`.
fn line_of(text: &str, key: &str, table: bool) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            let rest = if table && line.starts_with('[') {
                line.trim_start_matches('[').trim_start()
            } else {
                line
            };
            rest.strip_prefix(key).is_some_and(|after| {
                let after = after.trim_start();
                after.starts_with('=') || after.starts_with(']') || after.starts_with('.')
            })
        })
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_of_known_keys_and_sections_are_found_with_their_line() {
        let text = "dat_root = \"/d\"\nscheduler = 1\n\n[embeding]\ncheckpoint_interval = 3\n\n[ingestion]\nouput_dir = \"m\"\nbatch = 3\n";
        let found = find(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].line, Some(1));
        assert!(found[0].message.contains("`dat_root`") && found[0].message.contains("`data_root`"));
        assert_eq!(found[1].line, Some(4));
        assert!(found[1].message.contains("[embeding]") && found[1].message.contains("`embedding`"));
        assert_eq!(found[2].line, Some(8));
        assert!(found[2].message.contains("ingestion.output_dir"), "{found:?}");
    }

    #[test]
    fn case_and_dashes_do_not_hide_a_key() {
        assert_eq!(suggestion("c", &["C", "max_iter"]), Some("C"));
        assert_eq!(suggestion("Max-Iter", &["C", "max_iter"]), Some("max_iter"));
        assert_eq!(suggestion("C", &["C", "max_iter"]), None);
        assert_eq!(suggestion("xyz", &["C", "max_iter"]), None);
    }

    #[test]
    fn every_ingestion_key_papersys_reads_is_known() {
        let text = "[ingestion]\nrequest_intervall = 3\ncategores = []\nenabled = true\ncurated_dir = \"c\"\nwindow_days = 7\n";
        let found = find(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].message.contains("`ingestion.request_interval`"),
            "{found:?}"
        );
        assert_eq!(found[1].line, Some(3));
        assert!(found[1].message.contains("`ingestion.categories`"), "{found:?}");
    }

    #[test]
    fn other_tools_keys_and_correct_keys_pass() {
        let text = "data_root = \"/d\"\n[scheduler]\nx = 1\n[[llms]]\nname = \"a\"\n[embedding]\n[ingestion]\noutput_dir = \"m\"\nbatch_size = 3\n[backup]\n";
        assert_eq!(find(text), Vec::new());
        assert_eq!(find("[[Embedding.models]]\nalias = \"a\"\n")[0].line, Some(1));
    }
}
