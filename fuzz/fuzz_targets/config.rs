//! The config parser on arbitrary text: an error or a config whose paths
//! stay where the rules say, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/srv/papers/config/papersys.toml");
    if let Ok(config) = papersys::config::Config::parse(text, path) {
        assert!(config.embeddings_dir.starts_with(&config.data_root));
        for model in &config.models {
            let dir = config.model_dir(&model.alias);
            assert_eq!(dir.parent(), Some(config.embeddings_dir.as_path()));
            assert!(model.dimension > 0 && model.batch_size > 0);
        }
    }
});
