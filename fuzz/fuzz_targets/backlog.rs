//! The backlog reader on arbitrary bytes: an error or rows, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("backlog.parquet"), data).expect("write");
    let _ = papersys::store::backlog::read(dir.path());
});
