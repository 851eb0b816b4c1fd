//! The metadata CSV reader on arbitrary bytes: never panics, never loops,
//! hands out only ids that pass its own checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata-2024.csv");
    std::fs::write(&path, data).expect("write");
    let mut issues = Vec::new();
    let mut rows = 0u64;
    let result = papersys::metadata::read_rows(&path, &mut issues, |row| {
        assert!(!row.paper_id.is_empty());
        assert!(!row.paper_id.chars().any(|c| c.is_control() || c.is_whitespace()));
        // Lines count `\n`s: a row after a lone-CR header is on line 1.
        assert!(row.line >= 1);
        rows += 1;
    });
    if let Ok(summary) = result {
        assert_eq!(summary.rows, rows);
    }
    for issue in &issues {
        assert!(!issue.message.is_empty());
    }
});
