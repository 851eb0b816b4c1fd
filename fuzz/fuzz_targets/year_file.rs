//! Year-file readers on arbitrary bytes: an error naming the file, or rows
//! that obey the dimension, never a panic, hang or runaway allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use papersys::store::year_file;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("2024.parquet");
    std::fs::write(&path, data).expect("write");
    if let Ok(ids) = year_file::read_ids(&path, 4) {
        assert!(ids.ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ids.ids.len(), ids.hashes.len());
    }
    if let Ok(rows) = year_file::read_rows(&path, 4) {
        assert!(rows.iter().all(|r| r.embedding.len() == 4));
    }
    let _ = year_file::row_count(&path);
});
