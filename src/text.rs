//! The text that is embedded for a paper, and its hash.
//!
//! The contract fixes the text as `title + "\n\n" + abstract` with leading
//! and trailing whitespace removed. The hash of that text (with the model's
//! document prefix in front) is stored beside each vector so a later run can
//! tell when arXiv changed a paper's title or abstract.

use xxhash_rust::xxh3::Xxh3;

/// Name of the algorithm behind [`TextHash`], recorded in the manifest.
pub const TEXT_HASH_ALGORITHM: &str = "xxh3_128";

/// Whitespace as Python's `str.strip()` sees it: Unicode `White_Space` plus
/// the ASCII separators U+001C..U+001F. The Python original stripped with
/// `str.strip()`, so vectors made by either program agree.
fn is_strip_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The pieces of the prepared text, borrowed from title and abstract:
/// their concatenation is `(title + "\n\n" + abstract).strip()`. Lets the
/// hash be computed without building the string for every row of a scan.
pub fn prepared_parts<'a>(title: &'a str, abstract_text: &'a str) -> [&'a str; 3] {
    let title = title.trim_start_matches(is_strip_space);
    let abstract_end = abstract_text.trim_end_matches(is_strip_space);
    if title.is_empty() {
        return ["", "", abstract_end.trim_start_matches(is_strip_space)];
    }
    if abstract_end.is_empty() {
        return [title.trim_end_matches(is_strip_space), "", ""];
    }
    [title, "\n\n", abstract_end]
}

/// `title + "\n\n" + abstract`, trimmed, as the contract defines it.
pub fn prepare_text(title: &str, abstract_text: &str) -> String {
    prepared_parts(title, abstract_text).concat()
}

/// True when a paper has nothing to embed: title and abstract both blank.
pub fn is_empty_text(title: &str, abstract_text: &str) -> bool {
    title.trim_matches(is_strip_space).is_empty() && abstract_text.trim_matches(is_strip_space).is_empty()
}

/// 128-bit XXH3 of the exact text a model embeds (document prefix included).
///
/// Stored as 32 lowercase hex digits in the year file's `text_hash` column;
/// Python reproduces it with `xxhash.xxh3_128_hexdigest((prefix + text).encode())`.
/// Not cryptographic: it detects edits, it does not resist forgery, which is
/// all staleness detection needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TextHash(pub u128);

impl TextHash {
    /// Hash of `prefix + prepare_text(title, abstract)` without building the
    /// string when no trimming is needed.
    pub fn of_paper(prefix: &str, title: &str, abstract_text: &str) -> TextHash {
        let mut hasher = Xxh3::new();
        hasher.update(prefix.as_bytes());
        for part in prepared_parts(title, abstract_text) {
            hasher.update(part.as_bytes());
        }
        TextHash(hasher.digest128())
    }

    /// Hash of `prefix + text`, where `text` is already prepared.
    pub fn of_text(prefix: &str, text: &str) -> TextHash {
        let mut hasher = Xxh3::new();
        hasher.update(prefix.as_bytes());
        hasher.update(text.as_bytes());
        TextHash(hasher.digest128())
    }

    /// The stored form: 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses the stored form; `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<TextHash> {
        if hex.len() != 32 {
            return None;
        }
        u128::from_str_radix(hex, 16).ok().map(TextHash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_joins_title_and_abstract_and_trims_the_ends_only() {
        let title = "Calculation of prompt diphoton production\n  cross sections";
        let abstract_text = "  A fully differential\ncalculation.\n";
        assert_eq!(
            prepare_text(title, abstract_text),
            "Calculation of prompt diphoton production\n  cross sections\n\n  A fully differential\ncalculation."
        );
    }

    #[test]
    fn a_missing_part_leaves_the_other_trimmed() {
        assert_eq!(prepare_text("", "  abstract only \n"), "abstract only");
        assert_eq!(prepare_text("Title", ""), "Title");
        assert_eq!(prepare_text(" \u{1f}", "\u{a0}"), "");
        assert!(is_empty_text(" ", "\n\t"));
        assert!(!is_empty_text("x", ""));
    }

    #[test]
    fn hash_covers_the_prefix_and_round_trips_as_hex() {
        let plain = TextHash::of_paper("", "T", "A");
        let prefixed = TextHash::of_paper("passage: ", "T", "A");
        assert_ne!(plain, prefixed);
        assert_eq!(TextHash::from_hex(&plain.to_hex()), Some(plain));
        assert_eq!(plain.to_hex().len(), 32);
        assert_eq!(TextHash::from_hex("xyz"), None);
    }

    #[test]
    fn hash_matches_the_reference_xxh3_128_value() {
        // xxhash.xxh3_128_hexdigest(b"") == "99aa06d3014798d86001c324468d497f"
        assert_eq!(
            TextHash::of_text("", "").to_hex(),
            "99aa06d3014798d86001c324468d497f"
        );
        // xxhash.xxh3_128_hexdigest("passage: T\n\nA".encode())
        assert_eq!(
            TextHash::of_paper("passage: ", "T", "A").to_hex(),
            "0bb6a752f114b947ca2f032cde292b23"
        );
    }

    proptest::proptest! {
        /// The borrowed pieces always equal the contract's definition.
        #[test]
        fn parts_equal_python_strip_of_the_joined_text(
            title in "[ a\\n\\t\u{a0}\u{1f}x]{0,8}",
            abstract_text in "[ b\\n\\r\u{3000}y]{0,8}",
        ) {
            let joined = format!("{title}\n\n{abstract_text}");
            let expected = joined.trim_matches(is_strip_space);
            proptest::prop_assert_eq!(prepare_text(&title, &abstract_text), expected);
            proptest::prop_assert_eq!(
                TextHash::of_paper("p", &title, &abstract_text),
                TextHash::of_text("p", expected)
            );
        }
    }
}
