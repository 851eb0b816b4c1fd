//! arXiv identifiers as people and reference managers write them.
//!
//! Two shapes exist: new-style `YYMM.NNNN` / `YYMM.NNNNN` (since 2007) and
//! old-style `archive/YYMMNNN` (`hep-th/9901001`, sometimes with a subject
//! class, `math.AG/0301001`). Both may carry a version (`v2`), which is
//! stripped: preferences are about a paper, not one of its versions.

/// The canonical id of a bare arXiv id (`2401.00001v2` -> `2401.00001`,
/// `arXiv:hep-th/9901001` -> `hep-th/9901001`, an arxiv.org URL or the
/// arXiv DOI -> its id). `None` when `text` is not one id.
pub fn normalize(text: &str) -> Option<String> {
    let text = text.trim();
    if let Some((id, end)) = parse_at(text, 0)
        && end == text.len()
    {
        return Some(id);
    }
    let found = find_all(text);
    match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Every arXiv id mentioned in `text` after an `arXiv` marker: `arXiv:ID`,
/// `arXiv ID`, `arxiv.org/abs/ID` (also `/pdf/`, `/html/`), and the DOI
/// `10.48550/arXiv.ID`; case-insensitive, versions stripped, each id once,
/// in order of appearance.
pub fn find_all(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut ids: Vec<String> = Vec::new();
    let mut from = 0;
    while let Some(found) = lower[from..].find("arxiv") {
        let mut at = from + found + "arxiv".len();
        from = at;
        for marker in [".org/abs/", ".org/pdf/", ".org/html/", ":", "."] {
            if lower[at..].starts_with(marker) {
                at += marker.len();
                break;
            }
        }
        while lower[at..].starts_with(' ') {
            at += 1;
        }
        if let Some((id, end)) = parse_at(text, at) {
            from = end;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// Parses an id starting at byte `at`; returns it (version stripped) and
/// the byte after it (version included).
fn parse_at(text: &str, at: usize) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let digits = |from: usize| {
        bytes[from.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    // New style: four digits, a dot, four or five digits.
    if digits(at) == 4 && bytes.get(at + 4) == Some(&b'.') {
        let tail = digits(at + 5);
        if tail == 4 || tail == 5 {
            let end = at + 5 + tail;
            return Some((text[at..end].to_string(), skip_version(bytes, end)));
        }
        return None;
    }
    // Old style: a lowercase archive (letters and `-`), an optional subject
    // class (`.XX`), a slash, seven digits.
    let archive = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_lowercase() || **b == b'-')
        .count();
    if archive < 2 {
        return None;
    }
    let mut slash = at + archive;
    if bytes.get(slash) == Some(&b'.') {
        let class = bytes[slash + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if class != 2 {
            return None;
        }
        slash += 1 + class;
    }
    if bytes.get(slash) != Some(&b'/') || digits(slash + 1) != 7 {
        return None;
    }
    let end = slash + 8;
    let id = format!("{}/{}", &text[at..at + archive], &text[slash + 1..end]);
    Some((id, skip_version(bytes, end)))
}

fn skip_version(bytes: &[u8], end: usize) -> usize {
    if bytes.get(end) == Some(&b'v') {
        let n = bytes[end + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n > 0 {
            return end + 1 + n;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ids_lose_their_version() {
        assert_eq!(normalize("2401.00001").as_deref(), Some("2401.00001"));
        assert_eq!(normalize(" 2401.00001v2 ").as_deref(), Some("2401.00001"));
        assert_eq!(normalize("0704.0001").as_deref(), Some("0704.0001"));
        assert_eq!(normalize("hep-th/9901001v3").as_deref(), Some("hep-th/9901001"));
        assert_eq!(normalize("math.AG/0301001").as_deref(), Some("math/0301001"));
        assert_eq!(normalize("arXiv:2401.00001").as_deref(), Some("2401.00001"));
        assert_eq!(
            normalize("ARXIV: hep-th/9901001").as_deref(),
            Some("hep-th/9901001")
        );
    }

    #[test]
    fn non_ids_are_refused() {
        for bad in [
            "",
            "2401.001",
            "240.00001",
            "2401.000011",
            "hello",
            "hep-th/990100",
            "x/9901001",
            "2401.00001 extra",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_are_found_in_urls_dois_and_notes() {
        assert_eq!(find_all("https://arxiv.org/abs/2401.00001v2"), ["2401.00001"]);
        assert_eq!(find_all("http://arxiv.org/pdf/2401.00001v1.pdf"), ["2401.00001"]);
        assert_eq!(find_all("10.48550/arXiv.2401.00001"), ["2401.00001"]);
        assert_eq!(
            find_all("http://arxiv.org/abs/hep-th/9901001"),
            ["hep-th/9901001"]
        );
        assert_eq!(
            find_all("arXiv: 2401.00001 [cs.CL]\nCitation Key: x\narXiv:2402.00002v4"),
            ["2401.00001", "2402.00002"]
        );
        assert!(find_all("10.1103/PhysRevD.2401.12345").is_empty());
        assert!(find_all("https://doi.org/10.1145/3292500.3330701").is_empty());
    }
}
