//! The manifest reader on arbitrary bytes: `Damaged` or a manifest, never a
//! panic; a manifest it reads writes and reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use papersys::store::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("manifest.json"), data).expect("write");
    if let Ok(Some(manifest)) = Manifest::read(dir.path()) {
        let out = tempfile::tempdir().expect("tempdir");
        manifest.write(out.path()).expect("write back");
        let again = Manifest::read(out.path()).expect("read back").expect("present");
        assert!(again.same_content(&manifest));
    }
});
